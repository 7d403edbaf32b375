"""Which columns hold the text(s), label and id, and reading text columns."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from repmatch.data.readers import Table
from repmatch.data.spec import DataSpec
from repmatch.errors import RepmatchError

TEXT_PAIR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("premise", "hypothesis"),
    ("sentence1", "sentence2"),
    ("question1", "question2"),
)
TEXT_COLUMNS: tuple[str, ...] = ("text", "sentence", "review", "content", "document")
LABEL_COLUMNS: tuple[str, ...] = ("label", "labels", "gold_label", "score")
ID_COLUMNS: tuple[str, ...] = ("id", "idx")


def preview(names: Sequence[object], limit: int = 30) -> str:
    """Comma-separated names, shortened when there are many."""
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _explicit(table: Table, column: str, field: str) -> str:
    """Check that a column the user named exists."""
    if column not in table.columns:
        raise RepmatchError(
            f"column {column!r} not found in {table.where}; available columns: "
            f"{preview(table.columns)}; fix {field}",
            field=field,
        )
    return column


def _auto(
    table: Table, candidates: Sequence[str], exclude: Sequence[str | None] = ()
) -> str | None:
    """The first candidate column present (exact name first, then ignoring case)."""
    by_lower: dict[str, str] = {}
    for column in table.columns:
        if column not in exclude:
            by_lower.setdefault(column.lower(), column)
    for candidate in candidates:
        if candidate in table.columns and candidate not in exclude:
            return candidate
    for candidate in candidates:
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    return None


_TEXT_FIELDS = {
    "text_column": ("text", "the column of the texts (label_column names the labels)"),
    "text_pair_column": (
        "second text",
        "the column of the second texts, or leave it unset for single texts",
    ),
}
"""Text fields of a data spec: what they name, and what to set them to."""


def _refuse_taken(
    table: Table, candidates: Sequence[str], role: str, named: dict[str, str | None]
) -> None:
    """Raise when no ``role`` column was found because the user named it as a text column
    (``named``: field of :data:`_TEXT_FIELDS` -> column): ``--text-column label``."""
    column = _auto(table, candidates)
    for field, chosen in named.items():
        if chosen is not None and chosen == column:
            what, fix = _TEXT_FIELDS[field]
            raise RepmatchError(
                f"{field} {chosen!r} is the {role} column of {table.where} (columns: "
                f"{preview(table.columns)}): the {role} and the {what} cannot be the same "
                f"column; set {field} to {fix}",
                field=field,
            )


def choose_columns(spec: DataSpec, table: Table) -> dict[str, str | None]:
    """The text, text_pair, label and id columns to use (``None`` where absent)."""
    text: str | None = None
    pair: str | None = None
    if spec.text_column is not None:
        text = _explicit(table, spec.text_column, "text_column")
        if spec.text_pair_column is not None:
            pair = _explicit(table, spec.text_pair_column, "text_pair_column")
    elif spec.text_pair_column is not None:
        pair = _explicit(table, spec.text_pair_column, "text_pair_column")
        firsts = [a for a, b in TEXT_PAIR_COLUMNS if b == pair.lower()]
        text = _auto(table, firsts + [a for a, _ in TEXT_PAIR_COLUMNS] + list(TEXT_COLUMNS), [pair])
    else:
        for first, second in TEXT_PAIR_COLUMNS:
            a, b = _auto(table, [first]), _auto(table, [second])
            if a is not None and b is not None:
                text, pair = a, b
                break
        else:
            text = _auto(table, TEXT_COLUMNS)
    if text is None:
        _refuse_taken(table, TEXT_COLUMNS, "text", {"text_pair_column": pair})
        raise RepmatchError(
            f"no text column found in {table.where} (columns: {preview(table.columns)}); "
            "set text_column",
            field="text_column",
        )
    if spec.label_column is not None:
        label: str | None = _explicit(table, spec.label_column, "label_column")
    else:
        label = _auto(table, LABEL_COLUMNS, [text, pair])
        if label is None:
            named = {"text_column": spec.text_column, "text_pair_column": spec.text_pair_column}
            _refuse_taken(table, LABEL_COLUMNS, "label", named)
            raise RepmatchError(
                f"no label column found in {table.where} (columns: {preview(table.columns)}); "
                "set label_column",
                field="label_column",
            )
    if spec.id_column is not None:
        id_column: str | None = _explicit(table, spec.id_column, "id_column")
    else:
        id_column = _auto(table, ID_COLUMNS, [text, pair, label])
    used = [c for c in (text, pair, label, id_column) if c is not None]
    if len(set(used)) != len(used):
        raise RepmatchError(
            f"the same column is used twice in {table.where} (text={text!r}, text_pair={pair!r}, "
            f"label={label!r}, id={id_column!r}); pass distinct columns"
        )
    return {"text": text, "text_pair": pair, "label": label, "id": id_column}


# --------------------------------------------------------------------------------------------
# Values


def is_missing(value: object) -> bool:
    """True for None, NA, NaT and NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return False


def read_texts(
    table: Table, column: str, field: str, ids: Sequence[object] | None = None
) -> list[str]:
    """A text column as strings; missing, empty, blank or non-string values are an error.

    ``field``: the spec field that chose the column (``text_column`` or ``text_pair_column``);
    ``ids``: the instance ids, to name the bad row's id in messages too.
    """

    def row_of(row: int, counting: bool = True) -> str:
        named = f"row {row}" + (", counting from 0" if counting else "")
        return named + (f"; id {ids[row]!r}" if ids is not None else "")

    values = table.get(column)
    out: list[str] = values
    if not all(type(v) is str for v in values):
        out = []
        for row, value in enumerate(values):
            if isinstance(value, str):
                out.append(str(value))
                continue
            if is_missing(value):
                count = sum(1 for v in values if is_missing(v))
                raise RepmatchError(
                    f"text column {column!r} in {table.where} is missing in {count} rows "
                    f"(first: {row_of(row)}); fill or drop those rows"
                )
            raise RepmatchError(
                f"text column {column!r} in {table.where} holds {short_repr(value)} "
                f"({type(value).__name__}) in {row_of(row, counting=False)}, not a string; "
                "check the column",
                field=field,
            )
    blank = [row for row, text in enumerate(out) if not text or text.isspace()]
    if blank:
        raise RepmatchError(
            f"text column {column!r} in {table.where} is empty or only whitespace in "
            f"{len(blank)} rows (first: {row_of(blank[0])}); fill or drop those rows"
        )
    return out


def short_repr(value: object, width: int = 40) -> str:
    """``repr(value)`` shortened to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
