"""``results/claims.md``: one row per claim of the paper, with the paper's figure, ours on the
bundled MiniLM (and the file it comes from), ours on MPNet, the difference with its 95 % CI and p,
and the verdict (``repmatch.statistics``), all from the committed JSON files.

    python experiments/claims_table.py --not-decidable "MNLI=every subset at chance (33-37 %)" \
        --out results/claims.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from noisy_tables import aurocs, reference_learned
from overlap_tables import AGAINST, hans_not_learned
from selection_tables import (
    PAPER_TABLE1,
    PAPER_TABLE4,
    add_not_decidable_argument,
    learned_reasons,
    not_decidable_reason,
    run_figures,
)
from subset_size_figure import PAPER_LARGEST_CLAIMED

from repmatch.statistics import (
    Comparison,
    Summary,
    compare,
    compare_summaries,
    compare_to_value,
    format_comparison,
    summarise,
    verdict,
    with_holm,
)

MPNET = "not run yet"
PROTOCOL = {
    "table1-protocol-sst2.json": "paper protocol, pool 4,000",
    "table1-protocol-snli.json": "paper protocol, pool 4,000, 2,000 evaluated",
    "table1-protocol-sst5.json": "paper protocol, pool 4,000",
    "table1-protocol-imdb.json": "paper protocol, pool 2,000, 128 tokens, no controls",
    "table1-protocol-mnli.json": "paper protocol, pool 4,000, 2,000 evaluated, no controls",
    "table1-protocol-sst2-p16000.json": "paper protocol, pool 16,000, 3 seeds, no controls",
    "table1-protocol-sst2-whole.json": "paper protocol, whole train split, no controls",
    "table1-protocol-imdb-whole.json": "paper protocol, whole train split, 128 tokens, no controls",
}
"""Table 1 under the paper's protocol (issue 17): summary file -> the setting named in each row."""
MPNET_PROTOCOL = {
    "table1-protocol-sst2.json": "table1-protocol-mpnet-sst2.json",
    "table1-protocol-snli.json": "table1-protocol-mpnet-snli.json",
}
"""The same protocol on all-mpnet-base-v2: MiniLM summary -> MPNet summary (its column)."""
TABLE4_PROTOCOL = {"table4-protocol.json": "paper protocol, pools of 4,000 (IMDB 2,000)"}
"""Table 4 under the paper's protocol: summary file -> the setting named in its rows."""
SUBSET_SIZE = {
    "subset-size-protocol.json": "paper protocol, pool 4,000",
    "subset-size.json": "old protocol",
}
"""Fig. 4: summary file -> the setting named in its rows."""
NOISY = {
    "noisy-labels-protocol.json": "references with the paper's settings",
    "noisy-labels.json": "old references (rank 4, 1 epoch)",
}
"""Label noise: summary file -> the setting named in its rows."""
OLD_PROTOCOL = "select-and-evaluate.json"  # pools of 2,000, 1-epoch rank-4 references
MATRIX_HELDOUT = "dataset-similarity-heldout.json"
"""Held-out accuracy of the adapters of the 7-dataset matrix (``experiments/matrix_heldout.py``):
the default training settings, whose Fig. 3 and Table 2 rows are decided only where they learned."""
TABLE5 = "table5-aligned.json"  # aligned heads; its HANS adapter's held-out accuracy decides
COMMAND = """python experiments/claims_table.py --out results/claims.md --not-decidable \\
    "MNLI=nothing learned: Table 1 subsets at chance, reference loss at AUROC 0.49" \\
    "table4/SNLI=both top-100s lack neutral; every run predicts one class" \\
    "protocol/MNLI=no 100-pair fine-tune learned (33.7-39.6 %, majority 35.4 %)" \\
    "protocol/table4/SNLI=both top-100s lack neutral; every run at 33.7-34.6 % (majority 34.3 %)"
"""
PREAMBLE = f"""# The paper's claims, one row each: paper, ours, statistics, verdict

Generated from the committed JSON files in `results/` (no run folders needed) by

```bash
{COMMAND}```

Statistics (`repmatch.statistics`, its docstring has the formulas): Welch's t-test (two-sided)
between the per-run figures of the two arms (fine-tuning seeds, flip seeds, repeats or seed
pairs); for label noise a one-sample t-test of AUROC = 0.5; the difference's 95 % CI from a
seeded bootstrap that resamples each arm on its own (a Welch t interval where only mean, std and n
are recorded); Holm's correction across the rows of one claim (its datasets or sizes). Verdicts:
**reproduced** = our difference has the paper's sign and Holm p < 0.05; **direction only** = the
paper's sign, Holm p ≥ 0.05; **not reproduced** = zero or the opposite sign (significant or not);
**not decidable here** = this setup cannot answer (nothing learned, or no spread to test; the
reason is given). With 3–5 runs per arm the bootstrap CI is narrower than the t-test implies; the
verdict rests on the p. The Fig. 3 and Table 2 rows test the two ordered seed pairs of a matrix
entry (seed 0 of one dataset against seed 1 of the other, and back); the two share adapters, so
their p is optimistic. Table 3 (subset sizes) makes no comparison and has no row.

The MPNet column (all-mpnet-base-v2, 12 layers, hidden 768) has **Fig. 3**
(`results/fig3-mpnet.md`: 1,000 instances, 2 seeds, every adapter above its majority rate on
held-out data) and **Table 1 under the paper's protocol on SST-2 and SNLI**
(`results/table1-protocol-mpnet.md`: the MiniLM rows' settings, references that learned); the
other claims have **not been run on it**. The MiniLM column is the bundled all-MiniLM-L6-v2
under the deviations each source file lists. Table 1 rows come in two settings: **paper
protocol** (`results/table1-protocol-*.md`: references at rank 1, batch 40, 10 epochs (NLI 5),
whose held-out accuracy is checked; three scoring seeds per arm; full fine-tuning at batch 40,
lr 1e-4; pools of 4,000 (IMDB 2,000 at 128 tokens), and for SST-2 also 16,000 and the whole
train split, for IMDB the whole train split) and **old protocol** (`results/table1.md`: pools of
2,000, 1-epoch rank-4 references whose held-out accuracy was never recorded, one scoring seed,
batch 16, 128 tokens, validation splits where there is no train split). Table 4 and Fig. 4 come
in the same two settings (`results/table4-protocol.json` and `results/subset-size-protocol.json`
reuse the paper-protocol pools, references and Table 1 runs), and label noise with references
trained with the paper's settings and checked on clean held-out data
(`results/noisy-labels-protocol.json`) beside the old ones.
The MiniLM Fig. 3 and Table 2 rows are decided only where the default settings' adapters
learned on held-out data (`results/dataset-similarity-heldout.json`; they did not for SST-5,
HANS and STS-B). Table 5 rows read `results/table5-aligned.json` (aligned heads); they are
decided only where its HANS adapter learned HANS on held-out pairs.
"""
HEADER = (
    "| claim (paper, BERT-base) | paper | ours, all-MiniLM-L6-v2 | source "
    "| ours, all-mpnet-base-v2 (its difference, CI, p and verdict) "
    "| MiniLM: difference (95 % CI; p, Holm p) | MiniLM: verdict |\n"
    "|---|---|---|---|---|---|---|"
)


