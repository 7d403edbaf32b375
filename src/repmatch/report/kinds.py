"""The kinds of run the report draws, and recognising which kind a path is. Every kind is one
:class:`Kind` in :data:`KINDS`, found by its run record (never by guessing from data); a new
kind of run is one more entry, with its drawing function in a module of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repmatch.artifacts import record_path
from repmatch.errors import RepmatchError
from repmatch.report.adapters import _draw_adapters, _draw_comparisons
from repmatch.report.evaluations import _draw_evaluations
from repmatch.report.matrices import _draw_matrices
from repmatch.report.overlap import _draw_overlap
from repmatch.report.page import Section
from repmatch.report.runs import Run, _format_of, _read_record
from repmatch.report.scores import _draw_scores
from repmatch.report.selections import _draw_selections

_COMPARISON_KEYS = {"score", "layers", "grids", "side", "first", "second"}


@dataclass(frozen=True)
class Kind:
    """A kind of run the report draws.

    ``records``: file names of its record inside an output folder; ``format``: the record's
    ``format`` prefix (``repmatch-<kind>/``); ``accepts``: what to pass, for the error message;
    ``draw``: all runs of this kind given (in order) -> their sections.
    """

    name: str
    records: tuple[str, ...]
    format: str | None
    accepts: str
    draw: Callable[[list[Run]], list[Section]]


def recognise(path: str | Path) -> Run:
    """The run at ``path``; a one-line error naming it and listing what the report accepts."""
    path = Path(path)
    if not path.exists():
        raise RepmatchError(f"{path}: no such file or folder; {_accepted()}")
    if path.is_dir():
        for kind in KINDS:
            for name in kind.records:
                if (path / name).is_file():
                    record = _read_record(path / name)
                    if _format_of(record) == kind.format:
                        return Run(kind.name, path, record)
        if (path / "adapter_config.json").is_file():
            return Run("adapter", path, None)  # a PEFT adapter made elsewhere
        raise RepmatchError(f"{path}: a folder the report does not recognise; {_accepted()}")
    if record_path(path).is_file():  # an output file with its record FILE.json beside it
        record_file, output = record_path(path), path
    elif path.suffix == ".json":  # a record given itself
        record_file, output = path, path.with_suffix("")
    else:
        raise RepmatchError(f"{path}: a file the report does not recognise; {_accepted()}")
    record = _read_record(record_file)
    for kind in KINDS:
        if kind.format is None or _format_of(record) != kind.format:
            continue
        if kind.records:  # the record of an output folder
            return Run(kind.name, record_file.parent, record)
        if output.is_file():
            return Run(kind.name, output, record)
    if _COMPARISON_KEYS <= set(record):
        return Run("comparison", path, record)
    raise RepmatchError(f"{path}: a file the report does not recognise; {_accepted()}")


def _accepted() -> str:
    return "the report takes " + "; ".join(kind.accepts for kind in KINDS)


KINDS: tuple[Kind, ...] = (
    Kind(
        "adapter",
        ("repmatch.json",),
        "repmatch-adapter/",
        "adapter folders (compared pair by pair when several)",
        _draw_adapters,
    ),
    Kind(
        "comparison",
        (),
        None,
        "a comparison saved by `repmatch compare A B --json > FILE.json`",
        _draw_comparisons,
    ),
    Kind(
        "matrix",
        ("matrix.json",),
        "repmatch-matrix/",
        "a `repmatch datasets` folder (matrix.json)",
        _draw_matrices,
    ),
    Kind(
        "scores",
        (),
        "repmatch-scores/",
        "instance scores FILE.parquet with FILE.parquet.json",
        _draw_scores,
    ),
    Kind(
        "selection",
        (),
        "repmatch-selection/",
        "a selection FILE with FILE.json (`repmatch select`)",
        _draw_selections,
    ),
    Kind(
        "evaluation",
        ("results.json",),
        "repmatch-evaluation/",
        "a `repmatch evaluate` folder (results.json)",
        _draw_evaluations,
    ),
    Kind(
        "overlap",
        ("overlap.json",),
        "repmatch-overlap/",
        "a `repmatch overlap` folder (overlap.json)",
        _draw_overlap,
    ),
)
