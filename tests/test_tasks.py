"""Task kinds: losses, label checks, metrics on hand-checked examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repmatch.data import Examples
from repmatch.errors import RepmatchError
from repmatch.tasks import TASKS, Classification, Regression, get_task


def _examples(labels, task="classification") -> Examples:
    n = len(labels)
    return Examples(
        name="toy",
        task=task,
        texts=["t"] * n,
        text_pairs=None,
        labels=np.asarray(labels),
        ids=list(range(n)),
        num_labels=3,
        label_names=None,
        columns={"text": "text", "text_pair": None, "label": "label", "id": None},
    )


def test_every_data_task_kind_has_a_task():
    from repmatch.data import TASK_KINDS

    assert set(TASK_KINDS) <= set(TASKS)
    for kind in TASK_KINDS:
        assert get_task(kind).name == kind


def test_unknown_kind():
    with pytest.raises(RepmatchError, match="unknown task kind 'qa'") as caught:
        get_task("qa")
    assert caught.value.field == "task"


def test_classification_loss_sums_when_asked():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    task = Classification()
    total = task.loss(logits, labels, reduction="sum")
    expected = -torch.log_softmax(logits, -1)[[0, 1], [0, 0]].sum()
    assert total.item() == pytest.approx(expected.item())
    assert task.loss(logits, labels).item() == pytest.approx(expected.item() / 2)


def test_regression_loss_and_head():
    task = Regression()
    assert task.head_size(5) == 1
    loss = task.loss(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 2.0]), reduction="sum")
    assert loss.item() == pytest.approx(2.0)
    assert task.label_tensor(np.array([1, 2])).dtype == torch.float32


def test_label_checks():
    Classification().check_labels(_examples([0, 1, 2]), 3)
    with pytest.raises(RepmatchError, match="outside the head's 2 classes.*id 2 has label 2"):
        Classification().check_labels(_examples([0, 1, 2]), 2)
    with pytest.raises(RepmatchError, match="needs 1 output"):
        Regression().check_labels(_examples([0.5], "regression"), 2)
    with pytest.raises(RepmatchError, match="not finite"):
        Regression().check_labels(_examples([0.5, np.nan], "regression"), 1)


def test_classification_metrics_by_hand():
    # labels 0 0 1 1 2, predictions 0 1 1 1 0: 3 of 5 right
    metrics = Classification().metrics(np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 1, 2]))
    assert metrics["accuracy"] == pytest.approx(0.6)
    # per class F1: class 0: p=1/2, r=1/2 -> 0.5; class 1: p=2/3, r=1 -> 0.8; class 2: 0
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_regression_metrics_by_hand():
    metrics = Regression().metrics(np.array([1.0, 2.0, 3.0, 10.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert metrics["spearman"] == pytest.approx(1.0)
    assert 0.8 < metrics["pearson"] < 1.0


def test_which_tasks_have_classes():
    """The one place the package learns whether labels are classes (label filter, one centroid
    per class, aligning to a head's classes)."""
    assert [name for name, task in TASKS.items() if task.has_classes] == [
        "classification",
        "pair-classification",
    ]
    # examples of a task without classes are not aligned to a head's classes
    scores = _examples([0.5, 4.0, 2.25], task="regression")
    assert scores.aligned_to(["a", "b"], 2) is scores
