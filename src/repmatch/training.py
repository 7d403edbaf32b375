"""Training one LoRA adapter on a data subset and saving it as a PEFT adapter folder.

The output folder is written under a temporary name and renamed when complete, so an interrupted
run never leaves a half-written adapter. Next to PEFT's files it holds ``repmatch.json``: the full
:class:`TrainConfig`, the data description and its fingerprint, and the training losses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from repmatch.adapters import RECORD_FILE
from repmatch.artifacts import data_record, exclusive_output, run_record
from repmatch.batching import EncodedExamples, length_grouped_batches
from repmatch.config import TrainConfig
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.errors import RepmatchError
from repmatch.lora import check_rank, find_target_modules, lora_config, wrap_with_lora
from repmatch.models import (
    check_lengths,
    head_module_names,
    load_classifier,
    load_tokenizer,
    portable_model_name,
    resolve_device,
)
from repmatch.tasks import Task, get_task

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "adapter_key", "fit", "train_adapter", "train_or_reuse"]


def train_adapter(
    data: DataSpec | Examples | object,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Path:
    """Train LoRA on ``data`` and save the adapter folder ``out_dir``; returns its path.

    ``data``: a :class:`DataSpec`, :class:`Examples`, pandas DataFrame or ``datasets.Dataset``.

    ``device``: where to train (default: a CUDA GPU if there is one, else the CPU).
    """
    with exclusive_output(out_dir):  # one writer per output
        return _train_adapter(
            data, config, Path(out_dir), overwrite=overwrite, progress=progress, device=device
        )


def _train_adapter(
    data: DataSpec | Examples | object,
    config: TrainConfig,
    out: Path,
    *,
    overwrite: bool,
    progress: bool,
    device: str | torch.device | None,
) -> Path:
    if out.exists() and not out.is_dir():
        raise RepmatchError(f"output path {out} exists and is not a folder; choose another output")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RepmatchError(
                f"output folder {out} already exists and is not empty; set overwrite to replace it",
                field="overwrite",
            )
        if not (out / RECORD_FILE).is_file():
            raise RepmatchError(
                f"output folder {out} holds files repmatch did not write (no {RECORD_FILE}); "
                "refusing to delete it even with overwrite: choose another output"
            )
    examples = as_examples(data)
    if len(examples) == 0:
        raise RepmatchError(f"no instances to train on in {examples.name}")
    task = get_task(examples.task)
    num_labels = task.head_size(config.num_labels or examples.num_labels)
    task.check_labels(examples, num_labels)

    device = resolve_device(device)
    started = time.perf_counter()
    tokenizer = load_tokenizer(config.model)
    model = load_classifier(
        config.model, task=task, num_labels=num_labels, head_seed=config.head_seed
    )
    target_names = find_target_modules(model, config.targets)
    check_rank(model, target_names, config.rank)
    lora = lora_config(
        target_names,
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.lora_dropout,
        modules_to_save=head_module_names(model),
    )
    peft_model = wrap_with_lora(model, lora, config.seed).to(device)  # init drawn on the CPU
    for name, parameter in peft_model.named_parameters():
        parameter.requires_grad = "lora_" in name or (
            config.train_head and "modules_to_save" in name
        )
    encoded = EncodedExamples(tokenizer, examples, max_length=config.max_length)
    check_lengths(model, encoded.lengths, examples.ids, config.max_length)
    # dropout (when switched on) draws from a generator seeded here, not the caller's
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        losses = fit(
            peft_model,
            encoded,
            task.targets(examples, encoded),
            config,
            task=task,
            data_name=examples.name,
            progress=progress,
        )

    record = run_record(
        "adapter",
        model=portable_model_name(config.model),
        train=config.to_dict(),
        **data_record(examples),
        task=task.name,
        num_labels=num_labels,
        label_names=examples.label_names,
        target_modules=target_names,
        head_modules=head_module_names(model),
        epoch_losses=losses,
        seconds=round(time.perf_counter() - started, 2),
        device=str(device),
    )
    _save_atomically(peft_model, record, out, overwrite=overwrite)
    logger.info("saved adapter to %s (final loss %.4f)", out, losses[-1])
    return out


def fit(
    peft_model,
    encoded: EncodedExamples,
    labels: torch.Tensor,
    config: TrainConfig,
    *,
    task: Task,
    data_name: str,
    progress: bool,
) -> list[float]:
    """AdamW over the parameters of ``peft_model`` that require grad (a LoRA-wrapped model, or any
    model with ``.logits`` outputs: evaluation fine-tunes whole models with it); returns the mean
    loss of each epoch. Batch order from ``config.seed``; dropout draws from torch's global RNG,
    so callers seed it under ``torch.random.fork_rng``. Leaves the model in eval mode."""
    device = next(peft_model.parameters()).device
    labels = labels.to(device)
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
    steps = config.epochs * -(-len(encoded) // config.batch_size)
    with tqdm(total=steps, desc=f"train {data_name}", disable=not progress) as bar:
        for _ in range(config.epochs):
            total, count = 0.0, 0
            for positions in length_grouped_batches(encoded.lengths, config.batch_size, rng):
                batch = encoded.batch(positions, device=device)
                logits = task.logits(peft_model(**batch), batch)
                loss = task.loss(logits, labels[positions])
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


def adapter_key(config: TrainConfig, examples: Examples) -> str:
    """Short hash of everything that determines an adapter: training config and data."""
    payload = json.dumps(
        {"train": config.to_dict(), "data": examples.fingerprint()}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def train_or_reuse(
    examples: Examples,
    config: TrainConfig,
    folder: str | Path,
    *,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Path:
    """Train the adapter into ``folder`` unless one with the same config and data is there.

    An adapter trained on another device is reused: the device only changes rounding.
    """
    folder = Path(folder)
    record_file = folder / RECORD_FILE
    if record_file.is_file():
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError):
            record = {}
        if (
            record.get("train") == config.to_dict()
            and record.get("data_fingerprint") == examples.fingerprint()
        ):
            logger.info("reusing %s", folder)
            return folder
    return train_adapter(examples, config, folder, overwrite=True, progress=progress, device=device)
