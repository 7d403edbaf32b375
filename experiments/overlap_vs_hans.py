"""Are NLI instances that follow HANS's overlap heuristic more similar to HANS? (paper Tables 3
and 5; issue 17 item 6).

Per NLI split: the Full / Mid / No word-overlap subsets of its non-entailment pairs
(:func:`repmatch.data.overlap_subsets`), and ``--repeats`` samples of up to ``--size`` instances of
each (sample seed r, LoRA seed r); an adapter is trained on every sample and compared with an
adapter trained on HANS (``--hans-epochs`` over ``--hans-sample`` pairs; its held-out accuracy on
HANS validation is recorded, and read before any verdict). A sample smaller than ``--size`` (the
Full subsets here are tiny) is trained for proportionally more epochs, so every adapter makes about
``--passes`` instance passes (one epoch over 300 instances by default); otherwise the smaller
subsets would simply have moved less. ``--size`` equal to the smallest subset compares the bands at
the same number of distinct instances as well (the equal-size control).
A random sample of all non-entailment pairs is the control.

Heads (``--heads``): ``aligned`` (default) maps every band instance to HANS's non-entailment
class and trains it with HANS's two-class head drawn from the same head seed, so that band and
HANS adapters differ in their data only; ``native`` keeps the split's own three classes (a head
of another size and other classes than HANS's, as before issue 17).

    python experiments/overlap_vs_hans.py --out ../runs/overlap \
        --summary results/table5-aligned.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from options import ExperimentOptions, add_arguments, size

from repmatch.adapters import RECORD_FILE
from repmatch.compare import compare_adapters
from repmatch.config import TrainConfig
from repmatch.data import DataSpec, Examples, as_examples, overlap_subsets
from repmatch.errors import RepmatchError
from repmatch.heldout import learning_verdict
from repmatch.training import train_or_reuse

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPLITS = {
    "MNLI validation": ("mnli", "validation"),
    "MNLI validation_mismatched": ("mnli", "validation_mismatched"),
    "SNLI validation": ("snli", "validation"),
    "SNLI test": ("snli", "test"),
}


def sample(examples, size: int, seed: int):
    if len(examples) <= size:
        return examples
    positions = np.sort(np.random.default_rng(seed).choice(len(examples), size, replace=False))
    return examples.select(positions.tolist())


def training_seconds(adapter: Path) -> float:
    """How long the adapter took to train, as it recorded (also when reused now)."""
    return json.loads((adapter / RECORD_FILE).read_text())["seconds"]


def heldout_record(adapter: Path) -> dict:
    """The adapter's held-out accuracy beside the majority-class rate, and whether it learned."""
    heldout = json.loads((adapter / RECORD_FILE).read_text())["heldout"]
    accuracy, majority = heldout["metrics"]["accuracy"], heldout["majority_rate"]
    return {
        "data_name": heldout["data_name"],
        "num_examples": heldout["num_examples"],
        "metrics": heldout["metrics"],
        "majority_rate": majority,
        "learned": learning_verdict(accuracy, majority),
    }


def hans_classes(hans: Examples) -> tuple[int, int]:
    """(entailment, non-entailment) class indices of a two-class HANS split."""
    if hans.num_labels != 2:
        raise RepmatchError(f"HANS must have two classes, {hans.name} has {hans.num_labels}")
    entailment = overlap_subsets(hans).entailment
    return entailment, 1 - entailment


def as_hans(examples: Examples, non_entailment: int) -> Examples:
    """Non-entailment pairs labelled with HANS's non-entailment class in a two-class label space."""
    labels = np.full(len(examples), non_entailment, dtype=examples.labels.dtype)
    return replace(examples, labels=labels, num_labels=2, label_names=None, spec=None)


