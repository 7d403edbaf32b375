"""Instance-level RepMatch: score every instance of a dataset against a reference adapter.

Stages: reference adapter (from :mod:`repmatch.training`) -> per-instance updates
(:mod:`repmatch.instance_engine`) -> scores in Parquet, one row per instance keyed by its stable id.

Runs stream: instances are processed in chunks; each finished chunk is written to
``<out>.partial/chunk-NNNNN.parquet`` (atomically), so memory does not grow with the dataset and an
interrupted run resumes (``resume=True``) without recomputing or duplicating anything. When all
chunks are done they are joined into ``<out>`` and the run record ``<out>.json`` is written.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from repmatch import __version__
from repmatch.adapters import Adapter, load_adapter
from repmatch.batching import (
    EncodedExamples,
    PackedBatch,
    length_grouped_batches,
    padding_aware_batches,
)
from repmatch.compare import layer_scores, layer_subspaces, short_layer_name
from repmatch.data import DataSpec, Examples, load_examples
from repmatch.errors import RepmatchError
from repmatch.grassmann import Side, lowrank_singular_vectors, repmatch_score
from repmatch.instance_engine import (
    AdamWSettings,
    StackedLora,
    fresh_lora_init,
    multi_step_updates,
    one_step_updates,
)
from repmatch.models import (
    first_position_block,
    first_position_only,
    load_classifier,
    load_tokenizer,
    packed_position_offset,
    portable_model_name,
    resolve_device,
)
from repmatch.outputs import atomic_path, write_json
from repmatch.training import check_labels

logger = logging.getLogger(__name__)

_RUN_FILE = "run.json"

_PACK_WIDTH = 32
"""Tokens per row when short sequences are packed (rows widen to fit the longest sequence)."""


@dataclass(frozen=True)
class ScoreConfig:
    """How instances are scored. Defaults follow the paper: one AdamW step, lr 1e-3, rank 1."""

    rank: int = 1
    alpha: float = 4.0  # the reference script's LoRA alpha
    lr: float = 1e-3
    steps: int = 1
    weight_decay: float = 0.01  # torch's AdamW default, as in the reference script
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seeds: tuple[int, ...] = (0,)  # LoRA inits; several = a seed ensemble
    side: Side = "left"
    targets: tuple[str, ...] | None = None  # default: the reference adapter's layers
    batch_size: int = 64
    max_length: int = 512  # truncation only; batches are padded to their longest input
    chunk_size: int = 4096  # instances per streamed chunk
    model: str | None = None  # default: the reference adapter's base model

    def __post_init__(self) -> None:
        for name in ("rank", "lr", "steps", "batch_size", "max_length", "chunk_size", "alpha"):
            value = getattr(self, name)
            if not value > 0:
                raise RepmatchError(f"{name} must be positive, got {value!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise RepmatchError(f"seeds must be distinct and non-empty, got {list(self.seeds)}")
        if self.side not in ("left", "right"):
            raise RepmatchError(f"side must be 'left' or 'right', got {self.side!r}")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def adamw(self) -> AdamWSettings:
        return AdamWSettings(self.lr, self.betas, self.eps, self.weight_decay)

    def to_dict(self) -> dict:
        out = asdict(self)
        return out | {key: list(out[key]) for key in ("seeds", "betas") if out[key] is not None}


class InstanceScorer:
    """The scoring model: reference base model + reference head, frozen; fresh LoRA per instance.

    ``score_batch`` returns per-seed, per-layer scores for one batch of examples. ``device``: where
    the model runs (default: a CUDA GPU if there is one, else the CPU); the LoRA inits are drawn on
    the CPU either way, so a seed gives the same scores on every device up to rounding.
    """

    def __init__(
        self,
        reference: Adapter,
        config: ScoreConfig,
        *,
        device: str | torch.device | None = None,
    ) -> None:
        record = reference.record or {}
        if "num_labels" not in record:
            raise RepmatchError(
                f"reference adapter {reference.path} has no repmatch.json with its head size; "
                "train the reference with `repmatch train`"
            )
        if not reference.head:
            raise RepmatchError(
                f"reference adapter {reference.path} carries no classification head; scores must "
                "use the head it was trained with: train it with `repmatch train`"
            )
        model_name = config.model or reference.base_model
        if portable_model_name(model_name) != reference.base_model:
            raise RepmatchError(
                f"reference adapter {reference.path} was trained on '{reference.base_model}', "
                f"not on the scoring model '{model_name}'"
            )
        self.config = config
        self.device = resolve_device(device)
        self.regression = record.get("task") == "regression"
        self.num_labels = int(record["num_labels"])
        self.targets = self._targets(reference, config)
        self.tokenizer = load_tokenizer(model_name)
        self.model = load_classifier(
            model_name,
            num_labels=self.num_labels,
            head_seed=int(record.get("train", {}).get("head_seed", 0)),
            regression=self.regression,
        )
        missing = [key for key in reference.head if key not in self.model.state_dict()]
        if missing:
            raise RepmatchError(
                f"head weights of {reference.path} do not fit the scoring model (e.g. {missing[0]})"
            )
        self.model.load_state_dict(reference.head, strict=False)
        subspaces = layer_subspaces(reference, config.side)
        self.reference_subspaces = {name: subspaces[name].to(self.device) for name in self.targets}
        self.initial = {
            seed: {
                name: a0.to(self.device)
                for name, a0 in fresh_lora_init(
                    self.model, self.targets, rank=config.rank, alpha=config.alpha, seed=seed
                ).items()
            }
            for seed in config.seeds
        }
        self.model.to(self.device)
        self.lora = StackedLora(self.model, self.targets, scaling=config.alpha / config.rank)
        # BERT-style heads read the last layer at [CLS] only: skip its other positions there.
        self.readout_block = first_position_block(self.model)
        # One-step scores on the CPU pack short sequences into rows where that is exact: no
        # padding and few, large batches (None: padded batches).
        self.position_offset = (
            packed_position_offset(self.model, self.readout_block)
            if self.device.type == "cpu" and config.steps == 1
            else None
        )

    @staticmethod
    def _targets(reference: Adapter, config: ScoreConfig) -> list[str]:
        if config.targets is None:
            return list(reference.layers)
        chosen = [
            name
            for name in reference.layers
            if any(name == t or name.endswith("." + t) for t in config.targets)
        ]
        if not chosen:
            raise RepmatchError(
                f"targets {list(config.targets)} match none of the reference adapter's layers "
                f"(e.g. {next(iter(reference.layers))}); omit --targets to use all of them"
            )
        return chosen

    def instance_subspaces(
        self,
        batch: dict[str, torch.Tensor],
        labels: torch.Tensor,
        packed: PackedBatch | None = None,
    ) -> dict[int, dict[str, torch.Tensor]]:
        """Singular vectors of every instance's ΔW: seed -> layer -> (N, d, r), on ``device``.

        ``batch``: padded model inputs, one instance per row, or ``packed.inputs`` with ``packed``
        (one-step scores only); ``labels``: (N,) in row or packed order.
        """
        config = self.config
        if packed is not None and config.steps != 1:
            raise ValueError("packed rows are for one-step scores only (steps == 1)")
        batch = {key: tensor.to(self.device) for key, tensor in batch.items()}
        labels = labels.to(self.device)
        at = packed.starts if packed is not None else None
        with first_position_only(self.readout_block, at):
            if config.steps == 1:
                stacked = {
                    name: torch.cat([self.initial[s][name] for s in config.seeds])
                    for name in self.targets
                }
                updates = one_step_updates(
                    self.model,
                    batch,
                    labels,
                    stacked,
                    config.adamw,
                    scaling=self.lora.scaling,
                    regression=self.regression,
                    segments=packed.segments if packed is not None else None,
                )
                r = config.rank
                per_seed = {
                    seed: {
                        name: (B[..., k * r : (k + 1) * r], A[k * r : (k + 1) * r])
                        for name, (B, A) in updates.items()
                    }
                    for k, seed in enumerate(config.seeds)
                }
            else:
                per_seed = {
                    seed: multi_step_updates(
                        self.lora,
                        batch,
                        labels,
                        self.initial[seed],
                        config.adamw,
                        steps=config.steps,
                        regression=self.regression,
                    )
                    for seed in config.seeds
                }
        return {
            seed: {
                name: lowrank_singular_vectors(B, A, config.side)[0]
                for name, (B, A) in updates.items()
            }
            for seed, updates in per_seed.items()
        }

    def score(self, examples: Examples) -> torch.Tensor:
        """Per-seed, per-layer RepMatch of every instance, in data order: (S, N, L)."""
        config = self.config
        encoded = EncodedExamples(self.tokenizer, examples, max_length=config.max_length)
        labels = torch.as_tensor(examples.labels)
        scores = torch.empty(len(config.seeds), len(examples), len(self.targets))
        if self.position_offset is not None:  # batches of similar lengths, packed into rows
            for positions in length_grouped_batches(encoded.lengths, config.batch_size):
                width = max(_PACK_WIDTH, int(encoded.lengths[positions].max()))
                packed = encoded.packed(
                    positions, width, position_offset=self.position_offset, device=self.device
                )
                scores[:, packed.order] = self.score_batch(
                    packed.inputs, labels[packed.order], packed
                ).cpu()
            return scores
        if self.device.type == "cpu":  # compute is the cost: spend as little on padding as pays
            batches = padding_aware_batches(encoded.lengths, config.batch_size)
        else:  # on an accelerator a batch's fixed cost dominates: fill every batch
            batches = length_grouped_batches(encoded.lengths, config.batch_size)
        for positions in batches:
            batch = encoded.batch(positions, self.device)
            scores[:, positions] = self.score_batch(batch, labels[positions]).cpu()
        return scores

    def score_batch(
        self,
        batch: dict[str, torch.Tensor],
        labels: torch.Tensor,
        packed: PackedBatch | None = None,
    ) -> torch.Tensor:
        """Per-seed, per-layer RepMatch against the reference: (S, N, L), on ``device``."""
        subspaces = self.instance_subspaces(batch, labels, packed)
        return torch.stack(
            [
                layer_scores(by_layer, self.reference_subspaces, self.targets)
                for by_layer in subspaces.values()
            ]
        )


def score_instances(
    data: DataSpec | Examples,
    reference: str | Path,
    config: ScoreConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Score every instance of ``data`` against the ``reference`` adapter.

    Returns a DataFrame with one row per instance, in data order: ``id``, ``label``, ``score``
    (mean over seeds), ``score_std`` and ``score_seed<S>`` (several seeds), and per layer
    ``layer_<i>_<module>`` (mean over seeds). With ``out``, the same table is also written as
    Parquet, streamed in chunks so that an interrupted run can be resumed, plus the run record
    ``<out>.json``. ``device``: where the model runs (default: a CUDA GPU if there is one).
    """
    config = config or ScoreConfig()
    examples = load_examples(data) if isinstance(data, DataSpec) else data
    if len(examples) == 0:
        raise RepmatchError(f"no instances to score in {examples.name}")
    adapter = load_adapter(reference)
    target = Path(out) if out is not None else None
    run = {
        "format": "repmatch-scores/1",
        "repmatch_version": __version__,
        "reference": str(Path(reference).resolve()),
        "reference_model": adapter.base_model,
        "score": config.to_dict(),
        "data": examples.spec.to_dict() if examples.spec else None,
        "data_name": examples.name,
        "data_fingerprint": examples.fingerprint(),
        "num_examples": len(examples),
    }
    store = _ChunkStore(target, run, resume=resume, overwrite=overwrite) if target else None

    scorer = InstanceScorer(adapter, config, device=device)
    check_labels(examples, scorer.num_labels)
    if (examples.task == "regression") != scorer.regression:
        raise RepmatchError(
            f"{examples.name} is a {examples.task} task but the reference adapter was trained "
            f"for {(adapter.record or {}).get('task')}"
        )
    layer_columns = [short_layer_name(name).replace(" ", "_") for name in scorer.targets]
    chunks = range(0, len(examples), config.chunk_size)
    started = time.perf_counter()
    tables = []
    computed = 0  # instances scored in this call (not read back from an earlier run)
    with tqdm(total=len(examples), unit="inst", desc="score", disable=not progress) as bar:
        for index, start in enumerate(chunks):
            if store and store.done(index):
                table = store.read(index)
            else:
                positions = range(start, min(start + config.chunk_size, len(examples)))
                table = _score_chunk(scorer, examples.select(positions), layer_columns)
                computed += table.num_rows
                if store:
                    store.write(index, table)
            tables.append(table)
            bar.update(table.num_rows)
    seconds = time.perf_counter() - started
    joined = pa.concat_tables(tables)
    result = joined.to_pandas()
    run |= {
        "seed_spearman": _seed_spearman(result, config.seeds),
        "seconds": round(seconds, 2),
        "instances_per_second": round(computed / seconds, 2) if seconds else None,
        "device": str(scorer.device),
        "layers": scorer.targets,
    }
    if store:
        store.finish(joined, run)
    return result


