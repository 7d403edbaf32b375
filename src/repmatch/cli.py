"""The ``repmatch`` command line: parses arguments into configs and calls the public API.

Nothing here computes anything. Errors the user caused (:class:`RepmatchError`) are printed as one
line on stderr with exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from repmatch.errors import RepmatchError

TRAIN_DEFAULTS_NOTE = (
    "Defaults suit short CPU runs on the bundled model; the paper (BERT-base) used rank 4, "
    "lr 1e-5, batch size 40, 10 epochs for sentiment and 5 otherwise, AdamW, value projections, "
    "head frozen at a seed-42 init."
)


def _add_data_arguments(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    if many:
        parser.add_argument(
            "data",
            nargs="+",
            metavar="DATA",
            help="datasets: files, folders of split files or hub names; DATA@SPLIT picks a split",
        )
    else:
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
        choices=["classification", "pair-classification", "regression"],
        help="task kind (auto-detected from the columns and labels)",
    )
    subset = group.add_mutually_exclusive_group()
    subset.add_argument("--limit", type=int, metavar="N", help="use the first N instances")
    subset.add_argument("--sample", type=int, metavar="N", help="use N random instances")
    group.add_argument("--sample-seed", type=int, default=0, help="seed of --sample (default 0)")
    group.add_argument("--indices-file", help="file of instance ids to keep, one per line")
    group.add_argument("--labels", nargs="+", metavar="LABEL", help="keep only these labels")


def _add_shared_arguments(group: argparse._ArgumentGroup, d) -> None:
    """Flags that training and scoring share, with the defaults of config ``d``."""
    group.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank (default {d.rank})")
    group.add_argument("--alpha", type=float, default=d.alpha, help=f"LoRA alpha ({d.alpha})")
    group.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate ({d.lr})")
    group.add_argument(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help=f"AdamW weight decay (default {d.weight_decay})",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"instances per forward/backward (default {d.batch_size})",
    )
    group.add_argument(
        "--max-length",
        type=int,
        default=d.max_length,
        help=f"truncate inputs to this many tokens (default {d.max_length})",
    )


def _add_device_argument(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (a CUDA GPU if there is one, else CPU), cpu, cuda, "
        "cuda:N (default auto)",
    )


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from repmatch.training import TrainConfig

    d = TrainConfig()
    group = parser.add_argument_group("training", TRAIN_DEFAULTS_NOTE)
    group.add_argument(
        "--model", default=d.model, help=f"hub id or local folder (default: the bundled {d.model})"
    )
    _add_shared_arguments(group, d)
    group.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs ({d.epochs})")
    group.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"seed of the LoRA init and batch order (default {d.seed})",
    )
    group.add_argument(
        "--head-seed",
        type=int,
        default=d.head_seed,
        help=f"seed of the classification head init (default {d.head_seed})",
    )
    group.add_argument(
        "--targets",
        nargs="+",
        default=list(d.targets),
        help="LoRA targets: roles value/query/key or module names (default value)",
    )
    group.add_argument("--train-head", action="store_true", help="train the head too")
    group.add_argument(
        "--lora-dropout",
        type=float,
        default=d.lora_dropout,
        help=f"LoRA dropout (default {d.lora_dropout})",
    )
    group.add_argument(
        "--base-dropout",
        action="store_true",
        help="keep the base model's dropout on while training (off by default)",
    )
    group.add_argument("--num-labels", type=int, help="head size (default: classes in the data)")


def _data_spec(args: argparse.Namespace, source: str | None = None):
    from repmatch.data import DataSpec

    source = source or args.data
    split = args.split
    if "@" in source and "/" not in source.rsplit("@", 1)[1]:
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
    )


def _config(cls, args: argparse.Namespace, **overrides):
    """Build a config dataclass from the parsed flags named like its fields."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**(values | overrides))


def _train_config(args: argparse.Namespace):
    from repmatch.training import TrainConfig

    return _config(TrainConfig, args)


