"""SQuAD v1.1 validation split by article into a pool (to score and select from) and an
evaluation part, since only the validation split is in ``shared/data``.

The copy in ``shared/data`` has no article titles; :func:`repmatch.data.qa.split_by_article`
then groups rows by paragraph (consecutive rows sharing a context) and puts the last paragraphs,
in the official article order, into the evaluation part, so the two parts share at most the
article the cut falls in. This script prints where the cut falls (the last pool paragraph and
the first evaluation paragraph) so that can be checked by eye; ``--eval-from-id`` moves the cut
to the paragraph of that question, e.g. an article's first one.

Writes ``squad-pool.jsonl.gz``, ``squad-eval.jsonl.gz`` (rows as read: id, context, question,
answers) and ``squad-split.json`` (sizes and the cut) into ``--out``, which should lie outside
the repository.

    python experiments/squad_split.py --out ../runs/squad
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from repmatch.artifacts import atomic_path, run_record, write_json
from repmatch.data.qa import split_by_article

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "validation.jsonl.gz")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--eval-fraction", type=float, default=0.2)
    parser.add_argument("--eval-from-id", help="question id whose paragraph starts the eval part")
    args = parser.parse_args()

    frame = pd.read_json(args.data, lines=True, dtype=False)
    eval_from = None
    if args.eval_from_id is not None:
        eval_from = int(frame.index[frame["id"] == args.eval_from_id][0])
    pool, evaluation = split_by_article(frame, args.eval_fraction, eval_from=eval_from)
    files = {}
    for name, part in (("squad-pool", pool), ("squad-eval", evaluation)):
        path = args.out / f"{name}.jsonl.gz"
        with atomic_path(path) as temporary:
            part.to_json(
                temporary, orient="records", lines=True, force_ascii=False, compression="gzip"
            )
        files[name] = str(path)

    def paragraphs(part: pd.DataFrame) -> int:
        return int((part["context"] != part["context"].shift()).sum())

    record = run_record(
        "squad-split",
        data=str(args.data),
        eval_fraction=None if eval_from is not None else args.eval_fraction,
        eval_from_id=args.eval_from_id,
        grouped_by="title" if "title" in frame.columns else "paragraph (no title column)",
        files=files,
        pool={"questions": len(pool), "paragraphs": paragraphs(pool)},
        evaluation={"questions": len(evaluation), "paragraphs": paragraphs(evaluation)},
        last_pool_context=pool["context"].iloc[-1][:200],
        first_eval_context=evaluation["context"].iloc[0][:200],
    )
    write_json(args.out / "squad-split.json", record)
    for part in ("pool", "evaluation"):
        sizes = record[part]
        print(f"{part}: {sizes['questions']} questions, {sizes['paragraphs']} paragraphs")
    print(f"last pool paragraph:   {record['last_pool_context'][:120]}")
    print(f"first eval paragraph:  {record['first_eval_context'][:120]}")


if __name__ == "__main__":
    main()
