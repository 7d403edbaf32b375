"""Training one LoRA adapter on a data subset and saving it as a PEFT adapter folder.

The output folder is written under a temporary name and renamed when complete, so an interrupted
run never leaves a half-written adapter. Next to PEFT's files it holds ``repmatch.json``: the full
:class:`TrainConfig`, the data description and its fingerprint, and the training losses.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm

from repmatch import __version__
from repmatch.adapters import RECORD_FILE
from repmatch.batching import EncodedExamples, length_grouped_batches
from repmatch.data import DataSpec, Examples, load_examples
from repmatch.errors import RepmatchError
from repmatch.models import (
    DEFAULT_MODEL,
    find_target_modules,
    head_module_names,
    load_classifier,
    load_tokenizer,
    portable_model_name,
    resolve_device,
    task_loss,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train one adapter. Paper values (Sections 4-6, BERT-base) are noted per field."""

    model: str = DEFAULT_MODEL
    rank: int = 4  # paper: 4 for datasets, 1 for instances
    alpha: float = 8.0  # reference script: 4 at rank 1
    lr: float = 1e-3  # paper: 1e-5 (10 epochs on full datasets); 1e-3 suits short runs here
    weight_decay: float = 0.01  # torch AdamW default, as in the reference script
    epochs: int = 1  # paper: 10 for sentiment, 5 otherwise
    batch_size: int = 16  # paper: 40
    seed: int = 0  # LoRA init and batch order
    head_seed: int = 42  # the reference script's head seed
    max_length: int = 128  # paper pads everything to 512; we pad per batch
    targets: tuple[str, ...] = ("value",)  # paper: value (reference script: query + value)
    train_head: bool = False  # paper: head frozen at its seeded init
    lora_dropout: float = 0.0
    base_dropout: bool = False  # the reference leaves the model's dropout on; off = reproducible
    num_labels: int | None = None  # head size; default: classes in the data's full split

    def __post_init__(self) -> None:
        positive = {
            "rank": self.rank,
            "lr": self.lr,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "alpha": self.alpha,
        }
        for name, value in positive.items():
            if not value > 0:
                raise RepmatchError(f"{name} must be positive, got {value!r}")
        if self.weight_decay < 0:
            raise RepmatchError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.lora_dropout < 1:
            raise RepmatchError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not self.targets:
            raise RepmatchError("targets must name at least one module, e.g. value")
        if self.num_labels is not None and self.num_labels < 1:
            raise RepmatchError(f"num_labels must be at least 1, got {self.num_labels}")
        object.__setattr__(self, "targets", tuple(self.targets))

    def to_dict(self) -> dict:
        return asdict(self) | {"targets": list(self.targets)}


def build_lora_model(model, config: TrainConfig, target_names: list[str]):
    """Wrap ``model`` with fresh LoRA factors drawn from ``config.seed`` (B = 0, as in PEFT)."""
    for name in target_names:
        layer = model.get_submodule(name)
        if config.rank > min(layer.in_features, layer.out_features):
            raise RepmatchError(
                f"rank {config.rank} is larger than layer {name} "
                f"({layer.out_features}x{layer.in_features}); choose --rank <= "
                f"{min(layer.in_features, layer.out_features)}"
            )
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_names,
        modules_to_save=head_module_names(model),
    )
    torch.manual_seed(config.seed)
    return get_peft_model(model, lora_config)


def check_labels(examples: Examples, num_labels: int) -> None:
    """Raise unless every label fits a head with ``num_labels`` outputs."""
    if examples.task == "regression":
        if num_labels != 1:
            raise RepmatchError(f"{examples.name} is a regression task: the head needs 1 output")
        return
    bad = np.flatnonzero((examples.labels < 0) | (examples.labels >= num_labels))
    if len(bad):
        raise RepmatchError(
            f"{len(bad)} labels of {examples.name} are outside the head's {num_labels} classes "
            f"(e.g. id {examples.ids[bad[0]]} has label {examples.labels[bad[0]]}); "
            "check the label column or the head size"
        )


