"""Selection sections (``repmatch select``): how the subset was chosen, its classes against
those scored, and the first rows of the selection file as written.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from repmatch.errors import RepmatchError
from repmatch.report.page import (
    Section,
    _e,
    _facts,
    _note,
    _Raw,
    _record_notes,
    _short,
    _table,
)
from repmatch.report.runs import Run, _typed

if TYPE_CHECKING:
    from repmatch.data.readers import Table

SELECTION_ROWS = 20
"""How many chosen instances a selection section lists (in the order chosen)."""


def _draw_selections(runs: list[Run]) -> list[Section]:
    return [
        Section("selection", f"Selection: {run.path}", _selection_body(run, run.record or {}))
        for run in runs
    ]


def _selection_body(run: Run, record: dict) -> str:
    how = record["select"]
    settings = [
        ("chosen", f"{how['how']} {how['k']}" + (", class-balanced" if how["balanced"] else "")),
        ("seed", how["seed"] if how["how"] == "random" else None),
        ("ranked by", how.get("score_column")),
        ("scores", record.get("scores")),
        ("reference", record.get("reference")),
        ("data", record.get("data_name")),
        ("instances", f"{record['num_selected']:,} of {record['num_scored']:,} scored"),
    ]
    body = _facts(settings) + _record_notes(record)
    scored = record.get("class_counts_scored")
    if scored:
        chosen = _typed(record, "class_counts", dict)
        rows = [
            (
                name,
                count,
                count / record["num_scored"],
                chosen.get(name, 0),
                chosen.get(name, 0) / max(record["num_selected"], 1),
            )
            for name, count in scored.items()
        ]
        body += "<h3>Classes</h3>" + _table(
            ["class", "scored", "share", "selected", "share"], rows, digits=3
        )
    return body + _chosen_rows(run.path, record, record.get("columns") or {})


def _differences(table: Table, record: dict, columns: dict) -> str:
    """A note on how the selection file differs from its record (rows, ids, classes), if it
    does: a file edited by hand is not what the record describes."""
    found = []
    if table.num_rows != record.get("num_selected"):
        found.append(f"{table.num_rows} rows (record: {record.get('num_selected')})")
    id_column, label_column = columns.get("id"), columns.get("label")
    recorded_ids = record.get("ids")
    if id_column in table.columns and isinstance(recorded_ids, list):
        ids = [str(value) for value in table.get(id_column)]
        if ids != [str(value) for value in recorded_ids]:
            found.append("other ids or another order")
    counts = record.get("class_counts")
    if label_column in table.columns and isinstance(counts, dict):
        labels = Counter(str(value) for value in table.get(label_column))
        new = sorted(set(labels) - set(counts))
        if new:
            found.append("labels not in the record: " + ", ".join(map(repr, new)))
        elif labels != Counter({str(k): v for k, v in counts.items() if v}):
            found.append("other class counts")
    if not found:
        return ""
    return _note(
        "The selection file differs from its record (" + "; ".join(found) + "): it was edited "
        "after repmatch select wrote it, so the settings and classes above may not describe it."
    )


def _chosen_rows(path: Path, record: dict, columns: dict) -> str:
    """The first :data:`SELECTION_ROWS` rows of the selection file, as written."""
    from repmatch.data import DataSpec
    from repmatch.data.readers import open_source

    title = f"<h3>The first {SELECTION_ROWS} chosen, in the order chosen</h3>"
    try:
        table = open_source(DataSpec(str(path)))
    except RepmatchError as err:
        return title + _note(f"The selection file cannot be read: {err}")
    edited = _differences(table, record, columns)
    names = [columns.get(key) for key in ("id", "label", "score", "text", "text_pair")]
    present = [name for name in names if name is not None and name in table.columns]
    values = {name: table.get(name)[:SELECTION_ROWS] for name in present}
    rows = []
    for i in range(min(SELECTION_ROWS, table.num_rows)):
        row: list[object] = []
        for key, name in zip(("id", "label", "score", "text", "text_pair"), names, strict=True):
            if name not in values:
                continue
            value = values[name][i]
            row.append(_Raw(_e(_short(str(value))), "text") if key.startswith("text") else value)
        rows.append(row)
    return edited + title + _table(present, rows)
