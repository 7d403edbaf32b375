"""The report: one self-contained HTML page for whatever repmatch runs it is given.

A *run* is the output of a stage, recognised by its run record (never by guessing from data);
each kind draws its sections in a module of its own:

- an adapter folder (``repmatch.json``, or any PEFT LoRA folder with ``adapter_config.json``);
  two or more adapters given together are also compared, pair by pair, with their per-layer
  grids (:mod:`.adapters`);
- a comparison saved with ``repmatch compare A B --json > FILE.json`` (:mod:`.adapters`);
- a ``repmatch datasets`` folder (``matrix.json``, and ``baseline.json`` when it holds the
  representation baseline), or that file (:mod:`.matrices`);
- instance scores ``FILE.parquet`` with their record ``FILE.parquet.json`` (either path)
  (:mod:`.scores`);
- a selection ``FILE`` (any data format) with its record ``FILE.json`` (``repmatch select``)
  (:mod:`.selections`);
- a ``repmatch evaluate`` folder (``results.json``) (:mod:`.evaluations`);
- a ``repmatch overlap`` folder (``overlap.json``) (:mod:`.overlap`).

Every kind is one :class:`Kind` in :data:`KINDS` (:mod:`.kinds`, which also recognises runs):
the record files it is found by, the format its record declares, a one-line description for
the error message, and the function that draws its sections; a new kind of run is one more
entry. :mod:`.build` builds and writes the page; :mod:`.page` holds its shell and the HTML
pieces; :mod:`.runs` the :class:`Run` and the reading of records. The page carries its images
as base64 PNG (matplotlib, Agg) and its CSS inline, and fetches nothing; every text from data
or records is escaped. A tiny inline script marks, once the page has loaded, how many images
decoded (``<body data-rendered="decoded/total">``), which is what the headless-browser test
reads.
"""

from __future__ import annotations

from repmatch.report.build import build_report, write_report
from repmatch.report.kinds import KINDS, Kind, recognise
from repmatch.report.matrices import BASELINE_FILE
from repmatch.report.page import GENERATOR, TEXT_LIMIT, Section
from repmatch.report.runs import Run
from repmatch.report.scores import TOP
from repmatch.report.selections import SELECTION_ROWS

__all__ = [
    "BASELINE_FILE",
    "GENERATOR",
    "KINDS",
    "SELECTION_ROWS",
    "TEXT_LIMIT",
    "TOP",
    "Kind",
    "Run",
    "Section",
    "build_report",
    "recognise",
    "write_report",
]
