"""Cutting the subset of a split: label filter, indices file, then limit or random sample."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from repmatch.data.columns import preview
from repmatch.data.labels import Labels
from repmatch.data.readers import Table, decode, read_bytes
from repmatch.data.spec import DataSpec
from repmatch.errors import RepmatchError

logger = logging.getLogger(__name__)


def _read_indices_file(path_text: str) -> list[str]:
    """Ids listed in an indices file (one per line, or a JSON list), as strings."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        problem = f"{path_text!r} is a folder" if path.is_dir() else f"not found: {path_text!r}"
        raise RepmatchError(
            f"indices file {problem}; set indices_file to a file of ids", field="indices_file"
        )
    where = path.name
    text = decode(read_bytes(path, path.name.lower().endswith(".gz")), where)
    if path.name.lower().removesuffix(".gz").endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RepmatchError(
                f"indices file {where} is not valid JSON ({exc.msg}); it must be a JSON list of "
                "ids",
                field="indices_file",
            ) from exc
        if not isinstance(data, list) or not all(
            isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in data
        ):
            raise RepmatchError(
                f"indices file {where} must hold a JSON list of ids (strings or whole numbers)",
                field="indices_file",
            )
        ids = [str(v) for v in data]
    else:
        ids = [line.strip() for line in text.split("\n") if line.strip()]
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise RepmatchError(
                f"indices file {where} lists id {value!r} more than once; list each id once",
                field="indices_file",
            )
        seen.add(value)
    return ids


def _empty(name: str, step: str, hint: str, field: str | None) -> RepmatchError:
    """The error for a subset that some step left empty (``field``: the one to fix, if one)."""
    return RepmatchError(f"the subset of {name} is empty after {step}; {hint}", field=field)


def cut_subset(
    spec: DataSpec,
    table: Table,
    task: str,
    labels: Labels | None,
    ids: list[int] | list[str],
    id_column: str | None,
) -> np.ndarray:
    """Positions (into the full split) of the instances to keep, in order: those of the label
    filter, then of the indices file, then the first ``limit`` or a random ``sample``."""
    from repmatch.tasks import get_task  # torch: only when data is cut, not on import

    positions = np.arange(table.num_rows, dtype=np.int64)
    has_classes = get_task(task).has_classes
    if spec.labels is not None:
        if not has_classes:
            raise RepmatchError(
                f"the labels filter picks classes, but {table.name} is a {task} task; "
                "leave labels unset",
                field="labels",
            )
        assert labels is not None  # tasks with classes have labels
        if spec.label_names is not None and labels.kind == "int" and labels.names is None:
            labels = dataclasses.replace(labels, names=list(spec.label_names))  # filter by them
        positions = _with_labels(spec.labels, labels, table.name, positions)
    if has_classes and labels is not None and labels.kind == "int":
        _refuse_negative_labels(labels, table.name, positions)
    if spec.indices_file is not None:
        positions = _listed(spec.indices_file, ids, id_column, table, positions)
    return _limit_or_sample(spec, table.name, positions)


def _with_labels(
    wanted_labels: tuple[str, ...], labels: Labels, name: str, positions: np.ndarray
) -> np.ndarray:
    """The ``positions`` whose label (its value or its class name) is one of ``wanted_labels``;
    a warning names the wanted labels that match nothing."""
    values, inverse = np.unique(labels.raw, return_inverse=True)
    present: list[str] = []
    wanted = set(wanted_labels)
    matched: set[str] = set()
    keep_value = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values.tolist()):
        keys = _names_for(labels, value)
        present.append(keys[-1] if len(keys) == 1 else f"{keys[0]} ({keys[1]})")
        hits = wanted.intersection(keys)
        if hits:
            keep_value[i] = True
            matched.update(hits)
    if not keep_value.any():
        raise _empty(
            name,
            f"the label filter labels={list(wanted_labels)}",
            f"labels in this split: {preview(present)}; fix labels",
            "labels",
        )
    unmatched = [label for label in wanted_labels if label not in matched]
    if unmatched:
        logger.warning(
            "labels filter values %s match no instance of %s (labels present: %s)",
            ", ".join(unmatched),
            name,
            preview(present),
        )
    return positions[keep_value[inverse]]


def _refuse_negative_labels(labels: Labels, name: str, positions: np.ndarray) -> None:
    """Raise if an integer class label at ``positions`` is negative (an unlabelled row)."""
    negative = positions[labels.raw[positions] < 0]
    if negative.size:
        valid = [str(v) for v in sorted({v for v in labels.raw.tolist() if v >= 0})]
        raise RepmatchError(
            f"label column {labels.column!r} in {name} holds negative label "
            f"{labels.raw[negative[0]]} in {negative.size} rows (first: row {negative[0]}); "
            f"negative labels usually mark unlabelled rows, keep real ones with "
            f"labels={valid or ['0']}",
            field="labels",
        )


def _listed(
    indices_file: str,
    ids: list[int] | list[str],
    id_column: str | None,
    table: Table,
    positions: np.ndarray,
) -> np.ndarray:
    """The rows an indices file lists, in its order, among ``positions`` (those the label
    filter kept); an id that is not in the split is an error."""
    wanted_ids = _read_indices_file(indices_file)
    where = Path(indices_file).name
    if not wanted_ids:
        raise _empty(
            table.name,
            f"the indices file {where}",
            "it lists no ids; add ids to it",
            "indices_file",
        )
    lookup = {str(value): row for row, value in enumerate(ids)}
    missing = [value for value in wanted_ids if value not in lookup]
    if missing:
        kind = f"values of column {id_column!r}" if id_column else "row numbers (from 0)"
        raise RepmatchError(
            f"indices file {where} lists {len(missing)} ids not in {table.name} "
            f"(first: {missing[0]!r}); ids must be {kind} of this split",
            field="indices_file",
        )
    kept = np.zeros(table.num_rows, dtype=bool)
    kept[positions] = True
    rows = [lookup[value] for value in wanted_ids]
    listed = np.asarray([row for row in rows if kept[row]], dtype=np.int64)
    if listed.size == 0:
        raise _empty(
            table.name,
            f"the indices file {where}",
            "none of its ids passed the label filter; check labels and indices_file",
            None,
        )
    if listed.size < len(rows):
        logger.info("%d ids of %s were dropped by the label filter", len(rows) - listed.size, where)
    return listed


def _limit_or_sample(spec: DataSpec, name: str, positions: np.ndarray) -> np.ndarray:
    """The first ``spec.limit`` of ``positions``, or ``spec.sample`` of them drawn with
    ``spec.seed`` (kept in order), or all of them."""
    if spec.limit is not None:
        if spec.limit > positions.size:
            logger.info(
                "limit %d is more than the %d instances available in %s; using all",
                spec.limit,
                positions.size,
                name,
            )
        return positions[: spec.limit]
    if spec.sample is not None:
        if spec.sample > positions.size:
            raise RepmatchError(
                f"cannot sample {spec.sample} from {positions.size} instances of {name}; "
                "lower sample",
                field="sample",
            )
        chosen = np.random.default_rng(spec.seed).choice(
            positions.size, size=spec.sample, replace=False
        )
        return positions[np.sort(chosen)]
    return positions


def _names_for(labels: Labels, value: Any) -> list[str]:
    """The strings that name one raw label value: its value, then its class name if known."""
    if labels.kind == "str":
        assert labels.names is not None
        return [labels.names[int(value)]]
    keys = [str(int(value))]
    if labels.names is not None and 0 <= int(value) < len(labels.names):
        keys.append(labels.names[int(value)])
    return keys
