"""Dataset-vs-dataset similarity: one adapter per dataset (and seed), RepMatch between every pair.

Stages on disk under ``out_dir``: ``adapters/<dataset>/seed<S>-<key>/`` (reused whenever an adapter
with the same training configuration and data fingerprint exists), then ``matrix.csv``,
``matrix.json`` (means, stds, every pair's scores and the full configuration) and ``matrix.png``;
with a ``baseline`` config also the representation baseline of the same data (paper Table 2, see
:mod:`repmatch.representation`) in ``baseline.csv`` and ``baseline.json``.

With one seed, entry (i, j) compares the two datasets' adapters trained with that seed, so the
diagonal is 1. With several seeds, every entry averages over ordered pairs of *different* seeds,
so the diagonal measures seed robustness and no entry is inflated by a shared LoRA init.

Under ``torchrun`` (:mod:`repmatch.distributed`) the processes train each adapter together (data
parallel, as ``repmatch train``); the main process compares them and writes the outputs.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from repmatch import distributed
from repmatch.adapters import load_adapter
from repmatch.artifacts import exclusive_output, output_set, run_record, write_json
from repmatch.compare import compare_adapters, task_mix_note
from repmatch.config import (
    BaselineConfig,
    Side,
    TrainConfig,
    check_argument,
    check_seeds,
    check_side,
)
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.errors import RepmatchError
from repmatch.plotting import plot_similarity_matrix
from repmatch.representation import BaselineMatrix, baseline_matrix
from repmatch.training import adapter_key, train_or_reuse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimilarityMatrix:
    """Pairwise RepMatch between datasets: mean and population std (ddof 0) over the seed pairs,
    (D, D) each."""

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    seeds: list[int]
    adapters: dict[str, dict[int, str]]
    baseline: BaselineMatrix | None = None  # the representation baseline, when asked for
    notes: list[str] = field(default_factory=list)  # e.g. regression beside classification

    def to_dict(self) -> dict:
        return {
            "notes": self.notes,
            "names": self.names,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "std_of": "population std over the seed pairs (ddof 0)",
            "seeds": self.seeds,
            "adapters": {
                name: {str(s): p for s, p in d.items()} for name, d in self.adapters.items()
            },
        }

    def to_frame(self) -> pd.DataFrame:
        """The mean matrix as a DataFrame indexed and labelled by dataset name."""
        return pd.DataFrame(self.mean, index=self.names, columns=self.names)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["dataset", *self.names])
        for name, row in zip(self.names, self.mean, strict=True):
            writer.writerow([name, *(f"{value:.6f}" for value in row)])
        return buffer.getvalue()


def dataset_similarity(
    datasets: Sequence[DataSpec | object],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    seeds: tuple[int, ...] = (0,),
    side: Side = "left",
    progress: bool = True,
    device: str | torch.device | None = None,
    baseline: BaselineConfig | None = None,
) -> SimilarityMatrix:
    """Train (or reuse) one adapter per dataset and seed; write and return the RepMatch matrix.

    ``datasets``: data specs, DataFrames or ``datasets.Dataset`` objects. ``seeds`` replace
    ``config.seed``: every adapter is trained with one of them. ``device``: where adapters are
    trained (default: a CUDA GPU if there is one, else the CPU). ``baseline``: also compute the
    representation baseline of the same data (at most ``baseline.sample`` instances of each),
    written beside the matrix and returned as ``result.baseline``.
    """
    check_argument(datasets, Sequence, "datasets")
    check_argument(config, TrainConfig)
    if len(datasets) < 2:
        raise RepmatchError("pass at least two datasets to compare")
    seeds = check_seeds(seeds)
    check_side(side)
    out = Path(out_dir)
    device = distributed.start(device)  # under torchrun: this rank's device, the process group

    def claim(stack: ExitStack) -> None:
        stack.enter_context(exclusive_output(out))  # one writer per output
        _check_output(out)

    with distributed.checked_on_main(claim):
        return _similarity(
            datasets, config, out, seeds, side, progress=progress, device=device, baseline=baseline
        )


ADAPTERS_FOLDER = "adapters"
"""Subfolder of a matrix's output holding every trained adapter (what a rerun reuses)."""


