"""Labels, ids and the task kind: interpreting the label and id columns of a full split, and
matching classes by meaning (names with names, integers with integers; integers with names only
through ``label_names``, never by position)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from repmatch.data.columns import is_missing, preview, short_repr
from repmatch.data.readers import Table
from repmatch.data.spec import DataSpec, is_int
from repmatch.errors import RepmatchError

_INT_TEXT = re.compile(r"[+-]?\d+")
_CANONICAL_INT = re.compile(r"-?(0|[1-9]\d*)")


def _numbers_from_text(values: list[Any]) -> list[Any]:
    """Turn csv/tsv cell strings into ints or floats when every non-empty cell is one.

    "nan" and "inf" cells become floats too, so that they are refused as labels like NaN and
    infinity in typed formats (not taken as class names).
    """
    present = [v for v in values if isinstance(v, str) and v.strip()]
    if not present:
        return values
    if all(_INT_TEXT.fullmatch(v.strip()) for v in present):
        return [int(v) if isinstance(v, str) and v.strip() else v for v in values]
    try:
        for v in present:
            float(v)
    except ValueError:
        return values
    return [float(v) if isinstance(v, str) and v.strip() else v for v in values]


@dataclass
class Labels:
    """Label column of the full split, interpreted."""

    column: str
    kind: Literal["int", "float", "str"]
    raw: np.ndarray  # int64 class values (may be negative) / float64 / int64 string indices
    names: list[str] | None  # class names for "str" (sorted) or from the Hub


def read_labels(table: Table, column: str, *, regression: bool = False) -> Labels:
    """Interpret the label column of the full split (ints, fractional floats or strings);
    ``regression``: the task is set to regression, so whole numbers of any size are values."""
    values = table.get(column)
    if table.untyped:
        values = _numbers_from_text(values)
    missing = [
        row
        for row, v in enumerate(values)
        if is_missing(v) or (isinstance(v, str) and not v.strip())
    ]
    if missing:
        raise RepmatchError(
            f"label column {column!r} in {table.where} is missing or NaN in {len(missing)} rows "
            f"(first: row {missing[0]}, counting from 0); fill or drop those rows"
        )
    kinds: dict[str, int] = {}
    for row, value in enumerate(values):
        if isinstance(value, (bool, np.bool_, str)):
            kind = "str"
        elif isinstance(value, (int, np.integer)):
            kind = "int"
        elif isinstance(value, (float, np.floating)):
            kind = "float"
        else:
            raise RepmatchError(
                f"label column {column!r} in {table.where} holds a {type(value).__name__} "
                f"({short_repr(value)}) in row {row}; labels must be numbers or strings, "
                "check label_column",
                field="label_column",
            )
        kinds.setdefault(kind, row)
    if "str" in kinds and len(kinds) > 1:
        number_row = min(row for kind, row in kinds.items() if kind != "str")
        raise RepmatchError(
            f"label column {column!r} in {table.where} mixes strings (row {kinds['str']}) and "
            f"numbers (row {number_row}); make the labels all one type"
        )
    if "str" in kinds:
        strings = [str(v) for v in values]
        names = sorted(set(strings))
        index = {name: i for i, name in enumerate(names)}
        return Labels(column, "str", np.array([index[s] for s in strings], dtype=np.int64), names)
    raw = np.asarray(values, dtype=np.float64) if "float" in kinds else None
    if raw is not None:
        bad = np.flatnonzero(~np.isfinite(raw))
        if bad.size:
            raise RepmatchError(
                f"label column {column!r} in {table.where} holds {raw[bad[0]]} in {bad.size} "
                f"rows (first: row {bad[0]}, counting from 0); labels must be finite numbers, "
                "fix or drop those rows"
            )
        if not np.all(raw == np.round(raw)):
            return Labels(column, "float", raw, None)
    whole = [float(v) for v in values] if raw is None else raw
    too_large = np.flatnonzero(np.abs(np.asarray(whole, dtype=np.float64)) >= 2**53)
    if too_large.size and regression:
        return Labels(column, "float", np.asarray(whole, dtype=np.float64), None)
    if too_large.size:  # beyond exact whole floats, and int64 would wrap round or overflow
        row = int(too_large[0])
        raise RepmatchError(
            f"label column {column!r} in {table.where} holds {short_repr(values[row])} in row "
            f"{row}, too large for a class label (at most 2**53); if the labels are measurements "
            "set task to 'regression', else renumber the classes [--task]"
        )
    ints = np.asarray(values if raw is None else raw, dtype=np.int64)
    return Labels(column, "int", ints, table.class_names.get(column))


def read_ids(table: Table, column: str | None) -> list[int] | list[str]:
    """Stable ids: the id column's values (unique ints or strings) or the row numbers."""
    if column is None:
        return list(range(table.num_rows))
    values = table.get(column)
    if table.untyped and all(_CANONICAL_INT.fullmatch(v) for v in values):
        # Only canonical integers become ints, so ids such as "007" keep their spelling.
        values = [int(v) for v in values]
    out: list[Any] = []
    seen_types: set[type] = set()
    for row, value in enumerate(values):
        if is_missing(value) or (isinstance(value, str) and not value.strip()):
            raise RepmatchError(
                f"id column {column!r} in {table.where} is missing in row {row}; "
                "fill it or set id_column to another column",
                field="id_column",
            )
        if isinstance(value, str):
            out.append(str(value))
        elif is_int(value):
            out.append(int(value))
        elif isinstance(value, (float, np.floating)) and float(value).is_integer():
            out.append(int(value))
        else:
            raise RepmatchError(
                f"id column {column!r} in {table.where} holds a {type(value).__name__} "
                f"({short_repr(value)}) in row {row}; ids must be whole numbers or strings",
                field="id_column",
            )
        if isinstance(out[-1], int) and not -(2**63) <= out[-1] < 2**63:
            raise RepmatchError(
                f"id column {column!r} in {table.where} holds {short_repr(value)} in row {row}, "
                "beyond 64-bit integers; renumber the ids, write them as strings, or set "
                "id_column to another column",
                field="id_column",
            )
        seen_types.add(type(out[-1]))
    if len(seen_types) > 1:
        raise RepmatchError(
            f"id column {column!r} in {table.where} mixes numbers and strings; "
            "make the ids all one type or set id_column to another column",
            field="id_column",
        )
    first_row: dict[Any, int] = {}
    for row, value in enumerate(out):
        if value in first_row:
            raise RepmatchError(
                f"id column {column!r} in {table.where} repeats id {value!r} "
                f"(rows {first_row[value]} and {row}); ids must be unique, set id_column to "
                "another column",
                field="id_column",
            )
        first_row[value] = row
    return out


