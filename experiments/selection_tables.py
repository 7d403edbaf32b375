"""Markdown tables from a ``select_and_evaluate.py`` summary: every metric per subset and dataset
(mean ± std over seeds, in %), the class counts of the fixed subsets, and the timings.

    python experiments/selection_tables.py --summary results/select-and-evaluate.json \
        --runs ../runs/select
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from repmatch.evaluation import load_subset
from repmatch.tasks import get_task

SUBSET_NAMES = {
    "random": "Random-{k} (new draw per seed)",
    "random-balanced": "balanced Random-{k}",
    "prototypicality": "prototypicality-{k}",
    "repmatch": "RepMatch-{k} (rank 1)",
    "repmatch-balanced": "balanced RepMatch-{k} (rank 1)",
    "repmatch-r4": "RepMatch-{k} (rank 4)",
}
FIXED = ("prototypicality", "repmatch", "repmatch-balanced", "repmatch-r4")


def split_key(key: str) -> tuple[str, int]:
    kind, _, size = key.rpartition("-")
    return kind, int(size)


PERCENT = {"exact_match", "f1"}  # SQuAD's metrics (torchmetrics) come in % already


def cell(result: dict | None, metric: str) -> str:
    if result is None or metric not in result["mean"]:
        return "–"
    scale = 1 if metric in PERCENT else 100
    text = f"{scale * result['mean'][metric]:.1f} ± {scale * result['std'][metric]:.1f}"
    missing = result.get("missing_classes") or []
    return text + (f" (lacks {', '.join(map(str, missing))})" if missing else "")


def metric_table(summary: dict, names: list[str], metric: str) -> list[str]:
    keys = list(dict.fromkeys(key for name in names for key in summary[name]["results"]))
    rows = ["| subset | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in keys:
        kind, k = split_key(key)
        cells = [cell(summary[name]["results"].get(key), metric) for name in names]
        rows.append(f"| {SUBSET_NAMES[kind].format(k=k)} | " + " | ".join(cells) + " |")
    return rows


def class_counts(runs: Path, summary: dict, names: list[str]) -> list[str]:
    rows = ["| subset | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    keys = list(dict.fromkeys(key for name in names for key in summary[name]["results"]))
    for key in keys:
        kind, k = split_key(key)
        if kind not in FIXED:
            continue
        cells = []
        for name in names:
            path = runs / name / "subsets" / f"{key}.jsonl"
            if not path.is_file():
                cells.append("–")
                continue
            subset = load_subset(path)
            if get_task(subset.task).problem_type != "single_label_classification":
                cells.append("–")
                continue
            counts = Counter(subset.labels.tolist())
            cells.append(" ".join(f"{c}:{n}" for c, n in sorted(counts.items())))
        rows.append(f"| {SUBSET_NAMES[kind].format(k=k)} | " + " | ".join(cells) + " |")
    return rows


def timing_table(summary: dict, names: list[str]) -> list[str]:
    stages = ("reference", "score-r1", "score-r4", "prototypicality")
    rows = [
        "| dataset | pool | evaluation | "
        + " | ".join(stages)
        + " | evaluations (all runs) | per run |",
        "|---" * (len(stages) + 5) + "|",
    ]
    for name in names:
        entry = summary[name]
        pool, evaluation = entry["pool"], entry["evaluation"]
        total = sum(result["seconds"] for result in entry["results"].values())
        runs = sum(len(result["runs"]) for result in entry["results"].values())
        times = [str(entry["seconds"].get(stage, "reused")) for stage in stages]
        rows.append(
            f"| {name} | {pool.get('sample') or 'all'} of {pool.get('split') or 'file'} | "
            f"{evaluation.get('sample') or 'all'} of {evaluation.get('split') or 'file'} | "
            + " | ".join(times)
            + f" | {total:.0f} ({len(entry['results'])} subsets) | {total / runs:.0f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", default="results/select-and-evaluate.json")
    parser.add_argument("--runs", default="../runs/select", help="folder with the subsets")
    parser.add_argument("--datasets", nargs="+", help="default: every dataset in the summary")
    args = parser.parse_args()
    summary = json.loads(Path(args.summary).read_text())
    names = args.datasets or list(summary)
    metrics = list(
        dict.fromkeys(m for n in names for r in summary[n]["results"].values() for m in r["mean"])
    )
    for metric in metrics:
        print(f"\n{metric} (%):\n")
        print("\n".join(metric_table(summary, names, metric)))
    print("\nClass counts of the fixed subsets:\n")
    print("\n".join(class_counts(Path(args.runs), summary, names)))
    print("\nTimings (seconds, wall):\n")
    print("\n".join(timing_table(summary, names)))


if __name__ == "__main__":
    main()
