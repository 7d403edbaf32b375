"""``repmatch datasets``: the pairwise RepMatch matrix between datasets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from repmatch.cli import common
from repmatch.config import BaselineConfig, TrainConfig, help_text
from repmatch.errors import RepmatchError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("datasets", help="pairwise RepMatch matrix between datasets")
    common.add_data_arguments(parser, many=True)
    common.add_train_arguments(parser)
    parser.add_argument("--out", required=True, help="folder for adapters and the matrix")
    common.add_seed_arguments(
        parser.add_argument_group("seeds"),
        TrainConfig.seed,
        "seed of the LoRA init and batch order; with --seeds, mean ± population std over pairs of "
        "seeds",
    )
    parser.add_argument("--side", choices=["left", "right"], default="left")
    common.add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    d = BaselineConfig()
    group = parser.add_argument_group(
        "representation baseline",
        "the paper's Table 2 baseline beside the RepMatch matrix: % of instance pairs whose "
        "pooled [CLS] vectors of the base model (--model, inputs cut at --max-length) have a "
        "cosine above the threshold",
    )
    group.add_argument(
        "--baseline", action="store_true", help="also write baseline.csv and baseline.json"
    )
    group.add_argument(
        "--baseline-threshold",
        type=float,
        default=d.threshold,
        help=f"{help_text(BaselineConfig, 'threshold')} (default {d.threshold})",
    )
    group.add_argument(
        "--baseline-sample",
        type=int,
        default=d.sample,
        help=f"{help_text(BaselineConfig, 'sample')} (default {d.sample})",
    )
    parser.set_defaults(run=run, resume_hint=resume_hint)


def _baseline_config(args: argparse.Namespace, train: TrainConfig) -> BaselineConfig:
    """The baseline's settings; a bad one is blamed on its --baseline-* flag."""
    try:
        return BaselineConfig(
            model=train.model,
            max_length=train.max_length,
            threshold=args.baseline_threshold,
            sample=args.baseline_sample,
        )
    except RepmatchError as err:
        raise RepmatchError(str(err), f"baseline_{err.field}" if err.field else None) from None


def run(args: argparse.Namespace) -> None:
    from repmatch import distributed
    from repmatch.similarity import dataset_similarity

    specs = [common.data_spec(args, source) for source in args.data]
    train = common.train_config(args)
    baseline = _baseline_config(args, train) if args.baseline else None
    result = dataset_similarity(
        specs,
        train,
        args.out,
        seeds=tuple(args.seeds or [args.seed]),
        side=args.side,
        progress=not args.quiet,
        device=args.device,
        baseline=baseline,
    )
    if not distributed.is_main():  # under torchrun: the main process reports
        return
    names = [common.shown(name) for name in result.names]
    several = len(result.seeds) > 1
    print("RepMatch" + (" (mean ± population std over seed pairs)" if several else ""))
    _print_matrix(
        names,
        lambda i, j: (
            f"{result.mean[i, j]:.3f}±{result.std[i, j]:.3f}"
            if len(result.seeds) > 1
            else f"{result.mean[i, j]:.4f}"
        ),
    )
    written = "matrix.csv, matrix.json, matrix.png"
    if baseline is not None and result.baseline is not None:
        matrix = result.baseline
        print(f"representation baseline: % of pairs with cosine > {baseline.threshold}")
        _print_matrix(names, lambda i, j: f"{matrix.percent[i, j]:.2f}")
        written += ", baseline.csv, baseline.json"
    print(f"written to {args.out}/{written}")
    for note in result.notes:
        print(f"note: {common.shown(note)}", file=sys.stderr)


def _print_matrix(names: list[str], cell: Callable[[int, int], str]) -> None:
    """A square table: one row per name, ``cell(i, j)`` in every column."""
    width = max(len(name) for name in names)
    print(" " * width + "  " + "  ".join(f"{name[:12]:>12}" for name in names))
    for i, name in enumerate(names):
        cells = (cell(i, j) for j in range(len(names)))
        print(f"{name:<{width}}  " + "  ".join(f"{text:>12}" for text in cells))


def resume_hint(args: argparse.Namespace) -> str | None:
    """How an interrupted run goes on from its finished adapters (None when there are none)."""
    from repmatch.similarity import ADAPTERS_FOLDER

    kept = Path(args.out) / ADAPTERS_FOLDER if args.out else None
    if kept is None or not any(kept.glob("*")):
        return None
    return f"finished adapters are kept in {kept}; rerun the same command to go on from them"