def detect_task(spec: DataSpec, labels: Labels, columns: dict[str, str | None], where: str) -> str:
    """The task kind: explicit, else from the labels and text columns; checks they agree."""
    label_column = columns["label"] or ""
    if spec.task is not None:
        task: str = spec.task
    elif labels.kind == "float" or label_column.lower() == "score":
        task = "regression"
    elif columns["text_pair"] is not None:
        task = "pair-classification"
    else:
        task = "classification"
    if task == "regression" and labels.kind == "str":
        raise RepmatchError(
            f"task 'regression' needs numeric labels, but {label_column!r} in {where} holds "
            f"strings (e.g. {labels.names[0] if labels.names else None!r}); set task to "
            "'classification' or label_column to another column",
            field="task",
        )
    if task != "regression" and labels.kind == "float":
        example = next(v for v in labels.raw if v != round(v))
        raise RepmatchError(
            f"task {task!r} needs whole-number or string labels, but {label_column!r} in {where} "
            f"holds {example:g}; set task to 'regression'",
            field="task",
        )
    if task == "pair-classification" and columns["text_pair"] is None:
        raise RepmatchError(
            f"task 'pair-classification' needs a second text column, but none was found in "
            f"{where}; set text_pair_column",
            field="text_pair_column",
        )
    if task == "classification" and columns["text_pair"] is not None:
        raise RepmatchError(
            f"task 'classification' takes one text column, but {where} has the pair "
            f"{columns['text']!r}/{columns['text_pair']!r}; set task to 'pair-classification', "
            "or text_column alone to use one text",
            field="task",
        )
    return task


