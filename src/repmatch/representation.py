r"""The representation side: pooled embeddings of the base model and what is built on them.

- :func:`pooled_embeddings`: one vector per instance from the pretrained model, no fine-tuning:
  the last hidden state at [CLS] (the first position; the last real token for a decoder, whose
  attention is causal), or the mean over tokens;
- :func:`representation_baseline` and :func:`baseline_matrix`: the paper's representation
  baseline (§5, Table 2): the percentage of instance pairs (i, j) of two datasets, up to 10,000
  random instances each, whose embeddings have a cosine above a threshold (0.9). The cosine
  matrix is counted in chunks of rows, never held whole;
- :func:`prototypicality_scores`: the embedding baseline for instance scores, the cosine of every
  instance's embedding with its class centroid, written like RepMatch scores.

The paper used BERT-base's [CLS] vector. The default here is the bundled all-MiniLM-L6-v2, a
sentence encoder trained with mean pooling, whose [CLS] vector follows the paper's recipe but is
not the embedding the model was trained to produce (``pooling="mean"`` gives that one).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from repmatch.artifacts import ChunkStore, data_record, exclusive_output, run_record
from repmatch.batching import EncodedExamples, plan_batches
from repmatch.config import BaselineConfig, EmbeddingConfig, Pooling, check_argument
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.errors import RepmatchError
from repmatch.models import (
    check_lengths,
    is_causal,
    load_base_model,
    load_tokenizer,
    portable_model_name,
    resolve_device,
)
from repmatch.tasks import get_task

logger = logging.getLogger(__name__)

__all__ = [
    "BaselineMatrix",
    "Embedder",
    "baseline_matrix",
    "centroid_cosines",
    "pairs_above",
    "pool",
    "pooled_embeddings",
    "prototypicality_scores",
    "representation_baseline",
    "sample_examples",
]


# --------------------------------------------------------------------------------------------
# Pure maths


def pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling, *, last_token: bool
) -> torch.Tensor:
    """One vector per sequence from the last hidden states.

    Args:
        hidden: (B, T, H) last hidden states of right-padded sequences.
        attention_mask: (B, T), 1 on real tokens.
        pooling: ``"cls"``: position 0, or with ``last_token`` the last real token; ``"mean"``:
            the mean over real tokens.
        last_token: the model is a decoder (causal attention).

    Returns:
        (B, H).
    """
    mask = attention_mask.to(hidden.dtype)  # (B, T)
    if pooling == "mean":
        return (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    if last_token:
        last = attention_mask.sum(dim=1).long() - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return hidden[:, 0]


def pairs_above(
    first: torch.Tensor, second: torch.Tensor, threshold: float, *, chunk_size: int = 1024
) -> tuple[int, float]:
    """How many pairs (i, j) have cos(first_i, second_j) > ``threshold``, and their mean cosine.

    Args:
        first: (N1, H); second: (N2, H). Zero vectors have cosine 0 with everything.
        threshold: pairs count when their cosine is strictly above it.
        chunk_size: rows of ``first`` per (chunk_size, N2) block of cosines; only one block is in
            memory at a time.

    Returns:
        ``(count, mean cosine over all N1 * N2 pairs)``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    unit_first = torch.nn.functional.normalize(first.float(), dim=-1)
    unit_second = torch.nn.functional.normalize(second.float(), dim=-1)
    count, total = 0, 0.0
    for start in range(0, unit_first.shape[0], chunk_size):
        # (chunk, N2); rounding can put identical vectors a hair above 1
        cosines = (unit_first[start : start + chunk_size] @ unit_second.T).clamp(-1.0, 1.0)
        count += int((cosines > threshold).sum())
        total += float(cosines.double().sum())
    pairs = unit_first.shape[0] * unit_second.shape[0]
    return count, total / pairs if pairs else float("nan")


