"""Training one LoRA adapter on a data subset and saving it as a PEFT adapter folder.

The output folder is written under a temporary name and renamed when complete, so an interrupted
run never leaves a half-written adapter. Next to PEFT's files it holds ``repmatch.json``: the full
:class:`TrainConfig`, the data description and its fingerprint, and the training losses.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from repmatch import distributed
from repmatch.adapters import RECORD_FILE
from repmatch.artifacts import data_record, exclusive_output, output_set, run_record
from repmatch.batching import EncodedExamples, length_grouped_batches
from repmatch.config import TrainConfig, check_argument, key_json, with_defaults
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.errors import RepmatchError
from repmatch.heldout import check_heldout, record_heldout
from repmatch.lora import check_rank, find_target_modules, lora_config, wrap_with_lora
from repmatch.models import (
    ReadoutCut,
    align_pad_token,
    attention_kernel,
    check_lengths,
    checkpoint_without_dropout,
    compute_dtype,
    enable_gradient_checkpointing,
    head_module_names,
    load_classifier,
    load_tokenizer,
    portable_model_name,
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
    heldout: DataSpec | Examples | object | None = None,
) -> Path:
    """Train LoRA on ``data`` and save the adapter folder ``out_dir``; returns its path.

    ``data``: a :class:`DataSpec`, :class:`Examples`, pandas DataFrame or ``datasets.Dataset``.

    ``device``: where to train (default: a CUDA GPU if there is one, else the CPU).

    ``heldout``: data of the same kind to evaluate the trained adapter on, checked before
    training (its labels must be classes of the training data); the metrics and majority-class
    rate go under ``"heldout"`` in ``repmatch.json`` (see :mod:`repmatch.heldout`).

    Under a launcher (``torchrun``, see :mod:`repmatch.distributed`) the processes train one
    adapter with DistributedDataParallel: every process takes its slice of each batch of
    ``batch_size`` instances, and the main process writes the adapter.
    """
    check_argument(config, TrainConfig)
    device = distributed.start(device)  # under torchrun: this rank's device, the process group

    def claim(stack: ExitStack) -> None:
        stack.enter_context(exclusive_output(out_dir))  # one writer per output
        _check_output(Path(out_dir), overwrite=overwrite)

    with distributed.checked_on_main(claim):
        return _train_adapter(
            data, config, Path(out_dir), progress=progress, device=device, heldout=heldout
        )


def _check_output(out: Path, *, overwrite: bool) -> None:
    """Raise unless ``out`` may be written (absent, empty, or an adapter with ``overwrite``)."""
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


def _train_adapter(
    data: DataSpec | Examples | object,
    config: TrainConfig,
    out: Path,
    *,
    progress: bool,
    device: torch.device,
    heldout: DataSpec | Examples | object | None,
) -> Path:
    examples = as_examples(data)
    if len(examples) == 0:
        raise RepmatchError(f"no instances to train on in {examples.name}")
    task = get_task(examples.task)
    if config.num_labels is not None and not task.has_classes:
        raise RepmatchError(
            f"num_labels sets the number of classes, but {examples.name} is a {examples.task} "
            "task with a head of fixed size; leave num_labels unset",
            field="num_labels",
        )
    num_labels = task.head_size(config.num_labels or examples.num_labels)
    task.check_labels(examples, num_labels)
    if task.has_classes and num_labels < 2:
        raise RepmatchError(
            f"{examples.name} has one class only; a one-class head's loss "
            "is always 0, so the adapter would learn nothing: train on two or more classes, or "
            "set num_labels to the task's number of classes [--num-labels]"
        )
    if heldout is not None:  # refused before any training
        heldout = check_heldout(
            heldout,
            task=task,
            label_names=examples.label_names,
            num_labels=num_labels,
            train_fingerprint=examples.fingerprint(),
        )

    started = time.perf_counter()
    compute_dtype(config.dtype, device)  # float16 off CUDA refused before any work
    tokenizer = load_tokenizer(config.model)
    model = load_classifier(
        config.model, task=task, num_labels=num_labels, head_seed=config.head_seed
    )
    align_pad_token(tokenizer, model)  # decoders read the last token that is not padding
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
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
        torch.manual_seed(config.seed + distributed.rank())  # launched: each rank its own
        losses = fit(
            peft_model,
            encoded,
            task.loss_targets(examples, encoded),
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
        processes=distributed.world_size(),
    )
    if distributed.is_main():
        evaluate = None
        if heldout is not None:  # into the record before the folder is swapped into place
            evaluate = functools.partial(
                record_heldout, data=heldout, max_length=config.max_length, device=device
            )
        _save_atomically(peft_model, record, out, evaluate=evaluate)
        logger.info("saved adapter to %s (final loss %.4f)", out, losses[-1])
    distributed.barrier()  # the adapter exists on every process's return
    return out


def fit(
    peft_model: Any,
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
    so callers seed it under ``torch.random.fork_rng``. Leaves the model in eval mode. In a
    lower ``config.dtype`` the frozen weights of the model's body are cast to it, in place, and
    AdamW takes its fused step (trained weights and its state stay float32).

    With W > 1 processes (:mod:`repmatch.distributed`), every process computes the same batch
    order and takes a contiguous slice of each batch; its summed loss times W / (batch size)
    makes DistributedDataParallel's gradient average the batch mean, as in one process, however
    unevenly the batch splits.

    With dropout off, a head that reads one position of the last layer gets that layer at that
    position only (:class:`repmatch.models.ReadoutCut`, switched on where a probe shows the
    logits unchanged): the same gradients for less work."""
    device = next(peft_model.parameters()).device
    labels = labels.to(device)
    cut = _readout_cut(peft_model, task, config)
    processes = distributed.world_size()
    model = peft_model
    if processes > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            peft_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    dtype = compute_dtype(config.dtype, device)  # autocast: matmuls in dtype
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
        # one fused kernel for every tensor: 4.8x faster on the CPU (a full fine-tune's 22.7M
        # weights), but rounded differently (~1e-7), so float32 keeps torch's default loop and
        # the numbers of earlier runs
        fused=dtype != torch.float32,
    )
    rng = np.random.default_rng(config.seed)
    peft_model.train(config.base_dropout)  # dropout of the base model only when asked for
    for name, module in peft_model.named_modules():
        if ".lora_dropout." in name:
            module.train(config.lora_dropout > 0)
    checkpoint_without_dropout(peft_model)  # layers set to checkpoint do so, dropout or not
    autocast: dict[str, Any] = {
        "device_type": device.type,
        "dtype": dtype,
        "enabled": dtype != torch.float32,
    }
    _frozen_body_in(peft_model, dtype)  # trained weights (and AdamW's state) stay float32
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    epoch_losses = []
    sums_before = _trained_weight_sums(peft_model)
    steps = config.epochs * -(-len(encoded) // config.batch_size)
    quiet = not progress or not distributed.is_main()
    with tqdm(total=steps, desc=f"train {data_name}", disable=quiet) as bar:
        for _ in range(config.epochs):
            total, count = 0.0, 0
            for positions in length_grouped_batches(encoded.lengths, config.batch_size, rng):
                mine, weight = _share(positions, processes)
                batch = encoded.batch(mine, device=device)
                optimizer.zero_grad(set_to_none=True)
                # the cut holds through the backward pass, where checkpointed layers rerun
                with cut.applied(peft_model, batch["input_ids"]):
                    with torch.autocast(**autocast), attention_kernel(dtype, device):
                        logits = task.logits(model(**batch), batch).float()
                    if processes == 1:
                        loss = task.loss(logits, labels[mine])
                        summed = loss.item() * len(mine)
                    else:
                        loss = task.loss(logits, labels[mine], reduction="sum")
                        summed = loss.item() * weight
                        loss = loss * (weight * processes / len(positions))
                    if scaler is None:
                        loss.backward()
                    else:  # float16: the loss scaled against underflowing gradients
                        scaler.scale(loss).backward()
                if scaler is None:
                    optimizer.step()
                else:
                    scaler.step(optimizer)
                    scaler.update()
                total += summed
                count += len(positions)
                bar.update()
            reduced = distributed.all_reduce_sum(torch.tensor([total], dtype=torch.float64))
            epoch_losses.append(float(reduced) / count)
            bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}")
    peft_model.eval()
    _check_converged(peft_model, epoch_losses, data_name)
    if torch.equal(_trained_weight_sums(peft_model), sums_before):
        raise RepmatchError(
            f"training on {data_name} changed no weight: steps of lr {config.lr:g} are below "
            "float32's resolution (or the loss gave no gradient); raise the learning rate [--lr]"
        )
    factors_b = [p for name, p in peft_model.named_parameters() if ".lora_B." in name]
    if factors_b and not any(p.detach().any() for p in factors_b):  # weight decay moved A only
        raise RepmatchError(
            f"training on {data_name} left the LoRA update at zero (every B factor is still 0): "
            f"its steps vanished, e.g. gradients scaled by alpha / rank = "
            f"{config.alpha / config.rank:g} overflowed AdamW's moments; lower alpha [--alpha]"
        )
    return epoch_losses


