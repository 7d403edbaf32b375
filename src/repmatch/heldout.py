"""Did an adapter learn its task? Its metrics on held-out data, beside the majority-class rate.

A reference adapter that predicts no better than always answering the most frequent class has
not learned its task, and instances scored against it say nothing about that task. Training
with held-out data (``repmatch train --eval``, :func:`repmatch.training.train_adapter`'s
``heldout``) records, under ``"heldout"`` in ``repmatch.json``, what :func:`evaluate_adapter`
returns: the task's metrics (:meth:`repmatch.tasks.Task.metrics`), the majority-class rate of the
held-out labels (classification), and the held-out data's spec, fingerprint and size.
:func:`learning_verdict` turns accuracy and majority rate into the words every table uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from repmatch.adapters import RECORD_FILE, Adapter, load_adapter, load_adapter_model
from repmatch.artifacts import data_record, write_json
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.errors import RepmatchError
from repmatch.models import load_tokenizer
from repmatch.prediction import predict
from repmatch.tasks import Task, get_task

__all__ = [
    "LEARNED_MARGIN",
    "check_heldout",
    "evaluate_adapter",
    "learning_verdict",
    "majority_rate",
    "record_heldout",
]

LEARNED_MARGIN = 0.02
"""An adapter learned its task when its held-out accuracy beats the majority rate by more."""

PREDICT_BATCH = 64
"""Instances per forward pass when predicting the held-out data."""


def majority_rate(labels: np.ndarray) -> float:
    """Share of the most frequent class among ``labels`` ((N,) class indices, N >= 1)."""
    return float(np.unique(labels, return_counts=True)[1].max() / len(labels))


def learning_verdict(accuracy: float, majority: float, *, margin: float = LEARNED_MARGIN) -> str:
    """``"learned"`` when ``accuracy`` beats the majority rate by more than ``margin`` (both as
    fractions), else ``"did not learn (within 2 points of the majority rate)"``."""
    if accuracy - majority > margin:
        return "learned"
    return f"did not learn (within {100 * margin:g} points of the majority rate)"


def check_heldout(
    data: DataSpec | Examples | object,
    *,
    task: Task,
    label_names: list[str] | None,
    num_labels: int,
    train_fingerprint: str | None = None,
) -> Examples:
    """The held-out examples with labels as class indices of an adapter's head (classes as
    ``label_names``, ``num_labels`` outputs, trained for ``task``). Raises a one-line error for
    empty data, another task kind, a label the adapter never saw, or (``train_fingerprint``)
    the training data itself."""
    examples = as_examples(data)
    if len(examples) == 0:
        raise RepmatchError(f"held-out data {examples.name} holds no instances", field="heldout")
    if get_task(examples.task) != task:
        raise RepmatchError(
            f"held-out data {examples.name} is a {examples.task} task but the adapter is trained "
            f"for {task.name}; pass held-out data of the same task",
            field="heldout",
        )
    if train_fingerprint is not None and examples.fingerprint() == train_fingerprint:
        raise RepmatchError(
            f"held-out data {examples.name} is the training data itself; pass another split, "
            "e.g. DATA@validation",
            field="heldout",
        )
    aligned = examples.aligned_to(label_names, num_labels)
    task.check_labels(aligned, num_labels)
    return aligned


def evaluate_adapter(
    adapter: str | Path | Adapter,
    data: DataSpec | Examples | object,
    *,
    max_length: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """The held-out record of an adapter (``"heldout"`` in ``repmatch.json``): the task's
    ``metrics`` of the model the adapter describes on ``data``, the ``majority_rate`` of its
    labels (classification, else ``None``), ``max_length`` and the data's spec, fingerprint and
    size. ``max_length``: default the adapter's training one (else 512)."""
    if not isinstance(adapter, Adapter):
        adapter = load_adapter(adapter)
    task = get_task(adapter.task)
    num_labels = adapter.num_labels
    if num_labels is None:
        raise RepmatchError(f"{adapter.path} holds no head to predict held-out data with")
    examples = check_heldout(
        data, task=task, label_names=adapter.label_names, num_labels=num_labels
    )
    return _evaluate_checked(adapter, examples, max_length=max_length, device=device)


def _evaluate_checked(
    adapter: Adapter,
    examples: Examples,
    *,
    max_length: int | None,
    device: str | torch.device | None,
) -> dict[str, Any]:
    """:func:`evaluate_adapter` on examples :func:`check_heldout` already aligned."""
    task = get_task(adapter.task)
    if max_length is None:
        train = (adapter.record or {}).get("train") or {}
        max_length = int(train.get("max_length", 512))
    model = load_adapter_model(adapter, device=device)
    predictions = predict(
        model,
        load_tokenizer(adapter.base_model),
        examples,
        task,
        max_length=max_length,
        batch_size=PREDICT_BATCH,
        device=next(model.parameters()).device,
    )
    classes = task.problem_type == "single_label_classification"
    return {
        **data_record(examples),
        "max_length": max_length,
        "metrics": task.metrics(predictions, task.references(examples)),
        "majority_rate": majority_rate(examples.labels) if classes else None,
    }


def record_heldout(
    folder: str | Path,
    data: DataSpec | Examples | object,
    *,
    max_length: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Evaluate the adapter in ``folder`` on held-out ``data`` (:func:`evaluate_adapter`) and keep
    the result under ``"heldout"`` in its ``repmatch.json``; a result already recorded for the
    same data and ``max_length`` is returned as it is."""
    adapter = load_adapter(folder)
    if adapter.record is None:
        raise RepmatchError(f"{folder} has no {RECORD_FILE}: not written by `repmatch train`")
    num_labels = adapter.num_labels
    if num_labels is None:
        raise RepmatchError(f"{folder} holds no head to predict held-out data with")
    examples = check_heldout(
        data, task=get_task(adapter.task), label_names=adapter.label_names, num_labels=num_labels
    )
    recorded = adapter.record.get("heldout")
    if (
        isinstance(recorded, dict)
        and recorded.get("data_fingerprint") == examples.fingerprint()
        and (max_length is None or recorded.get("max_length") == max_length)
    ):
        return recorded
    result = _evaluate_checked(adapter, examples, max_length=max_length, device=device)
    write_json(Path(folder) / RECORD_FILE, adapter.record | {"heldout": result})
    return result
