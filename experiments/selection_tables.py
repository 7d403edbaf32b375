"""Markdown tables from a ``select_and_evaluate.py`` summary: every metric per subset and dataset
(mean ± std over all of an arm's runs, in %), the comparisons behind paper Tables 1 and 4 and
against the controls (Welch's t-test, bootstrap 95 % CI, Holm across datasets, verdicts:
``repmatch.statistics``), the class counts of the fixed subsets (only with ``--runs``: they are
read from the subset files), and the timings.

Summaries written under issue 17's protocol also carry each reference's held-out accuracy and
majority-class rate, and the top-K overlap between scoring seeds: both get a table, and a
dataset whose reference did not learn (:func:`repmatch.heldout.learning_verdict`) gets "not
decidable here" on every claim. ``--not-decidable`` adds reasons the summary cannot carry.

    python experiments/selection_tables.py --summary results/select-and-evaluate.json \
        --not-decidable "MNLI=every subset at chance (33-37 %)" [--runs ../runs/select]
    python experiments/selection_tables.py --summary results/table1-protocol-sst2-reduced.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from repmatch.heldout import learning_verdict
from repmatch.statistics import (
    CELL_HEADERS,
    compare,
    comparison_cells,
    markdown_header,
    summarise,
    verdict,
    with_holm,
    wording,
)

SUBSET_NAMES = {
    "random": "Random-{k} (new draw per seed)",
    "random-balanced": "balanced Random-{k}",
    "prototypicality": "prototypicality-{k}",
    "repmatch": "RepMatch-{k} (rank 1)",
    "repmatch-balanced": "balanced RepMatch-{k} (rank 1)",
    "repmatch-r4": "RepMatch-{k} (rank 4)",
    "repmatch-ensemble": "ensemble RepMatch-{k} (mean over scoring seeds)",
    "repmatch-ensemble-balanced": "balanced ensemble RepMatch-{k}",
    "shuffled": "shuffled-label control top-{k}",
    "shuffled-balanced": "balanced shuffled-label control top-{k}",
    "unrelated": "unrelated-task control top-{k}",
    "unrelated-balanced": "balanced unrelated-task control top-{k}",
}
FIXED = (
    "prototypicality",
    "repmatch",
    "repmatch-balanced",
    "repmatch-r4",
    "repmatch-ensemble",
    "repmatch-ensemble-balanced",
    "shuffled",
    "shuffled-balanced",
    "unrelated",
    "unrelated-balanced",
)


# Paper (BERT-base) means as (A, B) of the comparisons they back: Table 1 (RepMatch-100,
# Random-100) and Table 4 (RepMatch rank 4, rank 1).
PAPER_TABLE1 = {
    "SST-2": (81.03, 69.53),
    "SST-5": (39.59, 35.25),
    "IMDB": (78.70, 70.29),
    "MNLI": (61.79, 58.09),
    "SNLI": (43.29, 38.34),
    "SQuAD": (25.12, 23.44),
}
PAPER_TABLE4 = {
    "SST-2": (82.46, 80.44),
    "SST-5": (35.65, 39.59),
    "IMDB": (85.66, 77.85),
    "MNLI": (62.50, 50.83),
    "SNLI": (38.70, 38.19),
    "SQuAD": (24.36, 21.89),
}
# (A, B, paper's A − B per dataset or None, what the row says)
COMPARISONS = (
    ("repmatch-100", "random-100", PAPER_TABLE1, "Table 1: the paper's top-100 against random"),
    ("repmatch-balanced-100", "random-100", PAPER_TABLE1, "Table 1, class-balanced top-100"),
    ("repmatch-balanced-100", "random-balanced-100", None, "balanced against balanced random"),
    ("prototypicality-100", "random-100", None, "prototypicality against random"),
    (
        "repmatch-balanced-100",
        "prototypicality-100",
        None,
        "balanced RepMatch against prototypicality",
    ),
    ("repmatch-r4-100", "repmatch-100", PAPER_TABLE4, "Table 4: rank 4 against rank 1"),
    ("repmatch-ensemble-100", "random-100", None, "ensemble top-100 against random"),
    (
        "repmatch-ensemble-balanced-100",
        "random-100",
        None,
        "balanced ensemble top-100 against random",
    ),
)
# RepMatch against a control scored the same way (plain with plain, balanced with balanced):
# "ties" leaves the gain over random open to a typical-text effect.
CONTROLS = (
    ("repmatch-100", "shuffled-100", "RepMatch against the shuffled-label control"),
    ("repmatch-100", "unrelated-100", "RepMatch against the unrelated-task control"),
    (
        "repmatch-balanced-100",
        "shuffled-balanced-100",
        "balanced RepMatch against the balanced shuffled-label control",
    ),
    (
        "repmatch-balanced-100",
        "unrelated-balanced-100",
        "balanced RepMatch against the balanced unrelated-task control",
    ),
)
READING = {
    "beats": "the gain is RepMatch's (beyond the control)",
    "ties": "no gain beyond the control: a typical-text effect is not ruled out",
    "below": "the control selects better",
    "no test": "no test",
}


def split_key(key: str) -> tuple[str, int]:
    kind, _, size = key.rpartition("-")
    return kind, int(size)


PERCENT = {"exact_match", "f1"}  # SQuAD's metrics (torchmetrics) come in % already


def cell(result: dict | None, metric: str) -> str:
    """Mean ± std of an arm, from its runs as the comparisons compute it (the summary's own mean
    is rounded, which could print a different last digit), else the summary's."""
    if result is None or metric not in result["mean"]:
        return "–"
    scale = 1 if metric in PERCENT else 100
    runs = result.get("runs") or []
    if runs and all(metric in run for run in runs):
        found = summarise([scale * run[metric] for run in runs])
        mean, std = found.mean, found.std
    else:
        mean, std = scale * result["mean"][metric], scale * result["std"][metric]
    text = f"{mean:.1f} ± {std:.1f}"
    missing = result.get("missing_classes") or []
    return text + (f" (lacks {', '.join(map(str, missing))})" if missing else "")


