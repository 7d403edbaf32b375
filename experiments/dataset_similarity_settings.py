"""Why do our dataset-vs-dataset scores differ from the paper's? One matrix per training setting.

Issue 10 asks which settings reproduce the paper's order (SST-2 vs SST-5 above SST-2 vs IMDB) and
floor (unrelated tasks ≈ 0.01). Every setting trains one adapter per dataset and seed (reused when
already trained) and writes its matrix; this script gathers them with the time each took, plus
the similarity that random subspaces of the same shapes would get, into one JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from options import ExperimentOptions, add_arguments, size

from repmatch.adapters import load_adapter
from repmatch.compare import layer_scores
from repmatch.config import TrainConfig
from repmatch.data import DataSpec
from repmatch.similarity import dataset_similarity

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

DATASETS = {
    "SST-2": ("sst2", "train"),
    "SST-5": ("sst5", "train"),
    "IMDB": ("imdb", "train"),
    "MNLI": ("mnli", "validation"),
    "STS-B": ("stsb", "train"),
}

DEFAULT = TrainConfig()
SETTINGS = {
    "default": DEFAULT,
    "train-head": replace(DEFAULT, train_head=True),
    "query-value": replace(DEFAULT, targets=("query", "value")),
    "paper-schedule": replace(DEFAULT, lr=1e-5, epochs=5, batch_size=40),
    "paper-schedule-rank1": replace(DEFAULT, lr=1e-5, epochs=5, batch_size=40, rank=1, alpha=2.0),
    "longer": replace(DEFAULT, lr=1e-4, epochs=5, batch_size=40),
}


def random_subspace_floor(dim: int, rank: int, layers: int, trials: int = 2000) -> dict:
    """RepMatch of independent uniformly random rank-``rank`` subspaces of R^dim: mean and std."""
    generator = torch.Generator().manual_seed(0)

    def draw() -> dict[str, torch.Tensor]:
        return {
            str(i): torch.linalg.qr(torch.randn(trials, dim, rank, generator=generator))[0]
            for i in range(layers)
        }

    names = [str(i) for i in range(layers)]
    scores = layer_scores(draw(), draw(), names).mean(dim=-1)
    return {"mean": scores.mean().item(), "std": scores.std().item(), "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/dataset-similarity-settings")
    parser.add_argument("--sample", type=size, default=2000, help="instances per dataset (or all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--summary", default="results/dataset-similarity-settings.json")
    add_arguments(parser)
    args = parser.parse_args()
    options = ExperimentOptions.from_args(args)
    summary_path = Path(args.summary)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    specs = [
        DataSpec(source=str(DATA / folder), split=split, sample=args.sample)
        for folder, split in DATASETS.values()
    ]
    for name in args.settings:
        config = options.apply(SETTINGS[name])
        started = time.perf_counter()
        matrix = dataset_similarity(
            specs,
            config,
            Path(args.out) / name,
            seeds=tuple(args.seeds),
            progress=False,
            device=options.device,
        )
        summary[name] = {
            "config": config.to_dict(),
            "names": list(DATASETS),
            "mean": matrix.mean.round(4).tolist(),
            "std": matrix.std.round(4).tolist(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(name, f"{summary[name]['seconds']} s")
        print(matrix.to_frame().set_axis(list(DATASETS), axis=0).round(3).to_string())
        summary_path.write_text(json.dumps(summary, indent=1))
    layers = load_adapter(next(iter(matrix.adapters.values()))[args.seeds[0]]).layers
    dim = next(iter(layers.values())).shape[0]  # d_out of an adapted layer: where U lives
    for rank in (1, 4):
        summary[f"random-subspaces-rank{rank}"] = random_subspace_floor(dim, rank, len(layers))
    summary["sample"], summary["seeds"] = args.sample, args.seeds
    summary["options"] = options.record()
    summary_path.write_text(json.dumps(summary, indent=1))
    print({k: v for k, v in summary.items() if k.startswith("random")})


if __name__ == "__main__":
    main()