def _trained_weight_sums(model: Any) -> torch.Tensor:
    """(P,) float64 sum of ``|w|`` of each trained parameter, on the CPU: the same before and
    after training only when no weight changed (or, vanishingly rarely, changes cancelled)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    return torch.stack([p.detach().double().abs().sum() for p in trained]).cpu()


def _check_converged(model: Any, epoch_losses: list[float], data_name: str) -> None:
    """Raise when training diverged: a NaN or infinite epoch loss or trained weight (a model
    like that predicts one arbitrary class, which would be reported as a result)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    if all(math.isfinite(loss) for loss in epoch_losses) and all(
        torch.isfinite(p).all() for p in trained
    ):
        return
    raise RepmatchError(
        f"training on {data_name} diverged: its loss or trained weights became NaN or infinite "
        f"(epoch losses {[round(x, 4) for x in epoch_losses]}); lower the learning rate (or an "
        "extreme alpha or weight decay), or rescale labels of extreme size [--lr]"
    )


def _readout_cut(model: Any, task: Task, config: TrainConfig) -> ReadoutCut:
    """The exact last-layer cut for training ``model`` (a PEFT model or a plain classifier):
    none when dropout is on (the cut would change which random masks are drawn)."""
    if not task.reads_one_position or config.base_dropout:
        return ReadoutCut()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model.eval()  # the probe compares logits, dropout off; fit sets the training modes next
    return ReadoutCut.probe(base)