def _score_chunk(scorer: InstanceScorer, examples: Examples, layer_columns: list[str]) -> pa.Table:
    """Scores of one chunk as an Arrow table in data order."""
    config = scorer.config
    scores = scorer.score(examples)
    per_seed = repmatch_score(scores).double().numpy()  # (S, N)
    columns: dict[str, object] = {
        "id": examples.ids,
        "label": examples.labels,
        "score": per_seed.mean(axis=0),
    }
    if len(config.seeds) > 1:
        columns["score_std"] = per_seed.std(axis=0)
        for k, seed in enumerate(config.seeds):
            columns[f"score_seed{seed}"] = per_seed[k]
    layer_means = scores.mean(dim=0).double().numpy()  # (N, L)
    for j, column in enumerate(layer_columns):
        columns[column] = layer_means[:, j]
    return pa.table(columns)


def _seed_spearman(result: pd.DataFrame, seeds: tuple[int, ...]) -> dict[str, float] | None:
    """Spearman correlation of the instance rankings of every pair of seeds."""
    if len(seeds) < 2:
        return None
    ranks = {seed: result[f"score_seed{seed}"].rank().to_numpy() for seed in seeds}
    return {
        f"{a}-{b}": float(np.corrcoef(ranks[a], ranks[b])[0, 1])
        for a, b in itertools.combinations(seeds, 2)
    }


