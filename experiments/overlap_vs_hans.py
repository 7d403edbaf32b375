"""Are NLI instances that follow HANS's overlap heuristic more similar to HANS? (paper Tables 3
and 5).

Per NLI split: the Full / Mid / No word-overlap subsets of its non-entailment pairs
(:func:`repmatch.data.overlap_subsets`), and ``--repeats`` samples of up to ``--size`` instances
of each (sample seed r, LoRA seed r); an adapter is trained on every sample and compared with an
adapter trained on HANS. A sample smaller than ``--size`` (the Full subsets here are tiny) is
trained for proportionally more epochs, so every adapter makes about ``--passes`` instance passes
(one epoch over 300 instances by default); otherwise the smaller subsets would simply have moved
less. ``--size`` equal to the smallest subset compares the bands at the same number of distinct
instances as well.
A random sample of all non-entailment pairs is the control.

    python experiments/overlap_vs_hans.py --out ../runs/overlap --summary results/table3-table5.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from options import ExperimentOptions, add_arguments, size

from repmatch.compare import compare_adapters
from repmatch.config import TrainConfig
from repmatch.data import DataSpec, as_examples, overlap_subsets
from repmatch.training import train_or_reuse

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPLITS = {
    "MNLI validation": ("mnli", "validation"),
    "MNLI validation_mismatched": ("mnli", "validation_mismatched"),
    "SNLI validation": ("snli", "validation"),
    "SNLI test": ("snli", "test"),
}


def sample(examples, size: int, seed: int):
    if len(examples) <= size:
        return examples
    positions = np.sort(np.random.default_rng(seed).choice(len(examples), size, replace=False))
    return examples.select(positions.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--passes", type=int, default=300, help="instance passes per adapter (epochs x size)"
    )
    parser.add_argument("--hans-sample", type=size, default=2000, help="HANS instances (or all)")
    parser.add_argument("--out", default="../runs/overlap")
    parser.add_argument("--summary", default="results/table3-table5.json")
    add_arguments(parser)
    args = parser.parse_args()
    options = ExperimentOptions.from_args(args)
    out, config, device = Path(args.out), options.apply(TrainConfig()), options.device
    started = time.perf_counter()
    hans = as_examples(DataSpec(str(SHARED / "hans"), split="train", sample=args.hans_sample))
    hans_adapter = train_or_reuse(hans, config, out / "hans", progress=False, device=device)
    summary = {
        "settings": vars(args),
        "options": options.record(),
        "train": config.to_dict(),
        "hans_seconds": round(time.perf_counter() - started, 1),
    }
    for name in args.splits:
        folder, split = SPLITS[name]
        data = as_examples(DataSpec(str(SHARED / folder), split=split))
        bands = overlap_subsets(data)
        groups = dict(bands.subsets)
        groups["all non-entailment (control)"] = data.select(
            np.flatnonzero(data.labels != bands.entailment).tolist()
        )
        entry = summary.setdefault(name, {"sizes": {}, "scores": {}, "seconds": 0.0})
        for band, examples in groups.items():
            entry["sizes"][band] = len(examples)
            scores = []
            for repeat in range(args.repeats):
                chosen = sample(examples, args.size, repeat)
                epochs = max(1, math.ceil(args.passes / len(chosen)))
                tic = time.perf_counter()
                adapter = train_or_reuse(
                    chosen,
                    replace(config, seed=repeat, epochs=epochs),
                    out / folder / split / band.split()[0] / f"r{repeat}",
                    progress=False,
                    device=device,
                )
                scores.append(compare_adapters(adapter, hans_adapter).score)
                entry["seconds"] += time.perf_counter() - tic
            entry["scores"][band] = {
                "mean": float(np.mean(scores)),
                "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
                "each": scores,
                "instances": len(chosen),
                "epochs": epochs,
            }
            print(name, band, len(examples), f"{np.mean(scores):.4f}", flush=True)
        entry["seconds"] = round(entry["seconds"], 1)
        Path(args.summary).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
