"""Engine throughput of two source trees side by side: did a change make scoring slower?

Times ``InstanceScorer.score`` (one-step, rank 1, query+value, the benchmark's settings) on the
same SST-2 instances with the package from ``--baseline`` (e.g. a ``git worktree`` of an earlier
commit) and from this checkout, alternating fresh processes so that drift of the machine hits
both alike. Prints and saves the median instances/s of each and their ratio.

    git worktree add /tmp/old e56c138
    python benchmarks/bench_engine_revisions.py --baseline /tmp/old/src
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = """
import json, sys, time
import torch
from repmatch.adapters import load_adapter
from repmatch.data import DataSpec, load_examples
from repmatch.scoring import InstanceScorer, ScoreConfig
reference, data, n, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
examples = load_examples(DataSpec(data, sample=n, seed=1))
scorer = InstanceScorer(load_adapter(reference), ScoreConfig(rank=1), device="cpu")
times = []
for _ in range(repeats):
    start = time.perf_counter()
    scores = scorer.score(examples)
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": sorted(times)[len(times) // 2], "mean_score": float(scores.mean())}))
"""


def _run(src: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-c", _CHILD, args.reference, args.data, str(args.instances)]
    env = {"PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": ""}
    out = subprocess.run(
        [*command, str(args.repeats)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="src folder of the baseline tree")
    parser.add_argument("--reference", default="runs/bench/reference-query-value")
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--instances", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per side, alternating")
    parser.add_argument("--out", default="benchmarks/results/engine-revisions.json")
    args = parser.parse_args()
    current = str(Path(__file__).resolve().parents[1] / "src")
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    for _ in range(args.rounds):
        for side, src in (("baseline", args.baseline), ("current", current)):
            runs[side].append(_run(src, args))
    result = {
        side: {
            "instances_per_second": args.instances / statistics.median(r["seconds"] for r in rs),
            "seconds": [r["seconds"] for r in rs],
            "mean_score": rs[0]["mean_score"],
        }
        for side, rs in runs.items()
    }
    ratio = result["current"]["instances_per_second"] / result["baseline"]["instances_per_second"]
    result |= {
        "current_over_baseline": ratio,
        "instances": args.instances,
        "baseline_src": args.baseline,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for side in ("baseline", "current"):
        r = result[side]
        speed, mean = r["instances_per_second"], r["mean_score"]
        print(f"{side:8}: {speed:7.1f} instances/s  (mean score {mean:.6f})")
    print(f"current / baseline: {ratio:.3f}")


if __name__ == "__main__":
    main()
