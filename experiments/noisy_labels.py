"""Can instance scores find flipped labels? (issue 9; paper §5.3 claims the least representative
instances are outliers or noise).

Per dataset and seed: a pool with ``--noise`` of its labels flipped (seeded; binary: the other
class, multi-class: a uniformly drawn other class), a reference adapter trained on the *noisy*
pool (``--ref-*``; the paper's settings by default: rank 1, batch 40, 10 epochs sentiment / 5 NLI)
whose accuracy on clean held-out data is recorded beside the majority-class rate, and one
suspicion score per instance from each detector:

- RepMatch one-step, rank 1 and rank 4 (low score = suspicious);
- the label-aware ``gradient`` measure, cos(-grad L(x), ΔW_ref) (low = suspicious);
- the reference model's loss on the instance's (possibly flipped) label (high = suspicious);
- cleanlab's ``find_label_issues`` with out-of-sample probabilities from K-fold LoRA models with
  a trained head (its ranking; the self-confidence label quality for AUROC and AP).

Each detector is judged by AUROC, average precision and precision at the number flipped; the
summary gives mean ± std over seeds and the time each step took.

    python experiments/noisy_labels.py --out ../runs/noisy --summary results/noisy-labels.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from options import (
    REFERENCE_FLAGS,
    ExperimentOptions,
    add_arguments,
    add_reference_arguments,
    paper_epochs,
    reference_config,
    size,
    sized,
)
from sklearn.metrics import average_precision_score, roc_auc_score

from repmatch.adapters import load_adapter, load_adapter_model
from repmatch.batching import EncodedExamples, plan_batches
from repmatch.config import ScoreConfig, TrainConfig
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.heldout import learning_verdict
from repmatch.models import load_tokenizer
from repmatch.scoring import score_instances
from repmatch.tasks import get_task
from repmatch.training import train_or_reuse

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POOLS = {  # name -> (folder under --data, pool split, held-out split, sentiment)
    "SST-2": ("sst2", "train", "validation", True),
    "SST-5": ("sst5", "train", "validation", True),
    "MNLI": ("mnli", "validation", "validation_mismatched", False),  # no train split
}


@contextmanager
def timed(seconds: dict, key: str):
    started = time.perf_counter()
    yield
    seconds[key] = round(seconds.get(key, 0.0) + time.perf_counter() - started, 1)


def flip_labels(labels: np.ndarray, num_labels: int, share: float, seed: int):
    """Labels with ``share`` of them flipped to another class: (noisy labels, flipped mask)."""
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(len(labels), size=round(share * len(labels)), replace=False)] = True
    offsets = rng.integers(1, num_labels, size=len(labels))  # never 0: always another class
    noisy = np.where(flipped, (labels + offsets) % num_labels, labels)
    return noisy.astype(labels.dtype), flipped


def noisy_examples(clean: Examples, noisy: np.ndarray, name: str) -> Examples:
    return replace(clean, labels=noisy, name=name, spec=None)


def adapter_logits(folder: Path, examples: Examples, max_length: int, device: str) -> torch.Tensor:
    """Logits of the model an adapter folder describes (base, LoRA and head): (N, C)."""
    adapter = load_adapter(folder)
    model = load_adapter_model(adapter, device=device)
    task = get_task(adapter.task)
    encoded = EncodedExamples(load_tokenizer(adapter.base_model), examples, max_length=max_length)
    logits = torch.empty(len(examples), examples.num_labels)
    on = next(model.parameters()).device
    with torch.inference_mode():
        for batch in plan_batches(encoded, 64, on):
            logits[batch.positions] = task.logits(model(**batch.inputs), batch.inputs).float().cpu()
    return logits


def out_of_sample_probabilities(
    examples: Examples, folds: int, config: TrainConfig, folder: Path, seed: int, device: str
) -> np.ndarray:
    """Softmax of K-fold models, each predicting the fold it did not train on: (N, C)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    probabilities = np.zeros((len(examples), examples.num_labels))
    for k, held_out in enumerate(np.array_split(order, folds)):
        kept = np.setdiff1d(order, held_out)
        adapter = train_or_reuse(
            examples.select(kept), config, folder / f"fold{k}", progress=False, device=device
        )
        logits = adapter_logits(adapter, examples.select(held_out), config.max_length, device)
        probabilities[held_out] = torch.softmax(logits, dim=-1).numpy()
    return probabilities


