"""Instance-score sections (``repmatch score``): the settings, the distribution of the scores,
a per-class (or score-against-label) view, the top and bottom instances with their texts
reloaded from the data, and how stable the ranking is across LoRA seeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repmatch.errors import RepmatchError, first_line
from repmatch.report.page import (
    Section,
    _e,
    _facts,
    _figure_png,
    _img,
    _new_figure,
    _note,
    _Raw,
    _record_notes,
    _short,
    _table,
)
from repmatch.report.runs import Run

TOP = 10
"""How many of the highest- and lowest-scored instances a scores section lists."""


def _draw_scores(runs: list[Run]) -> list[Section]:
    return [Section("scores", f"Instance scores: {run.path}", _scores_body(run)) for run in runs]


def _scores_body(run: Run) -> str:
    import pandas as pd

    record = run.record or {}
    try:
        table = pd.read_parquet(run.path)
    except (OSError, ValueError) as err:
        raise RepmatchError(f"{run.path}: cannot read the scores ({first_line(err)})") from None
    if "score" not in table or "id" not in table:
        raise RepmatchError(f"{run.path}: not a scores table (no 'id' and 'score' columns)")
    config = record.get("score") or {}
    seeds = list(config.get("seeds") or [])
    names = _class_names(record)
    settings = [
        ("data", record.get("data_name")),
        ("instances", len(table)),
        ("method", record.get("method")),
        ("embedding", record.get("embedding")),
        ("reference", record.get("reference")),
        ("measure", config.get("measure")),
        *((key, config.get(key)) for key in ("rank", "lr", "steps", "seeds", "side")),
        ("seconds", record.get("seconds")),
        ("instances per second", record.get("instances_per_second")),
        ("device", record.get("device")),
    ]
    scores = table["score"].to_numpy(dtype=float)
    damage = _damage(table, record)
    body = _facts(settings) + _record_notes(record)
    body += _note(damage) if damage else ""
    body += "<h3>Distribution</h3>" + _img(_histogram(scores), "histogram")
    body += _table(
        ["mean", "std (population)", "min", "median", "max"],
        [[scores.mean(), scores.std(), scores.min(), float(np.median(scores)), scores.max()]],
    )
    body += _per_class(table, names)
    body += _extremes(table, record, names, run.path, damage)
    body += _stability(table, record, seeds)
    return body


def _class_names(record: dict) -> list[str] | None:
    """The reference adapter's class names, when its record is still where it was."""
    reference = record.get("reference")
    if not reference:
        return None
    try:
        names = json.loads((Path(reference) / "repmatch.json").read_text()).get("label_names")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(name) for name in names] if isinstance(names, list) else None


def _label_text(label: object, names: list[str] | None) -> str:
    """A class index with its name when known; answer texts (extractive QA) joined by ``|``."""
    if names is not None and isinstance(label, (int, np.integer)) and 0 <= label < len(names):
        return f"{label} ({names[label]})"
    if isinstance(label, (list, tuple, np.ndarray)):
        return _short(" | ".join(str(value) for value in label))
    return str(label)