def runs_phrase(result: dict) -> str:
    """How an arm's runs are pooled: "n = 9: 3 subsets (scoring seeds) × 3 fine-tuning seeds"
    when every subset ran under every seed, else "n = 3"."""
    subsets = {str(run.get("draw", run["subset"])) for run in result["runs"]}
    seeds = {run["seed"] for run in result["runs"]}
    n = len(result["runs"])
    if len(subsets) > 1 and n == len(subsets) * len(seeds) > len(subsets):
        return f"n = {n}: {len(subsets)} subsets (scoring seeds) × {len(seeds)} fine-tuning seeds"
    return f"n = {n}"


def subset_label(summary: dict, names: list[str], key: str) -> str:
    """The arm's name; under issue 17's protocol (a summary with references) with its n."""
    kind, k = split_key(key)
    label = SUBSET_NAMES[kind].format(k=k)
    found = [summary[n]["results"][key] for n in names if key in summary[n]["results"]]
    if not found or not any("references" in summary[n] for n in names):
        return label
    phrases = list(dict.fromkeys(runs_phrase(result) for result in found))
    return f"{label}, {'; '.join(phrases)}"


def metric_table(summary: dict, names: list[str], metric: str) -> list[str]:
    keys = list(dict.fromkeys(key for name in names for key in summary[name]["results"]))
    rows = ["| subset | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in keys:
        cells = [cell(summary[name]["results"].get(key), metric) for name in names]
        rows.append(f"| {subset_label(summary, names, key)} | " + " | ".join(cells) + " |")
    return rows


def reference_heldout(entry: dict) -> tuple[float, float] | None:
    """The reference's held-out accuracy and majority-class rate (fractions), if recorded."""
    heldout = (entry.get("references") or {}).get("reference", {}).get("heldout") or {}
    accuracy = (heldout.get("metrics") or {}).get("accuracy")
    majority = heldout.get("majority_rate")
    return None if accuracy is None or majority is None else (accuracy, majority)


def reference_cell(entry: dict) -> str:
    found = reference_heldout(entry)
    if found is None:
        return "not recorded"
    return f"{100 * found[0]:.1f} (majority {100 * found[1]:.1f})"


def learned_reasons(summary: dict, names: list[str]) -> dict[str, str]:
    """A "not decidable" reason per dataset whose reference did not learn its task, from the
    held-out accuracy and majority rate in the summary (:func:`learning_verdict`)."""
    reasons = {}
    for name in names:
        found = reference_heldout(summary[name])
        if found is None:
            continue
        text = learning_verdict(*found)
        if text != "learned":
            accuracy, majority = (100 * x for x in found)
            reasons[name] = (
                f"the reference {text}: held-out {accuracy:.1f} vs majority {majority:.1f}"
            )
    return reasons


def reference_table(summary: dict, names: list[str]) -> list[str]:
    """Every reference's held-out accuracy beside the majority-class rate of its held-out data."""
    rows = markdown_header(
        ["dataset", "reference", "trained on", "held out", "accuracy", "majority rate", "verdict"]
    )
    for name in names:
        for role, record in (summary[name].get("references") or {}).items():
            heldout = record.get("heldout") or {}
            accuracy = (heldout.get("metrics") or {}).get("accuracy")
            majority = heldout.get("majority_rate")
            known = accuracy is not None and majority is not None
            rows.append(
                f"| {name} | {role} | {record.get('data_name')} ({record.get('num_examples')}) | "
                f"{heldout.get('data_name')} ({heldout.get('num_examples')}) | "
                + (f"{100 * accuracy:.1f} | {100 * majority:.1f} | " if known else "– | – | ")
                + (learning_verdict(accuracy, majority) if known else "not recorded")
                + " |"
            )
    return rows


def overlap_table(summary: dict, names: list[str]) -> list[str]:
    """Top-K overlap (shared ids, Jaccard) between scoring seeds and against the ensemble and
    controls: the range over the pairs recorded."""
    rows = markdown_header(["dataset", "K", "top-Ks compared", "pairs", "shared ids", "Jaccard"])
    for name in names:
        for k, found in (summary[name].get("overlap") or {}).items():
            for what, pairs in found.items():
                if not pairs:
                    continue
                arm, _, against = what.partition(" vs ")
                compared = (
                    f"{arm} against {against}, at each scoring seed"
                    if against
                    else f"{arm}, scoring seeds pairwise"
                )
                shared = [pair["shared"] for pair in pairs.values()]
                jaccard = [p["jaccard"] for p in pairs.values() if p["jaccard"] is not None]
                rows.append(
                    f"| {name} | {k} | {compared} | {len(pairs)} | {min(shared)}–{max(shared)} | "
                    + (f"{min(jaccard):.2f}–{max(jaccard):.2f}" if jaccard else "–")
                    + " |"
                )
    return rows


def primary_metric(entry: dict) -> str:
    """Accuracy for classification, F1 for extractive QA."""
    return "accuracy" if "accuracy" in next(iter(entry["results"].values()))["mean"] else "f1"


def run_figures(entry: dict, key: str) -> list[float] | None:
    result = entry["results"].get(key)
    if result is None:
        return None
    metric = primary_metric(entry)
    scale = 1 if metric in PERCENT else 100
    return [scale * run[metric] for run in result["runs"]]


def reason_item(text: str) -> tuple[str, str]:
    """``--not-decidable`` items: ``[CLAIM/]NAME=REASON``."""
    name, sep, reason = text.partition("=")
    if not sep or not name or not reason:
        raise argparse.ArgumentTypeError(f"expected [CLAIM/]NAME=REASON, got {text!r}")
    return name, reason


def add_not_decidable_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--not-decidable",
        nargs="*",
        default=[],
        type=reason_item,
        metavar="[CLAIM/]NAME=REASON",
        help="claims this setup cannot decide, e.g. nothing learned (CLAIM: table1, table4, "
        "noisy; in claims_table.py also protocol, the paper-protocol rows, which NAME alone does "
        "not reach; NAME: a dataset, for all its claims): verdict 'not decidable here'",
    )