def head_classes(
    labels: Labels, given: tuple[str, ...] | None, where: str
) -> tuple[np.ndarray, int, list[str] | None]:
    """Class labels as head indices: ``(indices, num_labels, names)`` for the full split.

    - string labels: indices into the names, sorted (or in the order of ``given``, which must
      hold every name);
    - integer labels with ``given`` names (the user's mapping) or names recorded with the data
      (a Hub dataset's ClassLabel): the integers index the names;
    - other integer labels are their own indices when they are dense enough (at least half of
      0..max occurs, as for 0..K-1 with a class missing from a subset); sparse or offset ones
      ({1, 5000}) are classes, not head indices: they are numbered in increasing order and named
      by their value ('1', '5000'), so a head has one output per class.

    Negative integers (rows that :func:`~repmatch.data.subsets.cut_subset` refuses or filters
    out) are left out of the classes.
    """
    raw = labels.raw
    column = labels.column
    if labels.kind == "str":
        assert labels.names is not None
        if given is None:
            return raw.astype(np.int64), max(len(labels.names), 1), list(labels.names)
        missing = [name for name in labels.names if name not in given]
        if missing:
            raise RepmatchError(
                f"label column {column!r} in {where} holds {missing[0]!r}, which label_names "
                f"({', '.join(given)}) does not name; add it to label_names",
                field="label_names",
            )
        order = np.array([given.index(name) for name in labels.names], dtype=np.int64)
        return order[raw], len(given), list(given)
    values = np.unique(raw[raw >= 0])
    if given is not None:
        if values.size and values[-1] >= len(given):
            raise RepmatchError(
                f"label column {column!r} in {where} holds the integer {int(values[-1])}, but "
                f"label_names names {len(given)} classes (0..{len(given) - 1}); give a name "
                "for every integer class, in order",
                field="label_names",
            )
        return raw.astype(np.int64), len(given), list(given)
    top = int(values[-1]) + 1 if values.size else 1
    if labels.names is not None:
        return raw.astype(np.int64), max(top, len(labels.names)), list(labels.names)
    if top <= 2 * values.size:
        return raw.astype(np.int64), top, None
    index = np.searchsorted(values, raw).astype(np.int64)  # negatives: cut out later
    return index, int(values.size), [str(int(v)) for v in values]


def class_keys(names: list[str] | None) -> list[int | str] | None:
    """What each class index stands for: its integer value when the names are integers
    (sparse integer labels, or integer labels written as text), else its name; ``None`` when the
    classes are bare indices (integer labels without names)."""
    if names is None:
        return None
    if names and all(_CANONICAL_INT.fullmatch(name) for name in names):
        return [int(name) for name in names]
    return list[int | str](names)


def named(keys: list[int | str] | None) -> bool:
    """Whether classes are identified by names (not by integer values)."""
    return keys is not None and bool(keys) and isinstance(keys[0], str)


def mismatch_error(integers: str, names_of: str, names: list[str]) -> RepmatchError:
    """The error for integer labels (of ``integers``) met with named classes (of ``names_of``):
    matched by position they would be wrong, so only a mapping the user gives is taken."""
    return RepmatchError(
        f"{integers} has integer labels but {names_of} names its classes ({preview(names)}); "
        "integer labels are matched to names only through a mapping, never by position: name "
        "the integer classes 0, 1, ... of the integer-labelled data in order with label_names",
        field="label_names",
    )


class Classified(Protocol):
    """What :func:`common_classes` reads of a dataset (:class:`~repmatch.data.Examples`)."""

    @property
    def name(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def labels(self) -> np.ndarray: ...
    @property
    def num_labels(self) -> int: ...
    @property
    def label_names(self) -> list[str] | None: ...


def common_classes(datasets: Sequence[Classified]) -> tuple[list[str] | None, int]:
    """The classes of one head for several datasets of one classification task: ``(names,
    num_labels)``, every class present in any dataset, matched by meaning.

    Named classes: the union of the names present (sorted). Integer classes: bare indices
    (``None``, the largest count) unless a dataset numbers sparse classes by value, then the
    union of the values present, named by value. Named and integer classes together are refused
    (:func:`mismatch_error`). Datasets without classes (regression, QA): ``(None, largest)``.
    """
    from repmatch.tasks import get_task  # torch: only when matching, not on import

    if not get_task(datasets[0].task).has_classes:
        return None, max(d.num_labels for d in datasets)
    keys = [class_keys(d.label_names) for d in datasets]
    by_name = [d for d, k in zip(datasets, keys, strict=True) if named(k)]
    by_value = [d for d, k in zip(datasets, keys, strict=True) if not named(k)]
    if by_name and by_value:
        first = by_name[0]
        raise mismatch_error(by_value[0].name, first.name, first.label_names or [])
    if all(k is None for k in keys):
        return None, max(d.num_labels for d in datasets)
    union: set = set()
    for d, k in zip(datasets, keys, strict=True):
        present = np.unique(d.labels).tolist()
        union.update(present if k is None else (k[v] for v in present))
    classes = sorted(union)
    return [str(c) for c in classes], len(classes)