def _histogram(scores: np.ndarray) -> bytes:
    figure = _new_figure(6.4, 2.8)
    ax = figure.add_subplot()
    ax.hist(scores, bins=min(50, max(10, len(scores) // 10)), color="#3b6ea8")
    ax.set_xlabel("score")
    ax.set_ylabel("instances")
    return _figure_png(figure)


def _per_class(table: Any, names: list[str] | None) -> str:
    if "label" not in table:
        return ""
    labels = table["label"].to_numpy()
    if labels.dtype.kind not in "iuf":
        return _note(
            "The labels are not classes or numbers (e.g. answer texts): no per-class view."
        )
    if labels.dtype.kind == "f":  # regression: score against the label
        figure = _new_figure(5.0, 3.2)
        ax = figure.add_subplot()
        ax.scatter(labels, table["score"], s=6, alpha=0.5, color="#3b6ea8")
        ax.set_xlabel("label")
        ax.set_ylabel("score")
        return "<h3>Score against the label</h3>" + _img(_figure_png(figure), "score vs label")
    classes = sorted(set(labels.tolist()))
    groups = [table["score"].to_numpy(dtype=float)[labels == c] for c in classes]
    figure = _new_figure(min(2.0 + 1.1 * len(classes), 10.0), 3.2)
    ax = figure.add_subplot()
    ax.boxplot(groups, showfliers=False)
    ax.set_xticks(range(1, len(classes) + 1), [_label_text(c, names) for c in classes])
    ax.set_ylabel("score")
    rows = [
        (_label_text(c, names), len(g), g.mean(), float(np.median(g)), g.std())
        for c, g in zip(classes, groups, strict=True)
    ]
    return (
        "<h3>Per class</h3>"
        + _img(_figure_png(figure), "scores per class")
        + _table(["label", "instances", "mean", "median", "std (population)"], rows)
    )


def _damage(table: Any, record: dict) -> str | None:
    """What makes a scores table disagree with its record (repeated ids, another size)."""
    ids = table["id"]
    repeated = ids[ids.duplicated()].tolist()
    if repeated:
        return (
            f"This scores table could not be verified: it repeats {len(repeated)} ids (e.g. "
            f"{repeated[0]!r}), so it was damaged or edited after repmatch score wrote it; "
            "the figures below are of the table as it is."
        )
    expected = record.get("num_examples")
    if isinstance(expected, int) and expected != len(table):
        return (
            f"This scores table could not be verified: it has {len(table)} rows but its record "
            f"says {expected} instances were scored; the figures below are of the table as it is."
        )
    return None


def _extremes(
    table: Any, record: dict, names: list[str] | None, path: Path, damage: str | None
) -> str:
    problem: str | None
    if damage:
        texts, problem = None, "the scores table could not be verified"
    else:
        texts, problem = _texts(table, record, path)
    ranked = table.sort_values("score", kind="stable", ascending=False)
    body = f"<h3>Top and bottom {TOP}</h3>"
    if problem:
        body += _note(f"Instance texts are not shown: {problem}.")
    with_std = "score_std" in table
    for title, rows in (("Most representative", ranked[:TOP]), ("Least", ranked[::-1][:TOP])):
        lines = []
        for rank, row in zip(_ranks(title, len(ranked)), rows.itertuples(), strict=False):
            label = _label_text(row.label, names) if "label" in table else None
            line = [rank, row.id, label, float(row.score)]
            if with_std:
                line.append(float(row.score_std))
            if texts is not None:
                line.append(_Raw(_text_cell(texts.get(row.id)), "text"))
            lines.append(line)
        header = ["rank", "id", "label", "score"]
        header += ["std over seeds (population)"] if with_std else []
        header += ["text"] if texts is not None else []
        body += f"<p><b>{_e(title)}</b></p>" + _table(header, lines)
    return body


def _ranks(title: str, n: int) -> range:
    return range(1, TOP + 1) if title.startswith("Most") else range(n, n - TOP, -1)


def _text_cell(text: tuple[str, str | None] | None) -> str:
    if text is None:
        return "<i>id not found in the data</i>"
    first, second = text
    cell = _e(_short(first))
    return cell if second is None else f"{cell}<br><b>⇒</b> {_e(_short(second))}"


def _texts(table: Any, record: dict, path: Path) -> tuple[dict | None, str | None]:
    """id -> (text, text pair) of the scored data reloaded from its spec and verified to be
    what was scored (ids and fingerprint), or (None, why they could not be verified)."""
    from repmatch.selection import scored_examples

    if not isinstance(record.get("data"), dict):
        return None, "the scored data were in memory (no data spec in the record)"
    if "data_fingerprint" not in record:
        return None, "the record has no fingerprint of the scored data to verify them against"
    try:
        examples = scored_examples(table, record, None, path)
    except RepmatchError as err:
        return None, f"they could not be verified against the scored data ({err})"
    pairs: Sequence[str | None] = examples.text_pairs or [None] * len(examples)
    return dict(zip(examples.ids, zip(examples.texts, pairs, strict=True), strict=True)), None


def _stability(table: Any, record: dict, seeds: list[int]) -> str:
    if len(seeds) < 2:
        return ""
    spearman = record.get("seed_spearman") or {}
    body = "<h3>Seed stability</h3>"
    body += (
        "<p>Spearman correlation between the instance rankings of each pair of LoRA init "
        "seeds: how far a ranking depends on the seed.</p>"
    )
    body += _table(["seeds", "Spearman"], sorted(spearman.items()))
    first, second = (f"score_seed{seed}" for seed in seeds[:2])
    if first in table and second in table:
        figure = _new_figure(4.2, 4.0)
        ax = figure.add_subplot()
        ax.scatter(table[first], table[second], s=5, alpha=0.5, color="#3b6ea8")
        ax.set_xlabel(f"score, seed {seeds[0]}")
        ax.set_ylabel(f"score, seed {seeds[1]}")
        body += _img(_figure_png(figure), "scores of two seeds")
    return body
