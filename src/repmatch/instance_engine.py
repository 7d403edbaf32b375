r"""Per-instance LoRA updates for a whole batch at once, exactly as a reset-and-train loop gives.

The paper scores an instance x by resetting the model to a fresh LoRA init, taking optimizer steps
on x alone (batch size 1) and reading off :math:`\Delta W(x)`. Here every instance of a batch gets
its *own* LoRA factors, stacked along a leading instance axis and applied through forward hooks:

    y_n = W x_n + s \, B_n A_n x_n,     A: (N, r, d_in),  B: (N, d_out, r)

The loss is summed over the batch, so the gradient of B_n (and A_n) is exactly instance n's own
gradient, and AdamW, being elementwise, updates every instance as if it were alone.

One step has a closed form. PEFT starts from B = 0, so A gets no gradient and AdamW's first step is

    B_1 = -lr \, g / (|g| + \epsilon),   A_1 = A_0 (1 - lr \, wd),
    g = \partial L(x) / \partial B = s \sum_t \delta_t (A_0 h_t)^T,

so one forward/backward per batch gives every instance's update. Because B = 0 leaves the forward
pass unchanged, several LoRA seeds can share that pass: their A_0 are stacked along the rank axis
and the columns of g split back per seed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from repmatch.models import task_loss


@dataclass(frozen=True)
class AdamWSettings:
    """AdamW hyper-parameters of the per-instance steps (torch defaults but for lr)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01


def fresh_lora_init(
    model: nn.Module, target_names: list[str], *, rank: int, alpha: float, seed: int
) -> dict[str, torch.Tensor]:
    """The A_0 factors PEFT draws for ``seed``: name -> (r, d_in).

    Uses PEFT itself on a copy of ``model`` (seeded exactly like ``torch.manual_seed(seed);
    get_peft_model(model, config)``), so scores match a loop built on PEFT.
    """
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_names)
    torch.manual_seed(seed)
    wrapped = get_peft_model(copy.deepcopy(model), config)
    initial = {}
    for name in target_names:
        layer = wrapped.base_model.model.get_submodule(name)
        initial[name] = layer.lora_A["default"].weight.detach().clone()
    return initial


class StackedLora:
    """Per-instance LoRA factors attached to a frozen model's Linear layers by forward hooks."""

    def __init__(self, model: nn.Module, target_names: list[str], scaling: float) -> None:
        self.model = model
        self.layers = {name: model.get_submodule(name) for name in target_names}
        self.scaling = scaling
        self.A: dict[str, torch.Tensor] = {}
        self.B: dict[str, torch.Tensor] = {}

    def start(self, initial: dict[str, torch.Tensor], n: int, *, train_a: bool) -> None:
        """Fresh factors for ``n`` instances: A_n = A_0 (name -> (r, d_in)), B_n = 0.

        Without ``train_a`` the A_n share A_0's memory (B = 0 gives A no gradient anyway).
        """
        self.A = {
            name: a0.unsqueeze(0).repeat(n, 1, 1).requires_grad_()
            if train_a
            else a0.unsqueeze(0).expand(n, -1, -1)
            for name, a0 in initial.items()
        }
        self.B = {
            name: torch.zeros(
                n,
                layer.out_features,
                initial[name].shape[0],
                device=initial[name].device,
                requires_grad=True,
            )
            for name, layer in self.layers.items()
        }

    @contextmanager
    def attached(self) -> Iterator[StackedLora]:
        """Hooks are live only inside this block."""
        handles = [
            layer.register_forward_hook(self._hook(name)) for name, layer in self.layers.items()
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str):
        def add_update(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            x = inputs[0]  # (N, T, d_in)
            low = x @ self.A[name].transpose(-1, -2)  # (N, T, r)
            return output + self.scaling * (low @ self.B[name].transpose(-1, -2))  # (N, T, d_out)

        return add_update

    def summed_loss(
        self, batch: dict[str, torch.Tensor], labels: torch.Tensor, *, regression: bool
    ) -> torch.Tensor:
        """Loss summed over instances (not averaged), so each B_n gets instance n's gradient."""
        logits = self.model(**batch).logits
        return task_loss(logits, labels, regression=regression, reduction="sum")


def one_step_updates(
    lora: StackedLora,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    initial: dict[str, torch.Tensor],
    adamw: AdamWSettings,
    *,
    regression: bool,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Closed-form first AdamW step from B = 0 for every instance of the batch.

    ``initial``: name -> A_0, (R, d_in) (R may stack several seeds' ranks).
    Returns name -> (B_1 (N, d_out, R), A_1 (R, d_in)).
    """
    lora.start(initial, labels.shape[0], train_a=False)
    with lora.attached():
        loss = lora.summed_loss(batch, labels, regression=regression)
        grads = torch.autograd.grad(loss, list(lora.B.values()))
    decay = 1.0 - adamw.lr * adamw.weight_decay
    return {
        name: (-adamw.lr * g / (g.abs() + adamw.eps), initial[name] * decay)
        for name, g in zip(lora.B, grads, strict=True)
    }


def multi_step_updates(
    lora: StackedLora,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    initial: dict[str, torch.Tensor],
    adamw: AdamWSettings,
    *,
    steps: int,
    regression: bool,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` AdamW steps for every instance on its own stacked factors.

    ``initial``: name -> A_0, (r, d_in). Returns name -> (B (N, d_out, r), A (N, r, d_in)).
    """
    lora.start(initial, labels.shape[0], train_a=True)
    optimizer = torch.optim.AdamW(
        [*lora.A.values(), *lora.B.values()],
        lr=adamw.lr,
        betas=adamw.betas,
        eps=adamw.eps,
        weight_decay=adamw.weight_decay,
    )
    with lora.attached():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            lora.summed_loss(batch, labels, regression=regression).backward()
            optimizer.step()
    return {name: (lora.B[name].detach(), lora.A[name].detach()) for name in lora.layers}
