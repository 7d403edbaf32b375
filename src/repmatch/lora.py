"""LoRA on a model: which Linear layers it targets, its seeded init, wrapping, layer names.

Targets are found by module type and name (``value`` is ``value`` in BERT, ``v_lin`` in
DistilBERT, ``v_proj`` in LLaMA-style decoders, ...), never by architecture paths. Every seeded
draw happens under :func:`torch.random.fork_rng`, so the caller's global RNG state is untouched.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from repmatch.errors import RepmatchError

TARGET_ROLES: dict[str, tuple[str, ...]] = {
    "value": ("value", "v_lin", "v_proj", "v"),
    "query": ("query", "q_lin", "q_proj", "q"),
    "key": ("key", "k_lin", "k_proj", "k"),
}
"""Attention projections by role: BERT/RoBERTa/ELECTRA, DistilBERT, LLaMA/Qwen/Mistral, MPNet/T5."""


def find_target_modules(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Full names of the Linear modules LoRA goes on, in model order.

    Each target is a role (``value``, ``query``, ``key``: the projection of that role in any
    supported architecture) or a module name suffix (e.g. ``dense``). Only the encoder (the
    model's ``base_model_prefix`` submodule) is searched, so the head is never a target.
    """
    prefix_name = getattr(model, "base_model_prefix", "")
    encoder = getattr(model, prefix_name, model) if prefix_name else model
    prefix = prefix_name + "." if encoder is not model else ""
    found: list[str] = []
    for target in targets:
        names = TARGET_ROLES.get(target, (target,))
        matches = [
            prefix + full
            for full, module in encoder.named_modules()
            if isinstance(module, nn.Linear) and full.rsplit(".", 1)[-1] in names
        ]
        if not matches:
            raise RepmatchError(
                f"no Linear module for LoRA target '{target}' in {type(model).__name__} "
                f"(looked for module names {', '.join(names)}); name a module of this model",
                field="targets",
            )
        found.extend(matches)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(set(found), key=order.__getitem__)


def check_rank(model: nn.Module, target_names: list[str], rank: int) -> None:
    """Raise unless ``rank`` fits every target layer."""
    for name in target_names:
        layer: Any = model.get_submodule(name)  # a linear layer: in_features, out_features
        largest = min(layer.in_features, layer.out_features)
        if rank > largest:
            raise RepmatchError(
                f"rank {rank} is larger than layer {name} ({layer.out_features}x"
                f"{layer.in_features}); choose rank <= {largest}",
                field="rank",
            )


def lora_config(
    target_names: list[str],
    *,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    modules_to_save: list[str] | None = None,
) -> LoraConfig:
    """PEFT's LoRA configuration for exactly these layers."""
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # PEFT annotates int; it scales by any number
        lora_dropout=dropout,
        target_modules=target_names,
        modules_to_save=modules_to_save,
    )


def wrap_with_lora(model: nn.Module, config: LoraConfig, seed: int) -> nn.Module:
    """``get_peft_model(model, config)`` with the LoRA init drawn from ``seed`` (B = 0, A random).

    The draw equals ``torch.manual_seed(seed); get_peft_model(...)`` without touching the
    caller's RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def draw_lora_init(
    model: nn.Module, target_names: list[str], *, rank: int, alpha: float, seeds: tuple[int, ...]
) -> dict[int, dict[str, torch.Tensor]]:
    """The A_0 factors PEFT draws for each seed: seed -> name -> (r, d_in), on the CPU.

    PEFT itself draws them on a copy of ``model``, so scores match a loop built on PEFT.
    """
    check_rank(model, target_names, rank)
    config = lora_config(target_names, rank=rank, alpha=alpha)
    initial = {}
    for seed in seeds:
        wrapped: Any = wrap_with_lora(copy.deepcopy(model).cpu(), config, seed)
        initial[seed] = {
            name: wrapped.base_model.model.get_submodule(name).lora_A["default"].weight.detach()
            for name in target_names
        }
    return initial


def short_layer_name(module_name: str) -> str:
    """'bert.encoder.layer.3.attention.self.value' -> 'layer 3 value'."""
    numbers = re.findall(r"\.(\d+)\.", f".{module_name}.")
    leaf = module_name.rsplit(".", 1)[-1]
    return f"layer {numbers[0]} {leaf}" if numbers else module_name
