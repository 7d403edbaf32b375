"""``repmatch train``: one LoRA adapter on a data subset."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from repmatch.cli import common

if TYPE_CHECKING:
    from repmatch.data import DataSpec


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a LoRA adapter on a data subset")
    common.add_data_arguments(parser)
    common.add_train_arguments(parser)
    common.add_seed_only(parser)
    parser.add_argument("--out", required=True, help="adapter folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    held = parser.add_argument_group(
        "held-out evaluation",
        "Did the adapter learn? Its metrics on held-out data and the majority-class rate go into "
        "repmatch.json. The column and --task/--labels options apply to it, not --limit/--sample/"
        "--indices-file.",
    )
    held.add_argument(
        "--eval",
        metavar="HELDOUT",
        help="held-out data to evaluate the trained adapter on (HELDOUT@SPLIT picks a split, "
        "e.g. data/sst2@validation)",
    )
    held.add_argument("--eval-sample", type=int, metavar="N", help="N random held-out instances")
    common.add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from repmatch import distributed
    from repmatch.errors import RepmatchError
    from repmatch.training import train_adapter

    if args.eval is None and args.eval_sample is not None:
        raise RepmatchError(
            "--eval-sample draws from --eval, which is not given; add --eval HELDOUT",
            field="eval_sample",
        )
    out = train_adapter(
        common.data_spec(args),
        common.train_config(args),
        args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
        heldout=None if args.eval is None else heldout_spec(args),
    )
    if distributed.is_main():  # under torchrun: the main process reports
        print(f"adapter saved to {out}")
        if args.eval is not None:
            print(heldout_line(out))


def heldout_spec(args: argparse.Namespace) -> DataSpec:
    """The held-out data: ``--eval`` read with the column, task and label options, whole (or
    ``--eval-sample`` instances of it)."""
    from repmatch.errors import RepmatchError

    spec = common.data_spec(args, source=args.eval)
    if spec.source == args.eval and not Path(spec.source).is_file():  # no @SPLIT given
        raise RepmatchError(
            f"--eval {args.eval} is a folder or hub dataset: name its held-out split, e.g. "
            f"--eval {args.eval}@validation",
            field="eval",
        )
    split = None if spec.source == args.eval else spec.split
    return replace(spec, split=split, limit=None, sample=args.eval_sample, indices_file=None)


def heldout_line(adapter: str | Path) -> str:
    """One line on how the adapter did on its held-out data."""
    from repmatch.adapters import load_adapter
    from repmatch.heldout import learning_verdict

    heldout = (load_adapter(adapter).record or {})["heldout"]
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in heldout["metrics"].items())
    line = f"held-out {heldout['data_name']} ({heldout['num_examples']} instances): {metrics}"
    majority = heldout["majority_rate"]
    if majority is None or "accuracy" not in heldout["metrics"]:
        return line
    verdict = learning_verdict(heldout["metrics"]["accuracy"], majority)
    return f"{line}; majority-class rate {majority:.4f}: {verdict}"