def _frozen_body_in(model: Any, dtype: torch.dtype) -> None:
    """Cast the frozen weights of ``model``'s body (not its head, which is saved) to ``dtype``.

    Autocast runs every matmul in ``dtype`` anyway; weights kept float32 would be cast again in
    every step (for LoRA, most of the body). Trained weights are left float32, so the optimizer
    updates float32 values. Changes ``model`` in place; nothing for float32.
    """
    if dtype == torch.float32:
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for parameter in base.base_model.parameters():  # the body (transformers' base_model)
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(dtype)


def _share(positions: np.ndarray, processes: int) -> tuple[np.ndarray, float]:
    """This process's contiguous share of a batch, weighted 1; or a stand-in weighted 0.

    A process whose share is empty (a batch smaller than the number of processes) still runs
    one instance, weighted 0, so that every process takes part in the gradient average.
    """
    mine = np.array_split(positions, processes)[distributed.rank()]
    return (mine, 1.0) if len(mine) else (positions[:1], 0.0)


def _save_atomically(
    peft_model: Any,
    record: dict,
    out: Path,
    *,
    evaluate: Callable[[Path], object] | None = None,
) -> None:
    """Write the adapter folder staged beside ``out``, ``evaluate`` it there (held-out metrics
    into its record), then swap it in: an existing ``out`` (replaced with ``overwrite``,
    checked before training) stays whole until the new folder is in its place."""
    with output_set(out) as outputs:
        staged = outputs.path(out)
        peft_model.save_pretrained(str(staged))
        config_file = staged / "adapter_config.json"
        adapter_config = json.loads(config_file.read_text())
        adapter_config["base_model_name_or_path"] = record["model"]
        config_file.write_text(json.dumps(adapter_config, indent=2))
        (staged / RECORD_FILE).write_text(json.dumps(record, indent=2))
        if evaluate is not None:
            evaluate(staged)


def adapter_key(config: TrainConfig, examples: Examples) -> str:
    """Short hash of everything that determines an adapter: training config and data."""
    payload = json.dumps(
        {"train": key_json(config), "data": examples.fingerprint()}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def train_or_reuse(
    examples: Examples,
    config: TrainConfig,
    folder: str | Path,
    *,
    progress: bool = True,
    device: str | torch.device | None = None,
    heldout: DataSpec | Examples | object | None = None,
) -> Path:
    """Train the adapter into ``folder`` unless one with the same config and data is there.

    An adapter trained on another device is reused: the device only changes rounding.
    ``heldout``: as :func:`train_adapter`; a reused adapter not yet evaluated on that data is
    evaluated and its record updated.
    """
    folder = Path(folder)
    record_file = folder / RECORD_FILE
    if record_file.is_file():
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError):
            record = {}
        recorded = record.get("train")
        if (
            isinstance(recorded, dict)
            and with_defaults(TrainConfig, recorded) == config.to_dict()
            and record.get("data_fingerprint") == examples.fingerprint()
        ):
            logger.info("reusing %s", folder)
            if heldout is not None and distributed.is_main():
                record_heldout(folder, heldout, max_length=config.max_length, device=device)
            distributed.barrier()
            return folder
    return train_adapter(
        examples,
        config,
        folder,
        overwrite=True,
        progress=progress,
        device=device,
        heldout=heldout,
    )
