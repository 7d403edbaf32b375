"""Fine-tuning on data subsets and measuring the result (the paper's Table 1 protocol).

For every training subset and seed: fine-tune the base model on the subset (every weight, as the
paper's Table 1, or LoRA on the value projections with a trained head), predict the evaluation
data, and compute the task's metrics (:meth:`repmatch.tasks.Task.metrics`: accuracy and macro-F1
for classification, Pearson and Spearman for regression). Results: one row per (subset, seed),
and per subset the mean and sample standard deviation over seeds.

- A subset written by ``repmatch select`` is read with the columns and task its record names;
  any other data file is read with the usual detection.
- Classes are matched by meaning (:func:`repmatch.data.labels.common_classes`): names with names,
  integers with integers, integers with names only through the evaluation data's
  ``label_names``; the head has one output per class of any subset. Evaluation data holding a
  label that no subset has is refused, unless ``unseen_classes="include"``: then the head also
  gets every class of the evaluation data, and a subset that lacks a class (an unbalanced
  top-K) is scored on it: its head output for that class never saw a positive example. Subsets
  or evaluation data of different task kinds are refused.
- Seeded: run ``s`` draws the head, the batch order, dropout and (LoRA) the LoRA init from seed
  ``s``, under :func:`torch.random.fork_rng`, so the caller's RNG is untouched and the same call
  gives the same numbers.
- ``dtype`` (float32 by default, exact): fine-tuning and prediction run their matmuls in it
  by autocast; trained weights and AdamW's state stay float32 (:func:`repmatch.training.fit`).
- With ``out``, every finished run is saved as ``runs/<subset>-seed<s>-<key>.json`` (``key``: a
  digest of the settings, the subset and the evaluation data), so an interrupted evaluation picks
  up where it stopped; ``results.csv`` (per subset), ``runs.csv`` (per run) and ``results.json``
  (both, the configuration and the data records) are written when all runs are done.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from repmatch.adapters import RECORD_FILE, load_adapter_model
from repmatch.artifacts import exclusive_output, output_set, run_record, write_json
from repmatch.batching import EncodedExamples
from repmatch.config import EvalConfig, TrainConfig, check_argument, key_json
from repmatch.data import DataSpec, Examples, as_examples
from repmatch.data.labels import common_classes
from repmatch.errors import RepmatchError
from repmatch.models import (
    check_lengths,
    load_classifier,
    load_tokenizer,
    portable_model_name,
    resolve_device,
)
from repmatch.prediction import predict
from repmatch.selection import selection_record
from repmatch.tasks import Task, get_task
from repmatch.training import fit, train_adapter

logger = logging.getLogger(__name__)

__all__ = ["EvalConfig", "Evaluation", "evaluate_subsets", "load_subset", "predict"]


@dataclass(frozen=True)
class Evaluation:
    """Results: ``runs`` one row per (subset, seed) with every metric and ``seconds``;
    ``summary`` one row per subset with ``<metric>_mean`` and ``<metric>_std`` (sample standard
    deviation over seeds; undefined, NaN, for one seed); ``record`` what ``results.json`` holds."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    metrics: list[str]
    record: dict[str, Any]


def load_subset(data: DataSpec | Examples | str | Path | object) -> Examples:
    """A training subset: a file written by ``repmatch select`` is read with the columns and task
    its record names; anything else as :func:`repmatch.data.as_examples` reads it."""
    if isinstance(data, (str, Path)):
        record = selection_record(data)
        if record is not None:
            columns = record.get("columns") or {}
            return as_examples(
                DataSpec(
                    str(data),
                    text_column=columns.get("text"),
                    text_pair_column=columns.get("text_pair"),
                    label_column=columns.get("label"),
                    id_column=columns.get("id"),
                    task=record.get("task"),
                )
            )
    return as_examples(data)


def evaluate_subsets(
    train: Sequence[DataSpec | Examples | str | Path | object],
    evaluation: DataSpec | Examples | str | Path | object,
    config: EvalConfig | None = None,
    *,
    out: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Evaluation:
    """Fine-tune on every subset of ``train`` under every seed and evaluate on ``evaluation``.

    ``train``: data files (selections or any data), specs, Examples, DataFrames or Datasets;
    ``evaluation``: the same kinds. ``out``: a folder for the results and the finished runs
    (resumable; see the module docstring). ``device``: where models run (default: a CUDA GPU if
    there is one, else the CPU).
    """
    config = config or EvalConfig()
    check_argument(config, EvalConfig)
    check_argument(train, Sequence, "train")
    if not train:
        raise RepmatchError("pass at least one training subset", field="train")
    if out is None:
        return _evaluate(train, evaluation, config, None, progress=progress, device=device)
    out = Path(out)
    with exclusive_output(out):
        _check_output(out)
        return _evaluate(train, evaluation, config, out, progress=progress, device=device)


RUNS_FOLDER = "runs"
"""Subfolder of an evaluation's output holding one record per finished run (what a rerun reuses)."""


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RepmatchError(f"output {out} is a file; name a folder for the results", field="out")
    if out.is_dir() and any(out.iterdir()):
        ours = (out / RUNS_FOLDER).is_dir() or _is_results(out / "results.json")
        if not ours:
            raise RepmatchError(
                f"output folder {out} is not empty and holds no evaluation; choose another output",
                field="out",
            )


def _is_results(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == run_record("evaluation")["format"]
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class _Subset:
    name: str
    source: str
    examples: Examples


def _evaluate(
    train: Sequence[object],
    evaluation_data: object,
    config: EvalConfig,
    out: Path | None,
    *,
    progress: bool,
    device: str | torch.device | None,
) -> Evaluation:
    """Read and align the data, run (or read back) every run, summarise, save."""
    problem = _Problem.read(train, evaluation_data, config)
    device = resolve_device(device)
    rows = _all_runs(problem, config, out, progress=progress, device=device)
    metrics = list(rows[0]["metrics"])
    runs = _runs_table(rows)
    summary = _summary(runs, metrics, [s.name for s in problem.subsets])
    record = _record(problem, config, rows, summary, metrics, device)
    if out is not None:
        _write_results(out, summary, runs, record)
    return Evaluation(runs=runs, summary=summary, metrics=metrics, record=record)


@dataclass
class _Problem:
    """The subsets and the evaluation data, their labels as the head's classes."""

    subsets: list[_Subset]
    evaluation: Examples
    task: Task
    classes: list[str] | None  # the head's class names (None: class indices)
    num_labels: int

    @classmethod
    def read(cls, train: Sequence[object], evaluation_data: object, config: EvalConfig) -> _Problem:
        subsets = _load_subsets(train)
        evaluation = as_examples(evaluation_data)
        task = _common_task(subsets, evaluation)
        include = config.unseen_classes == "include"
        if include and not task.has_classes:
            raise RepmatchError(
                f"unseen_classes='include' adds classes of the evaluation data to the head, but "
                f"{evaluation.name} is {evaluation.task} data without classes; leave it unset",
                field="unseen_classes",
            )
        classes, num_labels = common_classes(
            [s.examples for s in subsets] + ([evaluation] if include else [])
        )
        for subset in subsets:
            subset.examples = subset.examples.aligned_to(classes, num_labels)
        if include:
            evaluation = evaluation.aligned_to(classes, num_labels)
        else:
            evaluation = _aligned_evaluation(
                evaluation, [s.examples for s in subsets], classes, num_labels
            )
        return cls(subsets, evaluation, task, classes, num_labels)


def _all_runs(
    problem: _Problem,
    config: EvalConfig,
    out: Path | None,
    *,
    progress: bool,
    device: torch.device,
) -> list[dict[str, Any]]:
    """One result row per (subset, seed), in that order: read back from ``out/runs`` where a
    finished run with the same key is there, else run and (with ``out``) saved."""
    tokenizer = load_tokenizer(config.model)
    rows = []
    for subset in problem.subsets:
        for seed in config.seeds:
            key = _run_key(config, subset.examples, problem.evaluation, seed)
            run_file = (
                None
                if out is None
                else out / RUNS_FOLDER / f"{subset.name.replace('/', '--')}-seed{seed}-{key}.json"
            )
            row = _read_run(run_file)
            if row is None:
                row = _run(
                    subset,
                    problem.evaluation,
                    seed,
                    config,
                    problem.task,
                    tokenizer,
                    device,
                    progress,
                )
                row["key"] = key
                if run_file is not None:
                    write_json(run_file, _finite(row))
            else:
                logger.info("reusing %s", run_file)
            rows.append(row)
            logger.info("%s seed %d: %s", subset.name, seed, row["metrics"])
    return rows


def _runs_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: subset, seed, training size, every metric, seconds."""
    return pd.DataFrame(
        [
            {
                "subset": row["subset"],
                "seed": row["seed"],
                "num_train": row["num_train"],
                **row["metrics"],
                "seconds": row["seconds"],
            }
            for row in rows
        ]
    )


def _record(
    problem: _Problem,
    config: EvalConfig,
    rows: list[dict[str, Any]],
    summary: pd.DataFrame,
    metrics: list[str],
    device: torch.device,
) -> dict[str, Any]:
    """What ``results.json`` holds: settings, data records, summary and every run, and a note
    for each subset that is the evaluation data itself (its figures are training figures)."""
    evaluation = problem.evaluation
    held_out = evaluation.fingerprint()
    trained = [s.examples.fingerprint() for s in problem.subsets]  # each hashes the whole data
    notes = [
        f"subset {s.name} is the evaluation data itself: its figures measure the training data, "
        "not held-out data"
        for s, fingerprint in zip(problem.subsets, trained, strict=True)
        if fingerprint == held_out
    ]
    return run_record(
        "evaluation",
        evaluate=config.to_dict(),
        model=portable_model_name(config.model),
        task=problem.task.name,
        label_names=problem.classes,
        num_labels=problem.num_labels,
        subsets=[
            {
                "name": s.name,
                "source": s.source,
                "data_fingerprint": fingerprint,
                "num_examples": len(s.examples),
            }
            for s, fingerprint in zip(problem.subsets, trained, strict=True)
        ],
        evaluation={
            "data": evaluation.spec.to_record() if evaluation.spec is not None else None,
            "data_name": evaluation.name,
            "data_fingerprint": held_out,
            "num_examples": len(evaluation),
        },
        device=str(device),
        metrics=metrics,
        summary=_json_rows(summary),
        runs=[_finite(row) for row in rows],
        notes=notes,
    )


def _load_subsets(train: Sequence[object]) -> list[_Subset]:
    subsets = []
    for item in train:
        examples = load_subset(item)
        if len(examples) == 0:
            raise RepmatchError(f"training subset {examples.name} holds no instances")
        source = str(item) if isinstance(item, (str, Path)) else examples.name
        subsets.append(_Subset("", source, examples))
    parts = [_name_parts(item, s.examples) for item, s in zip(train, subsets, strict=True)]
    for subset, name in zip(subsets, _unique_names(parts), strict=True):
        subset.name = name
    return subsets


def _name_parts(item: object, examples: Examples) -> list[str]:
    """The folders and the file name (without extensions) of a subset's path, else its data's
    name: the parts its short name is made of, last first."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        folders = [part for part in path.parent.parts if part != path.anchor]
        return [path.name.split(".")[0] or path.name, *reversed(folders)]
    return [examples.name.replace("/", "-")]


def _unique_names(parts: list[list[str]]) -> list[str]:
    """Short names, unique by construction: a file name, with as many of its folders as it takes
    to tell it from the others (``a/sub``, ``b/sub``); a name that stays the same (the same file
    twice) gets ``-2``, ``-3``, ... skipping names already taken."""
    depth = [1] * len(parts)

    def name(i: int) -> str:
        return "/".join(reversed(parts[i][: depth[i]]))

    while True:
        groups: dict[str, list[int]] = {}
        for i in range(len(parts)):
            groups.setdefault(name(i), []).append(i)
        longer = [
            i
            for members in groups.values()
            if len(members) > 1
            for i in members
            if depth[i] < len(parts[i])
        ]
        if not longer:
            break
        for i in longer:
            depth[i] += 1
    names: list[str] = []
    for i in range(len(parts)):
        candidate, count = name(i), 1
        while candidate in names or (count > 1 and candidate in map(name, range(len(parts)))):
            count += 1
            candidate = f"{name(i)}-{count}"
        names.append(candidate)
    return names


def _common_task(subsets: list[_Subset], evaluation: Examples) -> Task:
    first = subsets[0]
    for subset in subsets[1:]:
        if subset.examples.task != first.examples.task:
            raise RepmatchError(
                f"training subsets are of different task kinds: {first.name} is "
                f"{first.examples.task}, {subset.name} is {subset.examples.task}; "
                "evaluate subsets of one task together"
            )
    if evaluation.task != first.examples.task:
        raise RepmatchError(
            f"the evaluation data {evaluation.name} is a {evaluation.task} task but the training "
            f"subsets are {first.examples.task}; evaluate on data of the same task",
            field="task",
        )
    return get_task(first.examples.task)


def _has_classes(examples: Examples) -> bool:
    return get_task(examples.task).problem_type == "single_label_classification"


def _aligned_evaluation(
    evaluation: Examples, subsets: list[Examples], classes: list[str] | None, num_labels: int
) -> Examples:
    """The evaluation data with labels as the head's classes; raise for a label no subset has
    (compared by meaning, among the classes of the subsets and the evaluation data together)."""
    if not _has_classes(evaluation):
        return evaluation.aligned_to(classes, num_labels)
    every, count = common_classes([*subsets, evaluation])
    seen = {v for s in subsets for v in np.unique(s.aligned_to(every, count).labels).tolist()}
    probe = evaluation.aligned_to(every, count)
    for value in np.unique(probe.labels).tolist():
        if value not in seen:
            rows = np.flatnonzero(probe.labels == value)
            label = every[value] if every is not None else value
            shown = [every[v] for v in sorted(seen)] if every is not None else sorted(seen)
            raise RepmatchError(
                f"the evaluation data {evaluation.name} has label {label!r} ({rows.size} "
                f"instances, e.g. id {evaluation.ids[rows[0]]!r}) that no training subset has "
                f"(their labels: {', '.join(map(str, shown))}); drop it from the evaluation "
                "data with the labels filter, train on subsets that include it, or score the "
                "subsets on it anyway with unseen_classes='include' (--unseen-classes include)",
                field="labels",
            )
    return evaluation.aligned_to(classes, num_labels)


def _run_key(config: EvalConfig, subset: Examples, evaluation: Examples, seed: int) -> str:
    """Digest of everything that determines one run's numbers."""
    settings = {key: value for key, value in key_json(config).items() if key != "seeds"}
    payload = {
        "settings": settings,
        "seed": seed,
        "subset": subset.fingerprint(),
        "subset_classes": [subset.label_names, subset.num_labels],
        "evaluation": evaluation.fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def _read_run(run_file: Path | None) -> dict[str, Any] | None:
    if run_file is None or not run_file.is_file():
        return None
    try:
        row = json.loads(run_file.read_text())
    except (OSError, ValueError):
        return None  # a damaged file is recomputed and replaced
    if not _is_run(row):
        return None  # so is one edited into another shape
    return {**row, "metrics": {k: _nan(v) for k, v in row["metrics"].items()}}


_RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "subset": str,
    "seed": int,
    "num_train": int,
    "metrics": dict,
    "seconds": (int, float),
    "key": str,
}
"""Fields of a run record that a resumed evaluation reads, with their JSON types."""


def _is_run(row: object) -> bool:
    """Whether ``row`` has every field of :data:`_RUN_FIELDS`, and numbers (or null) as metrics."""

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    return (
        isinstance(row, dict)
        and all(isinstance(row.get(k), kind) for k, kind in _RUN_FIELDS.items())
        and not isinstance(row["seed"], bool)
        and all(value is None or number(value) for value in row["metrics"].values())
    )


def _run(
    subset: _Subset,
    evaluation: Examples,
    seed: int,
    config: EvalConfig,
    task: Task,
    tokenizer: Any,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """Fine-tune on one subset with one seed, predict, score: one result row."""
    started = time.perf_counter()
    examples = subset.examples
    train_config = config.train_config(seed)
    if config.method == "full":
        model, losses = _fine_tune_full(examples, train_config, task, tokenizer, device, progress)
    else:
        with tempfile.TemporaryDirectory(prefix="repmatch-evaluate-") as folder:
            model, losses = _fine_tune_lora(examples, train_config, Path(folder), device, progress)
    predictions = predict(
        model,
        tokenizer,
        evaluation,
        task,
        max_length=config.max_length,
        batch_size=config.eval_batch_size,
        device=device,
        dtype=config.dtype,
    )
    metrics = task.metrics(predictions, task.references(evaluation))
    return {
        "subset": subset.name,
        "source": subset.source,
        "seed": seed,
        "num_train": len(examples),
        "metrics": metrics,
        "epoch_losses": losses,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _fine_tune_full(
    examples: Examples,
    train_config: TrainConfig,
    task: Task,
    tokenizer: Any,
    device: torch.device,
    progress: bool,
) -> tuple[torch.nn.Module, list[float]]:
    """Every weight of the base model (and its seeded head) trained on ``examples``."""
    model = load_classifier(
        train_config.model,
        task=task,
        num_labels=examples.num_labels,
        head_seed=train_config.head_seed,
    )
    model.requires_grad_(True)
    model.to(device)  # type: ignore[arg-type]  # transformers' wrapped .to
    encoded = EncodedExamples(tokenizer, examples, max_length=train_config.max_length)
    check_lengths(model, encoded.lengths, examples.ids, train_config.max_length)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(train_config.seed)  # dropout draws from here, not the caller's RNG
        losses = fit(
            model,
            encoded,
            task.loss_targets(examples, encoded),
            train_config,
            task=task,
            data_name=examples.name,
            progress=progress,
        )
    return model, losses


def _fine_tune_lora(
    examples: Examples,
    train_config: TrainConfig,
    folder: Path,
    device: torch.device,
    progress: bool,
) -> tuple[torch.nn.Module, list[float]]:
    """A LoRA adapter with a trained head (``repmatch train``), loaded onto the base model."""
    adapter = train_adapter(
        examples, train_config, folder / "adapter", progress=progress, device=device
    )
    model = load_adapter_model(adapter, device=device)
    losses = json.loads((adapter / RECORD_FILE).read_text())["epoch_losses"]
    return model, losses


def _summary(runs: pd.DataFrame, metrics: list[str], names: list[str]) -> pd.DataFrame:
    """Mean and sample std of every metric (and seconds per run) per subset, in subset order."""
    rows = []
    for name in names:
        group = runs[runs["subset"] == name]
        row: dict[str, Any] = {
            "subset": name,
            "num_train": int(group["num_train"].iloc[0]),
            "seeds": len(group),
        }
        for metric in metrics:
            values = group[metric].to_numpy(np.float64)
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        row["seconds_mean"] = float(group["seconds"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [_finite(row) for row in frame.to_dict(orient="records")]


def _csv(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


def _write_results(out: Path, summary: pd.DataFrame, runs: pd.DataFrame, record: dict) -> None:
    """The three result files, committed together (the record last)."""
    with output_set(out) as outputs:
        for name, frame in (("results.csv", summary), ("runs.csv", runs)):
            outputs.path(out / name).write_text(_csv(frame))
        write_json(outputs.path(out / "results.json"), record)