def _cmd_train(args: argparse.Namespace) -> None:
    from repmatch.training import train_adapter

    out = train_adapter(
        _data_spec(args),
        _train_config(args),
        args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )
    print(f"adapter saved to {out}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from repmatch.compare import compare_adapters, short_layer_name

    result = compare_adapters(
        args.first,
        args.second,
        side=args.side,
        shuffled_baseline=args.shuffled_baseline,
        baseline_seed=args.baseline_seed,
        allow_different_base=args.allow_different_base,
    )
    if args.heatmap:
        from repmatch.plotting import plot_layer_grids

        plot_layer_grids(result, args.heatmap)
        if result.baseline:
            path = Path(args.heatmap)
            plot_layer_grids(
                result.baseline,
                path.with_name(f"{path.stem}-shuffled{path.suffix}"),
                title=f"shuffled baseline = {result.baseline.score:.3f} ({result.side} side)",
            )
    if args.json:
        print(json.dumps(result.to_dict()))
        return
    print(f"RepMatch = {result.score:.4f}  ({result.side} singular vectors)")
    width = max(len(short_layer_name(name)) for name in result.layers)
    print(
        f"{'layer':<{width}}  {'grid':>5}  {'score':>6}" + ("  shuffled" if result.baseline else "")
    )
    for name, score in result.layers.items():
        grid = result.grids[name]
        line = (
            f"{short_layer_name(name):<{width}}  {grid.shape[0]}x{grid.shape[1]:<3}  {score:6.4f}"
        )
        if result.baseline:
            line += f"  {result.baseline.layers[name]:8.4f}"
        print(line)
    if result.baseline:
        print(f"shuffled baseline = {result.baseline.score:.4f}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)


def _cmd_datasets(args: argparse.Namespace) -> None:
    from repmatch.pairwise import dataset_similarity

    specs = [_data_spec(args, source) for source in args.data]
    result = dataset_similarity(
        specs,
        _train_config(args),
        args.out,
        seeds=tuple(args.seeds or [args.seed]),
        side=args.side,
        progress=not args.quiet,
        device=args.device,
    )
    width = max(len(name) for name in result.names)
    print(" " * width + "  " + "  ".join(f"{name[:12]:>12}" for name in result.names))
    for i, name in enumerate(result.names):
        cells = (
            f"{result.mean[i, j]:.3f}±{result.std[i, j]:.3f}"
            if len(result.seeds) > 1
            else f"{result.mean[i, j]:.4f}"
            for j in range(len(result.names))
        )
        print(f"{name:<{width}}  " + "  ".join(f"{cell:>12}" for cell in cells))
    print(f"written to {args.out}/matrix.csv, matrix.json, matrix.png")


def _score_config(args: argparse.Namespace):
    from repmatch.scoring import ScoreConfig

    return _config(ScoreConfig, args, seeds=tuple(args.seeds or [args.seed]))


def _cmd_score(args: argparse.Namespace) -> None:
    from repmatch.scoring import score_instances

    table = score_instances(
        _data_spec(args),
        args.reference,
        _score_config(args),
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )
    record = json.loads(Path(args.out + ".json").read_text())
    print(
        f"scored {len(table)} instances in {record['seconds']:.1f} s "
        f"({record['instances_per_second']:.1f}/s over the instances computed in this run); "
        f"written to {args.out}"
    )
    if record.get("seed_spearman"):
        pairs = ", ".join(f"{k}: {v:.3f}" for k, v in record["seed_spearman"].items())
        print(f"ranking agreement between seeds (Spearman): {pairs}")
    ranked = table.sort_values("score", kind="stable")
    for title, rows in (("most representative", ranked[::-1][:5]), ("least", ranked[:5])):
        print(f"{title}: " + ", ".join(f"{r.id} ({r.score:.3f})" for r in rows.itertuples()))


def _cmd_demo(args: argparse.Namespace) -> None:
    from repmatch.demo import run_demo

    run_demo(args.out, progress=not args.quiet, device=args.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repmatch",
        description="How similar are two pieces of training data from a model's point of view? "
        "Train LoRA adapters on them and compare the updates (RepMatch).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a LoRA adapter on a data subset")
    _add_data_arguments(train)
    _add_train_arguments(train)
    train.add_argument("--out", required=True, help="adapter folder to write")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_device_argument(train)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_cmd_train)

    compare = commands.add_parser("compare", help="RepMatch between two adapter folders")
    compare.add_argument("first", metavar="A", help="adapter folder")
    compare.add_argument("second", metavar="B", help="adapter folder")
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.add_argument(
        "--heatmap",
        metavar="FILE.png",
        help="draw the per-layer grids (and FILE-shuffled.png with --shuffled-baseline)",
    )
    compare.add_argument(
        "--side",
        choices=["left", "right"],
        default="left",
        help="singular vectors to compare (default left, as the reference code)",
    )
    compare.add_argument(
        "--shuffled-baseline",
        action="store_true",
        help="also score A against B's ΔW with shuffled entries (paper Fig. 1b)",
    )
    compare.add_argument("--baseline-seed", type=int, default=0, help="seed of the shuffle")
    compare.add_argument(
        "--allow-different-base",
        action="store_true",
        help="compare adapters whose recorded base models differ",
    )
    compare.set_defaults(run=_cmd_compare)

    datasets = commands.add_parser("datasets", help="pairwise RepMatch matrix between datasets")
    _add_data_arguments(datasets, many=True)
    _add_train_arguments(datasets)
    datasets.add_argument("--out", required=True, help="folder for adapters and the matrix")
    datasets.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="LoRA seeds; with several, report mean ± std over seed pairs",
    )
    datasets.add_argument("--side", choices=["left", "right"], default="left")
    _add_device_argument(datasets)
    datasets.add_argument("--quiet", action="store_true", help="no progress bars")
    datasets.set_defaults(run=_cmd_datasets)

    from repmatch.scoring import ScoreConfig

    d = ScoreConfig()
    score = commands.add_parser(
        "score",
        help="score every instance against a reference adapter (instance-level RepMatch)",
        description="Per instance: a fresh LoRA init (same seed for all), optimizer step(s) on "
        "that instance alone, RepMatch of its update against the reference adapter. Computed "
        "exactly for whole batches at once. Paper defaults: AdamW, lr 1e-3, one step, rank 1; "
        "dropout is off (the reference script leaves it on), so scores are reproducible.",
    )
    _add_data_arguments(score)
    group = score.add_argument_group("scoring")
    group.add_argument("--reference", required=True, help="adapter trained on the whole dataset")
    group.add_argument("--out", required=True, help="Parquet file to write (FILE.parquet)")
    _add_shared_arguments(group, d)
    group.add_argument(
        "--steps",
        type=int,
        default=d.steps,
        help=f"optimizer steps per instance (default {d.steps})",
    )
    seeds = group.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seed",
        type=int,
        default=d.seeds[0],
        help=f"seed of the fresh LoRA init (default {d.seeds[0]})",
    )
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="several LoRA seeds in one pass: mean, std and their Spearman",
    )
    group.add_argument(
        "--side",
        choices=["left", "right"],
        default=d.side,
        help="singular vectors to compare (default left)",
    )
    group.add_argument(
        "--targets",
        nargs="+",
        help="layers to score (default: every layer of the reference adapter)",
    )
    group.add_argument(
        "--chunk-size",
        type=int,
        default=d.chunk_size,
        help=f"instances per saved chunk, the unit of --resume ({d.chunk_size})",
    )
    group.add_argument("--model", help="base model (default: the reference adapter's)")
    group.add_argument("--resume", action="store_true", help="finish an interrupted run")
    group.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device_argument(group)
    score.set_defaults(run=_cmd_score)

    demo = commands.add_parser(
        "demo", help="end-to-end run on generated tasks with known relations (< 3 min on CPU)"
    )
    demo.add_argument(
        "--out", default="repmatch-demo", help="output folder (default repmatch-demo)"
    )
    _add_device_argument(demo)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        args.run(args)
    except RepmatchError as err:
        print(f"repmatch: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("repmatch: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
