"""Task kinds as objects: each owns its model class, head size, loss, label checks, the positions
its head reads and its metrics.

The rest of the package asks the task instead of branching on its name, so a new kind (extractive
QA, with a span head reading every position) is one more class here. The names are the values of
:data:`repmatch.data.TASK_KINDS`, as recorded in data specs and adapter records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from repmatch.errors import RepmatchError

if TYPE_CHECKING:
    from repmatch.data import Examples


class Task:
    """Sequence classification: one text, a class index per instance, cross-entropy."""

    name = "classification"
    problem_type = "single_label_classification"
    reads_one_position = True
    """The head reads one position per sequence ([CLS] or the last token), not every one."""

    def model_class(self) -> type:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def head_size(self, num_labels: int) -> int:
        """Outputs of the head for data with ``num_labels`` classes."""
        return num_labels

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """Cross-entropy on class indices. logits: (N, C); labels: (N,) int64."""
        return nn.functional.cross_entropy(logits, labels, reduction=reduction)

    def label_tensor(self, labels: np.ndarray) -> torch.Tensor:
        """Labels as the tensor the loss takes: (N,) int64."""
        return torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def check_labels(self, examples: Examples, num_outputs: int) -> None:
        """Raise unless every label of ``examples`` fits a head with ``num_outputs`` outputs."""
        labels, ids, name = examples.labels, examples.ids, examples.name
        bad = np.flatnonzero((labels < 0) | (labels >= num_outputs))
        if len(bad):
            raise RepmatchError(
                f"{len(bad)} labels of {name} are outside the head's {num_outputs} classes "
                f"(e.g. id {ids[bad[0]]} has label {labels[bad[0]]}); "
                "check the label column or the head size"
            )

    def predictions(self, logits: torch.Tensor) -> np.ndarray:
        """What the model predicts from its logits: (N,) class indices."""
        return logits.argmax(dim=-1).cpu().numpy()

    def metrics(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Accuracy and macro-F1 (scikit-learn)."""
        from sklearn.metrics import accuracy_score, f1_score

        return {
            "accuracy": float(accuracy_score(labels, predictions)),
            "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(self.name)


class Classification(Task):
    """One text per instance, a class per instance (SST-2, SST-5, IMDB)."""


class PairClassification(Task):
    """Two texts per instance (premise/hypothesis), a class per instance (SNLI, MNLI, HANS)."""

    name = "pair-classification"


class Regression(Task):
    """A score per instance (STS-B): one output, mean squared error."""

    name = "regression"
    problem_type = "regression"

    def head_size(self, num_labels: int) -> int:
        return 1

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """MSE. logits: (N, 1); labels: (N,) float."""
        return nn.functional.mse_loss(
            logits.squeeze(-1), labels.to(logits.dtype), reduction=reduction
        )

    def label_tensor(self, labels: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(labels), dtype=torch.float32)

    def check_labels(self, examples: Examples, num_outputs: int) -> None:
        labels, ids, name = examples.labels, examples.ids, examples.name
        if num_outputs != 1:
            raise RepmatchError(
                f"{name} is a regression task: the head needs 1 output, not {num_outputs}"
            )
        bad = np.flatnonzero(~np.isfinite(labels))
        if len(bad):
            raise RepmatchError(
                f"{len(bad)} scores of {name} are not finite (e.g. id {ids[bad[0]]}: "
                f"{labels[bad[0]]}); fix or drop those rows"
            )

    def predictions(self, logits: torch.Tensor) -> np.ndarray:
        return logits.squeeze(-1).float().cpu().numpy()

    def metrics(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Pearson and Spearman correlation (SciPy)."""
        from scipy.stats import pearsonr, spearmanr

        return {
            "pearson": float(pearsonr(predictions, labels)[0]),
            "spearman": float(spearmanr(predictions, labels)[0]),
        }


TASKS: dict[str, Task] = {
    task.name: task for task in (Classification(), PairClassification(), Regression())
}


def get_task(kind: str | Task | None) -> Task:
    """The task object for a task kind name (``None``: classification, as old records imply)."""
    if isinstance(kind, Task):
        return kind
    if kind is None:
        return TASKS["classification"]
    try:
        return TASKS[kind]
    except KeyError:
        raise RepmatchError(
            f"unknown task kind {kind!r}; known kinds: {', '.join(TASKS)}", field="task"
        ) from None
