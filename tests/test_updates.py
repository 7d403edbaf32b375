"""Per-instance updates: the one-step closed form equals one real AdamW step on stacked factors,
and every instance's update equals the one it gets alone in the batch."""

from __future__ import annotations

import pytest
import torch

from repmatch.config import AdamWSettings
from repmatch.lora import draw_lora_init, find_target_modules
from repmatch.models import load_classifier
from repmatch.tasks import Classification, Regression
from repmatch.updates import multi_step_updates, one_step_updates


@pytest.fixture(scope="module")
def setup(tiny_model):
    model = load_classifier(tiny_model("bert"), num_labels=3, head_seed=42)
    names = find_target_modules(model, ("query", "value"))
    initial = draw_lora_init(model, names, rank=2, alpha=4.0, seeds=(0, 1))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (4, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 3:] = 0
    return model, initial, {"input_ids": ids, "attention_mask": mask}


ADAMW = AdamWSettings(lr=1e-3, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01)


@pytest.mark.parametrize(
    ("task", "labels"),
    [(Classification(), torch.tensor([0, 2, 1, 2])), (Regression(), torch.tensor([0.5, 2, 1, 3]))],
)
def test_closed_form_equals_one_adamw_step(setup, task, labels):
    model, initial, batch = setup
    if task.name == "regression":
        model = load_classifier(model.name_or_path, num_labels=1, head_seed=42, task=task)
    closed = one_step_updates(model, batch, labels, initial, ADAMW, scaling=2.0, task=task)
    stepped = multi_step_updates(
        model, batch, labels, initial, ADAMW, scaling=2.0, task=task, steps=1
    )
    assert set(closed) == set(stepped) == {0, 1}
    for seed in (0, 1):
        for name, (B, A) in closed[seed].items():
            B_step, A_step = stepped[seed][name]
            assert B.shape == B_step.shape == (4, model.get_submodule(name).out_features, 2)
            torch.testing.assert_close(B, B_step, rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(A.expand_as(A_step), A_step, rtol=1e-5, atol=1e-7)
            assert B.abs().max() > 0


def test_each_instance_as_if_alone(setup):
    model, initial, batch = setup
    labels = torch.tensor([0, 2, 1, 2])
    task = Classification()
    together = one_step_updates(model, batch, labels, initial, ADAMW, scaling=2.0, task=task)
    for n in range(4):
        width = int(batch["attention_mask"][n].sum())
        alone_batch = {key: value[n : n + 1, :width] for key, value in batch.items()}
        alone = one_step_updates(
            model, alone_batch, labels[n : n + 1], initial, ADAMW, scaling=2.0, task=task
        )
        for seed in (0, 1):
            for name, (B, _) in alone[seed].items():
                torch.testing.assert_close(together[seed][name][0][n], B[0], rtol=1e-4, atol=1e-7)