def not_decidable_reason(undecidable: dict[str, str], claim: str, name: str) -> str | None:
    """The reason given for ``CLAIM/NAME`` (e.g. ``table4/SNLI``), else for ``NAME``."""
    return undecidable.get(f"{claim}/{name}", undecidable.get(name))


def comparison_tables(summary: dict, names: list[str], undecidable: dict[str, str]) -> list[str]:
    """One table per comparison: every dataset with both arms, Holm across those datasets; with
    the reference's held-out accuracy where the summary records it."""
    rows: list[str] = []
    recorded = any("references" in summary[n] for n in names)
    cases = [*COMPARISONS, *((a, b, None, title) for a, b, title in CONTROLS)]
    for a, b, paper, title in cases:
        present = [n for n in names if a in summary[n]["results"] and b in summary[n]["results"]]
        if not present:
            continue
        family = with_holm(
            [compare(run_figures(summary[n], a), run_figures(summary[n], b)) for n in present]
        )
        control = (a, b, title) in CONTROLS
        header = (
            ["dataset"]
            + (["reference held-out accuracy %"] if recorded else [])
            + list(CELL_HEADERS)
            + (["verdict on the paper's claim"] if paper else [])
            + (["is the gain RepMatch's or a typical-text effect?"] if control else [])
        )
        rows += [
            "",
            f"**{title}**: A = {SUBSET_NAMES[split_key(a)[0]].format(k=100)}, "
            f"B = {SUBSET_NAMES[split_key(b)[0]].format(k=100)} (accuracy %, SQuAD F1; "
            f"Holm across the {len(present)} datasets):",
            "",
            *markdown_header(header),
        ]
        for name, comparison in zip(present, family, strict=True):
            cells = ([reference_cell(summary[name])] if recorded else []) + comparison_cells(
                comparison
            )
            if control:
                reason = undecidable.get(name)
                cells.append(
                    f"not decidable here; {reason}" if reason else READING[wording(comparison)]
                )
            if paper:
                sign = 1 if paper[name][0] > paper[name][1] else -1
                reason = not_decidable_reason(
                    undecidable, "table4" if paper is PAPER_TABLE4 else "table1", name
                )
                text = verdict(comparison, sign, not_decidable=reason)
                direction = "A > B" if sign > 0 else "A < B"
                cells.append(f"{text} (paper: {direction})" + (f"; {reason}" if reason else ""))
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def class_counts(runs: Path, summary: dict, names: list[str]) -> list[str]:
    # imported here: torch is only needed to read the subset files, not for the other tables
    from repmatch.evaluation import load_subset
    from repmatch.tasks import get_task

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
    stages: tuple[str, ...] = ("reference", "score-r1", "score-r4", "prototypicality")
    if any("references" in summary[n] for n in names):  # issue 17's protocol: its own stages
        stages = tuple(
            dict.fromkeys(
                stage
                for n in names
                for stage in summary[n]["seconds"]
                if not stage.startswith("evaluate-")
            )
        )
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
    parser.add_argument(
        "--runs", type=Path, help="folder with the subsets (optional: only for the class counts)"
    )
    parser.add_argument("--datasets", nargs="+", help="default: every dataset in the summary")
    add_not_decidable_argument(parser)
    args = parser.parse_args()
    summary = json.loads(Path(args.summary).read_text())
    names = args.datasets or list(summary)
    undecidable = learned_reasons(summary, names) | dict(args.not_decidable)
    metrics = list(
        dict.fromkeys(m for n in names for r in summary[n]["results"].values() for m in r["mean"])
    )
    for metric in metrics:
        print(f"\n{metric} (%):\n")
        print("\n".join(metric_table(summary, names, metric)))
    if any("references" in summary[n] for n in names):
        print("\nReferences: held-out accuracy beside the majority-class rate (%):\n")
        print("\n".join(reference_table(summary, names)))
    print("\nComparisons (repmatch.statistics: Welch's t-test, bootstrap 95 % CI, Holm):")
    print("\n".join(comparison_tables(summary, names, undecidable)))
    if any(summary[n].get("overlap") for n in names):
        print("\nTop-K overlap between scoring seeds, and against the ensemble and controls:\n")
        print("\n".join(overlap_table(summary, names)))
    if args.runs is not None:
        print("\nClass counts of the fixed subsets:\n")
        print("\n".join(class_counts(args.runs, summary, names)))
    print("\nTimings (seconds, wall):\n")
    print("\n".join(timing_table(summary, names)))


if __name__ == "__main__":
    main()
