"""Accuracy against subset size (paper Fig. 4) from ``select_and_evaluate.py --sizes ...``.

Reads the summary JSON (one dataset), draws mean accuracy with a ± one standard deviation band per
subset kind over the sizes, prints the table the figure shows and the comparisons per size
(Welch's t-test, bootstrap 95 % CI, Holm across the sizes; ``repmatch.statistics``), with the
verdict on the paper's claim that RepMatch beats random at every K below 400.

    python experiments/subset_size_figure.py --summary results/subset-size.json \
        --out results/subset-size.png
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from selection_tables import learned_reasons, reference_table  # noqa: E402

from repmatch.statistics import (  # noqa: E402
    CELL_HEADERS,
    compare,
    comparison_cells,
    markdown_header,
    verdict,
    with_holm,
)

LABELS = {"random": "Random", "repmatch": "RepMatch (rank 1)", "prototypicality": "Prototypicality"}
PAPER_LARGEST_CLAIMED = 400  # the paper: every RepMatch subset smaller than 400 beats random
COMPARISONS = (
    ("repmatch", "random"),
    ("prototypicality", "random"),
    ("repmatch", "prototypicality"),
)


def curves(results: dict, metric: str) -> dict[str, list[tuple[int, float, float]]]:
    """Subset kind -> [(size, mean, std)] sorted by size, from ``"<kind>-<size>"`` entries."""
    found: dict[str, list[tuple[int, float, float]]] = {}
    for key, result in results.items():
        match = re.fullmatch(r"(.+)-(\d+)", key)
        if match is None or match.group(1) not in LABELS:
            continue
        size = int(match.group(2))
        found.setdefault(match.group(1), []).append(
            (size, result["mean"][metric], result["std"][metric])
        )
    return {kind: sorted(points) for kind, points in found.items()}


def comparison_tables(results: dict, metric: str, reason: str | None = None) -> list[str]:
    """Per pair of subset kinds, one row per size K, Holm across the sizes; RepMatch against
    random carries the verdict on the paper's claim (A > B for K < 400), "not decidable here"
    with ``reason`` where one is given (the reference did not learn)."""
    rows: list[str] = []
    for a, b in COMPARISONS:
        sizes = sorted(
            int(key.rpartition("-")[2])
            for key in results
            if key.rpartition("-")[0] == a and f"{b}-{key.rpartition('-')[2]}" in results
        )
        if not sizes:
            continue
        family = with_holm(
            [
                compare(
                    *[
                        [100 * run[metric] for run in results[f"{kind}-{k}"]["runs"]]
                        for kind in (a, b)
                    ]
                )
                for k in sizes
            ]
        )
        claim = (a, b) == ("repmatch", "random")
        header = ["K", *CELL_HEADERS] + (["verdict (paper: A > B for K < 400)"] if claim else [])
        rows += [
            "",
            f"**A = {LABELS[a]}, B = {LABELS[b]}** ({metric} %, Holm across the "
            f"{len(sizes)} sizes):",
            "",
            *markdown_header(header),
        ]
        for k, comparison in zip(sizes, family, strict=True):
            cells = comparison_cells(comparison)
            if claim:
                claimed = k < PAPER_LARGEST_CLAIMED
                judged = verdict(comparison, +1, not_decidable=reason)
                cells.append(judged if claimed else "no claim at this K")
            rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", default="results/subset-size.json")
    parser.add_argument("--dataset", default="SST-2")
    parser.add_argument("--metric", default="accuracy")
    parser.add_argument("--out", default="results/subset-size.png")
    args = parser.parse_args()
    entry = json.loads(Path(args.summary).read_text())[args.dataset]
    lines = curves(entry["results"], args.metric)
    figure, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for kind, points in lines.items():
        sizes, means, stds = (np.array(column) for column in zip(*points, strict=True))
        ax.plot(sizes, means, marker="o", label=LABELS[kind])
        ax.fill_between(sizes, means - stds, means + stds, alpha=0.2)
        print(kind, ", ".join(f"{s}: {m:.3f}±{d:.3f}" for s, m, d in points))
    ax.set_xscale("log", base=2)
    sizes = sorted({size for points in lines.values() for size, _, _ in points})
    ax.set_xticks(sizes, [str(size) for size in sizes])
    ax.set_xlabel("training instances (log scale)")
    ax.set_ylabel(f"{args.metric} on {entry['evaluation']['split']} (mean ± std over seeds)")
    seeds = len(entry["eval_config"]["seeds"])
    model = Path(entry["eval_config"]["model"]).name
    ax.set_title(f"{args.dataset}: full fine-tuning of {model}, {seeds} fine-tuning seeds")
    ax.legend()
    figure.savefig(args.out, dpi=120)
    print("written to", args.out)
    if "references" in entry:  # summaries from before issue 17 never evaluated their reference
        print("\nReference: held-out accuracy beside the majority-class rate (%):\n")
        print("\n".join(reference_table({args.dataset: entry}, [args.dataset])))
    reason = learned_reasons({args.dataset: entry}, [args.dataset]).get(args.dataset)
    print("\n".join(comparison_tables(entry["results"], args.metric, reason)))


if __name__ == "__main__":
    main()