TABLE2_NAMES = {
    "mnli/validation": "MNLI",
    "hans/train": "HANS",
    "sst2/train": "SST-2",
    "stsb/train": "STS-B",
}


def row(
    claim: str, paper: str, ours: str, source: str, stats: str, text: str, mpnet: str = MPNET
) -> str:
    return f"| {claim} | {paper} | {ours} | `{source}` | {mpnet} | {stats} | {text} |"


def pair(c: Comparison, scale: float = 1.0, digits: int = 1) -> str:
    b = c.b if c.b is not None else Summary(0, 0, 0)
    return f"{scale * c.a.mean:.{digits}f} vs {scale * b.mean:.{digits}f} (n = {c.a.n}, {b.n})"


def selection_family(summary: dict, a: str, b: str) -> dict[str, Comparison]:
    """Arm ``a`` against arm ``b`` on each dataset in ``summary`` with both; Holm across them."""
    present = [n for n in summary if a in summary[n]["results"] and b in summary[n]["results"]]
    family = with_holm(
        [compare(run_figures(summary[n], a), run_figures(summary[n], b)) for n in present]
    )
    return dict(zip(present, family, strict=True))


def verdict_cell(c: Comparison, sign: int = +1, reason: str | None = None) -> str:
    """The verdict on a claim of sign ``sign``, with the reason where it is not decidable."""
    return verdict(c, sign, not_decidable=reason) + (f" ({reason})" if reason else "")


