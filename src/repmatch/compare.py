"""RepMatch between two LoRA adapters: per-layer Grassmann grids, layer scores and their mean.

Reads adapter folders (:mod:`repmatch.adapters`), takes the singular vectors of every ΔW from its
low-rank factors and scores them with :mod:`repmatch.grassmann`; adapters with different target
sets are compared on the layers both adapt. The shuffled baseline (paper, Fig. 1b) compares
against a ΔW whose entries were permuted at random: a full-rank matrix, the one place where a full
SVD is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from repmatch.adapters import Adapter, check_compatible, load_adapter
from repmatch.config import check_seed, check_side
from repmatch.data.columns import preview
from repmatch.errors import RepmatchError
from repmatch.grassmann import (
    Side,
    full_singular_vectors,
    grassmann_grid,
    layer_similarity,
    lowrank_singular_vectors,
    repmatch_score,
    shuffle_entries,
)
from repmatch.lora import short_layer_name

logger = logging.getLogger(__name__)

RIGHT_SIDE_NOTE = (
    "right singular vectors mostly reflect the random LoRA init A0 (A barely moves in training), "
    "so right-side scores are only informative between adapters trained with different LoRA seeds"
)


@dataclass(frozen=True)
class Comparison:
    """RepMatch of two adapters. ``layers`` and ``grids`` are keyed by module name."""

    score: float
    layers: dict[str, float]
    grids: dict[str, np.ndarray]
    side: Side
    first: str
    second: str
    baseline: Comparison | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: score, per-layer scores and grids, and the baseline if computed."""
        out = {
            "score": self.score,
            "layers": self.layers,
            "grids": {name: grid.tolist() for name, grid in self.grids.items()},
            "side": self.side,
            "first": self.first,
            "second": self.second,
            "notes": self.notes,
        }
        if self.baseline is not None:
            out["shuffled_baseline"] = {
                "score": self.baseline.score,
                "layers": self.baseline.layers,
            }
        return out


def layer_subspaces(adapter: Adapter, side: Side = "left") -> dict[str, torch.Tensor]:
    """Singular vectors of each layer's ΔW from its factors: name -> (d, r), best first.

    Raises when a layer's ΔW is zero: its singular vectors are arbitrary, so any score of them
    would be a number without meaning.
    """
    for name, factors in adapter.layers.items():
        if not (factors.A.any() and factors.B.any()):
            raise RepmatchError(
                f"{adapter.path}: layer {name} has a zero update (ΔW = 0), so there is no subspace "
                "to compare; the adapter learned nothing (untrained, or trained where the loss "
                "gave no gradient): train it again"
            )
    return {
        name: lowrank_singular_vectors(factors.B, factors.A, side)[0]
        for name, factors in adapter.layers.items()
    }


def layer_scores(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], layers: list[str]
) -> torch.Tensor:
    """Every layer's score (the maximum of its Grassmann grid), layers last: (..., L).

    ``first[name]``: (..., d, r1) and ``second[name]``: (..., d, r2) singular vectors; batch dims
    broadcast, so one call scores a whole batch of instances against a reference. The RepMatch
    score is :func:`~repmatch.grassmann.repmatch_score` of the result (the mean over layers).
    """
    return torch.stack(
        [layer_similarity(grassmann_grid(first[name], second[name])) for name in layers], dim=-1
    )


def score_subspaces(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]
) -> tuple[float, dict[str, float], dict[str, np.ndarray]]:
    """RepMatch of two sets of per-layer subspaces with the same keys: (score, layers, grids)."""
    names = list(first)
    grids = {name: grassmann_grid(first[name], second[name]) for name in names}
    per_layer = torch.stack([layer_similarity(grid) for grid in grids.values()])
    layers = {name: float(value) for name, value in zip(names, per_layer, strict=True)}
    score = float(repmatch_score(per_layer))
    return score, layers, {name: grid.double().numpy() for name, grid in grids.items()}


