"""``repmatch select``: keep the top, the bottom or a random K of the scored instances."""

from __future__ import annotations

import argparse

from repmatch.cli import common
from repmatch.config import SelectConfig, SelectHow, help_text
from repmatch.errors import RepmatchError

_HOWS: tuple[SelectHow, ...] = ("top", "bottom", "random")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "select",
        help="keep the top, bottom or a random K of the scored instances",
        description="Write the chosen instances' rows (text columns, label, id, score) to a data "
        "file that train, score and evaluate read, and how they were chosen to FILE.json. Ties "
        "are broken by id (smaller first); --balanced keeps the class proportions of the scored "
        "data (largest-remainder shares summing to K). The scored data is reloaded from the "
        "scores' record and must be unchanged.",
    )
    parser.add_argument(
        "scores",
        metavar="SCORES",
        help="Parquet file written by repmatch score, with its record SCORES.json beside it",
    )
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--top", type=int, metavar="K", help="the K highest scores")
    how.add_argument("--bottom", type=int, metavar="K", help="the K lowest scores")
    how.add_argument("--random", type=int, metavar="K", help="K at random (seeded by --seed)")
    parser.add_argument("--balanced", action="store_true", help=help_text(SelectConfig, "balanced"))
    parser.add_argument(
        "--seed", type=int, default=SelectConfig.seed, help=help_text(SelectConfig, "seed")
    )
    parser.add_argument(
        "--score-column",
        default=SelectConfig.score_column,
        help=help_text(SelectConfig, "score_column") + " (default score)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="data file to write: .jsonl, .json, .csv, .tsv or .parquet, optionally .gz",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing selection")
    parser.add_argument(
        "--data",
        metavar="DATA",
        help="the data that was scored (default: reloaded as the scores' record describes it; "
        "needed when in-memory data was scored); the data options below apply to it",
    )
    common.add_data_arguments(parser, positional=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from repmatch import distributed
    from repmatch.data import DataSpec
    from repmatch.selection import select_to_file

    how = next(name for name in _HOWS if getattr(args, name) is not None)
    if args.data is None and common.data_spec(args, source="-") != DataSpec("-"):
        raise RepmatchError("the data options apply to --data; pass the scored data with --data")
    data = common.data_spec(args, source=args.data) if args.data is not None else None
    try:
        config = SelectConfig(
            k=getattr(args, how),
            how=how,
            balanced=args.balanced,
            seed=args.seed,
            score_column=args.score_column,
        )
        selection = select_to_file(
            args.scores, config, args.out, data=data, overwrite=args.overwrite
        )
    except RepmatchError as err:
        if err.field == "k":  # K is given as --top/--bottom/--random, not as a flag of its own
            raise RepmatchError(f"{err} [--{how}]") from None
        raise
    if not distributed.is_main():  # under torchrun: the main process reports
        return
    record = selection.record
    counts = record["class_counts"]
    shown = ", ".join(f"{common.shown(k)} {v}" for k, v in (counts or {}).items())
    classes = f"; classes: {shown}" if counts else ""
    by = f"seed {config.seed}" if how == "random" else f"by {config.score_column}"
    print(
        f"selected {record['num_selected']} of {record['num_scored']} instances "
        f"({how}{', balanced' if config.balanced else ''}, {by}){classes}; "
        f"written to {common.shown(args.out)}"
    )
