"""Did the adapters of a ``repmatch datasets`` run learn their tasks? (issue 17 item 2)

Evaluates every adapter of a matrix folder (``OUT/adapters/<dataset>/<seed-key>``) on held-out
data of its dataset, records the result in the adapter's ``repmatch.json`` (as ``repmatch train
--eval`` does) and writes one JSON summary: per adapter the held-out accuracy, the majority-class
rate and the verdict of :func:`repmatch.heldout.learning_verdict` (a regression adapter: its
Pearson and Spearman correlations, and no verdict).

    python experiments/matrix_heldout.py ../runs/mpnet-fig3 --sample 300 \
        --heldout sst2-train=../shared/data/sst2@validation sst5-train=../shared/data/sst5@test \
        --summary results/fig3-mpnet-heldout.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from repmatch.artifacts import write_json
from repmatch.data import DataSpec
from repmatch.errors import RepmatchError
from repmatch.heldout import learning_verdict, record_heldout


def parse_heldout(text: str) -> tuple[str, DataSpec]:
    """``NAME=PATH@SPLIT`` (NAME: an adapter subfolder such as ``sst2-train``)."""
    name, sep, source = text.partition("=")
    path, at, split = source.rpartition("@")
    if not sep or not at or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH@SPLIT, got {text!r}")
    return name, DataSpec(path, split=split)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("matrix", type=Path, help="a `repmatch datasets` output folder")
    parser.add_argument("--heldout", nargs="+", type=parse_heldout, required=True)
    parser.add_argument("--sample", type=int, default=None, help="held-out instances (seeded)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--summary", type=Path, required=True)
    args = parser.parse_args(argv)
    summary: dict[str, dict] = {}
    for name, spec in args.heldout:
        if args.sample is not None:
            spec = DataSpec(spec.source, split=spec.split, sample=args.sample, seed=0)
        folders = sorted(p for p in (args.matrix / "adapters" / name).iterdir() if p.is_dir())
        if not folders:
            raise RepmatchError(f"no adapters under {args.matrix / 'adapters' / name}")
        for folder in folders:
            started = time.process_time()
            result = record_heldout(folder, spec, device=args.device)
            entry = {"heldout": spec.to_dict(), "num_examples": result["num_examples"]}
            if "accuracy" in result["metrics"]:
                accuracy, majority = result["metrics"]["accuracy"], result["majority_rate"]
                entry |= {
                    "accuracy": accuracy,
                    "majority_rate": majority,
                    "verdict": learning_verdict(accuracy, majority),
                }
            else:  # regression: no majority class to beat; its correlations say how it did
                entry |= {"metrics": result["metrics"], "verdict": None}
            entry["cpu_seconds"] = round(time.process_time() - started, 1)
            summary[f"{name}/{folder.name}"] = entry
            print(name, folder.name, json.dumps(summary[f"{name}/{folder.name}"]), flush=True)
    write_json(args.summary, summary)


if __name__ == "__main__":
    main()
