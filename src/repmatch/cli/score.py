"""``repmatch score``: every instance against a reference adapter (instance-level RepMatch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from repmatch.cli import common
from repmatch.config import ScoreConfig, help_text


def register(commands: argparse._SubParsersAction) -> None:
    d = ScoreConfig()
    parser = commands.add_parser(
        "score",
        help="score every instance against a reference adapter (instance-level RepMatch)",
        description="Per instance: a fresh LoRA init (same seed for all), optimizer step(s) on "
        "that instance alone, RepMatch of its update against the reference adapter. Computed "
        "exactly for whole batches at once. Paper defaults: AdamW, lr 1e-3, one step, rank 1; "
        "dropout is off (the reference script leaves it on), so scores are reproducible.",
    )
    common.add_data_arguments(parser)
    group = parser.add_argument_group("scoring")
    group.add_argument("--reference", required=True, help="adapter trained on the whole dataset")
    group.add_argument("--out", required=True, help="Parquet file to write (FILE.parquet)")
    common.add_shared_arguments(group, d)
    common.option(group, d, "steps")
    common.add_seed_arguments(group, d.seeds[0], "seed of the fresh LoRA init")
    common.option(group, d, "side", choices=["left", "right"])
    group.add_argument("--targets", nargs="+", help=help_text(ScoreConfig, "targets"))
    common.option(group, d, "chunk_size")
    group.add_argument("--model", help=help_text(ScoreConfig, "model"))
    group.add_argument("--resume", action="store_true", help="finish an interrupted run")
    group.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_device_argument(group)
    parser.set_defaults(run=run, partial_output=partial_output)


def run(args: argparse.Namespace) -> None:
    from repmatch import distributed
    from repmatch.scoring import score_instances

    config = common.config_from(ScoreConfig, args, seeds=tuple(args.seeds or [args.seed]))
    table = score_instances(
        common.data_spec(args),
        args.reference,
        config,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )
    if not distributed.is_main():  # under torchrun: the main process reports
        return
    record = json.loads(Path(args.out + ".json").read_text())
    summary = f"scored {record['computed']} instances in {record['seconds']:.1f} s"
    if record.get("processes", 1) > 1:
        summary += f" by {record['processes']} processes"
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


def partial_output(args: argparse.Namespace) -> Path | None:
    """Where an interrupted run keeps its finished chunks (None when there are none)."""
    partial = Path(f"{args.out}.partial")
    return partial if partial.is_dir() else None
