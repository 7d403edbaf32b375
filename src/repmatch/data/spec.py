"""What to load: :class:`DataSpec`, the source and the subset of it, validated field by field."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from repmatch.config import check_seed
from repmatch.errors import RepmatchError

TaskKind = Literal["classification", "pair-classification", "regression", "extractive-qa"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)

FLAGS = {
    "source": "the data source",
    "split": "--split",
    "hub_config": "--hub-config",
    "text_column": "--text-column",
    "text_pair_column": "--text-pair-column",
    "label_column": "--label-column",
    "id_column": "--id-column",
    "task": "--task",
    "limit": "--limit",
    "sample": "--sample",
    "seed": "--sample-seed",
    "indices_file": "--indices-file",
    "labels": "--labels",
    "label_names": "--label-names",
}
"""The command-line flag of each spec field. Library messages name the field (and set
:attr:`RepmatchError.field <repmatch.errors.RepmatchError.field>`); the CLI maps it to the flag."""


@dataclass(frozen=True)
class DataSpec:
    """Where the data is and which part of it to use.

    Saved as JSON next to outputs, so every field is JSON-serialisable (see :meth:`to_dict`).
    ``split`` applies to folders and Hub names (default ``'train'``; a folder without a train split
    but with a single file uses that file). Column names and ``task`` are detected when ``None``.
    The subset is cut in this order: ``labels`` filter, ``indices_file``, then ``limit`` (first N)
    or ``sample`` (N at random with ``seed``, kept in data order). ``label_names`` names the
    integer classes 0, 1, ... in order (``('entailment', 'neutral', 'contradiction')``), so that
    integer labels are matched by name with named ones (:mod:`repmatch.data.labels`).
    """

    source: str
    split: str | None = None
    hub_config: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    task: TaskKind | None = None
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    indices_file: str | None = None
    labels: tuple[str, ...] | None = None
    label_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Check every field, normalising paths to ``str`` and ``labels`` to a tuple of ``str``."""
        for field in ("source", "indices_file"):
            value = getattr(self, field)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, field, os.fspath(value))
        if not isinstance(self.source, str) or not self.source.strip():
            raise RepmatchError(
                f"data source must be a file, folder or Hugging Face Hub name, got {self.source!r}",
                field="source",
            )
        for field in (
            "split",
            "hub_config",
            "text_column",
            "text_pair_column",
            "label_column",
            "id_column",
            "indices_file",
        ):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise RepmatchError(
                    f"{field} must be a non-empty string, got {value!r}; fix {field}", field=field
                )
        if self.task is not None and self.task not in TASK_KINDS:
            raise RepmatchError(
                f"task {self.task!r} is not one of {', '.join(TASK_KINDS)}; "
                "set task to one of them or leave it unset to detect it",
                field="task",
            )
        for field in ("limit", "sample"):
            value = getattr(self, field)
            if value is not None and (not is_int(value) or value < 1):
                raise RepmatchError(
                    f"{field} must be a positive whole number, got {value!r}; "
                    f"set {field} to N >= 1",
                    field=field,
                )
        if self.limit is not None and self.sample is not None:
            raise RepmatchError(
                f"limit={self.limit} and sample={self.sample} cannot be used together; "
                "set either limit or sample"
            )
        check_seed(self.seed)
        if self.labels is not None:
            object.__setattr__(self, "labels", _normalise_label_filter(self.labels))
        if self.label_names is not None:
            object.__setattr__(self, "label_names", _normalise_label_names(self.label_names))
        named = [
            (field, getattr(self, field))
            for field in ("text_column", "text_pair_column", "label_column", "id_column")
            if getattr(self, field) is not None
        ]
        for i, (field, value) in enumerate(named):
            for other, other_value in named[i + 1 :]:
                if value == other_value:
                    raise RepmatchError(
                        f"{field} and {other} are both {value!r}; "
                        f"set {field} and {other} to different columns"
                    )

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict (``labels`` as a list)."""
        out = dataclasses.asdict(self)
        out["labels"] = list(self.labels) if self.labels is not None else None
        out["label_names"] = list(self.label_names) if self.label_names is not None else None
        return out

    def to_record(self) -> dict[str, Any]:
        """:meth:`to_dict` for run records: local paths made absolute, so that a later stage
        (``select``, ``report``) reloads the data from any working directory. Hub names stay."""
        out = self.to_dict()
        for key in ("source", "indices_file"):
            if out[key] and Path(out[key]).exists():
                out[key] = str(Path(out[key]).resolve())
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSpec:
        """Rebuild a spec from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise RepmatchError(f"a data spec must be a JSON object of fields, got {data!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in known]
        if unknown:
            raise RepmatchError(
                f"unknown data spec field {unknown[0]!r}; known fields: {', '.join(known)}"
            )
        return cls(**dict(data))


def is_int(value: object) -> bool:
    """True for a whole number that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _normalise_label_filter(labels: object) -> tuple[str, ...]:
    """The ``labels`` filter as a tuple of strings; a single value becomes a 1-tuple."""
    if isinstance(labels, (str, int)):
        labels = (labels,)
    if not isinstance(labels, Sequence) or isinstance(labels, bytes):
        raise RepmatchError(
            f"labels must be a list of label values or names, got {labels!r}; fix labels",
            field="labels",
        )
    out = []
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise RepmatchError(
                f"labels must be strings (label values or names), got {label!r}; fix labels",
                field="labels",
            )
        out.append(str(label).strip() if isinstance(label, str) else str(label))
    if not out:
        raise RepmatchError(
            "labels filter is empty; give labels at least one label, or leave it unset",
            field="labels",
        )
    return tuple(out)


def _normalise_label_names(names: object) -> tuple[str, ...]:
    """``label_names`` as a tuple of distinct non-empty strings."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise RepmatchError(
            f"label_names must be a list of class names (for the integers 0, 1, ... in order), "
            f"got {names!r}; fix label_names",
            field="label_names",
        )
    out = tuple(names)
    bad = next((name for name in out if not isinstance(name, str) or not name.strip()), None)
    if not out or bad is not None:
        raise RepmatchError(
            f"label_names must be non-empty strings, got {bad!r}; fix label_names",
            field="label_names",
        )
    repeated = next((name for name in out if out.count(name) > 1), None)
    if repeated is not None:
        raise RepmatchError(
            f"label_names names {repeated!r} twice; give every class its own name",
            field="label_names",
        )
    return out