class _ChunkStore:
    """Finished chunks on disk next to the output, and the final join."""

    def __init__(self, out: Path, run: dict, *, resume: bool, overwrite: bool) -> None:
        self.out = out
        self.folder = out.with_name(out.name + ".partial")
        self.run = run
        if out.exists() and not overwrite:
            raise RepmatchError(
                f"{out} already exists; pass --overwrite to replace it"
                + (" (this run is already complete)" if resume else "")
            )
        run_file = self.folder / _RUN_FILE
        if self.folder.exists() and not resume:
            raise RepmatchError(
                f"an unfinished run is stored in {self.folder}; pass --resume to finish it, "
                "or delete that folder to start over"
            )
        if resume and self.folder.exists():
            try:
                stored = json.loads(run_file.read_text())
            except (OSError, ValueError):
                raise RepmatchError(
                    f"{run_file} is missing or corrupted; delete {self.folder} to start over"
                ) from None
            for key in ("score", "data_fingerprint", "reference"):
                if stored.get(key) != run.get(key):
                    raise RepmatchError(
                        f"cannot resume: the stored run in {self.folder} used a different {key}; "
                        "rerun with the same data, reference and settings, or delete the folder"
                    )

    def _chunk(self, index: int) -> Path:
        return self.folder / f"chunk-{index:05d}.parquet"

    def done(self, index: int) -> bool:
        return self._chunk(index).exists()

    def read(self, index: int) -> pa.Table:
        try:
            return pq.read_table(self._chunk(index))
        except (OSError, pa.ArrowException) as err:
            raise RepmatchError(
                f"chunk file {self._chunk(index)} is corrupted ({err}); delete that file and run "
                "again with --resume to recompute only it"
            ) from None

    def write(self, index: int, table: pa.Table) -> None:
        # The folder is created with the first chunk, so a run refused before scoring anything
        # (bad reference, labels, ...) leaves nothing behind that would block a corrected rerun.
        run_file = self.folder / _RUN_FILE
        if not run_file.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(run_file, self.run)
        with atomic_path(self._chunk(index)) as temporary:
            pq.write_table(table, temporary)

    def finish(self, table: pa.Table, run: dict) -> None:
        with atomic_path(self.out) as temporary:
            pq.write_table(table, temporary)
        write_json(self.out.with_name(self.out.name + ".json"), run)
        shutil.rmtree(self.folder)
