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

Both entry points take the A_0 factors of every seed (``seed -> layer -> (r, d_in)``) and the
LoRA scale s, and return every seed's factors separately: stacking seeds into one pass, and
splitting them back, happens here only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from repmatch.config import AdamWSettings
from repmatch.tasks import Task

Updates = dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]
"""seed -> layer name -> (B, A) after the steps."""


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
    model: nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor, task: Task
) -> torch.Tensor:
    """Loss summed over instances (not averaged): each instance's factors get their own gradient.
    Computed in float32 whatever the model's precision."""
    return task.loss(task.logits(model(**batch), batch).float(), labels, reduction="sum")


class StackedLora:
    """Per-instance LoRA factors attached to a frozen model's Linear layers by forward hooks."""

    def __init__(self, model: nn.Module, target_names: list[str], scaling: float) -> None:
        self.model = model
        self.layers: dict[str, Any] = {name: model.get_submodule(name) for name in target_names}
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

    def _hook(self, name: str) -> Callable[..., torch.Tensor]:
        def add_update(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> torch.Tensor:
            x = inputs[0].to(self.A[name].dtype)  # (N, T, d_in), in the factors' float32
            low = x @ self.A[name].transpose(-1, -2)  # (N, T, r)
            update = self.scaling * (low @ self.B[name].transpose(-1, -2))  # (N, T, d_out)
            return output + update.to(output.dtype)

        return add_update


class _LayerTaps:
    """Forward hooks on frozen Linear layers recording A_0 h (N, T, R), or the input h itself
    (N, T, d_in) where A_0 is None, and the output (N, T, d_out).

    Outputs that do not depend on anything requiring grad (the first layer's) are made leaves
    that do, so the loss can be differentiated with respect to every recorded output.
    """

    def __init__(self, model: nn.Module, initial: Mapping[str, torch.Tensor | None]) -> None:
        self.layers = {name: model.get_submodule(name) for name in initial}
        self.initial = initial
        self.projected: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}

    @contextmanager
    def attached(self) -> Iterator[_LayerTaps]:
        """Hooks are live only inside this block."""
        with _forward_hooks(self.layers, self._hook):
            yield self

    def _hook(self, name: str) -> Callable[..., torch.Tensor]:
        def record(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> torch.Tensor:
            a0 = self.initial[name]
            with torch.no_grad():  # float32 whatever the model's precision
                h = inputs[0].detach().float()
                self.projected[name] = h if a0 is None else h @ a0.mT
            if not output.requires_grad:
                output = output.detach().requires_grad_()
            self.outputs[name] = output
            return output

        return record


def one_step_updates(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    initial: dict[int, dict[str, torch.Tensor]],
    adamw: AdamWSettings,
    *,
    scaling: float,
    task: Task,
    segments: torch.Tensor | None = None,
) -> Updates:
    """Closed-form first AdamW step from B = 0 for every instance of the batch and every seed.

    ``initial``: seed -> name -> A_0 (r, d_in); the seeds share one forward/backward, their A_0
    stacked along the rank axis. ``segments``: for sequences packed into rows, (rows, T) the
    instance index of every token (-1: padding); None when every row is one instance. Returns
    seed -> name -> (B_1 (N, d_out, r), A_1 (r, d_in)).
    """
    seeds = list(initial)
    names = list(initial[seeds[0]])
    stacked = {name: torch.cat([initial[seed][name] for seed in seeds]) for name in names}
    taps = _LayerTaps(model, stacked)
    with taps.attached():
        loss = summed_loss(model, batch, labels, task)
        deltas = torch.autograd.grad(loss, [taps.outputs[name] for name in names])
    decay = 1.0 - adamw.lr * adamw.weight_decay
    updates: Updates = {seed: {} for seed in seeds}
    for name, delta in zip(names, deltas, strict=True):
        g = scaling * _per_instance_sum(
            delta.float(), taps.projected[name], segments, labels.shape[0]
        )
        b1 = -adamw.lr * g / (g.abs() + adamw.eps)  # (N, d_out, S * r)
        start = 0
        for seed in seeds:
            a0 = initial[seed][name]
            stop = start + a0.shape[0]
            updates[seed][name] = (b1[..., start:stop], a0 * decay)
            start = stop
    return updates


def token_gradients(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    names: list[str],
    *,
    task: Task,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's inputs h (rows, T, d_in) and loss gradients at its outputs δ (rows, T,
    d_out), from one forward/backward with the loss summed over instances.

    Instance n's weight gradient is the sum of δ_t h_t^T over its own tokens (never formed here;
    see :func:`repmatch.alignment.gradient_cosine`).
    """
    taps = _LayerTaps(model, dict.fromkeys(names))
    with taps.attached():
        loss = summed_loss(model, batch, labels, task)
        deltas = torch.autograd.grad(loss, [taps.outputs[name] for name in names])
    return {
        name: (taps.projected[name], delta.float())
        for name, delta in zip(names, deltas, strict=True)
    }


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
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    initial: dict[int, dict[str, torch.Tensor]],
    adamw: AdamWSettings,
    *,
    scaling: float,
    task: Task,
    steps: int,
) -> Updates:
    """``steps`` AdamW steps for every instance on its own stacked factors, seed after seed.

    ``initial``: seed -> name -> A_0 (r, d_in). Returns seed -> name -> (B (N, d_out, r),
    A (N, r, d_in)).
    """
    updates: Updates = {}
    for seed, factors in initial.items():
        lora = StackedLora(model, list(factors), scaling)
        lora.start(factors, labels.shape[0])
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
                summed_loss(model, batch, labels, task).backward()
                optimizer.step()
        updates[seed] = {name: (lora.B[name].detach(), lora.A[name].detach()) for name in factors}
    return updates
