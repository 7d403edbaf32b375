"""Do the most representative instances train a better model than a random subset? (paper
Table 1, Table 4 and Fig. 4).

Per dataset: a pool (a seeded random sample of the train split, or what ``shared/data`` has), a
reference adapter trained on the pool, RepMatch scores of every pool instance (rank 1, and rank 4
for Table 4) and prototypicality scores; then subsets of ``--k`` instances (random, class-balanced
random, prototypicality top, RepMatch top, class-balanced RepMatch top, rank-4 RepMatch top),
each fine-tuned under several seeds and evaluated on held-out data. A random subset is drawn anew
for every seed, so its spread covers both the draw and the training seed; a selected subset is
fixed and only the training seed varies.

Every stage writes its output under ``--out`` and is reused when it is already there, so an
interrupted run picks up where it stopped. Figures and timings go to ``--summary`` (JSON).

    python experiments/select_and_evaluate.py --datasets SST-2 SST-5 --out ../runs/select
    python experiments/select_and_evaluate.py --datasets SST-2 --sizes 25 50 100 200 400 \
        --subsets random repmatch prototypicality --summary results/subset-size.json
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from options import ExperimentOptions, add_arguments, size

from repmatch.config import EmbeddingConfig, EvalConfig, ScoreConfig, SelectConfig, TrainConfig
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.evaluation import evaluate_subsets, load_subset
from repmatch.representation import prototypicality_scores
from repmatch.scoring import score_instances
from repmatch.selection import select_to_file
from repmatch.tasks import get_task
from repmatch.training import train_or_reuse

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class Setup:
    """Where a dataset's pool and evaluation data come from."""

    pool: tuple[str, str]  # (folder or file, split)
    evaluation: tuple[str, str]
    max_length: int = 128
    max_pool: int | None = None  # a smaller pool where scoring is slow (QA reads every token)


SETUPS = {
    "SST-2": Setup((str(SHARED / "sst2"), "train"), (str(SHARED / "sst2"), "validation")),
    "SST-5": Setup((str(SHARED / "sst5"), "train"), (str(SHARED / "sst5"), "test")),
    "IMDB": Setup((str(SHARED / "imdb"), "train"), (str(SHARED / "imdb"), "test")),
    "MNLI": Setup(
        (str(SHARED / "mnli"), "validation"), (str(SHARED / "mnli"), "validation_mismatched")
    ),
    "SNLI": Setup((str(SHARED / "snli"), "validation"), (str(SHARED / "snli"), "test")),
    # Written by experiments/squad_split.py (validation split by article).
    "SQuAD": Setup(
        ("squad/squad-pool.jsonl.gz", None), ("squad/squad-eval.jsonl.gz", None), 256, 800
    ),
}

# name -> (scores file stem, SelectConfig fields); "random*" subsets are drawn per seed.
SUBSETS = {
    "random": ("repmatch-r1", dict(how="random")),
    "random-balanced": ("repmatch-r1", dict(how="random", balanced=True)),
    "prototypicality": ("prototypicality", dict(how="top")),
    "repmatch": ("repmatch-r1", dict(how="top")),
    "repmatch-balanced": ("repmatch-r1", dict(how="top", balanced=True)),
    "repmatch-r4": ("repmatch-r4", dict(how="top")),
}


def spec(source: tuple[str, str | None], out: Path, sample: int | None, seed: int) -> DataSpec:
    path, split = source
    if not Path(path).is_absolute():
        path = str(out.parent / path)  # files written by an earlier experiment step
    return DataSpec(source=path, split=split, sample=sample, seed=seed)


def sized(source: tuple[str, str | None], out: Path, size: int | None) -> DataSpec:
    """The whole split, or a seeded random sample of ``size`` where it is larger (``None``: the
    whole split)."""
    if size is None:
        return spec(source, out, None, 0)
    total = len(as_examples(spec(source, out, None, 0)))
    return spec(source, out, size if total > size else None, 0)


@contextmanager
def timed(seconds: dict, key: str):
    """Record the wall time of the block under ``seconds[key]``."""
    started = time.perf_counter()
    yield
    seconds[key] = round(time.perf_counter() - started, 1)


def scores(
    examples: Examples, folder: Path, setup: Setup, seconds: dict, options: ExperimentOptions
) -> None:
    """Reference adapter, RepMatch (rank 1 and 4) and prototypicality scores of the pool.

    ``seconds`` gets the time of each stage that ran; reused stages keep their recorded time.
    """
    train = options.apply(TrainConfig(), max_length=setup.max_length)
    device = options.device
    if (folder / "reference" / "repmatch.json").is_file():  # reused: keep the recorded time
        reference = train_or_reuse(
            examples, train, folder / "reference", progress=False, device=device
        )
    else:
        with timed(seconds, "reference"):
            reference = train_or_reuse(
                examples, train, folder / "reference", progress=False, device=device
            )
    for rank in (1, 4):
        out = folder / f"repmatch-r{rank}.parquet"
        if not out.is_file():
            config = options.apply(ScoreConfig(rank=rank), max_length=setup.max_length)
            with timed(seconds, f"score-r{rank}"):
                score_instances(examples, reference, config, out=out, progress=False, device=device)
    out = folder / "prototypicality.parquet"
    if not out.is_file():
        embedding = options.apply(EmbeddingConfig())  # 512 tokens unless --max-length
        with timed(seconds, "prototypicality"):
            prototypicality_scores(examples, embedding, out=out, progress=False, device=device)


