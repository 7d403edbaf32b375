"""Dataset-matrix sections (``repmatch datasets``): the RepMatch heat map between datasets,
± over seeds when there are several, its table and settings, and the representation baseline
(paper Table 2) when the run holds one beside its matrix.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from repmatch.report.page import Section, _e, _facts, _img, _saved_png, _table
from repmatch.report.runs import Run, _format_of, _read_record, _typed


def _draw_matrices(runs: list[Run]) -> list[Section]:
    from repmatch.plotting import plot_similarity_matrix

    sections = []
    for run in runs:
        record = run.record or {}
        names = [str(name) for name in _typed(record, "names", list)]
        mean = np.asarray(record["mean"], dtype=float)
        std = np.asarray(record["std"], dtype=float)
        if mean.shape != (len(names),) * 2 or std.shape != mean.shape:
            raise ValueError(
                f"field 'names' holds {len(names)} names for a 'mean' of shape {mean.shape} and "
                f"a 'std' of shape {std.shape}"
            )
        seeds = list(record.get("seeds") or [])
        several = len(seeds) > 1
        shown_std = std if several else None
        png = _saved_png(partial(plot_similarity_matrix, mean, names, std=shown_std))
        cells = [
            [name]
            + [
                f"{mean[i, j]:.3f} ± {std[i, j]:.3f}" if several else f"{mean[i, j]:.4f}"
                for j in range(len(names))
            ]
            for i, name in enumerate(names)
        ]
        explain = (
            f"Each entry is the mean ± population std of RepMatch over the "
            f"{len(record.get('seed_pairs', []))} ordered pairs of different LoRA seeds, so the "
            "diagonal measures seed robustness."
            if several
            else "One seed: each entry compares the two datasets' adapters; the diagonal is 1."
        )
        config = record.get("config") or {}
        train = config.get("train") or {}
        settings = [
            ("seeds", seeds),
            ("side", record.get("side")),
            *((key, train.get(key)) for key in ("model", "rank", "lr", "epochs", "batch_size")),
            ("targets", train.get("targets")),
        ]
        body = (
            f"<p>{_e(explain)}</p>"
            + _img(png, "RepMatch between datasets")
            + _table(["", *names], cells)
            + "<h3>Settings</h3>"
            + _facts(settings)
            + _baseline(run.path / BASELINE_FILE)
        )
        sections.append(Section("matrix", f"Dataset matrix: {run.path}", body))
    return sections


BASELINE_FILE = "baseline.json"
"""The representation baseline a ``datasets`` run writes beside its matrix when asked for."""


def _baseline(path: Path) -> str:
    """The representation baseline beside a matrix (paper Table 2), when there is one."""
    if not path.is_file():
        return ""
    record = _read_record(path)
    if _format_of(record) != "repmatch-baseline-matrix/":
        return ""
    names = [str(name) for name in record["names"]]
    percent = np.asarray(record["percent"], dtype=float)
    config = record.get("config") or {}
    rows = [
        [name, *(f"{value:.2f} %" for value in row)]
        for name, row in zip(names, percent, strict=True)
    ]
    settings = [
        ("threshold", config.get("threshold")),
        ("model", config.get("model")),
        ("pooling", config.get("pooling")),
        ("instances embedded", record.get("sizes")),
    ]
    return (
        "<h3>Representation baseline</h3><p>The paper's baseline beside RepMatch: the share of "
        "instance pairs (one from each dataset) whose pooled embeddings of the base model have a "
        f"cosine above {_e(config.get('threshold'))}.</p>"
        + _table(["", *names], rows)
        + _facts(settings)
    )