def split_entry(
    name: str, args: argparse.Namespace, config: TrainConfig, hans: tuple, device: str
) -> dict:
    """Sizes, per-band adapter scores against HANS and timings of one NLI split."""
    hans_adapter, non_entailment = hans
    folder, split = SPLITS[name]
    data = as_examples(DataSpec(str(Path(args.data) / folder), split=split))
    bands = overlap_subsets(data)
    groups = dict(bands.subsets)
    groups["all non-entailment (control)"] = data.select(
        np.flatnonzero(data.labels != bands.entailment).tolist()
    )
    root = Path(args.out) / ("aligned" if args.heads == "aligned" else "")
    entry: dict = {"sizes": {}, "classes": {}, "scores": {}, "seconds": {}}
    for band, examples in groups.items():
        entry["sizes"][band] = len(examples)
        labels, counts = np.unique(examples.labels, return_counts=True)
        entry["classes"][band] = dict(zip(map(str, labels.tolist()), counts.tolist(), strict=True))
        if args.heads == "aligned":
            examples = as_hans(examples, non_entailment)
        scores, seconds = [], 0.0
        for repeat in range(args.repeats):
            chosen = sample(examples, args.size, repeat)
            epochs = max(1, math.ceil(args.passes / len(chosen)))
            adapter = train_or_reuse(
                chosen,
                replace(config, seed=repeat, epochs=epochs),
                root / folder / split / band.split()[0] / f"r{repeat}",
                progress=False,
                device=device,
            )
            scores.append(compare_adapters(adapter, hans_adapter).score)
            seconds += training_seconds(adapter)
        entry["seconds"][band] = round(seconds, 1)  # training, as each adapter recorded it
        entry["scores"][band] = {
            "mean": float(np.mean(scores)),
            "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
            "each": scores,
            "instances": len(chosen),
            "epochs": epochs,
        }
        print(name, band, len(examples), f"{np.mean(scores):.4f}", flush=True)
    means = {band: entry["scores"][band]["mean"] for band in bands.subsets}
    entry["most_similar_band"] = max(means, key=means.get)
    return entry


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--passes", type=int, default=300, help="instance passes per adapter (epochs x size)"
    )
    parser.add_argument("--hans-sample", type=size, default=2000, help="HANS instances (or all)")
    parser.add_argument(
        "--hans-epochs",
        type=int,
        default=5,
        help="epochs of the HANS adapter (paper: 5 for non-sentiment tasks; 1 did not learn HANS)",
    )
    parser.add_argument(
        "--heads",
        choices=("aligned", "native"),
        default="aligned",
        help="aligned: bands as HANS non-entailment, HANS's head; native: the split's 3 classes",
    )
    parser.add_argument("--data", default=str(SHARED), help="folder of the datasets")
    parser.add_argument(
        "--hans-eval",
        type=size,
        default=2000,
        help="HANS validation pairs the HANS adapter is evaluated on (or all)",
    )
    parser.add_argument("--out", default="../runs/overlap")
    parser.add_argument("--summary", default="results/table5-aligned.json")
    add_arguments(parser)
    args = parser.parse_args(argv)
    options = ExperimentOptions.from_args(args)
    config, device = options.apply(TrainConfig()), options.device
    folder = Path(args.data) / "hans"
    hans = as_examples(DataSpec(str(folder), split="train", sample=args.hans_sample))
    heldout = as_examples(DataSpec(str(folder), split="validation"))
    heldout = sample(heldout, args.hans_eval or len(heldout), 0)
    hans_config = replace(config, epochs=args.hans_epochs)
    hans_adapter = train_or_reuse(
        hans, hans_config, Path(args.out) / "hans", progress=False, device=device, heldout=heldout
    )
    summary_path = Path(args.summary)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary |= {
        "settings": vars(args),
        "options": options.record(),
        "train": config.to_dict(),  # the band adapters' (epochs: from --passes)
        "hans_train": hans_config.to_dict(),
        "hans_seconds": training_seconds(hans_adapter),
        "hans_heldout": heldout_record(hans_adapter),
    }
    hans_pair = (hans_adapter, hans_classes(hans)[1])
    for name in args.splits:
        summary[name] = split_entry(name, args, config, hans_pair, device)
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
