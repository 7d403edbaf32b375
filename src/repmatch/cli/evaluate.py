"""``repmatch evaluate``: fine-tune on training subsets under several seeds and evaluate them."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from repmatch.cli import common
from repmatch.config import DTYPES, EvalConfig, help_text
from repmatch.errors import RepmatchError


def register(commands: argparse._SubParsersAction) -> None:
    d = EvalConfig()
    parser = commands.add_parser(
        "evaluate",
        help="fine-tune on training subsets (several seeds) and evaluate on held-out data",
        description="For every --train subset and each of --seeds N seeds (0..N-1): fine-tune "
        "the base model on the subset, predict the --eval data and compute the task's metrics "
        "(accuracy and macro-F1, Pearson and Spearman, or exact match and F1). Prints mean ± "
        "sample std per subset; --out DIR writes results.csv (per subset), runs.csv (per run) "
        "and results.json, and keeps every finished run so an interrupted call resumes.",
    )
    parser.add_argument(
        "--train",
        action="append",
        required=True,
        metavar="FILE",
        help="a training subset (e.g. written by repmatch select); repeat for several",
    )
    parser.add_argument(
        "--eval",
        required=True,
        metavar="DATA",
        help="evaluation data (DATA@SPLIT picks a split); the data options below apply to it",
    )
    common.add_data_arguments(parser, positional=False)
    group = parser.add_argument_group("fine-tuning")
    group.add_argument(
        "--seeds",
        type=int,
        default=len(d.seeds),
        metavar="N",
        help=f"runs per subset, seeds 0..N-1 (default {len(d.seeds)}; paper: 3)",
    )
    common.option(group, d, "method", choices=["full", "lora"])
    common.option(group, d, "model")
    for name in ("epochs", "batch_size", "weight_decay", "max_length", "rank", "alpha"):
        common.option(group, d, name)
    group.add_argument("--lr", type=float, help=help_text(EvalConfig, "lr"))
    common.option(group, d, "eval_batch_size")
    common.option(group, d, "dtype", choices=list(DTYPES))
    common.option(group, d, "unseen_classes", choices=["error", "include"])
    group.add_argument(
        "--no-dropout", action="store_true", help="switch the model's dropout off while training"
    )
    parser.add_argument("--out", metavar="DIR", help="folder for the results (resumable)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_device_argument(parser)
    parser.set_defaults(run=run, resume_hint=resume_hint)


def run(args: argparse.Namespace) -> None:
    from repmatch.evaluation import evaluate_subsets

    config = common.config_from(
        EvalConfig, args, seeds=_seeds(args.seeds), dropout=not args.no_dropout
    )
    result = evaluate_subsets(
        args.train,
        common.data_spec(args, source=args.eval),
        config,
        out=args.out,
        progress=not args.quiet and not args.json,
        device=args.device,
    )
    record = result.record
    for note in record["notes"]:
        print(f"note: {common.shown(note)}", file=sys.stderr)
    if args.json:
        print(json.dumps({"summary": record["summary"], "runs": record["runs"]}))
        return
    evaluation = record["evaluation"]
    precision = "" if config.dtype == "float32" else f", {config.dtype}"
    print(
        f"{config.method} fine-tuning, {config.epochs} epochs, lr {config.lr:g}, batch size "
        f"{config.batch_size}, seeds 0..{len(config.seeds) - 1}{precision}; evaluated on "
        f"{common.shown(evaluation['data_name'])} ({evaluation['num_examples']} instances)"
    )
    names = [common.shown(row["subset"]) for row in record["summary"]]
    width = max(len("subset"), *map(len, names))
    header = f"{'subset':<{width}}  {'n':>5}" + "".join(f"  {m:>17}" for m in result.metrics)
    print(header + "  s/run")
    for name, row in zip(names, record["summary"], strict=True):
        cells = "".join(
            f"  {_mean_std(row[f'{m}_mean'], row[f'{m}_std']):>17}" for m in result.metrics
        )
        print(f"{name:<{width}}  {row['num_train']:>5}{cells}  {row['seconds_mean']:.1f}")
    if args.out:
        print(f"results written to {args.out}/results.csv and {args.out}/results.json")


def _seeds(count: int) -> tuple[int, ...]:
    """The seeds 0..N-1 of ``--seeds N`` (a count, where other commands take a list of seeds)."""
    if count < 1:
        raise RepmatchError(
            f"seeds is a count: N >= 1 runs per subset, with seeds 0..N-1; got {count}",
            field="seeds",
        )
    return tuple(range(count))


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "nan"
    if std is None or math.isnan(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


def resume_hint(args: argparse.Namespace) -> str | None:
    """How an interrupted run goes on from its finished runs (None when there are none)."""
    from repmatch.evaluation import RUNS_FOLDER

    kept = Path(args.out) / RUNS_FOLDER if args.out else None
    if kept is None or not any(kept.glob("*")):
        return None
    return f"finished runs are kept in {kept}; rerun the same command to go on from them"