def judge(suspicion: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    """AUROC, average precision and precision at the number flipped of one detector."""
    top = np.argsort(-suspicion, kind="stable")[: flipped.sum()]
    return {
        "auroc": float(roc_auc_score(flipped, suspicion)),
        "average_precision": float(average_precision_score(flipped, suspicion)),
        "precision_at_flipped": float(flipped[top].mean()),
    }


def run_or_reuse(name: str, seed: int, args, options: ExperimentOptions) -> dict:
    """One seed's detector results and stage times, read from ``detectors.json`` when there."""
    cached = Path(args.out) / name / f"seed{seed}" / "detectors.json"
    keys = ("pool", "noise", "folds", "fold_epochs", "heldout_size", *REFERENCE_FLAGS)
    settings = {key: getattr(args, key) for key in keys}
    settings["options"] = dataclasses.asdict(options) | {"device": None}  # any device will do
    if cached.is_file():
        record = json.loads(cached.read_text())
        # records from before the options existed were made with the default ones
        default = dataclasses.asdict(ExperimentOptions()) | {"device": None}
        if {"options": default} | record["settings"] == settings:
            return record
    seconds: dict[str, float] = {}
    results, reference = run(name, seed, args, options, seconds)
    record = {"settings": settings, "results": results, "seconds": seconds, "reference": reference}
    cached.write_text(json.dumps(record, indent=1))
    return record


def heldout_record(folder: Path) -> dict:
    """How a reference adapter did on the held-out data it was trained with: accuracy, the
    majority-class rate and :func:`repmatch.heldout.learning_verdict`."""
    heldout = load_adapter(folder).record["heldout"]
    accuracy, majority = heldout["metrics"]["accuracy"], heldout["majority_rate"]
    return {
        "data_name": heldout["data_name"],
        "num_examples": heldout["num_examples"],
        "accuracy": accuracy,
        "majority_rate": majority,
        "learned": learning_verdict(accuracy, majority),
    }


def run(
    name: str, seed: int, args, options: ExperimentOptions, seconds: dict
) -> tuple[dict[str, dict[str, float]], dict]:
    """One seed's detectors' results, and the reference's :func:`heldout_record`."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    folder_name, split, heldout_split, sentiment = POOLS[name]
    source = Path(args.data) / folder_name
    clean = as_examples(DataSpec(str(source), split=split, sample=args.pool, seed=0))
    heldout = sized((folder_name, heldout_split), Path(args.data), args.heldout_size)
    noisy, flipped = flip_labels(clean.labels, clean.num_labels, args.noise, seed)
    examples = noisy_examples(clean, noisy, f"{name}-noisy-s{seed}")
    folder = Path(args.out) / name / f"seed{seed}"
    epochs = paper_epochs(args.ref_epochs, sentiment=sentiment)
    train = options.apply(replace(reference_config(args), epochs=epochs, seed=seed))
    device = options.device
    with timed(seconds, "reference"):
        reference = train_or_reuse(
            examples, train, folder / "reference", progress=False, device=device, heldout=heldout
        )
    suspicion = {}
    for label, config in {
        "repmatch-r1": ScoreConfig(rank=1, seeds=(seed,)),
        "repmatch-r4": ScoreConfig(rank=4, seeds=(seed,)),
        "gradient": ScoreConfig(measure="gradient"),
    }.items():
        with timed(seconds, label):
            table = score_instances(
                examples, reference, options.apply(config), progress=False, device=device
            )
        suspicion[label] = -table["score"].to_numpy()
    with timed(seconds, "reference-loss"):
        logits = adapter_logits(reference, examples, train.max_length, device)
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(noisy), reduction="none")
    suspicion["reference-loss"] = loss.numpy()
    with timed(seconds, "cleanlab"):
        # cleanlab's fold models: rank 4 with a trained head, whatever the reference's settings
        folds = options.apply(TrainConfig(seed=seed, train_head=True, epochs=args.fold_epochs))
        probabilities = out_of_sample_probabilities(
            examples, args.folds, folds, folder / "folds", seed, device
        )
        quality = get_label_quality_scores(noisy, probabilities)
        ranked = find_label_issues(noisy, probabilities, return_indices_ranked_by="self_confidence")
    suspicion["cleanlab"] = -quality
    results = {label: judge(values, flipped) for label, values in suspicion.items()}
    results["cleanlab"]["issues_found"] = int(len(ranked))
    results["cleanlab"]["precision_of_issues"] = float(flipped[ranked].mean()) if len(ranked) else 0
    results["cleanlab"]["recall_of_issues"] = float(flipped[ranked].sum() / flipped.sum())
    return results, heldout_record(reference)


def per_detector(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Detector -> its metrics, rounded; a metric only one detector has (cleanlab's issue
    counts) is left out of the others' (no NaN in the JSON)."""
    return {
        detector: {metric: round(value, 4) for metric, value in row.items() if pd.notna(value)}
        for detector, row in table.to_dict(orient="index").items()
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(POOLS), choices=list(POOLS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pool", type=size, default=2000, help="pool size (or all)")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-epochs", type=int, default=2)
    parser.add_argument(
        "--heldout-size",
        type=size,
        default=1000,
        help="clean held-out instances the reference is evaluated on (or all)",
    )
    parser.add_argument("--data", default=str(SHARED), help="folder of the datasets")
    parser.add_argument("--out", default="../runs/noisy")
    parser.add_argument("--summary", default="results/noisy-labels.json")
    add_reference_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    options = ExperimentOptions.from_args(args)
    summary = {"settings": vars(args), "options": options.record()}
    per_seed: dict[str, list] = {name: [] for name in args.datasets}
    seconds: dict[str, list] = {name: [] for name in args.datasets}
    references: dict[str, list] = {name: [] for name in args.datasets}
    for seed in range(args.seeds):  # seed-major: every dataset gets each seed in turn
        for name in args.datasets:
            record = run_or_reuse(name, seed, args, options)
            per_seed[name].append(record["results"])
            references[name].append(record["reference"])
            if record["seconds"] is not None:  # unknown for seeds run before the cache existed
                seconds[name].append(record["seconds"])
            table = pd.DataFrame(
                [{"detector": d, **m} for results in per_seed[name] for d, m in results.items()]
            )
            grouped = table.groupby("detector", sort=False)
            summary[name] = {
                "seeds_done": len(per_seed[name]),
                "mean": per_detector(grouped.mean()),
                "std": per_detector(grouped.std(ddof=1)),
                "per_seed": per_seed[name],
                "references": references[name],  # per seed: held-out accuracy, majority rate
                "seconds_per_seed": pd.DataFrame(seconds[name]).mean().round(1).to_dict(),
                "seeds_timed": len(seconds[name]),
            }
            print(name, f"seeds 0..{seed}\n", grouped.mean().round(3).to_string(), flush=True)
            partial = Path(args.summary).with_suffix(".partial")
            partial.write_text(json.dumps(summary, indent=1))
            partial.replace(args.summary)  # never a half-written summary
    return summary


if __name__ == "__main__":
    main()
