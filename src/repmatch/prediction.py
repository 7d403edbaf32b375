"""Predictions of a model on examples: the task's outputs, in data order, without gradients.

Used by :mod:`repmatch.evaluation` (every fine-tuned run) and :mod:`repmatch.heldout` (a trained
adapter on held-out data); it imports neither, so training can evaluate what it trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from repmatch.batching import EncodedExamples, plan_batches
from repmatch.data import Examples
from repmatch.models import check_lengths, compute_dtype
from repmatch.tasks import Task

__all__ = ["predict"]


def predict(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Examples,
    task: Task,
    *,
    max_length: int,
    batch_size: int,
    device: torch.device,
    dtype: str = "float32",
) -> np.ndarray:
    """The task's predictions (:meth:`Task.predictions`) for every example, in data order:
    (N,) class indices, scores or (extractive QA) answer texts.

    Without gradients, in batches of ``batch_size`` grouped by length
    (:func:`repmatch.batching.plan_batches`), the matmuls in ``dtype`` (autocast; the logits are
    read in float32). torch's fused attention serves every dtype here: only its bfloat16
    backward is slow on the CPU (:func:`repmatch.models.attention_kernel`), its forward is faster
    than the math kernel."""
    model.eval()
    encoded = EncodedExamples(tokenizer, examples, max_length=max_length)
    check_lengths(model, encoded.lengths, examples.ids, max_length)  # type: ignore[arg-type]
    precision = compute_dtype(dtype, device)
    autocast: dict[str, Any] = {
        "device_type": device.type,
        "dtype": precision,
        "enabled": precision != torch.float32,
    }
    positions, outputs = [], []
    with torch.inference_mode(), torch.autocast(**autocast):
        for batch in plan_batches(encoded, batch_size, device):
            logits = task.logits(model(**batch.inputs), batch.inputs).float()
            outputs.append(task.predictions(logits, encoded, batch.positions))
            positions.append(batch.positions)
    order = np.concatenate(positions)
    stacked = np.concatenate(outputs)
    predictions = np.empty_like(stacked)
    predictions[order] = stacked
    return predictions
