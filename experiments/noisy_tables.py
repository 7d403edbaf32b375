"""Markdown tables from a ``noisy_labels.py`` summary: per dataset, every detector's AUROC,
average precision and precision at the number flipped (mean ± std over seeds), cleanlab's flagged
set, the seconds per seed of each step, the references' accuracy on clean held-out data beside
the majority-class rate, and two tests on the per-seed AUROCs
(``repmatch.statistics``): each detector against chance (one-sample t-test of AUROC = 0.5 over the
flip seeds) and pairs of detectors against each other (paired t-test over the flip seeds: both
rank the same flipped pool of a seed), each with a bootstrap 95 % CI and Holm across its table.

    python experiments/noisy_tables.py --summary results/noisy-labels.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from repmatch.heldout import learning_verdict
from repmatch.statistics import (
    compare,
    compare_to_value,
    comparison_cells,
    with_holm,
)

DETECTORS = {
    "repmatch-r1": "RepMatch one-step, rank 1 (low = suspicious)",
    "repmatch-r4": "RepMatch one-step, rank 4",
    "gradient": "label-aware `--measure gradient`",
    "reference-loss": "reference model's loss",
    "cleanlab": "cleanlab (3-fold out-of-sample probabilities)",
}
METRICS = ("auroc", "average_precision", "precision_at_flipped")
# (A, B) pairs tested against each other: the steps of the ranking the verdict states
PAIRS = (
    ("repmatch-r4", "repmatch-r1"),
    ("gradient", "repmatch-r1"),
    ("reference-loss", "gradient"),
    ("cleanlab", "reference-loss"),
)


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


def reference_learned(entry: dict) -> str | None:
    """:func:`repmatch.heldout.learning_verdict` on the references' mean held-out accuracy over
    the flip seeds (``None`` where the summary predates their evaluation)."""
    references = entry.get("references")
    if not references:
        return None
    accuracy = float(np.mean([r["accuracy"] for r in references]))
    return learning_verdict(accuracy, references[0]["majority_rate"])


def reference_table(summary: dict, names: list[str]) -> list[str]:
    """Per dataset: the references' held-out accuracy (mean ± std over the flip seeds; each
    trained on its noisy pool, evaluated on clean held-out labels) beside the majority rate."""
    rows = [
        "| dataset | held out | accuracy % (over seeds) | majority rate % | verdict |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        references = summary[name].get("references")
        if not references:
            rows.append(f"| {name} | not recorded | – | – | – |")
            continue
        accuracy = 100 * np.array([r["accuracy"] for r in references])
        spread = f" ± {accuracy.std(ddof=1):.1f}" if len(accuracy) > 1 else ""
        first = references[0]
        rows.append(
            f"| {name} | {first['data_name']} ({first['num_examples']}) "
            f"| {accuracy.mean():.1f}{spread} (n = {len(accuracy)}) "
            f"| {100 * first['majority_rate']:.1f} | {reference_learned(summary[name])} |"
        )
    return rows


def aurocs(entry: dict, detector: str) -> list[float]:
    return [seed[detector]["auroc"] for seed in entry["per_seed"]]


def chance_table(summary: dict, names: list[str]) -> list[str]:
    """Every detector's AUROC against 0.5 (one-sample t-test), Holm across the whole table."""
    cases = [(name, detector) for name in names for detector in DETECTORS]
    family = with_holm([compare_to_value(aurocs(summary[n], d), 0.5) for n, d in cases])
    rows = [
        "| dataset | detector | AUROC | AUROC − 0.5 | 95 % CI | p | Holm p | against chance |",
        "|---" * 8 + "|",
    ]
    for (name, detector), comparison in zip(cases, family, strict=True):
        cells = comparison_cells(comparison, digits=3)
        del cells[1]  # no arm B: the figure is 0.5
        cells[-1] = {"beats": "above", "below": "below", "ties": "at chance"}.get(
            cells[-1], cells[-1]
        )
        rows.append(f"| {name} | {DETECTORS[detector]} | " + " | ".join(cells) + " |")
    return rows


def pair_table(summary: dict, names: list[str]) -> list[str]:
    """Detector A against detector B on the same flip seeds (paired t-test), Holm across the
    whole table."""
    cases = [(name, a, b) for name in names for a, b in PAIRS]
    family = with_holm(
        [compare(aurocs(summary[n], a), aurocs(summary[n], b), paired=True) for n, a, b in cases]
    )
    rows = [
        "| dataset | A | B | AUROC of A | AUROC of B | A − B | 95 % CI | p | Holm p | A vs B |",
        "|---" * 10 + "|",
    ]
    for (name, a, b), comparison in zip(cases, family, strict=True):
        cells = comparison_cells(comparison, digits=3)
        rows.append(f"| {name} | {a} | {b} | " + " | ".join(cells) + " |")
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
    names = summary["settings"]["datasets"]
    print("\nReferences: accuracy on clean held-out data beside the majority-class rate:\n")
    print("\n".join(reference_table(summary, names)))
    print(
        "\nAUROC against chance (one-sample t-test over the flip seeds, Holm across the table):\n"
    )
    print("\n".join(chance_table(summary, names)))
    print("\nAUROC of detector A against detector B (paired t-test over the flip seeds, Holm):\n")
    print("\n".join(pair_table(summary, names)))


if __name__ == "__main__":
    main()
