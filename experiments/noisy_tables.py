"""Markdown tables from a ``noisy_labels.py`` summary: per dataset, every detector's AUROC,
average precision and precision at the number flipped (mean ± std over seeds), cleanlab's flagged
set, and the seconds per seed of each step.

    python experiments/noisy_tables.py --summary results/noisy-labels.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DETECTORS = {
    "repmatch-r1": "RepMatch one-step, rank 1 (low = suspicious)",
    "repmatch-r4": "RepMatch one-step, rank 4",
    "gradient": "label-aware `--measure gradient`",
    "reference-loss": "reference model's loss",
    "cleanlab": "cleanlab (3-fold out-of-sample probabilities)",
}
METRICS = ("auroc", "average_precision", "precision_at_flipped")


def dataset_table(entry: dict) -> list[str]:
    rows = [
        "| detector | AUROC | average precision | precision at #flipped |",
        "|---|---|---|---|",
    ]
    for detector, label in DETECTORS.items():
        mean, std = entry["mean"][detector], entry["std"][detector]
        cells = [f"{mean[m]:.3f} ± {std[m]:.3f}" for m in METRICS]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    cleanlab = entry["mean"]["cleanlab"]
    rows.append("")
    rows.append(
        f"cleanlab's `find_label_issues` flagged {cleanlab['issues_found']:.0f} instances on "
        f"average (precision {cleanlab['precision_of_issues']:.3f}, recall "
        f"{cleanlab['recall_of_issues']:.3f})."
    )
    timed = entry.get("seeds_timed", 0)
    if timed:
        seconds = ", ".join(f"{k} {v:.0f}" for k, v in entry["seconds_per_seed"].items())
        rows.append(f"Seconds per seed (mean of the {timed} seeds timed): {seconds}.")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", default="results/noisy-labels.json")
    args = parser.parse_args()
    summary = json.loads(Path(args.summary).read_text())
    for name in summary["settings"]["datasets"]:
        entry = summary[name]
        print(f"\n**{name}** ({entry['seeds_done']} seeds):\n")
        print("\n".join(dataset_table(entry)))


if __name__ == "__main__":
    main()
