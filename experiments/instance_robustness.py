"""Instance-level robustness (paper Fig. 2) and ranking stability across LoRA seeds.

1. Fig. 2: the one-step update of the *same* instance under different LoRA seeds vs *different*
   instances under one seed, compared with RepMatch (no reference adapter involved).
2. How stable the instance ranking against a reference adapter is across LoRA seeds: Spearman
   between single seeds and between two disjoint seed ensembles, for rank 1 and rank 4.

Prints a summary and writes every figure to a JSON file.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from options import ExperimentOptions, add_arguments, size
from scipy.stats import spearmanr

from repmatch.adapters import load_adapter
from repmatch.batching import EncodedExamples
from repmatch.compare import layer_scores
from repmatch.data import DataSpec, Examples, load_examples
from repmatch.grassmann import repmatch_score
from repmatch.scoring import InstanceScorer, ScoreConfig
from repmatch.training import TrainConfig, train_or_reuse


def pairwise_repmatch(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]):
    """RepMatch between matching instances of two subspace sets: layer -> (N, d, r) -> (N,)."""
    return repmatch_score(layer_scores(first, second, list(first)))


def figure2(scorer: InstanceScorer, examples, seeds: list[int], rng: np.random.Generator) -> dict:
    """Each instance's update under two seeds (mean over the seed pairs) against its update and a
    random other instance's under one seed (mean over the seeds): the two means and, per
    instance, both figures (for a paired test)."""
    encoded = EncodedExamples(scorer.tokenizer, examples, max_length=scorer.config.max_length)
    positions = list(range(len(examples)))
    subspaces = scorer.instance_subspaces(
        encoded.batch(positions), torch.as_tensor(examples.labels)
    )
    same_instance = torch.stack(
        [pairwise_repmatch(subspaces[a], subspaces[b]) for a, b in itertools.combinations(seeds, 2)]
    )  # (seed pairs, N)
    n = len(positions)
    partner = (np.arange(n) + rng.integers(1, n, size=n)) % n  # another instance, never itself
    different_instances = torch.stack(
        [
            pairwise_repmatch(
                subspaces[seed], {name: u[partner] for name, u in subspaces[seed].items()}
            )
            for seed in seeds
        ]
    )  # (seeds, N)
    same, different = same_instance.mean(0), different_instances.mean(0)
    return {
        "same_instance_different_seeds": same.mean().item(),
        "different_instances_same_seed": different.mean().item(),
        "instances": len(positions),
        "seed_pairs": len(same_instance),
        "per_instance": {
            "same_instance_different_seeds": [round(x, 6) for x in same.tolist()],
            "different_instances_same_seed": [round(x, 6) for x in different.tolist()],
        },
    }


def ranking_stability(per_seed: np.ndarray) -> dict:
    """per_seed: (S, N) scores. Spearman between single seeds and between seed ensembles."""
    singles = [
        spearmanr(per_seed[a], per_seed[b]).statistic
        for a, b in itertools.combinations(range(len(per_seed)), 2)
    ]
    half = len(per_seed) // 2
    ensemble = spearmanr(per_seed[:half].mean(0), per_seed[half:].mean(0)).statistic
    return {
        "single_seed_mean": float(np.mean(singles)),
        "single_seed_min": float(np.min(singles)),
        "single_seed_max": float(np.max(singles)),
        f"ensemble_{half}_vs_{half}": float(ensemble),
    }


def scored_instances(data: str, split: str, n: int | None, reference_ids: list) -> Examples:
    """The first ``n`` of ``split``, or for the reference's own split ``n`` random others
    (``None``: all of them)."""
    if split == "validation":
        return load_examples(DataSpec(data, split=split, limit=n))
    pool = load_examples(DataSpec(data, split=split))
    taken = set(reference_ids)
    others = [k for k, id_ in enumerate(pool.ids) if id_ not in taken]
    chosen = np.random.default_rng(1).choice(others, size=n or len(others), replace=False)
    return pool.select(sorted(chosen.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--reference-size", type=size, default=2000, help="or all")
    parser.add_argument("--instances", type=size, default=500, help="instances scored (or all)")
    parser.add_argument("--figure2-instances", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--work", default="runs/instance-robustness")
    parser.add_argument(
        "--scored-split",
        default="validation",
        help="split of the scored instances: validation (its first N) or train (N random train "
        "instances outside the reference's sample)",
    )
    parser.add_argument("--out", default="results/instance-robustness.json")
    add_arguments(parser)
    args = parser.parse_args()
    options = ExperimentOptions.from_args(args)

    reference_data = load_examples(DataSpec(args.data, sample=args.reference_size))
    reference = train_or_reuse(
        reference_data,
        options.apply(TrainConfig()),
        Path(args.work) / "reference",
        device=options.device,
    )
    scored = scored_instances(args.data, args.scored_split, args.instances, reference_data.ids)
    seeds = list(range(args.seeds))
    report: dict = {"args": vars(args), "options": options.record(), "reference": str(reference)}
    for rank in (1, 4):
        config = options.apply(ScoreConfig(rank=rank, seeds=seeds))
        scorer = InstanceScorer(load_adapter(reference), config, device=options.device)
        per_seed = scorer.score(scored).mean(dim=2).numpy()  # (S, N)
        report[f"rank{rank}"] = {
            "figure2": figure2(
                scorer,
                scored.select(range(args.figure2_instances)),
                seeds[:5],
                np.random.default_rng(0),
            ),
            "ranking": ranking_stability(per_seed),
            "mean_score": float(per_seed.mean()),
        }
        print(f"rank {rank}: {json.dumps(report[f'rank{rank}'], indent=2)}")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
