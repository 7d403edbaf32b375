"""``repmatch train``: one LoRA adapter on a data subset."""

from __future__ import annotations

import argparse

from repmatch.cli import common


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a LoRA adapter on a data subset")
    common.add_data_arguments(parser)
    common.add_train_arguments(parser)
    common.add_seed_only(parser)
    parser.add_argument("--out", required=True, help="adapter folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    common.add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from repmatch import distributed
    from repmatch.training import train_adapter

    out = train_adapter(
        common.data_spec(args),
        common.train_config(args),
        args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )
    if distributed.is_main():  # under torchrun: the main process reports
        print(f"adapter saved to {out}")