def mpnet_cell(c: Comparison, text: str, source: str, digits: int = 1) -> str:
    """The MPNet column: its figures, its difference with CI and p, and its verdict ``text``."""
    return f"{pair(c, digits=digits)}; {format_comparison(c, digits=digits)}; {text} (`{source}`)"


def selection_rows(
    summary: dict,
    undecidable: dict[str, str],
    source: str,
    setting: str,
    mpnet: tuple[dict, str] | None = None,
    tables: tuple[str, ...] = ("Table 1", "Table 4"),
) -> list[str]:
    """Table 1 (plain, balanced and ensemble top-100 against random) and Table 4 (rank 4 against
    rank 1) from the summary in ``results/{source}``, each claim's rows titled with ``setting``; a
    dataset whose reference did not learn (held-out accuracy in the summary) is not decidable.
    ``mpnet``: the same protocol's summary on all-mpnet-base-v2 and its file, for that column;
    ``tables``: the claims wanted (a summary made for Table 4 also holds Table 1's arms)."""
    rows = []
    undecidable = learned_reasons(summary, list(summary)) | undecidable
    mpnet_summary, mpnet_source = mpnet if mpnet else ({}, "")
    mpnet_undecidable = learned_reasons(mpnet_summary, list(mpnet_summary))
    cases = (
        ("Table 1: RepMatch-100 > Random-100", "repmatch-100", "random-100", PAPER_TABLE1),
        (
            "Table 1, our class-balanced top-100 > Random-100",
            "repmatch-balanced-100",
            "random-100",
            PAPER_TABLE1,
        ),
        (
            "Table 1, our class-balanced top-100 of the 5-seed mean > Random-100",
            "repmatch-ensemble-balanced-100",
            "random-100",
            PAPER_TABLE1,
        ),
        (
            "Table 4: rank 4 vs rank 1 (RepMatch-100)",
            "repmatch-r4-100",
            "repmatch-100",
            PAPER_TABLE4,
        ),
    )
    for title, a, b, paper in cases:
        if not title.startswith(tables):
            continue
        family = selection_family(summary, a, b)
        on_mpnet = selection_family(mpnet_summary, a, b)
        for name, c in family.items():
            first, second = paper[name]
            sign = 1 if first > second else -1
            claim = "table4" if paper is PAPER_TABLE4 else "table1"
            reason = not_decidable_reason(undecidable, claim, name)
            other = on_mpnet.get(name)
            rows.append(
                row(
                    f"{title}, {name}, {setting}" + (" (paper: rank 1 higher)" if sign < 0 else ""),
                    f"{first:.1f} vs {second:.1f}",
                    pair(c),
                    f"results/{source}",
                    format_comparison(c),
                    verdict_cell(c, sign, reason),
                    MPNET
                    if other is None
                    else mpnet_cell(
                        other,
                        verdict_cell(other, sign, mpnet_undecidable.get(name)),
                        f"results/{mpnet_source}",
                    ),
                )
            )
    return rows


def subset_size_rows(summary: dict, source: str, setting: str) -> list[str]:
    """Fig. 4: RepMatch top-K beats random at every K < 400 (SST-2), from ``results/{source}``;
    not decidable where the summary's reference did not learn."""
    results = summary["SST-2"]["results"]
    reason = learned_reasons(summary, ["SST-2"]).get("SST-2")
    sizes = sorted(
        int(k.rpartition("-")[2])
        for k in results
        if k.startswith("repmatch-") and f"random-{k.rpartition('-')[2]}" in results
    )
    figures = {
        kind: {k: [100 * r["accuracy"] for r in results[f"{kind}-{k}"]["runs"]] for k in sizes}
        for kind in ("repmatch", "random")
    }
    family = with_holm([compare(figures["repmatch"][k], figures["random"][k]) for k in sizes])
    return [
        row(
            f"Fig. 4: RepMatch top-K > Random-K, SST-2, K = {k}, {setting}",
            "above (figure only)",
            pair(c),
            f"results/{source}",
            format_comparison(c),
            verdict_cell(c, reason=reason),
        )
        for k, c in zip(sizes, family, strict=True)
        if k < PAPER_LARGEST_CLAIMED
    ]


