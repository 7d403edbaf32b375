"""Adapter sections: a table of the adapters given, with their training settings, and every
pair of them compared (RepMatch and the per-layer Grassmann grids); a comparison saved with
``repmatch compare A B --json`` is drawn the same way.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from repmatch.errors import RepmatchError
from repmatch.report.page import Section, _e, _img, _note, _plain, _saved_png, _table
from repmatch.report.runs import Run

if TYPE_CHECKING:
    from repmatch.compare import Comparison


def _draw_adapters(runs: list[Run]) -> list[Section]:
    from repmatch.adapters import checked_record
    from repmatch.compare import compare_adapters

    rows = []
    for run in runs:
        record = checked_record(run.record, run.path / "repmatch.json") if run.record else {}
        train = record.get("train") or {}
        losses = record.get("epoch_losses") or [None]
        rows.append(
            (
                str(run.path),
                record.get("data_name"),
                record.get("num_examples"),
                record.get("task"),
                record.get("model"),
                train.get("rank"),
                train.get("seed"),
                train.get("epochs"),
                _plain(train.get("lr")),
                losses[-1],
            )
        )
    header = ["adapter", "data", "instances", "task", "model", "rank", "seed", "epochs", "lr"]
    body = _table([*header, "final loss"], rows)
    if any(run.record is None for run in runs):
        body += _note("Adapters without repmatch.json were made elsewhere: settings unknown.")
    body += _heldout_table(runs)
    sections = [Section("adapter", "Adapters", body)]
    for first, second in itertools.combinations(runs, 2):
        title = f"Adapter comparison: {first.path.name} vs {second.path.name}"
        try:
            comparison = compare_adapters(first.path, second.path)
        except RepmatchError as err:
            sections.append(Section("comparison", title, _note(f"Not comparable: {err}")))
            continue
        sections.append(Section("comparison", title, _comparison_body(comparison)))
    return sections


def _heldout_table(runs: list[Run]) -> str:
    """How well each adapter learned: its held-out metrics beside the majority-class rate
    (``repmatch train --eval``); empty when no adapter was evaluated."""
    from repmatch.heldout import LEARNED_MARGIN, learning_verdict

    recorded = [(run, (run.record or {}).get("heldout")) for run in runs]
    evaluated = [(run, heldout) for run, heldout in recorded if isinstance(heldout, dict)]
    if not evaluated:
        return ""
    metrics = list(dict.fromkeys(m for _, heldout in evaluated for m in heldout["metrics"]))
    rows = []
    for run, heldout in evaluated:
        majority, scores = heldout.get("majority_rate"), heldout["metrics"]
        verdict = None
        if majority is not None and "accuracy" in scores:
            verdict = learning_verdict(scores["accuracy"], majority)
        rows.append(
            (
                str(run.path),
                heldout.get("data_name"),
                heldout.get("num_examples"),
                *(scores.get(metric) for metric in metrics),
                majority,
                verdict,
            )
        )
    header = ["adapter", "held-out data", "instances", *metrics, "majority rate", "learned?"]
    return (
        "<h3>Held-out evaluation</h3>"
        + _table(header, rows)
        + _note(
            "An adapter learned its task when its held-out accuracy beats the majority-class "
            f"rate (always answering the most frequent class) by more than "
            f"{100 * LEARNED_MARGIN:g} points."
        )
    )


def _draw_comparisons(runs: list[Run]) -> list[Section]:
    from repmatch.compare import Comparison

    sections = []
    for run in runs:
        record = run.record or {}
        comparison = Comparison(
            score=float(record["score"]),
            layers={k: float(v) for k, v in record["layers"].items()},
            grids={k: np.asarray(v, dtype=float) for k, v in record["grids"].items()},
            side=record["side"],
            first=str(record["first"]),
            second=str(record["second"]),
            notes=list(record.get("notes") or []),
        )
        title = f"Adapter comparison: {run.path.name}"
        problem = _inconsistency(comparison)
        warning = (
            _note(
                f"This comparison could not be verified: {problem}; the figures below are of the "
                "file as it is (rerun repmatch compare to get them right)."
            )
            if problem
            else ""
        )
        sections.append(Section("comparison", title, warning + _comparison_body(comparison)))
    return sections


def _inconsistency(comparison: Comparison) -> str | None:
    """What a saved comparison gets wrong about itself, if anything: its similarities must lie
    in [0, 1], each layer score be its grid's maximum and RepMatch their mean."""
    tolerance = 1e-5
    values = [comparison.score, *comparison.layers.values()]
    values += [float(v) for grid in comparison.grids.values() for v in grid.ravel()]
    if not all(-tolerance <= v <= 1 + tolerance for v in values):  # NaN fails too
        return "it holds similarities outside [0, 1]"
    for name, score in comparison.layers.items():
        grid = comparison.grids.get(name)
        if grid is None or grid.size == 0 or abs(float(grid.max()) - score) > tolerance:
            return f"layer {name}'s score {score:.4f} is not the maximum of its grid"
    if abs(float(np.mean(list(comparison.layers.values()))) - comparison.score) > tolerance:
        return f"RepMatch {comparison.score:.4f} is not the mean of its layer scores"
    return None


def _comparison_body(comparison: Comparison) -> str:
    from repmatch.lora import short_layer_name
    from repmatch.plotting import plot_layer_grids

    png = _saved_png(lambda path: plot_layer_grids(comparison, path))
    layers = [
        (short_layer_name(name), "×".join(map(str, comparison.grids[name].shape)), score)
        for name, score in comparison.layers.items()
    ]
    return (
        f"<p><b>RepMatch = {comparison.score:.4f}</b> ({_e(comparison.side)} singular vectors) "
        f"between <code>{_e(comparison.first)}</code> and <code>{_e(comparison.second)}</code>. "
        "Each panel is a layer's Grassmann grid φ(i, j) over the ranks of the two updates; "
        "a layer scores its grid's maximum, RepMatch is their mean.</p>"
        + _img(png, "per-layer Grassmann grids")
        + _table(["layer", "grid", "score"], layers)
        + "".join(_note(note) for note in comparison.notes)
    )