def centroid_cosines(embeddings: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Cosine of every embedding with its class centroid.

    Embeddings are scaled to unit length first, and a centroid is the mean of its class's unit
    vectors (the instance itself included), so no long vector dominates.

    Args:
        embeddings: (N, H).
        labels: (N,) class indices, or ``None`` for one centroid over all (regression).

    Returns:
        (N,) cosines in [-1, 1], float32.
    """
    unit = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    if labels is None:
        labels = torch.zeros(unit.shape[0], dtype=torch.long)
    classes, index = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), unit.shape[1], dtype=unit.dtype).index_add_(0, index, unit)
    centroids = torch.nn.functional.normalize(sums, dim=-1)  # (C, H), direction of the mean
    return (unit * centroids[index]).sum(dim=-1).clamp(-1.0, 1.0).float()


# --------------------------------------------------------------------------------------------
# Embeddings


class Embedder:
    """The base model and its tokenizer, ready to embed examples (``config``: model, pooling,
    batch size, max length). ``device``: default a CUDA GPU if there is one, else the CPU."""

    def __init__(
        self, config: EmbeddingConfig, *, device: str | torch.device | None = None
    ) -> None:
        self.config = config
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(config.model)
        self.model = load_base_model(config.model)
        self.last_token = is_causal(self.model)
        self.model.to(self.device)  # type: ignore[arg-type]  # transformers' wrapped .to

    def __call__(self, examples: Examples, *, progress: bool = False) -> torch.Tensor:
        """Pooled embeddings of ``examples``, in data order: (N, H) float32 on the CPU."""
        config = self.config
        encoded = EncodedExamples(self.tokenizer, examples, max_length=config.max_length)
        check_lengths(self.model, encoded.lengths, examples.ids, config.max_length)
        out = torch.empty(len(examples), self.model.config.hidden_size)
        batches = plan_batches(encoded, config.batch_size, self.device)
        with (
            torch.inference_mode(),
            tqdm(total=len(examples), unit="inst", desc="embed", disable=not progress) as bar,
        ):
            for batch in batches:
                hidden = self.model(**batch.inputs).last_hidden_state  # (B, T, H)
                pooled = pool(
                    hidden,
                    batch.inputs["attention_mask"],
                    config.pooling,
                    last_token=self.last_token,
                )
                out[torch.as_tensor(batch.positions)] = pooled.float().cpu()
                bar.update(len(batch.positions))
        return out


def pooled_embeddings(
    data: DataSpec | Examples | pd.DataFrame | object,
    config: EmbeddingConfig | None = None,
    *,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Pooled embeddings of every instance of ``data`` by the base model: (N, H) float32.

    ``data``: a :class:`DataSpec`, :class:`Examples`, pandas DataFrame or ``datasets.Dataset``.
    No gradients, batched by length, on ``device`` (default: a CUDA GPU if there is one).
    """
    examples = as_examples(data)
    return Embedder(config or EmbeddingConfig(), device=device)(examples, progress=progress)


# --------------------------------------------------------------------------------------------
# The representation baseline


@dataclass(frozen=True)
class BaselineMatrix:
    """The representation baseline between datasets: (D, D) percentages of pairs above the
    threshold, pair counts above it and mean cosines; ``sizes``: instances embedded per dataset
    (``available``: before sampling)."""

    names: list[str]
    percent: np.ndarray
    above: np.ndarray
    mean_cosine: np.ndarray
    sizes: list[int]
    available: list[int]
    config: BaselineConfig
    seconds: float

    def to_dict(self) -> dict:
        return {
            "names": self.names,
            "percent": self.percent.tolist(),
            "pairs_above": self.above.tolist(),
            "mean_cosine": self.mean_cosine.tolist(),
            "sizes": self.sizes,
            "available": self.available,
            "config": _recorded(self.config),
            "seconds": round(self.seconds, 2),
        }

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["dataset", *self.names])
        for name, row in zip(self.names, self.percent, strict=True):
            writer.writerow([name, *(f"{value:.4f}" for value in row)])
        return buffer.getvalue()


def sample_examples(examples: Examples, size: int, seed: int) -> Examples:
    """At most ``size`` random instances of ``examples`` (all when fewer), kept in data order."""
    if len(examples) <= size:
        return examples
    chosen = np.random.default_rng(seed).choice(len(examples), size=size, replace=False)
    return examples.select(np.sort(chosen))


def _recorded(config: EmbeddingConfig) -> dict:
    """A config as recorded: the model by its portable name."""
    return config.to_dict() | {"model": portable_model_name(config.model)}


def _embedded_samples(
    loaded: list[Examples],
    config: BaselineConfig,
    *,
    progress: bool,
    device: str | torch.device | None,
) -> list[torch.Tensor]:
    """Embeddings (n_k, H) of at most ``config.sample`` random instances of every dataset."""
    sampled = [sample_examples(examples, config.sample, config.seed) for examples in loaded]
    embed = Embedder(config, device=device)
    return [embed(examples, progress=progress).to(embed.device) for examples in sampled]