def fig2_title(rank: str) -> str:
    return (
        "Fig. 2: an instance closer to itself under another seed than to other instances "
        f"({rank.replace('rank', 'rank ')})"
    )


def robustness_rows(settings: dict, instances: dict) -> list[str]:
    """Fig. 1 (same data, two LoRA seeds: similar; a random baseline: not) and Fig. 2 (an
    instance's update under two seeds against two instances' updates under one seed)."""
    default = settings["default"]
    diagonal = [default["mean"][i][i] for i in range(len(default["names"]))]
    chance = settings["random-subspaces-rank4"]
    fig1 = compare_summaries(
        summarise(diagonal), Summary(chance["mean"], chance["std"], chance["trials"])
    )
    rows = [
        row(
            "Fig. 1: same data, two LoRA seeds, far above a random baseline (ours: the "
            f"{len(diagonal)} datasets' seed-0-vs-1 entries against random rank-4 subspaces)",
            "> 0.7 vs < 0.02",
            pair(fig1, digits=3),
            "results/dataset-similarity-settings.json (default, random-subspaces-rank4)",
            format_comparison(fig1, digits=3) + "; Welch t interval",
            verdict(fig1, +1),
        )
    ]
    figures = {rank: instances[rank]["figure2"] for rank in ("rank1", "rank4")}
    if any("per_instance" not in figure for figure in figures.values()):
        # summaries from before the per-instance figures were kept: only the means
        return rows + [
            row(
                fig2_title(rank),
                "> 0.6 vs ≈ 0.11",
                f"{figure['same_instance_different_seeds']:.3f} vs "
                f"{figure['different_instances_same_seed']:.3f} "
                f"(means over {figure['instances']} instances)",
                "results/instance-robustness.json",
                "– (only the means are saved)",
                "not decidable here (per-instance figures not saved)",
            )
            for rank, figure in figures.items()
        ]
    family = with_holm(
        [
            compare(
                figure["per_instance"]["same_instance_different_seeds"],
                figure["per_instance"]["different_instances_same_seed"],
                paired=True,
            )
            for figure in figures.values()
        ]
    )
    rows += [
        row(
            fig2_title(rank),
            "> 0.6 vs ≈ 0.11",
            pair(c, digits=3),
            "results/instance-robustness.json",
            format_comparison(c, digits=3) + "; paired over the instances",
            verdict(c, +1),
        )
        for rank, c in zip(figures, family, strict=True)
    ]
    return rows


def mpnet_fig3(matrix: dict | None) -> str:
    """The Fig. 3 comparison on all-mpnet-base-v2 (``results/fig3-mpnet-matrix.json``): Welch over
    the entry's ordered seed pairs, as the Table 2 rows."""
    if matrix is None:
        return MPNET
    index = {name: i for i, name in enumerate(matrix["names"])}
    sst2, sst5, imdb = (index[n] for n in ("sst2/train", "sst5/train", "imdb/train"))
    per_pair = matrix["per_seed_pair"]  # [seed pair][row][column]
    c = compare([p[sst2][sst5] for p in per_pair], [p[sst2][imdb] for p in per_pair])
    return mpnet_cell(c, verdict(c, +1), "results/fig3-mpnet.md", digits=3)


