"""The options every ``experiments/`` script shares: which model, where it runs, in which
precision, how many tokens it reads, and size flags that accept ``all``.

A script adds them with :func:`add_arguments` (plus :func:`size` as the ``type`` of its own size
flags, and :func:`sized` to cut a split to one; :func:`add_reference_arguments` where it trains
references), reads them back with :meth:`ExperimentOptions.from_args`, passes every repmatch
config through :meth:`ExperimentOptions.apply` and ``device=options.device`` to every API call,
and puts :meth:`ExperimentOptions.record` (the settings actually used) into its JSON summary::

    options = ExperimentOptions.from_args(args)
    train = options.apply(TrainConfig(), max_length=256)  # 256: this dataset's own default
    train_or_reuse(examples, train, folder, device=options.device)
    summary["options"] = options.record()
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from repmatch.cli import common
from repmatch.config import BUNDLED_MODEL, Dtype, TrainConfig
from repmatch.data import DataSpec, as_examples
from repmatch.errors import RepmatchError
from repmatch.models import portable_model_name, resolve_device

DTYPE_CHOICES = ("float32", "bfloat16")
"""Precisions offered here: float16 is refused by scoring (see :class:`repmatch.ScoreConfig`)."""

Config = TypeVar("Config")


def size(text: str) -> int | None:
    """A size flag's value: a whole number >= 1, or ``all`` (``None``: the whole split)."""
    if text.lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        message = f"expected a whole number or 'all', got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or 'all', got {text!r}")
    return value


def sized(source: tuple[str, str | None], root: Path, n: int | None) -> DataSpec:
    """The split ``source`` (folder or file under ``root``, split): whole, or a seeded random
    sample of ``n`` where it is larger (``None``: whole): what a :func:`size` flag asks for."""
    path, split = source
    spec = DataSpec(source=str(root / path), split=split)
    if n is None or len(as_examples(spec)) <= n:
        return spec
    return replace(spec, sample=n, seed=0)


@dataclass(frozen=True)
class ExperimentOptions:
    """Model, device, precision and input length of an experiment's runs.

    ``max_length=None`` keeps each dataset's own default (e.g. 256 tokens for SQuAD) or, without
    one, the config's; ``device`` is what repmatch's API accepts (``auto``: a CUDA GPU if there is
    one, else the CPU).
    """

    model: str = BUNDLED_MODEL
    device: str = "auto"
    dtype: Dtype = "float32"
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_CHOICES:
            raise RepmatchError(
                f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {self.dtype!r}", "dtype"
            )
        if self.max_length is not None and (
            isinstance(self.max_length, bool)
            or not isinstance(self.max_length, int)
            or self.max_length < 1
        ):
            raise RepmatchError(
                f"max_length must be a whole number >= 1, got {self.max_length!r}", "max_length"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExperimentOptions:
        return cls(
            model=args.model, device=args.device, dtype=args.dtype, max_length=args.max_length
        )

    def length(self, default: int) -> int:
        """``--max-length`` where given, else ``default`` (a dataset's own)."""
        return default if self.max_length is None else self.max_length

    def apply(self, config: Config, *, max_length: int | None = None) -> Config:
        """``config`` (any repmatch config dataclass) with the fields it has among ``model``,
        ``dtype`` and ``max_length`` set from these options; ``max_length``: the dataset's own
        default, used where ``--max-length`` is not given (else the config's own stays)."""
        names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
        values: dict[str, Any] = {"model": self.model, "dtype": self.dtype}
        length = self.max_length if self.max_length is not None else max_length
        if length is not None:
            values["max_length"] = length
        return dataclasses.replace(  # type: ignore[type-var]
            config, **{name: value for name, value in values.items() if name in names}
        )

    def record(self) -> dict[str, Any]:
        """The settings actually used, for a summary: the model's portable name, the device it
        resolved to (and the GPU's name), the precision and ``max_length`` (``None``: each
        dataset's default)."""
        device = resolve_device(self.device)
        record: dict[str, Any] = {
            "model": portable_model_name(self.model),
            "device": str(device),
            "dtype": self.dtype,
            "max_length": self.max_length,
        }
        if device.type == "cuda":
            record["device_name"] = torch.cuda.get_device_name(device)
        return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--dtype`` and ``--max-length``, with their defaults."""
    group = parser.add_argument_group("model and device")
    common.option(group, TrainConfig(), "model")
    common.add_device_argument(group)
    group.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPE_CHOICES,
        help="precision of the model's matmuls by autocast; weights stay float32 (default float32)",
    )
    group.add_argument(
        "--max-length",
        type=int,
        help="truncate inputs to this many tokens (default: each dataset's own, e.g. SQuAD 256)",
    )


REFERENCE_FLAGS = ("ref_rank", "ref_alpha", "ref_lr", "ref_batch", "ref_epochs", "ref_targets")
"""The attributes :func:`add_reference_arguments` adds to the parsed arguments."""


def add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ref-rank``, ``--ref-alpha``, ``--ref-lr``, ``--ref-batch``, ``--ref-epochs`` and
    ``--ref-targets``: the reference adapters instances are scored against, with the paper's
    settings as defaults (rank 1, batch 40, lr 1e-3; 10 epochs sentiment, 5 otherwise)."""
    group = parser.add_argument_group("references (paper: rank 1, batch 40)")
    group.add_argument("--ref-rank", type=int, default=1)
    group.add_argument("--ref-alpha", type=float, default=TrainConfig.alpha)
    group.add_argument(
        "--ref-lr", type=float, default=1e-3, help="paper: 1e-3 instance level, 1e-5 dataset level"
    )
    group.add_argument("--ref-batch", type=int, default=40)
    group.add_argument(
        "--ref-epochs", type=int, default=None, help="default: 10 sentiment, 5 otherwise"
    )
    group.add_argument("--ref-targets", nargs="+", default=list(TrainConfig.targets))


def reference_config(args: argparse.Namespace) -> TrainConfig:
    """The reference adapters' :class:`TrainConfig` from :func:`add_reference_arguments`' flags,
    all but the epochs (``--ref-epochs`` may depend on the dataset: :func:`paper_epochs`)."""
    return TrainConfig(
        rank=args.ref_rank,
        alpha=args.ref_alpha,
        lr=args.ref_lr,
        batch_size=args.ref_batch,
        targets=tuple(args.ref_targets),
    )


def paper_epochs(given: int | None, *, sentiment: bool) -> int:
    """``given`` epochs where set, else the paper's: 10 for a sentiment dataset, 5 otherwise."""
    return given or (10 if sentiment else 5)
