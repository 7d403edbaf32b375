"""``repmatch overlap``: the Full / Mid / No word-overlap subsets of an NLI dataset."""

from __future__ import annotations

import argparse

from repmatch.cli import common

DESCRIPTION = (
    "Takes the non-entailment instances of an NLI dataset (premise/hypothesis pairs) and writes "
    "the paper's overlap subsets (Section 5.3.1, Table 3): full (100 %% of the hypothesis words "
    "are in the premise), mid (60 %% to 80 %%, both included) and no (0 %%), as "
    "DIR/full.jsonl.gz, DIR/mid.jsonl.gz and DIR/no.jsonl.gz (id, premise, hypothesis, label) "
    "plus the record DIR/overlap.json. A word is a maximal run of letters and digits, "
    "lowercased (punctuation dropped); the hypothesis counts as a set of words: overlap = "
    "share of its distinct words found among the premise's words. A hypothesis without any "
    "word joins no subset."
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "overlap",
        help="word-overlap subsets (full / mid / no) of an NLI dataset's non-entailment pairs",
        description=DESCRIPTION,
    )
    common.add_data_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the subsets")
    parser.add_argument(
        "--entailment-label",
        metavar="LABEL",
        help="the entailment class, a class name or label value (default: the class named "
        "'entailment' when labels are names, else label 0 as in SNLI, MNLI and HANS)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace subsets in --out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from repmatch import distributed
    from repmatch.data import save_overlap_subsets

    result, record = save_overlap_subsets(
        common.data_spec(args),
        args.out,
        entailment_label=args.entailment_label,
        overwrite=args.overwrite,
    )
    if not distributed.is_main():  # under torchrun: the main process reports
        return
    source = record["source"]
    entailment = f"label {result.entailment}" + (
        f" '{common.shown(result.entailment_name)}'" if result.entailment_name else ""
    )
    print(
        f"{common.shown(source['data_name'])}: {result.non_entailment} of "
        f"{source['num_examples']} instances "
        f"are non-entailment (entailment = {entailment})"
        + (f" ({result.without_words} with a wordless hypothesis)" if result.without_words else "")
    )
    for band, size in result.sizes.items():
        where = f"{args.out}/{record['files'][band]}" if size else "(empty, no file written)"
        print(f"{band:>4}: {size:>7}  {where}")