def baseline_matrix(
    datasets: Sequence[DataSpec | Examples | pd.DataFrame | object],
    config: BaselineConfig | None = None,
    *,
    names: list[str] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> BaselineMatrix:
    """The representation baseline between every pair of ``datasets`` (the diagonal included).

    Each dataset is embedded once: at most ``config.sample`` random instances of it (seeded by
    ``config.seed``). A dataset paired with itself counts its own (i, i) pairs, cosine 1.
    """
    config = config or BaselineConfig()
    check_argument(config, BaselineConfig)
    if not datasets:
        raise RepmatchError("pass at least one dataset")
    started = time.perf_counter()
    loaded = [as_examples(data) for data in datasets]
    vectors = _embedded_samples(loaded, config, progress=progress, device=device)
    size = len(loaded)
    above = np.zeros((size, size), dtype=np.int64)
    mean = np.zeros((size, size))
    for i in range(size):
        for j in range(i, size):
            count, cosine = pairs_above(
                vectors[i], vectors[j], config.threshold, chunk_size=config.chunk_size
            )
            above[i, j] = above[j, i] = count
            mean[i, j] = mean[j, i] = cosine
    sizes = [len(v) for v in vectors]
    return BaselineMatrix(
        names=list(names or [examples.name for examples in loaded]),
        percent=100.0 * above / np.outer(sizes, sizes),
        above=above,
        mean_cosine=mean,
        sizes=sizes,
        available=[len(examples) for examples in loaded],
        config=config,
        seconds=time.perf_counter() - started,
    )


def representation_baseline(
    first: DataSpec | Examples | pd.DataFrame | object,
    second: DataSpec | Examples | pd.DataFrame | object,
    config: BaselineConfig | None = None,
    *,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> dict:
    """The paper's representation baseline of two datasets: the percentage of all pairs (i, j),
    i from ``first`` and j from ``second`` (at most ``config.sample`` random instances each),
    whose pooled embeddings have a cosine above ``config.threshold``.

    Returns a JSON-ready dict: ``percent``, ``pairs_above``, ``pairs``, ``mean_cosine``,
    ``threshold``, ``sizes``, ``available`` (before sampling), ``datasets`` (names), ``config``,
    ``seconds`` and ``data`` (each dataset's spec and fingerprint).
    """
    config = config or BaselineConfig()
    check_argument(config, BaselineConfig)
    started = time.perf_counter()
    loaded = [as_examples(first), as_examples(second)]
    vectors = _embedded_samples(loaded, config, progress=progress, device=device)
    first_vectors, second_vectors = vectors
    count, cosine = pairs_above(
        first_vectors, second_vectors, config.threshold, chunk_size=config.chunk_size
    )
    pairs = len(vectors[0]) * len(vectors[1])
    return {
        "percent": 100.0 * count / pairs,
        "pairs_above": count,
        "pairs": pairs,
        "mean_cosine": cosine,
        "threshold": config.threshold,
        "sizes": [len(v) for v in vectors],
        "available": [len(examples) for examples in loaded],
        "datasets": [examples.name for examples in loaded],
        "config": _recorded(config),
        "seconds": round(time.perf_counter() - started, 2),
        "data": [data_record(examples) for examples in loaded],
    }


# --------------------------------------------------------------------------------------------
# Prototypicality scores

_IDENTITY = ("method", "embedding", "data_fingerprint")
"""Run record keys that must match for a stored prototypicality run to be resumed."""


def prototypicality_scores(
    data: DataSpec | Examples | pd.DataFrame | object,
    config: EmbeddingConfig | None = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Score every instance of ``data`` by the cosine of its pooled embedding with its class
    centroid (one centroid over all instances for regression and extractive QA).

    The embedding baseline a user tries first. No reference adapter: the centroids come from the
    scored data itself. Returns a DataFrame in data order with ``id``, ``label`` and ``score``
    (higher: more prototypical). With ``out``, written like RepMatch scores: Parquet plus the run
    record ``<out>.json`` (kind ``scores``, ``method: prototypicality``), atomically, one writer
    at a time, an existing file replaced only with ``overwrite``.
    """
    config = config or EmbeddingConfig()
    check_argument(config, EmbeddingConfig)
    examples = as_examples(data)
    if len(examples) == 0:
        raise RepmatchError(f"no instances to score in {examples.name}")
    run = run_record(
        "scores",
        method="prototypicality",
        embedding=_recorded(config),
        **data_record(examples),
    )
    if out is None:
        return _prototypicality(examples, config, run, None, progress=progress, device=device)
    with exclusive_output(out):  # one writer per output, checked before any work
        store = ChunkStore(Path(out), run, _IDENTITY, resume=False, overwrite=overwrite)
        return _prototypicality(examples, config, run, store, progress=progress, device=device)


def _prototypicality(
    examples: Examples,
    config: EmbeddingConfig,
    run: dict,
    store: ChunkStore | None,
    *,
    progress: bool,
    device: str | torch.device | None,
) -> pd.DataFrame:
    import pyarrow as pa

    embed = Embedder(config, device=device)
    started = time.perf_counter()
    vectors = embed(examples, progress=progress)
    task = get_task(examples.task)
    classes = task.has_classes
    labels = torch.as_tensor(examples.labels) if classes else None  # else: one centroid
    scores = centroid_cosines(vectors, labels).double().numpy()
    seconds = time.perf_counter() - started
    references = task.references(examples)  # the label column, as RepMatch's
    table = pa.table({"id": examples.ids, "label": references, "score": scores})
    run |= {
        "centroids": "one per class" if classes else "one over all instances",
        "seconds": round(seconds, 2),
        "computed": len(examples),
        "read_back": 0,
        "instances_per_second": round(len(examples) / seconds, 2) if seconds else None,
        "device": str(embed.device),
    }
    if store:
        store.write(0, table)  # one chunk: the centroids need every instance first
        store.finish(table, run)
    return table.to_pandas()
