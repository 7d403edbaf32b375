"""Evaluation sections (``repmatch evaluate``): each subset's metrics (mean ± std over seeds)
with a bar chart of the first metric, every fine-tuning run, and the settings.
"""

from __future__ import annotations

import math

from repmatch.report.page import Section, _facts, _figure_png, _img, _new_figure, _Raw, _table
from repmatch.report.runs import Run, _typed


def _draw_evaluations(runs: list[Run]) -> list[Section]:
    return [
        Section("evaluation", f"Evaluation: {run.path}", _evaluation_body(run.record or {}))
        for run in runs
    ]


def _evaluation_body(record: dict) -> str:
    config = record.get("evaluate") or {}
    evaluation = record.get("evaluation") or {}
    metrics = [str(metric) for metric in _typed(record, "metrics", list)]
    summary = _typed(record, "summary", list)
    settings = [
        ("evaluated on", f"{evaluation.get('data_name')} ({evaluation.get('num_examples')})"),
        ("model", record.get("model")),
        ("task", record.get("task")),
        *((key, config.get(key)) for key in ("method", "epochs", "lr", "batch_size", "seeds")),
        ("device", record.get("device")),
    ]
    rows = [
        [row["subset"], row["num_train"], row["seeds"]]
        + [_mean_std(row.get(f"{m}_mean"), row.get(f"{m}_std")) for m in metrics]
        for row in summary
    ]
    body = (
        "<p>Fine-tuned on each subset once per seed and evaluated on the same data: mean ± "
        "sample std over seeds.</p>" + _table(["subset", "instances", "seeds", *metrics], rows)
    )
    if metrics and summary:
        body += _img(_metric_bars(summary, metrics[0]), f"{metrics[0]} per subset")
    per_run = [
        [run["subset"], run["seed"], *(run["metrics"].get(m) for m in metrics), _seconds(run)]
        for run in _typed(record, "runs", list)
    ]
    return (
        body
        + "<h3>Every run</h3>"
        + _table(["subset", "seed", *metrics, "seconds"], per_run)
        + "<h3>Settings</h3>"
        + _facts(settings)
    )


def _seconds(run: dict) -> object:
    seconds = run.get("seconds")
    return _Raw(f"{seconds:.1f}", "num") if isinstance(seconds, (int, float)) else None


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" + ("" if std is None or math.isnan(std) else f" ± {std:.4f}")


def _metric_bars(summary: list[dict], metric: str) -> bytes:
    names = [str(row["subset"]) for row in summary]
    means = [row.get(f"{metric}_mean") or 0.0 for row in summary]
    stds = [row.get(f"{metric}_std") or 0.0 for row in summary]
    figure = _new_figure(min(2.5 + 1.0 * len(names), 10.0), 3.0)
    ax = figure.add_subplot()
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="#3b6ea8")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(metric)
    return _figure_png(figure)
