"""The exact shortcuts of one-step scoring on one model: the [CLS] cut and packing, on and off.

    python benchmarks/bench_shortcuts.py --model MODEL_FOLDER   # e.g. a local all-mpnet-base-v2

Trains a reference adapter (the default TrainConfig on ``--instances`` SST-2 training instances,
or reuses it), then scores the same instances in float32 three ways, each after a warm-up pass in
one process: as the start-up probes choose (the cut and packing where they are exact), with the
cut but padded batches, and with neither (the model's plain padded batches). Prints and saves
what the probes chose, wall and CPU time, and the largest score difference to the plain run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from bench_scale import load_average

from repmatch.adapters import load_adapter
from repmatch.data import DataSpec, load_examples
from repmatch.grassmann import repmatch_score
from repmatch.models import ReadoutCut
from repmatch.scoring import InstanceScorer, ScoreConfig
from repmatch.training import TrainConfig, train_or_reuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model folder")
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--instances", type=int, default=256)
    parser.add_argument("--work", default="runs/bench-shortcuts")
    parser.add_argument("--out", default="benchmarks/results/shortcuts.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"load_average_before": load_average(), "model": args.model}
    examples = load_examples(DataSpec(args.data, sample=args.instances, seed=1))
    folder = Path(args.work) / f"reference-{Path(args.model).name}"
    config = TrainConfig(model=args.model)
    reference = train_or_reuse(examples, config, folder, progress=False, device="cpu")
    scorer = InstanceScorer(load_adapter(reference), ScoreConfig(), device="cpu")
    chosen = (scorer.readout, scorer.position_offset)
    result["probes"] = {
        "cut_block": None if chosen[0].blocks is None else type(chosen[0].blocks).__name__,
        "packing_position_offset": chosen[1],
    }
    variants = {"probed": chosen, "cut_only": (chosen[0], None), "plain": (ReadoutCut(), None)}
    scores = {}
    for name, (readout, offset) in variants.items():
        scorer.readout, scorer.position_offset = readout, offset
        scorer.score(examples.select(range(min(32, len(examples)))))  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        scores[name] = repmatch_score(scorer.score(examples))[0]
        result[name] = {
            "seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu,
        }
        timing = result[name]
        print(f"{name:9s}: {timing['seconds']:.1f} s wall, {timing['cpu_seconds']:.1f} s CPU")
    for name in ("probed", "cut_only"):
        result[name]["cpu_time_speedup_over_plain"] = (
            result["plain"]["cpu_seconds"] / result[name]["cpu_seconds"]
        )
        result[name]["max_abs_difference_to_plain"] = float(
            (scores[name] - scores["plain"]).abs().max()
        )
    result |= {
        "load_average_after": load_average(),
        "instances": args.instances,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "cores": os.cpu_count(),
    }
    probed, cut = result["probed"], result["cut_only"]
    print(
        f"probes: {result['probes']}; probed {probed['cpu_time_speedup_over_plain']:.2f}x plain "
        f"(CPU time), cut only {cut['cpu_time_speedup_over_plain']:.2f}x; max |difference| "
        f"{probed['max_abs_difference_to_plain']:.1e}; load average "
        f"{result['load_average_before']} -> {result['load_average_after']}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