def train_adapter(
    data: DataSpec | Examples,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Path:
    """Train LoRA on ``data`` and save the adapter folder ``out_dir``; returns its path.

    ``device``: where to train (default: a CUDA GPU if there is one, else the CPU).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RepmatchError(f"output path {out} exists and is not a folder; pass another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RepmatchError(
            f"output folder {out} already exists and is not empty; pass --overwrite"
        )
    examples = load_examples(data) if isinstance(data, DataSpec) else data
    if len(examples) == 0:
        raise RepmatchError(f"no instances to train on in {examples.name}")
    regression = examples.task == "regression"
    num_labels = 1 if regression else (config.num_labels or examples.num_labels)
    check_labels(examples, num_labels)

    device = resolve_device(device)
    started = time.perf_counter()
    tokenizer = load_tokenizer(config.model)
    model = load_classifier(
        config.model, num_labels=num_labels, head_seed=config.head_seed, regression=regression
    )
    target_names = find_target_modules(model, config.targets)
    peft_model = build_lora_model(model, config, target_names).to(device)  # init drawn on CPU
    for name, parameter in peft_model.named_parameters():
        parameter.requires_grad = "lora_" in name or (
            config.train_head and "modules_to_save" in name
        )
    losses = _fit(
        peft_model,
        EncodedExamples(tokenizer, examples, max_length=config.max_length),
        examples,
        config,
        regression=regression,
        progress=progress,
    )

    record = {
        "format": "repmatch-adapter/1",
        "repmatch_version": __version__,
        "model": portable_model_name(config.model),
        "train": config.to_dict(),
        "data": examples.spec.to_dict() if examples.spec else None,
        "data_name": examples.name,
        "data_fingerprint": examples.fingerprint(),
        "num_examples": len(examples),
        "task": examples.task,
        "num_labels": num_labels,
        "label_names": examples.label_names,
        "target_modules": target_names,
        "head_modules": head_module_names(model),
        "epoch_losses": losses,
        "seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
    }
    _save_atomically(peft_model, record, out, overwrite=overwrite)
    logger.info("saved adapter to %s (final loss %.4f)", out, losses[-1])
    return out


def _fit(
    peft_model,
    encoded: EncodedExamples,
    examples: Examples,
    config: TrainConfig,
    *,
    regression: bool,
    progress: bool,
) -> list[float]:
    """AdamW over the trainable parameters; returns the mean loss of each epoch."""
    device = next(peft_model.parameters()).device
    labels = torch.as_tensor(examples.labels, device=device)
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    rng = np.random.default_rng(config.seed)
    peft_model.train(config.base_dropout)  # dropout of the base model only when asked for
    for name, module in peft_model.named_modules():
        if ".lora_dropout." in name:
            module.train(config.lora_dropout > 0)
    epoch_losses = []
    steps = config.epochs * -(-len(examples) // config.batch_size)
    with tqdm(total=steps, desc=f"train {examples.name}", disable=not progress) as bar:
        for _ in range(config.epochs):
            total, count = 0.0, 0
            for positions in length_grouped_batches(encoded.lengths, config.batch_size, rng):
                logits = peft_model(**encoded.batch(positions, device=device)).logits
                loss = task_loss(logits, labels[positions], regression=regression)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(positions)
                count += len(positions)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.4f}")
            epoch_losses.append(total / count)
    peft_model.eval()
    return epoch_losses


def _save_atomically(peft_model, record: dict, out: Path, *, overwrite: bool) -> None:
    """Write into a hidden sibling folder, then swap it into place."""
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        peft_model.save_pretrained(str(partial))
        config_file = partial / "adapter_config.json"
        adapter_config = json.loads(config_file.read_text())
        adapter_config["base_model_name_or_path"] = record["model"]
        config_file.write_text(json.dumps(adapter_config, indent=2))
        (partial / RECORD_FILE).write_text(json.dumps(record, indent=2))
        if out.exists() and overwrite:
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
