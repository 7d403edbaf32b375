"""``repmatch demo``: an end-to-end run on generated tasks with known relations."""

from __future__ import annotations

import argparse

from repmatch.cli import common


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="end-to-end run on generated tasks with known relations (< 3 min on CPU)"
    )
    parser.add_argument(
        "--out", default="repmatch-demo", help="output folder (default repmatch-demo)"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=400,
        help="instances per generated task (default 400; the salted set has half as many)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the output of an earlier demo"
    )
    common.add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from repmatch.demo import run_demo

    run_demo(
        args.out,
        size=args.size,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )
