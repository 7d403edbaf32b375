"""Instance-level RepMatch: score every instance of a dataset against a reference adapter.

Stages: reference adapter (from :mod:`repmatch.training`) -> per-instance updates
(:mod:`repmatch.updates`) -> scores in Parquet, one row per instance keyed by its stable id.

Runs stream: instances are processed in chunks; each finished chunk is written to
``<out>.partial/chunk-NNNNN.parquet`` (atomically), so memory does not grow with the dataset and an
interrupted run resumes (``resume=True``) without recomputing or duplicating anything. When all
chunks are done they are joined into ``<out>`` and the run record ``<out>.json`` is written.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from repmatch import distributed
from repmatch.adapters import Adapter, load_adapter
from repmatch.alignment import frobenius_cosine, gradient_cosine
from repmatch.artifacts import ChunkStore, data_record, exclusive_output, run_record
from repmatch.batching import EncodedExamples, PackedBatch, plan_batches
from repmatch.compare import layer_scores, layer_subspaces
from repmatch.config import DEFAULT_HEAD_SEED, ScoreConfig, check_argument
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.errors import RepmatchError
from repmatch.grassmann import lowrank_singular_vectors, repmatch_score
from repmatch.lora import draw_lora_init, short_layer_name
from repmatch.models import (
    ReadoutCut,
    align_pad_token,
    attention_kernel,
    check_lengths,
    compute_dtype,
    load_classifier,
    load_tokenizer,
    max_positions,
    packed_position_offset,
    packing_mask,
    portable_model_name,
    resolve_device,
)
from repmatch.tasks import Task, get_task
from repmatch.updates import Updates, multi_step_updates, one_step_updates, token_gradients

logger = logging.getLogger(__name__)

__all__ = ["InstanceScorer", "Reference", "ScoreConfig", "score_instances"]


@dataclass(frozen=True)
class Reference:
    """What scoring needs from the reference adapter: checked once, before any model is loaded."""

    adapter: Adapter
    model: str  # the scoring base model (portable name or path)
    task: Task
    num_outputs: int  # head size
    head_seed: int
    targets: list[str]  # layers scored, in model order

    @classmethod
    def check(cls, adapter: Adapter, config: ScoreConfig) -> Reference:
        """Raise a one-line error unless ``adapter`` can serve as a scoring reference."""
        if not adapter.head:
            raise RepmatchError(
                f"reference adapter {adapter.path} carries no classification head; scores must "
                "use the head it was trained with: train it with `repmatch train`, or save the "
                "head with PEFT (task_type='SEQ_CLS' or modules_to_save)"
            )
        num_outputs = adapter.num_labels
        if num_outputs is None:
            raise RepmatchError(
                f"cannot tell the head size of reference adapter {adapter.path}: no "
                "repmatch.json and no output layer among its saved head weights"
            )
        model = config.model or adapter.base_model
        if not model:
            raise RepmatchError(
                f"reference adapter {adapter.path} does not name its base model; pass the model",
                field="model",
            )
        if portable_model_name(model) != adapter.base_model:
            raise RepmatchError(
                f"reference adapter {adapter.path} was trained on '{adapter.base_model}', "
                f"not on the scoring model '{model}'",
                field="model",
            )
        task = get_task(adapter.task or ("regression" if num_outputs == 1 else None))
        head_seed = adapter.head_seed
        return cls(
            adapter=adapter,
            model=model,
            task=task,
            num_outputs=num_outputs,
            head_seed=DEFAULT_HEAD_SEED if head_seed is None else head_seed,
            targets=_targets(adapter, config),
        )

    def check_data(self, examples: Examples) -> Examples:
        """``examples`` with labels mapped through the reference's classes; raise if they don't
        fit (regression against classification, a class the reference never saw).

        Another task kind of the same loss is allowed (single-text data against a pair
        reference, as in an unrelated-task control): :meth:`task_note` says so.
        """
        task = get_task(examples.task)
        if task.problem_type != self.task.problem_type:
            raise RepmatchError(
                f"{examples.name} is {task.name} data but the reference adapter "
                f"{self.adapter.path} was trained on {self.task.name} data; score data of the "
                "reference's kind, or train a reference on this data with `repmatch train`"
            )
        aligned = examples.aligned_to(self.adapter.label_names, self.num_outputs)
        self.task.check_labels(aligned, self.num_outputs)
        return aligned

    def task_note(self, examples: Examples) -> str | None:
        """A note where ``examples`` are of another task kind than the reference's recorded one
        (pair against single text, or the other way round); ``None`` otherwise."""
        task = get_task(examples.task)
        if self.adapter.task is None or task == self.task:
            return None
        return (
            f"{examples.name} is {task.name} data and the reference adapter {self.adapter.path} "
            f"was trained on {self.task.name} data: each instance is scored by the update its "
            "own input makes under the reference's head"
        )


def _targets(adapter: Adapter, config: ScoreConfig) -> list[str]:
    if config.targets is None:
        return list(adapter.layers)
    chosen = [
        name
        for name in adapter.layers
        if any(name == t or name.endswith("." + t) for t in config.targets)
    ]
    if not chosen:
        raise RepmatchError(
            f"targets {list(config.targets)} match none of the reference adapter's layers "
            f"(e.g. {next(iter(adapter.layers))}); leave targets out to use all of them",
            field="targets",
        )
    return chosen


class InstanceScorer:
    """The scoring model: reference base model + reference head, frozen; fresh LoRA per instance.

    ``score`` returns per-seed, per-layer scores of examples. ``device``: where the model runs
    (default: a CUDA GPU if there is one, else the CPU); the LoRA inits are drawn on the CPU
    either way, so a seed gives the same scores on every device up to rounding.
    """

    def __init__(
        self,
        reference: Adapter | Reference,
        config: ScoreConfig,
        *,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(reference, Adapter):
            reference = Reference.check(reference, config)
        self.reference = reference
        self.config = config
        self.device = resolve_device(device)
        self.dtype = compute_dtype(config.dtype, self.device)
        self.task = reference.task
        self.targets = reference.targets
        self.tokenizer = load_tokenizer(reference.model)
        self.model = load_classifier(
            reference.model,
            task=reference.task,
            num_labels=reference.num_outputs,
            head_seed=reference.head_seed,
        )
        _load_head(self.model, reference.adapter)
        self.initial = (
            {}  # the gradient measure takes no LoRA init
            if config.measure == "gradient"
            else {
                seed: {name: a0.to(self.device) for name, a0 in factors.items()}
                for seed, factors in draw_lora_init(
                    self.model,
                    self.targets,
                    rank=config.rank,
                    alpha=config.alpha,
                    seeds=config.seeds,
                ).items()
            }
        )
        subspaces = layer_subspaces(reference.adapter, config.side)
        self.reference_subspaces = {name: subspaces[name].to(self.device) for name in self.targets}
        layers = reference.adapter.layers
        self.reference_factors = {  # ΔW = (s B) A of every scored layer
            name: (
                (layers[name].scaling * layers[name].B).to(self.device),
                layers[name].A.to(self.device),
            )
            for name in self.targets
        }
        self.model.to(self.device)  # type: ignore[arg-type]  # transformers' wrapped .to
        align_pad_token(self.tokenizer, self.model)  # decoders read the last token not padding
        # Heads that read one position of the last layer ([CLS], or a decoder's last token) need
        # it there only.
        self.readout = (
            ReadoutCut.probe(self.model) if self.task.reads_one_position else ReadoutCut()
        )
        # One-step scores on the CPU pack short sequences into rows where that is exact (not for
        # decoders: their head reads one position per row).
        self.position_offset = (
            packed_position_offset(self.model, self.readout.blocks)
            if self.device.type == "cpu" and config.steps == 1 and not self.readout.last_token
            else None
        )
        # Lower precision: the model's weights only, after the LoRA inits and the probes above
        # (float32); the per-instance maths stays float32 (see repmatch.updates).
        self.model.to(self.dtype)  # type: ignore[arg-type]

    @contextmanager
    def _running(
        self,
        batch: dict[str, torch.Tensor],
        labels: torch.Tensor,
        packed: PackedBatch | None,
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Inside: ``batch`` and ``labels`` on ``device``, the attention kernel of ``dtype`` and
        the readout cut (at the packed sequences' first tokens with ``packed``) in place."""
        batch = {key: tensor.to(self.device) for key, tensor in batch.items()}
        if packed is not None:
            batch["attention_mask"] = packing_mask(self.model, batch["attention_mask"])
        where = packed.starts if packed else None
        with (
            attention_kernel(self.dtype, self.device),
            self.readout.applied(self.model, batch["input_ids"], where),
        ):
            yield batch, labels.to(self.device)

    def instance_updates(
        self,
        batch: dict[str, torch.Tensor],
        labels: torch.Tensor,
        packed: PackedBatch | None = None,
    ) -> Updates:
        """Every instance's LoRA factors after its step(s): seed -> layer -> (B (N, d_out, r),
        A (r, d_in) or (N, r, d_in)), on ``device``.

        ``batch``: padded model inputs, one instance per row, or ``packed.inputs`` with ``packed``
        (one-step scores only); ``labels``: (N,) in row or packed order.
        """
        config = self.config
        if packed is not None and config.steps != 1:
            raise ValueError("packed rows are for one-step scores only (steps == 1)")
        with self._running(batch, labels, packed) as (batch, labels):
            update: Callable[..., Updates]
            extra: dict[str, Any]
            if config.steps == 1:
                update, extra = one_step_updates, {"segments": packed.segments if packed else None}
            else:
                update, extra = multi_step_updates, {"steps": config.steps}
            return update(
                self.model,
                batch,
                labels,
                self.initial,
                config.adamw,
                scaling=config.scaling,
                task=self.task,
                **extra,
            )

    def instance_subspaces(
        self,
        batch: dict[str, torch.Tensor],
        labels: torch.Tensor,
        packed: PackedBatch | None = None,
    ) -> dict[int, dict[str, torch.Tensor]]:
        """Singular vectors of every instance's ΔW: seed -> layer -> (N, d, r), on ``device``
        (arguments as :meth:`instance_updates`)."""
        return {
            seed: {
                name: lowrank_singular_vectors(B, A, self.config.side)[0]
                for name, (B, A) in by_layer.items()
            }
            for seed, by_layer in self.instance_updates(batch, labels, packed).items()
        }

    def gradient_cosines(
        self,
        batch: dict[str, torch.Tensor],
        labels: torch.Tensor,
        packed: PackedBatch | None = None,
    ) -> torch.Tensor:
        """cos(-∇_W L(x), ΔW_ref) of every instance and layer, (N, L) on ``device`` (arguments as
        :meth:`instance_updates`)."""
        with self._running(batch, labels, packed) as (batch, labels):
            taps = token_gradients(self.model, batch, labels, self.targets, task=self.task)
        if packed is not None:
            segments = packed.segments
        else:  # one instance per row; padding belongs to none
            rows = torch.arange(labels.shape[0], device=self.device)[:, None]
            segments = torch.where(batch["attention_mask"].bool(), rows, -1)
        return torch.stack(
            [
                gradient_cosine(
                    *taps[name], segments, labels.shape[0], *self.reference_factors[name]
                )
                for name in self.targets
            ],
            dim=-1,
        )

    def batch_scores(
        self,
        batch: dict[str, torch.Tensor],
        labels: torch.Tensor,
        packed: PackedBatch | None = None,
    ) -> torch.Tensor:
        """Per-seed, per-layer scores of one batch under ``config.measure``: (S, N, L) on
        ``device``; S = 1 for the gradient measure (arguments as :meth:`instance_updates`)."""
        measure = self.config.measure
        if measure == "gradient":
            return self.gradient_cosines(batch, labels, packed).unsqueeze(0)
        if measure == "grassmann":
            return torch.stack(
                [
                    layer_scores(by_layer, self.reference_subspaces, self.targets)
                    for by_layer in self.instance_subspaces(batch, labels, packed).values()
                ]
            )
        return torch.stack(  # signed cosine of every update with the reference ΔW
            [
                torch.stack(
                    [
                        frobenius_cosine(*by_layer[name], *self.reference_factors[name])
                        for name in self.targets
                    ],
                    dim=-1,
                )
                for by_layer in self.instance_updates(batch, labels, packed).values()
            ]
        )

    def check_fits(self, examples: Examples) -> None:
        """Raise before any work if ``max_length`` lets an input outgrow the model's positions."""
        limit = max_positions(self.model)
        if limit is not None and limit < self.config.max_length:
            encoded = EncodedExamples(self.tokenizer, examples, max_length=self.config.max_length)
            check_lengths(self.model, encoded.lengths, examples.ids, self.config.max_length)

    def score(self, examples: Examples) -> torch.Tensor:
        """Per-seed, per-layer scores (RepMatch, or ``config.measure``) of every instance, in data
        order: (S, N, L)."""
        encoded = EncodedExamples(self.tokenizer, examples, max_length=self.config.max_length)
        labels = self.task.loss_targets(examples, encoded)
        scores = torch.empty(len(self.config.seeds), len(examples), len(self.targets))
        batches = plan_batches(
            encoded, self.config.batch_size, self.device, position_offset=self.position_offset
        )
        for batch in batches:
            scores[:, batch.positions] = self.batch_scores(
                batch.inputs, labels[batch.positions], batch.packed
            ).cpu()
        bad = (~torch.isfinite(scores).all(dim=-1).all(dim=0)).nonzero().flatten()  # (n_bad,)
        if len(bad):
            raise RepmatchError(
                f"the update of instance {examples.ids[int(bad[0])]!r} (and {len(bad) - 1} more) "
                f"became NaN or infinite: steps of lr {self.config.lr:g} overflow; lower the "
                "learning rate [--lr]"
            )
        return scores


def _load_head(model: torch.nn.Module, adapter: Adapter) -> None:
    """Put the reference adapter's head weights into ``model``; raise if they do not fit."""
    state = model.state_dict()
    for key, value in adapter.head.items():
        if key not in state:
            raise RepmatchError(
                f"head weights of {adapter.path} do not fit the scoring model (no {key} in it)"
            )
        if state[key].shape != value.shape:
            raise RepmatchError(
                f"head weight {key} of {adapter.path} has shape {tuple(value.shape)}, but the "
                f"scoring model's is {tuple(state[key].shape)}"
            )
    model.load_state_dict(adapter.head, strict=False)


_IDENTITY = ("score", "data_fingerprint", "reference", "reference_fingerprint")
"""Run record keys that must match for a stored run to be resumed."""


def score_instances(
    data: DataSpec | Examples | pd.DataFrame | object,
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

    ``config.measure`` picks the comparison: RepMatch's Grassmann similarity of the one-step
    update (default), or a label-aware one (:mod:`repmatch.alignment`): the signed cosine of the
    update, or of the negative gradient, with the reference ΔW.

    ``data``: a :class:`DataSpec`, :class:`Examples`, pandas DataFrame or ``datasets.Dataset``.
    Returns a DataFrame with one row per instance, in data order: ``id``, ``label``, ``score``
    (mean over seeds), ``score_std`` (population std over the seeds, ddof 0) and
    ``score_seed<S>`` (several seeds), and per layer
    ``layer_<i>_<module>`` (mean over seeds); ``attrs["notes"]`` holds a note where the data is
    of another task kind than the reference (also in the run record). With ``out``, the same
    table is also written as Parquet, streamed in chunks so that an interrupted run can be
    resumed, plus the run record ``<out>.json``. ``device``: where the model runs (default: a
    CUDA GPU if there is one).
    """
    config = config or ScoreConfig()
    check_argument(config, ScoreConfig)
    device = distributed.start(device)  # under torchrun: this rank's device, the process group
    compute_dtype(config.dtype, device)  # float16 off CUDA refused before any work
    examples = as_examples(data)
    if len(examples) == 0:
        raise RepmatchError(f"no instances to score in {examples.name}")
    adapter = load_adapter(reference)
    checked = Reference.check(adapter, config)
    examples = checked.check_data(examples)
    notes = [note] if (note := checked.task_note(examples)) else []
    run = run_record(
        "scores",
        method="repmatch",
        reference=str(Path(reference).resolve()),
        reference_fingerprint=adapter.fingerprint(),
        reference_model=adapter.base_model,
        score=config.to_dict(),
        notes=notes,
        **data_record(examples),
    )
    if out is None:
        table = _score_all(examples, checked, config, run, None, progress=progress, device=device)
        table.attrs["notes"] = notes
        return table

    def claim(stack: ExitStack) -> ChunkStore:
        stack.enter_context(exclusive_output(out))  # one writer per output, before any work
        return ChunkStore(Path(out), run, _IDENTITY, resume=resume, overwrite=overwrite)

    with distributed.checked_on_main(claim) as store:  # other ranks share the checked store
        if store is None:
            store = ChunkStore(
                Path(out), run, _IDENTITY, resume=resume, overwrite=overwrite, check=False
            )
        table = _score_all(examples, checked, config, run, store, progress=progress, device=device)
    table.attrs["notes"] = notes
    return table


def _score_all(
    examples: Examples,
    reference: Reference,
    config: ScoreConfig,
    run: dict,
    store: ChunkStore | None,
    *,
    progress: bool,
    device: str | torch.device | None,
) -> pd.DataFrame:
    """Score every chunk (or read it back from ``store``); join and save them.

    Under a launcher, process k takes chunks k, k + W, ... (W processes); after all are done,
    every process joins the whole table and the main one writes it.
    """
    import pyarrow as pa

    scorer = InstanceScorer(reference, config, device=device)
    scorer.check_fits(examples)
    layer_columns = [short_layer_name(name).replace(" ", "_") for name in scorer.targets]
    started = time.perf_counter()
    size = config.chunk_size
    chunks = [range(s, min(s + size, len(examples))) for s in range(0, len(examples), size)]
    mine = distributed.shard(len(chunks))
    if len(chunks) < distributed.world_size() and distributed.is_main():
        logger.warning(
            "%d chunks for %d processes: some have nothing to do; lower chunk_size to share "
            "the %d instances out",
            len(chunks),
            distributed.world_size(),
            len(examples),
        )
    tables = {}
    computed = 0  # instances scored in this call (not read back from an earlier run)
    quiet = not progress or not distributed.is_main()
    with tqdm(
        total=sum(len(chunks[i]) for i in mine), unit="inst", desc="score", disable=quiet
    ) as bar:
        for index in mine:
            if store and store.done(index):
                table = _read_chunk(store, index, examples.ids, chunks[index])
            else:
                table = _score_chunk(scorer, examples.select(chunks[index]), layer_columns)
                computed += table.num_rows
                if store:
                    store.write(index, table)
            tables[index] = table
            bar.update(table.num_rows)
    processes = distributed.world_size()
    if processes > 1:
        if store:  # every chunk is in the store once all processes get here
            distributed.barrier()
            tables = {
                index: _read_chunk(store, index, examples.ids, rows)
                for index, rows in enumerate(chunks)
            }
        else:
            tables = {i: t for part in distributed.all_gather(tables) for i, t in part.items()}
        computed = sum(distributed.all_gather(computed))  # waits until every process has read
    seconds = time.perf_counter() - started
    joined = pa.concat_tables([tables[index] for index in range(len(chunks))])
    result = joined.to_pandas()
    run |= {
        "seed_spearman": _seed_spearman(result, config.seeds),
        "score_std": "population std over the seeds (ddof 0)" if len(config.seeds) > 1 else None,
        "seconds": round(seconds, 2),
        "computed": computed,
        "read_back": len(examples) - computed,
        "instances_per_second": round(computed / seconds, 2) if seconds and computed else None,
        "device": str(scorer.device),
        "processes": processes,
        "layers": scorer.targets,
    }
    if store and distributed.is_main():
        store.finish(joined, run)
    distributed.barrier()  # the output exists on every process's return
    return result


def _read_chunk(store: ChunkStore, index: int, ids: list, rows: range) -> Any:
    """A finished chunk read back, checked to hold the ids of its ``rows`` of the data, in order
    (a chunk file copied over another, or edited, would otherwise be joined as it is)."""
    table = store.read(index)
    held = table.column("id").to_pylist() if "id" in table.column_names else None
    if held != ids[rows.start : rows.stop]:
        raise RepmatchError(
            f"cannot resume: chunk {index} in {store.folder} does not hold the ids of rows "
            f"{rows.start}..{rows.stop - 1} of the data (the file was copied over or changed); "
            f"delete chunk-{index:05d}.parquet and resume to recompute only it"
        )
    return table


def _score_chunk(scorer: InstanceScorer, examples: Examples, layer_columns: list[str]) -> Any:
    """Scores of one chunk as an Arrow table in data order."""
    import pyarrow as pa

    config = scorer.config
    scores = scorer.score(examples)
    per_seed = repmatch_score(scores).double().numpy()  # (S, N)
    columns: dict[str, object] = {
        "id": examples.ids,
        "label": scorer.task.references(examples),
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
    from scipy.stats import spearmanr

    return {
        f"{a}-{b}": float(spearmanr(result[f"score_seed{a}"], result[f"score_seed{b}"]).statistic)
        for a, b in itertools.combinations(seeds, 2)
    }