def _check_output(out: Path) -> None:
    """Refuse a file, and a non-empty folder that holds no earlier run (no matrix.json and no
    adapters/ folder): another command's output or a user's files."""
    if out.exists() and not out.is_dir():
        raise RepmatchError(f"output {out} is a file; name a folder for the matrix", field="out")
    ours = (out / "matrix.json").is_file() or (out / ADAPTERS_FOLDER).is_dir()
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise RepmatchError(
            f"output folder {out} is not empty and holds no matrix or adapters of an earlier "
            "run; refusing to write among its files: choose another folder",
            field="out",
        )


def _similarity(
    datasets: Sequence[DataSpec | object],
    config: TrainConfig,
    out: Path,
    seeds: tuple[int, ...],
    side: Side,
    *,
    progress: bool,
    device: str | torch.device | None,
    baseline: BaselineConfig | None = None,
) -> SimilarityMatrix:
    loaded = [as_examples(data) for data in datasets]
    names = _unique_names([examples.name for examples in loaded])
    folders: dict[str, dict[int, str]] = {}
    for name, examples in zip(names, loaded, strict=True):
        folders[name] = {}
        for seed in seeds:
            seeded = replace(config, seed=seed)
            folder = (
                out
                / ADAPTERS_FOLDER
                / name.replace("/", "-")
                / (f"seed{seed}-{adapter_key(seeded, examples)}")
            )
            train_or_reuse(examples, seeded, folder, progress=progress, device=device)
            folders[name][seed] = str(folder)
    if not distributed.is_main():  # under torchrun: the main process compares and writes
        return distributed.broadcast(None)  # type: ignore[return-value]  # the main's matrix
    result, record = _compare(loaded, names, folders, config, seeds, side)
    if baseline is not None:
        matrix = baseline_matrix(loaded, baseline, names=names, progress=progress, device=device)
        result = replace(result, baseline=matrix)
    _write(result, out, record, loaded)
    return distributed.broadcast(result)


def _compare(
    loaded: list[Examples],
    names: list[str],
    folders: dict[str, dict[int, str]],
    config: TrainConfig,
    seeds: tuple[int, ...],
    side: Side,
) -> tuple[SimilarityMatrix, dict]:
    """RepMatch between every pair of the trained adapters: the matrix and its record."""
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
    note = task_mix_note(
        {name: examples.task for name, examples in zip(names, loaded, strict=True)}
    )
    result = SimilarityMatrix(
        names=names,
        mean=scores.mean(axis=0),
        std=scores.std(axis=0),
        seeds=list(seeds),
        adapters=folders,
        notes=[] if note is None else [note],
    )
    record = run_record(
        "matrix",
        **result.to_dict(),
        side=side,
        seed_pairs=[list(pair) for pair in seed_pairs],
        per_seed_pair=scores.tolist(),
        # the training seed of every adapter is one of ``seeds``, not ``config.seed``
        config={
            "train": {key: value for key, value in config.to_dict().items() if key != "seed"},
            "seeds": list(seeds),
            "data": _data_records(loaded),
        },
    )
    return result, record


def _data_records(loaded: list[Examples]) -> list:
    """Each dataset's spec record (in-memory data: its name), as the outputs record them."""
    return [
        examples.spec.to_record() if examples.spec is not None else examples.name
        for examples in loaded
    ]


def _write(result: SimilarityMatrix, out: Path, record: dict, loaded: list[Examples]) -> None:
    """The matrix files (and the baseline's), committed together, ``matrix.json`` last."""
    with output_set(out) as outputs:
        outputs.path(out / "matrix.csv").write_text(result.to_csv())
        plot_similarity_matrix(
            result.mean,
            result.names,
            outputs.path(out / "matrix.png"),
            std=result.std if len(record["seed_pairs"]) > 1 else None,
        )
        if result.baseline is not None:
            outputs.path(out / "baseline.csv").write_text(result.baseline.to_csv())
            write_json(
                outputs.path(out / "baseline.json"),
                run_record(
                    "baseline-matrix", **result.baseline.to_dict(), data=_data_records(loaded)
                ),
            )
        else:  # an earlier run's baseline would not match this matrix
            outputs.remove(out / "baseline.csv")
            outputs.remove(out / "baseline.json")
        write_json(outputs.path(out / "matrix.json"), record)


def _unique_names(names: list[str]) -> list[str]:
    """Names made unique with ``#2``, ``#3``, ... suffixes that no other name already uses."""
    taken = set(names)
    unique: list[str] = []
    for name in names:
        if name not in unique:
            unique.append(name)
            continue
        k = 2
        while f"{name}#{k}" in taken or f"{name}#{k}" in unique:
            k += 1
        unique.append(f"{name}#{k}")
    return unique