def adapters_not_learned(heldout: dict | None, adapters: list[str]) -> str | None:
    """A "not decidable" reason naming the ``adapters`` (e.g. ``sst5-train``) that did not learn
    on most of their seeds in ``heldout`` (a ``matrix_heldout.py`` summary; a regression
    adapter fails where its mean held-out Pearson is not above 0), or ``None``."""
    if heldout is None:
        return None
    failed = []
    for name in adapters:
        rows = [v for k, v in heldout.items() if k.split("/")[0] == name]
        if not rows:
            continue
        if rows[0]["verdict"] is None:  # regression
            pearson = sum(r["metrics"]["pearson"] for r in rows) / len(rows)
            if pearson <= 0:
                failed.append(f"{name} (held-out Pearson {pearson:.2f})")
            continue
        if sum(r["verdict"] == "learned" for r in rows) * 2 <= len(rows):
            accuracy = 100 * sum(r["accuracy"] for r in rows) / len(rows)
            majority = 100 * rows[0]["majority_rate"]
            failed.append(f"{name} ({accuracy:.1f} % vs majority {majority:.1f} %)")
    if not failed:
        return None
    return (
        "the default settings' adapters did not learn: "
        + ", ".join(failed)
        + f"; `results/{MATRIX_HELDOUT}`, 2,000 instances"
    )


def similarity_rows(
    settings: dict, table2: dict, mpnet: dict | None, heldout: dict | None = None
) -> list[str]:
    """Fig. 3 (SST-2 closer to SST-5 than to IMDB) and Table 2 (SNLI's row order); not decidable
    where ``heldout`` (:data:`MATRIX_HELDOUT`) shows that an adapter involved did not learn."""
    default = settings["default"]
    index = {name: i for i, name in enumerate(default["names"])}
    pairs = len(settings["seeds"])  # ordered pairs of different seeds per entry

    def entry(a: str, b: str) -> Summary:
        i, j = index[a], index[b]
        return Summary(default["mean"][i][j], default["std"][i][j], pairs)

    fig3 = compare_summaries(entry("SST-2", "SST-5"), entry("SST-2", "IMDB"))
    rows = [
        row(
            "Fig. 3: SST-2 closer to SST-5 than to IMDB",
            "0.45 vs 0.26",
            pair(fig3, digits=3),
            "results/dataset-similarity-settings.json (default)",
            format_comparison(fig3, digits=3) + "; Welch t interval",
            verdict_cell(
                fig3,
                reason=adapters_not_learned(heldout, ["sst2-train", "sst5-train", "imdb-train"]),
            ),
            mpnet_fig3(mpnet),
        )
    ]
    names = table2["names"]
    per_pair = table2["per_seed_pair"]  # [seed pair][row][column]
    snli = names.index("snli/validation")
    order = [
        ("mnli/validation", 19.9),
        ("hans/train", 5.6),
        ("sst2/train", 1.0),
        ("stsb/train", 0.8),
    ]
    values = {name: [p[snli][names.index(name)] for p in per_pair] for name, _ in order}
    family = with_holm(
        [compare(values[a], values[b]) for (a, _), (b, _) in zip(order, order[1:], strict=False)]
    )
    for ((a, pa), (b, pb)), c in zip(zip(order, order[1:], strict=False), family, strict=True):
        rows.append(
            row(
                f"Table 2: SNLI closer to {TABLE2_NAMES[a]} than to {TABLE2_NAMES[b]}",
                f"{pa} % vs {pb} %",
                pair(c, digits=3),
                "results/table2-matrix.json",
                format_comparison(c, digits=3),
                verdict_cell(
                    c,
                    reason=adapters_not_learned(
                        heldout, [n.replace("/", "-") for n in ("snli/validation", a, b)]
                    ),
                ),
            )
        )
    return rows


def overlap_rows(summary: dict, source: str, undecidable: dict[str, str]) -> list[str]:
    """Table 5: the Full overlap band is more similar to HANS than Mid and No. Not decidable where
    the summary's HANS adapter did not learn HANS (:func:`overlap_tables.hans_not_learned`), or
    for the reasons given as ``table5/MNLI``, ``table5/SNLI``."""
    splits = summary["settings"]["splits"]
    cases = [(s, band) for s in splits for band in AGAINST if AGAINST[band]]
    scores = {s: summary[s]["scores"] for s in splits}
    family = with_holm([compare(scores[s]["full"]["each"], scores[s][b]["each"]) for s, b in cases])
    paper = {"MNLI": {"mid": "76.18 vs 72.25", "no": "76.18 vs 70.24"}}
    paper["SNLI"] = {"mid": "78.24 vs 69.37", "no": "78.24 vs 73.62"}
    hans = hans_not_learned(summary)
    return [
        row(
            f"Table 5: {s.split()[0]} Full closer to HANS than {band.capitalize()}",
            paper[s.split()[0]][band],
            pair(c, digits=3),
            f"results/{source}",
            format_comparison(c, digits=3),
            verdict_cell(c, reason=undecidable.get(f"table5/{s.split()[0]}") or hans),
        )
        for (s, band), c in zip(cases, family, strict=True)
    ]


