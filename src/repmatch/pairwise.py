"""Dataset-vs-dataset similarity: one adapter per dataset (and seed), RepMatch between every pair.

Stages on disk under ``out_dir``: ``adapters/<dataset>/seed<S>-<key>/`` (reused whenever an adapter
with the same training configuration and data fingerprint exists), then ``matrix.csv``,
``matrix.json`` (means, stds, every pair's scores and the full configuration) and ``matrix.png``.

With one seed, entry (i, j) compares the two datasets' adapters trained with that seed, so the
diagonal is 1. With several seeds, every entry averages over ordered pairs of *different* seeds,
so the diagonal measures seed robustness and no entry is inflated by a shared LoRA init.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from repmatch.adapters import RECORD_FILE, load_adapter
from repmatch.compare import compare_adapters
from repmatch.data import DataSpec, Examples, load_examples
from repmatch.errors import RepmatchError
from repmatch.grassmann import Side
from repmatch.outputs import atomic_path, write_json
from repmatch.plotting import plot_similarity_matrix
from repmatch.training import TrainConfig, train_adapter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimilarityMatrix:
    """Pairwise RepMatch between datasets: mean and std over seed pairs, (D, D) each."""

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    seeds: list[int]
    adapters: dict[str, dict[int, str]]

    def to_dict(self) -> dict:
        return {
            "names": self.names,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "seeds": self.seeds,
            "adapters": {
                name: {str(s): p for s, p in d.items()} for name, d in self.adapters.items()
            },
        }

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["dataset", *self.names])
        for name, row in zip(self.names, self.mean, strict=True):
            writer.writerow([name, *(f"{value:.6f}" for value in row)])
        return buffer.getvalue()


def adapter_key(config: TrainConfig, examples: Examples) -> str:
    """Short hash of everything that determines an adapter: training config and data."""
    payload = json.dumps(
        {"train": config.to_dict(), "data": examples.fingerprint()}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def ensure_adapter(
    examples: Examples,
    config: TrainConfig,
    folder: Path,
    *,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Path:
    """Train the adapter into ``folder`` unless a matching one is already there.

    An adapter trained on another device is reused: the device only changes rounding.
    """
    record_file = folder / RECORD_FILE
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        if (
            record.get("train") == config.to_dict()
            and record.get("data_fingerprint") == examples.fingerprint()
        ):
            logger.info("reusing %s", folder)
            return folder
    return train_adapter(examples, config, folder, overwrite=True, progress=progress, device=device)


def dataset_similarity(
    datasets: list[DataSpec],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    seeds: tuple[int, ...] = (0,),
    side: Side = "left",
    progress: bool = True,
    device: str | torch.device | None = None,
) -> SimilarityMatrix:
    """Train (or reuse) one adapter per dataset and seed; write and return the RepMatch matrix.

    ``device``: where adapters are trained (default: a CUDA GPU if there is one, else the CPU).
    """
    if len(datasets) < 2:
        raise RepmatchError("pass at least two datasets to compare")
    if not seeds or len(set(seeds)) != len(seeds):
        raise RepmatchError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    out = Path(out_dir)
    loaded = [load_examples(spec) for spec in datasets]
    names = _unique_names([examples.name for examples in loaded])
    folders: dict[str, dict[int, str]] = {}
    for name, examples in zip(names, loaded, strict=True):
        folders[name] = {}
        for seed in seeds:
            seeded = replace(config, seed=seed)
            folder = (
                out
                / "adapters"
                / name.replace("/", "-")
                / (f"seed{seed}-{adapter_key(seeded, examples)}")
            )
            ensure_adapter(examples, seeded, folder, progress=progress, device=device)
            folders[name][seed] = str(folder)

    adapters = {
        (n, s): load_adapter(p) for n, by_seed in folders.items() for s, p in by_seed.items()
    }
    seed_pairs = (
        [(seeds[0], seeds[0])] if len(seeds) == 1 else list(itertools.permutations(seeds, 2))
    )
    scores = np.zeros((len(seed_pairs), len(names), len(names)))
    for k, (s, t) in enumerate(seed_pairs):
        for i, first in enumerate(names):
            for j, second in enumerate(names):
                if len(seeds) == 1 and j < i:
                    scores[k, i, j] = scores[k, j, i]
                    continue
                scores[k, i, j] = compare_adapters(
                    adapters[first, s], adapters[second, t], side=side
                ).score
    result = SimilarityMatrix(
        names=names,
        mean=scores.mean(axis=0),
        std=scores.std(axis=0),
        seeds=list(seeds),
        adapters=folders,
    )
    _write(result, out, datasets, config, side, seed_pairs, scores)
    return result


def _write(result, out: Path, datasets, config, side, seed_pairs, scores) -> None:
    with atomic_path(out / "matrix.csv") as temporary:
        temporary.write_text(result.to_csv())
    write_json(
        out / "matrix.json",
        result.to_dict()
        | {
            "side": side,
            "seed_pairs": [list(pair) for pair in seed_pairs],
            "per_seed_pair": scores.tolist(),
            "config": {"train": config.to_dict(), "data": [spec.to_dict() for spec in datasets]},
        },
    )
    plot_similarity_matrix(
        result.mean,
        result.names,
        out / "matrix.png",
        std=result.std if len(seed_pairs) > 1 else None,
    )


def _unique_names(names: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    unique = []
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        unique.append(name if counts[name] == 1 else f"{name}#{counts[name]}")
    return unique