def compare_adapters(
    first: str | Path | Adapter,
    second: str | Path | Adapter,
    *,
    side: Side = "left",
    shuffled_baseline: bool = False,
    baseline_seed: int = 0,
    allow_different_base: bool = False,
) -> Comparison:
    """RepMatch between two adapter folders (any PEFT LoRA adapters, ranks may differ).

    Compares the layers both adapters adapt; when their target sets differ, ``notes`` says which
    layers were left out (an error only when they share none).
    """
    check_side(side)
    check_seed(baseline_seed, "baseline_seed")
    a = first if isinstance(first, Adapter) else load_adapter(first)
    b = second if isinstance(second, Adapter) else load_adapter(second)
    shared = check_compatible(a, b, allow_different_base=allow_different_base)
    notes = []
    if len(shared) < max(len(a.layers), len(b.layers)):
        notes.append(_left_out_note(a, b, shared))
        logger.info(notes[-1])
    mixed = task_mix_note({str(a.path): a.task, str(b.path): b.task})
    if mixed is not None:
        notes.append(mixed)
        logger.info(mixed)
    if side == "right" and _same_lora_seed(a, b):
        notes.append(RIGHT_SIDE_NOTE)
        logger.warning(RIGHT_SIDE_NOTE)
    subspaces_a = _select(layer_subspaces(a, side), shared)
    score, layers, grids = score_subspaces(subspaces_a, _select(layer_subspaces(b, side), shared))
    baseline = None
    if shuffled_baseline:
        shuffled = _shuffled_subspaces(b, side, baseline_seed, shared)
        base_score, base_layers, base_grids = score_subspaces(subspaces_a, shuffled)
        baseline = Comparison(
            base_score, base_layers, base_grids, side, str(a.path), f"shuffled {b.path}"
        )
    return Comparison(score, layers, grids, side, str(a.path), str(b.path), baseline, notes)


def _select(subspaces: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """The subspaces of ``names``, in that order."""
    return {name: subspaces[name] for name in names}


def _same_lora_seed(first: Adapter, second: Adapter) -> bool:
    """Whether both adapters have a record and the records give the same LoRA seed."""
    seeds = []
    for adapter in (first, second):
        train = (adapter.record or {}).get("train")
        seeds.append(train.get("seed") if isinstance(train, dict) else None)
    return seeds[0] is not None and seeds[0] == seeds[1]


def _left_out_note(first: Adapter, second: Adapter, shared: list[str]) -> str:
    """The note naming the layers only one of the adapters adapts."""
    parts = []
    for adapter, other in ((first, second), (second, first)):
        only = [name for name in adapter.layers if name not in other.layers]
        if only:
            shown = preview([short_layer_name(name) for name in only], limit=4)
            parts.append(f"{_count(len(only), 'layer')} only in {adapter.path} ({shown})")
    return (
        f"compared the {_count(len(shared), 'layer')} both adapters adapt; left out "
        + " and ".join(parts)
    )


def task_mix_note(kinds: dict[str, str | None]) -> str | None:
    """A note when regression and other task kinds are compared (``kinds``: name -> task kind,
    ``None`` where unknown); ``None`` otherwise.

    Allowed, as in the paper's Table 2 (SNLI against STS-B), but worth a word: a regression
    loss shaped some updates and a classifier's the others.
    """
    regression = [name for name, kind in kinds.items() if kind == "regression"]
    others = {
        name: kind for name, kind in kinds.items() if kind is not None and kind != "regression"
    }
    if not regression or not others:
        return None

    def are(names: list[str], kind: str) -> str:
        return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} {kind}"

    other_kinds = " / ".join(sorted(set(others.values())))
    return (
        f"{are(regression, 'regression')} and {are(list(others), other_kinds)}: RepMatch "
        "compares their LoRA updates all the same (as the paper's Table 2 does for SNLI and "
        "STS-B), but regression and classification losses shaped them"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _shuffled_subspaces(
    adapter: Adapter, side: Side, seed: int, names: list[str]
) -> dict[str, torch.Tensor]:
    """Top-r singular vectors of the ΔW of layers ``names`` with entries randomly permuted (full
    SVD)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: full_singular_vectors(
            shuffle_entries(adapter.layers[name].delta_weight(), generator),
            adapter.layers[name].rank,
            side,
        )[0]
        for name in names
    }
