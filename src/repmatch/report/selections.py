"""Selection sections (``repmatch select``): how the subset was chosen, its classes against
those scored, and the first rows of the selection file as written.
"""

from __future__ import annotations

from pathlib import Path

from repmatch.errors import RepmatchError
from repmatch.report.page import Section, _e, _facts, _note, _Raw, _short, _table
from repmatch.report.runs import Run

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
    body = _facts(settings)
    scored, chosen = record.get("class_counts_scored"), record.get("class_counts") or {}
    if scored:
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
    return body + _chosen_rows(run.path, record.get("columns") or {})


def _chosen_rows(path: Path, columns: dict) -> str:
    """The first :data:`SELECTION_ROWS` rows of the selection file, as written."""
    from repmatch.data import DataSpec
    from repmatch.data.readers import open_source

    title = f"<h3>The first {SELECTION_ROWS} chosen, in the order chosen</h3>"
    try:
        table = open_source(DataSpec(str(path)))
    except RepmatchError as err:
        return title + _note(f"The selection file cannot be read: {err}")
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
    return title + _table(present, rows)
