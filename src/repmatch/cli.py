"""The ``repmatch`` command line: parses arguments into configs and calls the public API.

Nothing here computes anything. Errors the user caused (:class:`RepmatchError`) are printed as one
line on stderr with exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from repmatch.config import ScoreConfig, TrainConfig, help_text
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


def _option(group: argparse._ActionsContainer, config, name: str, **kwargs) -> None:
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


def _add_shared_arguments(group: argparse._ArgumentGroup, d) -> None:
    """Flags that training and scoring share, with the defaults of config ``d``."""
    for name in ("rank", "alpha", "lr", "weight_decay", "batch_size", "max_length"):
        _option(group, d, name)


def _add_device_argument(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (a CUDA GPU if there is one, else CPU), cpu, cuda, "
        "cuda:N (default auto)",
    )


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    group = parser.add_argument_group("training", TRAIN_DEFAULTS_NOTE)
    _option(group, d, "model")
    _add_shared_arguments(group, d)
    for name in ("epochs", "head_seed", "lora_dropout"):
        _option(group, d, name)
    _option(group, d, "targets", nargs="+")
    group.add_argument(
        "--train-head", action="store_true", help=help_text(TrainConfig, "train_head")
    )
    group.add_argument(
        "--base-dropout", action="store_true", help=help_text(TrainConfig, "base_dropout")
    )
    group.add_argument("--num-labels", type=int, help=help_text(TrainConfig, "num_labels"))


def _add_seed_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=TrainConfig.seed, help=help_text(TrainConfig, "seed")
    )


def _add_seed_arguments(group: argparse._ArgumentGroup, default: int, what: str) -> None:
    """``--seed S`` or ``--seeds S1 S2 ...`` (not both)."""
    seeds = group.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=default, help=f"{what} (default {default})")
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="several seeds in one run: mean, std and the agreement between them",
    )


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


def _train_config(args: argparse.Namespace) -> TrainConfig:
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
    from repmatch.compare import compare_adapters
    from repmatch.lora import short_layer_name

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
    from repmatch.similarity import dataset_similarity

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


def _score_config(args: argparse.Namespace) -> ScoreConfig:
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
    summary = f"scored {record['computed']} instances in {record['seconds']:.1f} s"
    if record["computed"]:
        summary += f" ({record['instances_per_second']:.1f}/s)"
    if record["read_back"]:
        summary += f", read {record['read_back']} back from the interrupted run"
    print(f"{summary}; {len(table)} written to {args.out}")
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
    _add_seed_only(train)
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
    _add_seed_arguments(
        datasets.add_argument_group("seeds"),
        TrainConfig.seed,
        "seed of the LoRA init and batch order; with --seeds, mean ± std over pairs of seeds",
    )
    datasets.add_argument("--side", choices=["left", "right"], default="left")
    _add_device_argument(datasets)
    datasets.add_argument("--quiet", action="store_true", help="no progress bars")
    datasets.set_defaults(run=_cmd_datasets)

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
    _option(group, d, "steps")
    _add_seed_arguments(group, d.seeds[0], "seed of the fresh LoRA init")
    _option(group, d, "side", choices=["left", "right"])
    group.add_argument("--targets", nargs="+", help=help_text(ScoreConfig, "targets"))
    _option(group, d, "chunk_size")
    group.add_argument("--model", help=help_text(ScoreConfig, "model"))
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


def _flag(field: str | None) -> str | None:
    """The command-line flag of a configuration or data spec field (None: not a flag)."""
    if field is None or field == "source":
        return None
    return "--seed / --sample-seed" if field == "seed" else "--" + field.replace("_", "-")


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
    previous = signal.signal(signal.SIGTERM, _terminate)  # clean up as for Ctrl-C
    try:
        args.run(args)
    except RepmatchError as err:
        flag = _flag(err.field)
        print(f"repmatch: error: {err}" + (f" [{flag}]" if flag else ""), file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as stop:
        terminated = isinstance(stop, _Terminated)
        print("repmatch: " + ("terminated" if terminated else "interrupted"), file=sys.stderr)
        partial = Path(f"{args.out}.partial") if args.command == "score" else None
        if partial is not None and partial.is_dir():
            print(
                f"repmatch: finished chunks are kept in {partial}; rerun with --resume to finish",
                file=sys.stderr,
            )
        return 143 if terminated else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


class _Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every cleanup runs."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


if __name__ == "__main__":
    sys.exit(main())
