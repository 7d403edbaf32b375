"""``repmatch baseline``: the paper's representation baseline between two datasets."""

from __future__ import annotations

import argparse
import json

from repmatch.cli import common
from repmatch.config import BaselineConfig

DESCRIPTION = (
    "The representation baseline of the paper (Section 5, Table 2): pooled [CLS] vectors of the "
    "pretrained base model (no fine-tuning) for up to --sample random instances of each dataset "
    "(default 10,000, the paper's cap; all of a smaller one; drawn with --sample-seed), and the "
    "percentage of all pairs (i, j), i from D1 and j from D2, whose cosine is above --threshold. "
    "The paper used BERT-base; the default model here is the bundled all-MiniLM-L6-v2, a sentence "
    "encoder trained with mean pooling (--pooling mean gives its sentence embedding; [CLS] follows "
    "the paper). The cosine matrix is counted in chunks of rows, never held whole."
)


def register(commands: argparse._SubParsersAction) -> None:
    d = BaselineConfig()
    parser = commands.add_parser(
        "baseline",
        help="the paper's representation baseline: %% of instance pairs with [CLS] cosine > T",
        description=DESCRIPTION,
    )
    common.add_data_arguments(parser, many=True)  # D1 D2; --sample N: at most N of each
    group = parser.add_argument_group("baseline")
    common.option(group, d, "threshold")
    common.option(group, d, "model")
    common.option(group, d, "pooling", choices=["cls", "mean"])
    for name in ("batch_size", "max_length", "chunk_size"):
        common.option(group, d, name)
    group.add_argument("--json", action="store_true", help="print one JSON object")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_device_argument(group)
    parser.set_defaults(run=run)


def config_from(args: argparse.Namespace) -> BaselineConfig:
    """The baseline config of parsed flags: ``--sample N`` (at most N of each dataset, default
    the paper's 10,000) and ``--sample-seed`` go to the baseline, not to the data specs."""
    sample = BaselineConfig.sample if args.sample is None else args.sample
    return common.config_from(BaselineConfig, args, seed=args.sample_seed, sample=sample)


def run(args: argparse.Namespace) -> None:
    from repmatch.errors import RepmatchError
    from repmatch.representation import representation_baseline

    if len(args.data) != 2:
        raise RepmatchError(
            f"baseline compares two datasets, got {len(args.data)}: pass D1 D2 "
            "(`repmatch datasets --baseline` gives the matrix of more)"
        )
    config = config_from(args)
    unsampled = argparse.Namespace(**(vars(args) | {"sample": None}))  # the baseline samples
    result = representation_baseline(
        common.data_spec(unsampled, args.data[0]),
        common.data_spec(unsampled, args.data[1]),
        config,
        progress=not (args.quiet or args.json),
        device=args.device,
    )
    if args.json:
        print(json.dumps(result))
        return
    first, second = result["datasets"]
    sizes, available = result["sizes"], result["available"]
    print(
        f"{result['percent']:.2f} % of {result['pairs']:,} pairs have cosine > "
        f"{config.threshold} ({result['pairs_above']:,} pairs; mean cosine "
        f"{result['mean_cosine']:.3f})"
    )
    for name, size, total in zip((first, second), sizes, available, strict=True):
        print(f"  {common.shown(name)}: {size:,} of {total:,} instances")
    print(
        f"  model {result['config']['model']}, {config.pooling} pooling, "
        f"{result['seconds']:.1f} s (the paper: BERT-base [CLS], 10,000 instances, cosine > 0.9)"
    )
