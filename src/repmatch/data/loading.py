"""From data to :class:`Examples`: read a table, pick columns, interpret them, cut the subset.

:func:`load_examples` reads the table a :class:`DataSpec` names; :func:`as_examples` also takes a
pandas DataFrame or a ``datasets.Dataset`` (notebook use). Both run the same steps on the table.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from repmatch.data.columns import choose_columns, read_texts
from repmatch.data.examples import Examples
from repmatch.data.labels import Labels, detect_task, head_classes, read_ids, read_labels
from repmatch.data.qa import is_qa_table, read_qa
from repmatch.data.readers import Table, in_memory_table, open_source
from repmatch.data.spec import DataSpec
from repmatch.data.subsets import cut_subset
from repmatch.errors import RepmatchError

logger = logging.getLogger(__name__)

_SOURCE_FIELDS = ("source", "split", "hub_config")
"""Spec fields that say where to read: not options of an in-memory table."""


def load_examples(spec: DataSpec) -> Examples:
    """Load the data and subset described by ``spec``.

    Task kind, columns and ``num_labels`` are worked out on the full split; the subset is then cut
    (label filter, indices file, limit or sample). Problems with the data or the spec are raised
    as :class:`~repmatch.errors.RepmatchError` with a one-line explanation.
    """
    examples = _table_examples(open_source(spec), spec)
    examples.spec = spec
    return examples


def as_examples(data: Any, *, name: str | None = None, **options: Any) -> Examples:
    """Examples from any form of data: Examples, a DataSpec, a path, a DataFrame or a Dataset.

    - :class:`Examples` are returned as they are; a :class:`DataSpec` is loaded with
      :func:`load_examples`; a file, folder or Hub name (``str`` or path) is loaded as
      ``DataSpec(data, **options)``;
    - a pandas DataFrame or a ``datasets.Dataset`` (one split) goes through the same steps as a
      file: column and task detection, labels (a Dataset's ClassLabel names included), ids from
      an ``id``/``idx`` column else the row position, and the subset. Its ``spec`` is ``None``.

    ``options`` are :class:`DataSpec` fields (``text_column``, ``label_column``, ``task``,
    ``limit``, ``labels``, ...; not ``source``, ``split`` or ``hub_config`` for in-memory data);
    ``name`` labels in-memory data in messages and records.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"sentence": ["good", "bad"], "label": ["pos", "neg"]})
    >>> examples = as_examples(frame, name="toy")
    >>> examples.task, examples.label_names, examples.labels.tolist(), examples.ids
    ('classification', ['neg', 'pos'], [1, 0], [0, 1])
    """
    if isinstance(data, (Examples, DataSpec)):
        if options or name is not None:
            given = ", ".join([*options, *(["name"] if name is not None else [])])
            raise RepmatchError(
                f"options ({given}) apply to paths and in-memory tables, not to a given "
                f"{type(data).__name__}; set them on the DataSpec instead"
            )
        return data if isinstance(data, Examples) else load_examples(data)
    if isinstance(data, (str, os.PathLike)):
        if name is not None:
            raise RepmatchError(
                "name applies to in-memory tables; a file or folder is named after itself"
            )
        return load_examples(_spec(os.fsdecode(data), options))
    table = in_memory_table(data, name)
    misplaced = [field for field in _SOURCE_FIELDS if field in options]
    if misplaced:
        raise RepmatchError(
            f"{misplaced[0]} says where to read data, but {table.where} is already in memory; "
            f"leave {misplaced[0]} unset",
            field=misplaced[0],
        )
    # The options are checked like any spec; the source is only a label for the table here.
    return _table_examples(table, _spec(table.name, options))


def _spec(source: str, options: dict[str, Any]) -> DataSpec:
    """``DataSpec(source, **options)``; an unknown option is named with the known ones."""
    known = set(DataSpec.__dataclass_fields__) - {"source"}
    unknown = [key for key in options if key not in known]
    if unknown:
        raise RepmatchError(
            f"unknown data option {unknown[0]!r}; options are the DataSpec fields: "
            f"{', '.join(sorted(known))}"
        )
    return DataSpec(source, **options)


def _table_examples(table: Table, spec: DataSpec) -> Examples:
    """Columns, texts, labels, task, ids and subset of one table, as ``spec`` says."""
    if table.num_rows == 0:
        raise RepmatchError(f"{table.where} has no rows; pass data with at least one row")
    if is_qa_table(spec, table):
        full = read_qa(table, spec)
        positions = cut_subset(spec, table, full.task, None, full.ids, full.columns["id"])
        return _cut(full, positions, table)
    columns = choose_columns(spec, table)
    text_column = columns["text"]
    label_column = columns["label"]
    assert text_column is not None and label_column is not None
    texts = read_texts(table, text_column, "text_column")
    pair_column = columns["text_pair"]
    pairs = read_texts(table, pair_column, "text_pair_column") if pair_column else None
    labels = read_labels(table, label_column, regression=spec.task == "regression")
    task = detect_task(spec, labels, columns, table.where)
    ids = read_ids(table, columns["id"])
    positions = cut_subset(spec, table, task, labels, ids, columns["id"])

    if task == "regression":
        if spec.label_names is not None:
            raise RepmatchError(
                f"label_names names classes, but {table.where} is a regression task; "
                "leave label_names unset",
                field="label_names",
            )
        label_array = _float32_targets(labels, table.where)
        num_labels, label_names = 1, None
    else:
        label_array, num_labels, label_names = head_classes(labels, spec.label_names, table.where)
    full = Examples(
        name=table.name,
        task=task,  # type: ignore[arg-type]
        texts=texts,
        text_pairs=pairs,
        labels=label_array,
        ids=ids,
        num_labels=num_labels,
        label_names=label_names,
        columns=columns,
    )
    return _cut(full, positions, table)


def _float32_targets(labels: Labels, where: str) -> np.ndarray:
    """Regression targets as float32, refusing values beyond its range (about 3.4e38)."""
    with np.errstate(over="ignore"):
        targets = labels.raw.astype(np.float32)
    beyond = np.flatnonzero(~np.isfinite(targets))
    if beyond.size:
        row = int(beyond[0])
        raise RepmatchError(
            f"label column {labels.column!r} in {where} holds {labels.raw[row]:g} in row {row}, "
            "beyond the float32 range of regression targets (about 3.4e38); rescale the labels"
        )
    return targets


def _cut(full: Examples, positions: np.ndarray, table: Table) -> Examples:
    """The subset at ``positions`` of the full split's examples."""
    examples = full if positions.tolist() == list(range(table.num_rows)) else full.select(positions)
    logger.info(
        "loaded %d of %d instances from %s (task %s, columns %s)",
        len(examples),
        table.num_rows,
        table.where,
        full.task,
        full.columns,
    )
    return examples