def noisy_rows(summary: dict, undecidable: dict[str, str], source: str, setting: str) -> list[str]:
    """§1 (a suggested use, no experiment): the least representative instances are noisy ones,
    from ``results/{source}``. Not decidable where the references did not learn on held-out
    data (:func:`noisy_tables.reference_learned`) or for the reason given as ``noisy/NAME``
    (``NAME`` alone: only for a summary whose references were never evaluated)."""
    names = summary["settings"]["datasets"]
    family = with_holm([compare_to_value(aurocs(summary[n], "repmatch-r1"), 0.5) for n in names])
    reasons = {}
    for name in names:
        learned = reference_learned(summary[name])
        if learned is None:
            reasons[name] = not_decidable_reason(undecidable, "noisy", name)
        elif learned != "learned":
            reasons[name] = f"the references {learned}"
        else:
            reasons[name] = undecidable.get(f"noisy/{name}")
    return [
        row(
            f"§1 (suggested, no figure): least representative = mislabelled, {name} "
            f"(AUROC > 0.5, 10 % flipped), {setting}",
            "–",
            f"AUROC {c.a.mean:.3f} (n = {c.a.n})",
            f"results/{source}",
            format_comparison(c, digits=3),
            verdict_cell(c, reason=reasons[name]),
        )
        for name, c in zip(names, family, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    add_not_decidable_argument(parser)
    parser.add_argument("--out", type=Path, help="write the table here (default: print it)")
    args = parser.parse_args()
    undecidable = dict(args.not_decidable)

    def read(name: str) -> dict:
        return json.loads((args.results / name).read_text())

    def optional(name: str | None) -> dict | None:
        """The summary ``name`` where it is committed, else ``None``."""
        return read(name) if name and (args.results / name).is_file() else None

    def present(files: dict[str, str]) -> list[tuple[str, str]]:
        """(file, setting) for those of ``files`` that exist."""
        return [
            (name, setting) for name, setting in files.items() if (args.results / name).is_file()
        ]

    # only "protocol/NAME" reaches the paper-protocol rows (their references differ)
    protocol_reasons = {
        key.partition("/")[2]: reason
        for key, reason in undecidable.items()
        if key.startswith("protocol/")
    }

    def mpnet_of(name: str) -> tuple[dict, str] | None:
        other = MPNET_PROTOCOL.get(name)
        summary = optional(other)
        return None if summary is None else (summary, str(other))

    rows = [
        *(
            r
            for name, setting in present(PROTOCOL)
            for r in selection_rows(read(name), protocol_reasons, name, setting, mpnet_of(name))
        ),
        *(
            r
            for name, setting in present(TABLE4_PROTOCOL)
            for r in selection_rows(
                read(name), protocol_reasons, name, setting, tables=("Table 4",)
            )
        ),
        *selection_rows(read(OLD_PROTOCOL), undecidable, OLD_PROTOCOL, "old protocol"),
        *(
            r
            for name, setting in present(SUBSET_SIZE)
            for r in subset_size_rows(read(name), name, setting)
        ),
        *robustness_rows(
            read("dataset-similarity-settings.json"), read("instance-robustness.json")
        ),
        *similarity_rows(
            read("dataset-similarity-settings.json"),
            read("table2-matrix.json"),
            optional("fig3-mpnet-matrix.json"),
            optional(MATRIX_HELDOUT),
        ),
        *overlap_rows(read(TABLE5), TABLE5, undecidable),
        *(
            r
            for name, setting in present(NOISY)
            for r in noisy_rows(read(name), undecidable, name, setting)
        ),
    ]
    text = "\n".join([PREAMBLE, HEADER, *rows]) + "\n"
    if args.out is None:
        print(text)
        return
    args.out.write_text(text)
    print("written to", args.out)


if __name__ == "__main__":
    main()
