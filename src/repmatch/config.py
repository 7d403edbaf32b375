"""Every job's configuration: typed, validated in one place, saved as JSON next to its output.

Each field carries its help text (``metadata["help"]``), which the command line shows, so the
library and the CLI cannot drift apart. Validation errors name the field and the bad value.
This module imports nothing heavy, so building the CLI parser from it stays instant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from repmatch.errors import RepmatchError

Side = Literal["left", "right"]
"""Which singular vectors of ΔW are compared: left (column space, default) or right."""

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""Portable name of the bundled default model (resolved to the installed package's folder)."""

DEFAULT_HEAD_SEED = 42
"""Seed of the frozen classification head, as in the reference script (training and scoring)."""


def _field(default: Any, help: str) -> Any:
    """A dataclass field with its help text."""
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed in configs")
    return field(default=default, metadata={"help": help})


def help_text(config: type, name: str) -> str:
    """The help text of field ``name`` of config class ``config``."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(config) if f.name == name)


def to_json(config: Any) -> dict[str, Any]:
    """A config as a JSON-ready dict: tuples become lists (as they come back from JSON)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return {key: plain(value) for key, value in dataclasses.asdict(config).items()}


def check_positive(config: Any, *names: str) -> None:
    """Raise unless every named field is a number > 0."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise RepmatchError(f"{name} must be positive, got {value!r}", field=name)


def check_whole(config: Any, *names: str) -> None:
    """Raise unless every named field is a whole number (not a bool)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RepmatchError(f"{name} must be a whole number, got {value!r}", field=name)


def check_seeds(seeds: tuple[int, ...], name: str = "seeds") -> tuple[int, ...]:
    """Seeds as a tuple of distinct whole numbers; raise if empty or repeated."""
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise RepmatchError(f"{name} must be distinct and non-empty, got {list(seeds)}", field=name)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise RepmatchError(f"{name} must be whole numbers >= 0, got {seed!r}", field=name)
    return seeds


def check_side(side: str) -> None:
    if side not in ("left", "right"):
        raise RepmatchError(f"side must be 'left' or 'right', got {side!r}", field="side")


@dataclass(frozen=True)
class AdamWSettings:
    """AdamW hyper-parameters (torch's defaults but for lr)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        check_positive(self, "lr", "eps")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise RepmatchError(f"betas must be two numbers in [0, 1), got {list(betas)}", "betas")
        if self.weight_decay < 0:
            raise RepmatchError(
                f"weight_decay must be >= 0, got {self.weight_decay!r}", field="weight_decay"
            )
        object.__setattr__(self, "betas", betas)


@dataclass(frozen=True)
class TrainConfig:
    """How to train one adapter. Paper values (Sections 4-6, BERT-base) are noted per field."""

    model: str = _field(BUNDLED_MODEL, "hub id or local folder (default: the bundled model)")
    rank: int = _field(4, "LoRA rank (paper: 4 for datasets, 1 for instances)")
    alpha: float = _field(8.0, "LoRA alpha; the update is scaled by alpha / rank")
    lr: float = _field(1e-3, "AdamW learning rate (paper: 1e-5 over 5-10 epochs)")
    weight_decay: float = _field(0.01, "AdamW weight decay (torch's default)")
    epochs: int = _field(1, "epochs (paper: 10 for sentiment, 5 otherwise)")
    batch_size: int = _field(16, "instances per optimizer step (paper: 40)")
    seed: int = _field(0, "seed of the LoRA init and the batch order")
    head_seed: int = _field(DEFAULT_HEAD_SEED, "seed of the classification head's init")
    max_length: int = _field(128, "truncate inputs to this many tokens")
    targets: tuple[str, ...] = _field(
        ("value",), "LoRA targets: roles value/query/key or module names"
    )
    train_head: bool = _field(False, "train the head too (paper: frozen at its seeded init)")
    lora_dropout: float = _field(0.0, "LoRA dropout")
    base_dropout: bool = _field(False, "keep the base model's dropout on while training")
    num_labels: int | None = _field(None, "head size (default: classes in the data's split)")

    def __post_init__(self) -> None:
        check_positive(self, "rank", "lr", "epochs", "batch_size", "max_length", "alpha")
        check_whole(self, "rank", "epochs", "batch_size", "max_length", "seed", "head_seed")
        if self.weight_decay < 0:
            raise RepmatchError(
                f"weight_decay must be >= 0, got {self.weight_decay!r}", field="weight_decay"
            )
        if not 0 <= self.lora_dropout < 1:
            raise RepmatchError(
                f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}", field="lora_dropout"
            )
        if isinstance(self.targets, str) or not self.targets:
            raise RepmatchError(
                f"targets must name at least one module, e.g. ('value',), got {self.targets!r}",
                field="targets",
            )
        if self.num_labels is not None and self.num_labels < 1:
            raise RepmatchError(
                f"num_labels must be at least 1, got {self.num_labels}", field="num_labels"
            )
        object.__setattr__(self, "targets", tuple(self.targets))

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)


@dataclass(frozen=True)
class ScoreConfig:
    """How instances are scored. Defaults follow the paper: one AdamW step, lr 1e-3, rank 1."""

    rank: int = _field(1, "LoRA rank of every instance's update (paper: 1; 4 ranks more stably)")
    alpha: float = _field(4.0, "LoRA alpha (the reference script's)")
    lr: float = _field(1e-3, "AdamW learning rate of the per-instance steps")
    steps: int = _field(1, "optimizer steps per instance")
    weight_decay: float = _field(0.01, "AdamW weight decay (torch's default, as the reference)")
    betas: tuple[float, float] = _field((0.9, 0.999), "AdamW betas")
    eps: float = _field(1e-8, "AdamW epsilon")
    seeds: tuple[int, ...] = _field((0,), "LoRA init seeds; several = a seed ensemble")
    side: Side = _field("left", "singular vectors to compare (left or right)")
    targets: tuple[str, ...] | None = _field(
        None, "layers to score (default: every layer of the reference adapter)"
    )
    batch_size: int = _field(64, "instances per forward/backward")
    max_length: int = _field(512, "truncate inputs to this many tokens")
    chunk_size: int = _field(4096, "instances per saved chunk, the unit of resuming")
    model: str | None = _field(None, "base model (default: the reference adapter's)")

    def __post_init__(self) -> None:
        check_positive(self, "rank", "lr", "steps", "batch_size", "max_length", "chunk_size")
        check_positive(self, "alpha")
        check_whole(self, "rank", "steps", "batch_size", "max_length", "chunk_size")
        object.__setattr__(self, "seeds", check_seeds(self.seeds))
        check_side(self.side)
        if self.targets is not None:
            if isinstance(self.targets, str) or not self.targets:
                raise RepmatchError(
                    f"targets must be None or name at least one module, got {self.targets!r}",
                    field="targets",
                )
            object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "betas", self.adamw.betas)  # validated there

    @property
    def adamw(self) -> AdamWSettings:
        return AdamWSettings(self.lr, tuple(self.betas), self.eps, self.weight_decay)

    @property
    def scaling(self) -> float:
        """LoRA's scale s = alpha / rank of every per-instance update."""
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``'key: old -> new'`` for every key whose value differs between two JSON configs."""
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
