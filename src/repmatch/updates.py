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

with h_t the layer's input and \delta_t the loss gradient at its output for token t. B = 0 leaves
the forward pass unchanged, so no LoRA factors are attached at all: hooks record A_0 h_t and the
layer outputs, one backward gives every \delta, and several LoRA seeds share the pass (their A_0
stacked along the rank axis, the columns of g split back per seed). With sequences packed into
rows the sum over t runs over each instance's own tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
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


@contextmanager
def _forward_hooks(
    layers: dict[str, nn.Module], make_hook: Callable[[str], Callable]
) -> Iterator[None]:
    """``make_hook(name)`` registered as a forward hook on every layer, removed on exit."""
    handles = [layer.register_forward_hook(make_hook(name)) for name, layer in layers.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def summed_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor, *, regression: bool
) -> torch.Tensor:
    """Loss summed over instances (not averaged): each instance's factors get their own gradient."""
    return task_loss(model(**batch).logits, labels, regression=regression, reduction="sum")


class StackedLora:
    """Per-instance LoRA factors attached to a frozen model's Linear layers by forward hooks."""

    def __init__(self, model: nn.Module, target_names: list[str], scaling: float) -> None:
        self.model = model
        self.layers = {name: model.get_submodule(name) for name in target_names}
        self.scaling = scaling
        self.A: dict[str, torch.Tensor] = {}
        self.B: dict[str, torch.Tensor] = {}

    def start(self, initial: dict[str, torch.Tensor], n: int) -> None:
        """Fresh trainable factors for ``n`` instances: A_n = A_0 (name -> (r, d_in)), B_n = 0."""
        self.A = {
            name: a0.unsqueeze(0).repeat(n, 1, 1).requires_grad_() for name, a0 in initial.items()
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
        with _forward_hooks(self.layers, self._hook):
            yield self

    def _hook(self, name: str):
        def add_update(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            x = inputs[0]  # (N, T, d_in)
            low = x @ self.A[name].transpose(-1, -2)  # (N, T, r)
            return output + self.scaling * (low @ self.B[name].transpose(-1, -2))  # (N, T, d_out)

        return add_update


class _LayerTaps:
    """Forward hooks on frozen Linear layers recording A_0 h (N, T, R) and the output (N, T, d_out).

    Outputs that do not depend on anything requiring grad (the first layer's) are made leaves
    that do, so the loss can be differentiated with respect to every recorded output.
    """

    def __init__(self, model: nn.Module, initial: dict[str, torch.Tensor]) -> None:
        self.layers = {name: model.get_submodule(name) for name in initial}
        self.initial = initial
        self.projected: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}

    @contextmanager
    def attached(self) -> Iterator[_LayerTaps]:
        """Hooks are live only inside this block."""
        with _forward_hooks(self.layers, self._hook):
            yield self

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            with torch.no_grad():
                self.projected[name] = inputs[0] @ self.initial[name].mT  # (N, T, R)
            if not output.requires_grad:
                output = output.detach().requires_grad_()
            self.outputs[name] = output
            return output

        return record


def one_step_updates(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    initial: dict[str, torch.Tensor],
    adamw: AdamWSettings,
    *,
    scaling: float,
    regression: bool,
    segments: torch.Tensor | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Closed-form first AdamW step from B = 0 for every instance of the batch.

    ``initial``: name -> A_0, (R, d_in) (R may stack several seeds' ranks). ``segments``: for
    sequences packed into rows, (rows, T) the instance index of every token (-1: padding); None
    when every row is one instance. Returns name -> (B_1 (N, d_out, R), A_1 (R, d_in)).
    """
    taps = _LayerTaps(model, initial)
    with taps.attached():
        loss = summed_loss(model, batch, labels, regression=regression)
        deltas = torch.autograd.grad(loss, [taps.outputs[name] for name in initial])
    decay = 1.0 - adamw.lr * adamw.weight_decay
    updates = {}
    for (name, a0), delta in zip(initial.items(), deltas, strict=True):
        g = scaling * _per_instance_sum(delta, taps.projected[name], segments, labels.shape[0])
        updates[name] = (-adamw.lr * g / (g.abs() + adamw.eps), a0 * decay)
    return updates


def _per_instance_sum(
    delta: torch.Tensor, projected: torch.Tensor, segments: torch.Tensor | None, n: int
) -> torch.Tensor:
    """sum_t delta_t (A_0 h_t)^T over each instance's tokens: (N, d_out, R).

    delta: (rows, T, d_out); projected: (rows, T, R); segments: (rows, T) or None (row = instance).
    """
    if segments is None:
        return delta.mT @ projected
    tokens, rank = segments.numel(), projected.shape[-1]
    member = nn.functional.one_hot(segments.reshape(-1).clamp(min=0), n)  # (T', N)
    member = member * (segments.reshape(-1, 1) >= 0)  # padding belongs to nobody
    weights = member[:, :, None] * projected.reshape(tokens, 1, rank)  # (T', N, R)
    summed = delta.reshape(tokens, -1).mT @ weights.reshape(tokens, n * rank)  # (d_out, N * R)
    return summed.reshape(-1, n, rank).permute(1, 0, 2)


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
    lora.start(initial, labels.shape[0])
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
            summed_loss(lora.model, batch, labels, regression=regression).backward()
            optimizer.step()
    return {name: (lora.B[name].detach(), lora.A[name].detach()) for name in lora.layers}
