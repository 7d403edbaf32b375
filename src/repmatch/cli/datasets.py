"""``repmatch datasets``: the pairwise RepMatch matrix between datasets."""

from __future__ import annotations

import argparse

from repmatch.cli import common
from repmatch.config import TrainConfig


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("datasets", help="pairwise RepMatch matrix between datasets")
    common.add_data_arguments(parser, many=True)
    common.add_train_arguments(parser)
    parser.add_argument("--out", required=True, help="folder for adapters and the matrix")
    common.add_seed_arguments(
        parser.add_argument_group("seeds"),
        TrainConfig.seed,
        "seed of the LoRA init and batch order; with --seeds, mean ± std over pairs of seeds",
    )
    parser.add_argument("--side", choices=["left", "right"], default="left")
    common.add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from repmatch.similarity import dataset_similarity

    specs = [common.data_spec(args, source) for source in args.data]
    result = dataset_similarity(
        specs,
        common.train_config(args),
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
