"""From a :class:`DataSpec` to :class:`Examples`: read, pick columns, interpret, cut."""

from __future__ import annotations

import logging

import numpy as np

from repmatch.data.columns import choose_columns, read_texts
from repmatch.data.examples import Examples
from repmatch.data.labels import detect_task, read_ids, read_labels
from repmatch.data.readers import open_source
from repmatch.data.spec import DataSpec
from repmatch.data.subsets import cut_subset
from repmatch.errors import RepmatchError

logger = logging.getLogger(__name__)


def load_examples(spec: DataSpec) -> Examples:
    """Load the data and subset described by ``spec``.

    Task kind, columns and ``num_labels`` are worked out on the full split; the subset is then cut
    (label filter, indices file, limit or sample). Problems with the data or the spec are raised
    as :class:`~repmatch.errors.RepmatchError` with a one-line explanation.
    """
    table = open_source(spec)
    if table.num_rows == 0:
        raise RepmatchError(f"{table.where} has no rows; check the file or pick another --split")
    columns = choose_columns(spec, table)
    text_column = columns["text"]
    label_column = columns["label"]
    assert text_column is not None and label_column is not None
    texts = read_texts(table, text_column)
    pairs = read_texts(table, columns["text_pair"]) if columns["text_pair"] is not None else None
    labels = read_labels(table, label_column)
    task = detect_task(spec, labels, columns, table.where)
    ids = read_ids(table, columns["id"])
    positions = cut_subset(spec, table, task, labels, ids, columns["id"])

    if task == "regression":
        label_array = labels.raw.astype(np.float32)
        num_labels, label_names = 1, None
    else:
        label_array = labels.raw.astype(np.int64)
        names = labels.names
        top = int(label_array.max()) + 1 if label_array.size else 0
        num_labels = max(top, len(names) if names is not None else 0, 1)
        label_names = list(names) if names is not None else None
    picks = positions.tolist()
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
    examples = full if picks == list(range(table.num_rows)) else full.select(positions)
    examples.spec = spec
    logger.info(
        "loaded %d of %d instances from %s (task %s, columns %s)",
        len(examples),
        table.num_rows,
        table.where,
        task,
        columns,
    )
    return examples
