"""Overlap sections (``repmatch overlap``): the subsets of non-entailment instances by how much
of the hypothesis the premise contains, with their sizes and files.
"""

from __future__ import annotations

from repmatch.report.page import Section, _e, _table
from repmatch.report.runs import Run


def _draw_overlap(runs: list[Run]) -> list[Section]:
    sections = []
    for run in runs:
        record = run.record or {}
        rows = [
            (band, _band(*record["bands"][band]), size, record["files"].get(band))
            for band, size in record["sizes"].items()
        ]
        source = record.get("source") or {}
        entailment = record.get("entailment_name") or f"label {record.get('entailment_label')}"
        body = (
            f"<p>{record['non_entailment']:,} of {source.get('num_examples', 0):,} instances "
            f"of <code>{_e(_data_name(source))}</code> are not entailment "
            f"(entailment = {_e(entailment)}).</p>"
            + _table(["subset", "overlap", "instances", "file"], rows)
            + f'<p class="meta">{_e(record.get("definition"))}</p>'
        )
        sections.append(Section("overlap", f"Overlap subsets: {run.path}", body))
    return sections


def _band(low: float, high: float) -> str:
    """``60–80 %``, or ``100 %`` for a band of one value."""
    return f"{100 * low:g} %" if low == high else f"{100 * low:g}–{100 * high:g} %"


def _data_name(record: dict) -> str:
    return str(record.get("data_name") or "data")