def subset_file(folder: Path, subset: str, k: int, seed: int) -> Path:
    stem, how = SUBSETS[subset]
    drawn = how["how"] == "random"
    path = folder / "subsets" / (f"{subset}-{k}" + (f"-s{seed}" if drawn else "") + ".jsonl")
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        config = SelectConfig(k=k, seed=seed if drawn else 0, **how)
        select_to_file(folder / f"{stem}.parquet", config, path)
    return path


def missing_classes(path: Path, held_out: Examples) -> list:
    """Classes of the evaluation data that the subset in ``path`` lacks (classification only)."""
    train = load_subset(path)
    if get_task(train.task).problem_type != "single_label_classification":
        return []

    def classes(examples) -> set:
        names = examples.label_names
        return {names[v] if names else v for v in np.unique(examples.labels).tolist()}

    return sorted(classes(held_out) - classes(train), key=str)


def evaluate(
    folder: Path,
    subset: str,
    k: int,
    seeds: list[int],
    evaluation: Examples,
    config: EvalConfig,
    device: str,
) -> dict:
    """Mean, std and per-run metrics of ``subset`` over ``seeds``.

    A subset lacking some evaluation classes (an unbalanced top-K) is still evaluated, with those
    classes in the head (``unseen_classes="include"``), and the result names them; for a subset
    with every class the head, and so every number, is the same either way.
    """
    drawn = SUBSETS[subset][1]["how"] == "random"
    groups = [[s] for s in seeds] if drawn else [seeds]
    runs, missing = [], set()
    for group in groups:
        path = subset_file(folder, subset, k, group[0])
        lacking = missing_classes(path, evaluation)
        missing.update(lacking)
        result = evaluate_subsets(
            [path],
            evaluation,
            replace(config, seeds=tuple(group), unseen_classes="include" if lacking else "error"),
            out=folder / "evaluations" / path.stem,
            progress=False,
            device=device,
        )
        runs.append(result.runs)
    table = pd.concat(runs, ignore_index=True)
    metrics = [c for c in table.columns if c not in ("subset", "seed", "seconds", "num_train")]
    numeric = table[metrics].select_dtypes("number")
    return {
        "mean": numeric.mean().round(4).to_dict(),
        "std": numeric.std(ddof=1).round(4).to_dict(),
        "runs": table.round(4).to_dict(orient="records"),
        "seconds": round(float(table["seconds"].sum()), 1),
        "missing_classes": sorted(missing, key=str),
    }


def save(summary_path: Path, name: str, entry: dict) -> None:
    """Write ``entry`` as dataset ``name`` of the summary, keeping what other runs wrote there
    since (several runs of this script may share one summary, one dataset each)."""
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary[name] = entry
    partial = summary_path.with_name(summary_path.name + ".partial")
    partial.write_text(json.dumps(summary, indent=1))
    partial.replace(summary_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS), choices=list(SUBSETS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100], help="subset sizes k")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds 0..N-1")
    parser.add_argument(
        "--pool", type=size, default=5000, help="pool size where larger (all: the whole split)"
    )
    parser.add_argument(
        "--eval-size", type=size, default=1000, help="evaluation size where larger (or all)"
    )
    parser.add_argument("--out", default="../runs/select")
    parser.add_argument("--summary", default="results/select-and-evaluate.json")
    add_arguments(parser)
    args = parser.parse_args()
    options = ExperimentOptions.from_args(args)
    out, summary_path = Path(args.out), Path(args.summary)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    seeds = list(range(args.seeds))
    for name in args.datasets:
        setup, folder = SETUPS[name], out / name
        folder.mkdir(parents=True, exist_ok=True)
        cap = [n for n in (args.pool, setup.max_pool) if n is not None]
        pool = sized(setup.pool, out, min(cap) if cap else None)
        evaluation = sized(setup.evaluation, out, args.eval_size)
        entry = summary.setdefault(name, {"seconds": {}, "results": {}})
        entry["pool"], entry["evaluation"] = pool.to_dict(), evaluation.to_dict()
        examples, held_out = as_examples(pool), as_examples(evaluation)  # read once
        entry["options"] = options.record()
        scores(examples, folder, setup, entry["seconds"], options)
        config = options.apply(EvalConfig(seeds=tuple(seeds)), max_length=setup.max_length)
        entry["eval_config"] = config.to_dict()
        classes = get_task(examples.task).problem_type == "single_label_classification"
        for k in args.sizes:
            for subset in args.subsets:
                if SUBSETS[subset][1].get("balanced") and not classes:
                    continue  # no classes to balance (extractive QA, regression)
                result = evaluate(folder, subset, k, seeds, held_out, config, options.device)
                entry["results"][f"{subset}-{k}"] = result
                shown = {
                    m: f"{result['mean'][m]:.4f}±{result['std'][m]:.4f}" for m in result["mean"]
                }
                print(name, f"{subset}-{k}", shown, f"{result['seconds']} s", flush=True)
                save(summary_path, name, entry)
        save(summary_path, name, entry)


if __name__ == "__main__":
    main()
