"""``repmatch compare``: RepMatch between two adapter folders."""

from __future__ import annotations

import argparse
import json
import sys

from repmatch.cli import common


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("compare", help="RepMatch between two adapter folders")
    parser.add_argument("first", metavar="A", help="adapter folder")
    parser.add_argument("second", metavar="B", help="adapter folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--heatmap",
        metavar="FILE.png",
        help="draw the per-layer grids (and FILE-shuffled.png with --shuffled-baseline)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing --heatmap images"
    )
    parser.add_argument(
        "--side",
        choices=["left", "right"],
        default="left",
        help="singular vectors to compare (default left, as the reference code)",
    )
    parser.add_argument(
        "--shuffled-baseline",
        action="store_true",
        help="also score A against B's ΔW with shuffled entries (paper Fig. 1b)",
    )
    parser.add_argument("--baseline-seed", type=int, default=0, help="seed of the shuffle")
    parser.add_argument(
        "--allow-different-base",
        action="store_true",
        help="compare adapters whose recorded base models differ",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
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
        from repmatch.plotting import plot_comparison

        plot_comparison(result, args.heatmap, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result.to_dict()))
        return
    print(f"RepMatch = {result.score:.4f}  ({result.side} singular vectors)")
    shown = {name: common.shown(short_layer_name(name)) for name in result.layers}
    width = max(map(len, shown.values()))
    print(
        f"{'layer':<{width}}  {'grid':>5}  {'score':>6}" + ("  shuffled" if result.baseline else "")
    )
    for name, score in result.layers.items():
        grid = result.grids[name]
        line = f"{shown[name]:<{width}}  {grid.shape[0]}x{grid.shape[1]:<3}  {score:6.4f}"
        if result.baseline:
            line += f"  {result.baseline.layers[name]:8.4f}"
        print(line)
    if result.baseline:
        print(f"shuffled baseline = {result.baseline.score:.4f}")
    for note in result.notes:
        print(f"note: {common.shown(note)}", file=sys.stderr)
