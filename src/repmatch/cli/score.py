"""``repmatch score``: every instance against a reference adapter (instance-level RepMatch, or a
label-aware measure), or by its embedding's prototypicality (no reference)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from repmatch.cli import common
from repmatch.config import MEASURES, EmbeddingConfig, ScoreConfig, help_text
from repmatch.errors import RepmatchError

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("repmatch", "prototypicality")


def register(commands: argparse._SubParsersAction) -> None:
    d = ScoreConfig()
    parser = commands.add_parser(
        "score",
        help="score every instance against a reference adapter (instance-level RepMatch)",
        description="Per instance: a fresh LoRA init (same seed for all), optimizer step(s) on "
        "that instance alone, RepMatch of its update against the reference adapter. Computed "
        "exactly for whole batches at once. Paper defaults: AdamW, lr 1e-3, one step, rank 1; "
        "dropout is off (the reference script leaves it on), so scores are reproducible. "
        "--measure cosine or gradient compares with the sign kept (label-aware: one-step "
        "RepMatch ignores the label on binary and regression tasks). --method prototypicality "
        "scores by the cosine of the base model's pooled [CLS] embedding with the instance's "
        "class centroid (no reference; one centroid for regression).",
    )
    common.add_data_arguments(parser)
    group = parser.add_argument_group("scoring")
    group.add_argument(
        "--method",
        choices=METHODS,
        default="repmatch",
        help="repmatch: against --reference; prototypicality: cosine of the pooled embedding "
        "with its class centroid, no reference (default repmatch)",
    )
    group.add_argument("--reference", help="adapter trained on the whole dataset (repmatch)")
    group.add_argument("--out", required=True, help="Parquet file to write (FILE.parquet)")
    common.add_shared_arguments(group, d)
    common.option(group, d, "steps")
    common.add_seed_arguments(group, d.seeds[0], "seed of the fresh LoRA init")
    common.option(group, d, "side", choices=["left", "right"])
    common.option(group, d, "measure", choices=list(MEASURES))
    common.option(group, EmbeddingConfig(), "pooling", choices=["cls", "mean"])
    group.add_argument("--targets", nargs="+", help=help_text(ScoreConfig, "targets"))
    common.option(group, d, "chunk_size")
    group.add_argument("--model", help=help_text(ScoreConfig, "model"))
    group.add_argument("--resume", action="store_true", help="finish an interrupted run")
    group.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_device_argument(group)
    parser.set_defaults(run=run, resume_hint=resume_hint)


def run(args: argparse.Namespace) -> None:
    from repmatch import distributed
    from repmatch.scoring import score_instances

    if args.method == "prototypicality":
        table = run_prototypicality(args)
    else:
        if args.reference is None:
            raise RepmatchError(
                "--method repmatch scores against a reference: pass --reference ADAPTER (an "
                "adapter trained on the whole dataset); --method prototypicality needs none",
                field="reference",
            )
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
    for note in table.attrs.get("notes", []):
        print(f"note: {common.shown(note)}", file=sys.stderr)
    record = json.loads(Path(args.out + ".json").read_text())
    summary = f"scored {record['computed']} instances in {record['seconds']:.1f} s"
    if record.get("processes", 1) > 1:
        summary += f" by {record['processes']} processes"
    if record["computed"]:
        summary += f" ({record['instances_per_second']:.1f}/s)"
    if record["read_back"]:
        summary += f", read {record['read_back']} back from the interrupted run"
    print(f"{summary}; {len(table)} written to {common.shown(args.out)}")
    if record.get("seed_spearman"):
        pairs = ", ".join(f"{k}: {v:.3f}" for k, v in record["seed_spearman"].items())
        print(f"ranking agreement between seeds (Spearman): {pairs}")
    ranked = table.sort_values("score", kind="stable")
    if args.method == "prototypicality":
        titles = ("most prototypical", "least")
    elif args.measure == "grassmann":
        titles = ("most representative", "least")
    else:
        titles = ("most aligned with the reference", "least")
    for title, rows in zip(titles, (ranked[::-1][:5], ranked[:5]), strict=True):
        shown = (f"{common.shown(r.id)} ({r.score:.3f})" for r in rows.itertuples())
        print(f"{title}: " + ", ".join(shown))


def run_prototypicality(args: argparse.Namespace) -> pd.DataFrame:
    """Prototypicality scores of the data (the embedding baseline), written like RepMatch's."""
    from repmatch.config import BUNDLED_MODEL
    from repmatch.representation import prototypicality_scores

    if args.reference is not None:
        raise RepmatchError(
            "--method prototypicality needs no reference (the centroids come from the scored "
            "data); drop --reference, and pick the base model with --model",
            field="reference",
        )
    config = common.config_from(EmbeddingConfig, args, model=args.model or BUNDLED_MODEL)
    return prototypicality_scores(
        common.data_spec(args),
        config,
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )


def resume_hint(args: argparse.Namespace) -> str | None:
    """How an interrupted run goes on from its finished chunks (None when there are none)."""
    partial = Path(f"{args.out}.partial")
    return (
        f"finished chunks are kept in {partial}; rerun with --resume to finish"
        if partial.is_dir()
        else None
    )
