"""Markdown table of the paper's Table 5 claim from ``overlap_vs_hans.py`` summaries: per split,
the Full overlap band against Mid, No and the all-non-entailment control (RepMatch against the
HANS adapter, one figure per repeat), with Welch's t-test, a bootstrap 95 % CI, Holm across the
rows of each summary and the verdict on the paper's claim that Full is the most similar band
(``repmatch.statistics``).

    python experiments/overlap_tables.py --summaries results/table3-table5.json \
        results/table3-table5-equal-size.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from repmatch.heldout import learning_verdict
from repmatch.statistics import (
    CELL_HEADERS,
    compare,
    comparison_cells,
    markdown_header,
    verdict,
    with_holm,
)

# the paper's Table 5 claims Full > Mid and Full > No; the control is ours (no paper figure)
AGAINST = {"mid": True, "no": True, "all non-entailment (control)": False}


def hans_not_learned(summary: dict) -> str | None:
    """Why the summary cannot decide the claim: its HANS adapter did not learn HANS (held-out
    accuracy within 2 points of the majority rate), or ``None``. Older summaries record no
    held-out evaluation and get ``None``."""
    heldout = summary.get("hans_heldout")
    if not heldout:
        return None
    accuracy, majority = heldout["metrics"]["accuracy"], heldout["majority_rate"]
    if learning_verdict(accuracy, majority) == "learned":
        return None
    return (
        f"the HANS adapter did not learn HANS: held-out accuracy {100 * accuracy:.1f} % against "
        f"a majority rate of {100 * majority:.1f} %"
    )


def summary_table(summary: dict) -> list[str]:
    """One row per split and band Full is compared with, Holm across the rows; the verdict is
    "not decidable here" when the HANS adapter did not learn (:func:`hans_not_learned`)."""
    splits = summary["settings"]["splits"]
    undecidable = hans_not_learned(summary)
    cases = [(split, band) for split in splits for band in AGAINST]
    scores = {split: summary[split]["scores"] for split in splits}
    family = with_holm(
        [compare(scores[s]["full"]["each"], scores[s][band]["each"]) for s, band in cases]
    )
    header = ["split", "band B", *CELL_HEADERS, "verdict (paper: Full > B)"]
    rows = markdown_header(header)
    for (split, band), comparison in zip(cases, family, strict=True):
        cells = comparison_cells(comparison, digits=3)
        claim = verdict(comparison, +1, not_decidable=undecidable)
        cells.append(claim if AGAINST[band] else "no paper claim")
        full, other = scores[split]["full"], scores[split][band]
        rows.append(
            f"| {split} (Full: {full['instances']} instances, {full['epochs']} epochs) | {band} "
            f"({other['instances']}, {other['epochs']}) | " + " | ".join(cells) + " |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--summaries",
        nargs="+",
        type=Path,
        default=[Path("results/table3-table5.json"), Path("results/table3-table5-equal-size.json")],
    )
    args = parser.parse_args()
    for path in args.summaries:
        summary = json.loads(path.read_text())
        print(f"\n{path} (A = Full; Welch's t-test over the repeats, Holm across the rows):\n")
        reason = hans_not_learned(summary)
        if reason:
            print(f"Not decidable here: {reason}.\n")
        print("\n".join(summary_table(summary)))


if __name__ == "__main__":
    main()
