"""What was loaded: :class:`Examples`, texts, labels and stable ids of (a subset of) a split,
and its labels aligned to the classes of a reference (:meth:`Examples.aligned_to`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from repmatch.data.columns import preview
from repmatch.data.labels import class_keys, mismatch_error, named
from repmatch.data.spec import DataSpec, TaskKind, is_int
from repmatch.errors import RepmatchError

_FINGERPRINT_VERSION = "repmatch-examples-v1"


@dataclass(eq=False)
class Examples:
    """A loaded (subset of a) dataset.

    Positions run 0..n-1; ``ids`` are the stable instance ids (the row index in the split, or the
    values of the id column). ``labels`` are int64 class indices for classification kinds and
    float32 for regression. ``num_labels`` counts the classes of the full split, so a subset
    missing a class still has the full count. ``label_names`` gives the class names when labels
    were strings (mapped in sorted order) or the Hub dataset names its classes, else ``None``.
    ``columns`` records the columns used under the keys text, text_pair, label and id.

    Extractive QA (task ``extractive-qa``): ``texts`` are the questions, ``text_pairs`` the
    contexts (question first, as BERT reads a QA pair), ``labels`` the (N, 2) int64 character
    span [start, end) of the first gold answer in its context (what training uses), and
    ``answers`` every gold answer as read, ``{"text": [...], "answer_start": [...]}`` per instance
    (what the metrics use, and what is written back under the ``label`` column). ``num_labels``
    is 2 (start and end), ``label_names`` is ``None``. ``answers`` is ``None`` for other kinds.
    """

    name: str
    task: TaskKind
    texts: list[str]
    text_pairs: list[str] | None
    labels: np.ndarray
    ids: list[int] | list[str]
    num_labels: int
    label_names: list[str] | None
    columns: dict[str, str | None]
    spec: DataSpec | None = None  # what these were loaded from; None if in memory or re-selected
    answers: list[dict[str, list]] | None = None  # extractive QA: every gold answer per instance

    def __post_init__(self) -> None:
        """Check that the per-instance fields have one entry per instance."""
        n = len(self.texts)
        sizes = [len(self.ids), len(self.labels)]
        if self.text_pairs is not None:
            sizes.append(len(self.text_pairs))
        if self.answers is not None:
            sizes.append(len(self.answers))
        if any(size != n for size in sizes):
            raise ValueError(f"Examples fields have different lengths: {n} texts vs {sizes}")

    def __len__(self) -> int:
        """Number of instances."""
        return len(self.texts)

    def __repr__(self) -> str:
        """Short summary (the texts would be far too long to show)."""
        return (
            f"Examples(name={self.name!r}, task={self.task!r}, n={len(self)}, "
            f"num_labels={self.num_labels}, columns={self.columns!r})"
        )

    def __eq__(self, other: object) -> bool:
        """Equal when every field, including label values and dtype, is equal."""
        if not isinstance(other, Examples):
            return NotImplemented
        return (
            self.name == other.name
            and self.task == other.task
            and self.texts == other.texts
            and self.text_pairs == other.text_pairs
            and self.labels.dtype == other.labels.dtype
            and np.array_equal(self.labels, other.labels)
            and self.ids == other.ids
            and self.num_labels == other.num_labels
            and self.label_names == other.label_names
            and self.columns == other.columns
            and self.answers == other.answers
        )

    __hash__ = None  # type: ignore[assignment]

    def select(self, positions: Sequence[int] | np.ndarray) -> Examples:
        """A new :class:`Examples` holding the instances at ``positions``, in that order."""
        index = np.asarray(positions)
        if index.size == 0:
            index = index.astype(np.int64)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"positions must be a 1-d sequence of ints, got dtype {index.dtype}")
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(
                f"positions must lie in 0..{len(self) - 1}, got {int(index.min())}.."
                f"{int(index.max())}"
            )
        picks = index.tolist()
        return Examples(
            name=self.name,
            task=self.task,
            texts=[self.texts[i] for i in picks],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in picks],
            labels=self.labels[index].copy(),
            ids=[self.ids[i] for i in picks],
            num_labels=self.num_labels,
            label_names=None if self.label_names is None else list(self.label_names),
            columns=dict(self.columns),
            answers=None if self.answers is None else [self.answers[i] for i in picks],
        )

    def aligned_to(self, label_names: Sequence[str] | None, num_labels: int) -> Examples:
        """These examples with labels as class indices of a reference (an adapter's head).

        String labels are mapped to classes in sorted order per split, so data whose label set
        differs from the reference's (a subset lacking a class) would otherwise be misaligned.
        Classes are matched by meaning (:func:`~repmatch.data.labels.class_keys`):

        - named classes by name; the labels take the reference's names;
        - integer classes by value: bare indices, or sparse integers named by their value;
        - integer labels against named classes (or named labels against integer classes) are
          refused: matched by position they would be wrong; ``label_names`` names integers.

        Only labels that occur here must be known to the reference. ``num_labels`` becomes the
        reference's; regression and extractive QA examples are returned as they are. Raises a
        one-line :class:`~repmatch.errors.RepmatchError` naming the first label the reference
        lacks.
        """
        from repmatch.tasks import get_task  # torch: only when aligning, not on import

        if not get_task(self.task).has_classes:
            return self
        if not is_int(num_labels) or num_labels < 1:
            raise RepmatchError(f"the reference's num_labels must be >= 1, got {num_labels!r}")
        names = None if label_names is None else [str(name) for name in label_names]
        if names is not None and len(names) > num_labels:
            raise RepmatchError(
                f"the reference names {len(names)} classes but has {num_labels} outputs"
            )
        present = np.unique(self.labels).tolist()
        own_keys, keys = class_keys(self.label_names), class_keys(names)
        if named(own_keys) != named(keys):
            if named(keys):
                raise mismatch_error(self.name, "the reference", names or [])
            raise mismatch_error("the reference", self.name, self.label_names or [])
        index: dict[int | str, int]
        if keys is None:
            index = {i: i for i in range(num_labels)}
        else:
            index = {key: i for i, key in enumerate(keys)}
        mapping = np.full(max(present) + 1 if present else 0, -1, dtype=np.int64)
        for value in present:
            key = value if own_keys is None else own_keys[value]
            if key not in index:
                self._unknown_label(value, self._label_text(value), names or list(map(str, index)))
            mapping[value] = index[key]
        labels = mapping[self.labels]
        return Examples(
            name=self.name,
            task=self.task,
            texts=list(self.texts),
            text_pairs=None if self.text_pairs is None else list(self.text_pairs),
            labels=labels,
            ids=list(self.ids),  # type: ignore[arg-type]  # the same kind of ids
            num_labels=num_labels,
            label_names=None if names is None else list(names),
            columns=dict(self.columns),
            spec=self.spec,
        )

    def _label_text(self, value: int) -> str | int:
        """A class index as its name when there is one, else the index."""
        if self.label_names is not None and 0 <= value < len(self.label_names):
            return self.label_names[value]
        return value

    def _unknown_label(self, value: int, label: str | int, classes: list[str]) -> NoReturn:
        """Raise the error for a label (class index ``value`` here) the reference lacks."""
        rows = np.flatnonzero(self.labels == value)
        count = f"{rows.size} instance" + ("s" if rows.size != 1 else "")
        raise RepmatchError(
            f"label {label!r} of {self.name} ({count}, e.g. id {self.ids[rows[0]]!r}) is not "
            f"one of the reference's classes: {preview(classes)}; "
            "keep only those classes with the labels filter, or use a reference trained on them",
            field="labels",
        )

    def fingerprint(self) -> str:
        """SHA-256 hex digest over task, ids, texts, text pairs, labels (and QA answers).

        Stable across runs and machines; any change to a text, label or id (including an id's
        type, ``5`` vs ``"5"``) changes it. Names, columns and label names are not included.
        """
        labels = self.labels.tolist()
        payload = [_FINGERPRINT_VERSION, self.task, self.ids, self.texts, self.text_pairs, labels]
        if self.answers is not None:
            payload.append(self.answers)
        data = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=True)
        return hashlib.sha256(data.encode("ascii")).hexdigest()
