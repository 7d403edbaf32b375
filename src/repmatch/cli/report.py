"""``repmatch report``: one self-contained HTML page for the runs given."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="one self-contained HTML page for the runs given",
        description="Draws one HTML page (images, styles and data inline; nothing fetched from "
        "a network) for the runs given: adapter folders (two or more are also compared, with "
        "their per-layer grids), a comparison saved with `repmatch compare A B --json > "
        "FILE.json`, `repmatch datasets` folders (matrix heat map, ± over seeds, the "
        "representation baseline when there is one), instance scores FILE.parquet "
        "(distribution, per-class view, top and bottom instances with their text, seed "
        "stability), selections (FILE with FILE.json), `repmatch evaluate` folders and "
        "`repmatch overlap` folders. Writes OUT and its record OUT.json.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="output of a repmatch command")
    parser.add_argument("--out", required=True, metavar="FILE.html", help="page to write")
    parser.add_argument("--title", default="repmatch report", help="title of the page")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from repmatch import distributed
    from repmatch.report import write_report

    out = write_report(args.runs, args.out, title=args.title, overwrite=args.overwrite)
    if not distributed.is_main():  # under torchrun: the main process reports
        return
    print(f"report written to {out} ({out.stat().st_size / 1024:.0f} KiB)")
