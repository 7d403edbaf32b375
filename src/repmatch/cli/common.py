"""Flags that several commands share, and turning parsed flags into configs and data specs."""

from __future__ import annotations

import argparse
import unicodedata
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from repmatch.config import DTYPES, TrainConfig, help_text

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from repmatch.data import DataSpec

Config = TypeVar("Config", bound="DataclassInstance")

TRAIN_DEFAULTS_NOTE = (
    "Defaults suit short CPU runs on the bundled model; the paper (BERT-base) used rank 4, "
    "lr 1e-5, batch size 40, 10 epochs for sentiment and 5 otherwise, AdamW, value projections, "
    "head frozen at a seed-42 init."
)


def shown(value: object) -> str:
    """``value`` as text safe to print: control and format characters (escape sequences, line
    breaks, bidi overrides) written as Python escapes (``\\x1b``), so data cannot drive the
    terminal or fake an output line."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char).startswith("C")
        else char
        for char in str(value)
    )


def add_data_arguments(
    parser: argparse.ArgumentParser, *, many: bool = False, positional: bool = True
) -> None:
    """The DATA argument (``positional``; several with ``many``) and the data options."""
    if many:
        parser.add_argument(
            "data",
            nargs="+",
            metavar="DATA",
            help="datasets: files, folders of split files or hub names; DATA@SPLIT picks a split "
            "(a file whose name holds @ is read as that file)",
        )
    elif positional:
        parser.add_argument(
            "data", metavar="DATA", help="a data file, a folder of split files, or a hub name"
        )
    group = parser.add_argument_group("data")
    group.add_argument("--split", help="split to use in a folder or hub dataset (default: train)")
    group.add_argument("--hub-config", help="configuration name of a hub dataset (e.g. sst2)")
    group.add_argument("--text-column", help="text column (auto: text, sentence, premise, ...)")
    group.add_argument("--text-pair-column", help="second text column (auto: hypothesis, ...)")
    group.add_argument("--label-column", help="label column (auto: label, labels, score, ...)")
    group.add_argument("--id-column", help="stable id column (auto: id/idx, else row index)")
    group.add_argument(
        "--task",
        choices=["classification", "pair-classification", "regression", "extractive-qa"],
        help="task kind (auto-detected from the columns and labels)",
    )
    subset = group.add_mutually_exclusive_group()
    subset.add_argument("--limit", type=int, metavar="N", help="use the first N instances")
    subset.add_argument("--sample", type=int, metavar="N", help="use N random instances")
    group.add_argument("--sample-seed", type=int, default=0, help="seed of --sample (default 0)")
    group.add_argument("--indices-file", help="file of instance ids to keep, one per line")
    group.add_argument("--labels", nargs="+", metavar="LABEL", help="keep only these labels")
    group.add_argument(
        "--label-names",
        nargs="+",
        metavar="NAME",
        help="names of the integer labels 0, 1, ... in order (e.g. entailment neutral "
        "contradiction), to match them with named labels",
    )


def option(group: argparse._ActionsContainer, config: Any, name: str, **kwargs: Any) -> None:
    """Flag ``--name`` for field ``name`` of ``config``: its help text, default and type."""
    default = getattr(config, name)
    if isinstance(default, (int, float, str)):
        kwargs.setdefault("type", type(default))
    group.add_argument(
        "--" + name.replace("_", "-"),
        default=default,
        help=f"{help_text(type(config), name)} (default {default})",
        **kwargs,
    )


def add_shared_arguments(group: argparse._ArgumentGroup, d: Any) -> None:
    """Flags that training and scoring share, with the defaults of config ``d``."""
    for name in ("rank", "alpha", "lr", "weight_decay", "batch_size", "max_length"):
        option(group, d, name)
    option(group, d, "dtype", choices=list(DTYPES))


def add_device_argument(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (a CUDA GPU if there is one, else CPU), cpu, cuda, "
        "cuda:N (default auto)",
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    group = parser.add_argument_group("training", TRAIN_DEFAULTS_NOTE)
    option(group, d, "model")
    add_shared_arguments(group, d)
    for name in ("epochs", "head_seed", "lora_dropout"):
        option(group, d, name)
    option(group, d, "targets", nargs="+")
    group.add_argument(
        "--train-head", action="store_true", help=help_text(TrainConfig, "train_head")
    )
    group.add_argument(
        "--base-dropout", action="store_true", help=help_text(TrainConfig, "base_dropout")
    )
    group.add_argument("--num-labels", type=int, help=help_text(TrainConfig, "num_labels"))
    group.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help=help_text(TrainConfig, "gradient_checkpointing"),
    )


def add_seed_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=TrainConfig.seed, help=help_text(TrainConfig, "seed")
    )


def add_seed_arguments(group: argparse._ArgumentGroup, default: int, what: str) -> None:
    """``--seed S`` or ``--seeds S1 S2 ...`` (not both)."""
    seeds = group.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=default, help=f"{what} (default {default})")
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="several seeds in one run: mean, population std and the agreement between them",
    )


def data_spec(args: argparse.Namespace, source: str | None = None) -> DataSpec:
    from repmatch.data import DataSpec

    source = source or args.data
    split = args.split
    if "@" in source and "/" not in source.rsplit("@", 1)[1] and not Path(source).exists():
        source, split = source.rsplit("@", 1)
    return DataSpec(
        source=source,
        split=split,
        hub_config=args.hub_config,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        id_column=args.id_column,
        task=args.task,
        limit=args.limit,
        sample=args.sample,
        seed=args.sample_seed,
        indices_file=args.indices_file,
        labels=tuple(args.labels) if args.labels else None,
        label_names=tuple(args.label_names) if args.label_names else None,
    )


def config_from(cls: type[Config], args: argparse.Namespace, **overrides: Any) -> Config:
    """Build a config dataclass from the parsed flags named like its fields."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**(values | overrides))


def train_config(args: argparse.Namespace) -> TrainConfig:
    return config_from(TrainConfig, args)
