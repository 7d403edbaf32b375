"""Tests for repmatch.scoring: the batched instance engine against the literal per-instance loop
(a table of cases), the label property of one-step scores, batch independence, the Parquet output
and its run record, resuming (also after a real SIGKILL of the command line), bad input and the CLI.

Most tests use a tiny random BERT saved to a temporary folder (fast); the ``slow`` ones repeat the
equivalence check on the bundled model with an adapter trained on real SST-2 instances.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr

import repmatch.scoring
from conftest import ARCHITECTURES, missing
from repmatch.adapters import load_adapter
from repmatch.cli import main
from repmatch.data import DataSpec, Examples, load_examples
from repmatch.errors import RepmatchError
from repmatch.literal_loop import LiteralLoop, literal_layer_scores, literal_scores
from repmatch.models import BUNDLED_MODEL, ReadoutCut, load_tokenizer, resolve_device
from repmatch.scoring import InstanceScorer, ScoreConfig, score_instances
from repmatch.training import TrainConfig, train_adapter

TOLERANCE = 1e-4  # engine vs literal loop
SAME = 1e-5  # engine vs engine under other batching

POSITIVE = "good great fine lovely superb warm bright happy nice clever".split()
NEGATIVE = "bad awful poor dull grim cold dark sad nasty boring".split()
FILLER = "the film was and a plot with its cast it really quite very".split()


def _sentence(rng: np.random.Generator, words: list[str]) -> str:
    """A short sentence mixing sentiment words and filler, of varying length."""
    size = int(rng.integers(6, 24))
    return " ".join(rng.choice(words if k % 2 else FILLER) for k in range(size))


def _texts(rng: np.random.Generator, labels: list[int]) -> list[str]:
    return [_sentence(rng, POSITIVE if label else NEGATIVE) for label in labels]


# --------------------------------------------------------------------------------------------
# Fixtures (each built once per module): one torch thread, a tiny model, datasets, references


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scoring_model(tiny_model) -> str:
    """A random 2-layer BERT (hidden 64, 16 heads) with the bundled tokenizer, saved to a folder.

    Sized so that the checks are well posed: in the last layer only [CLS] matters, so the one-step
    update of a value projection is sign(g) with g rank 1 per head; with a random model's near
    uniform attention all heads share one sign pattern and ΔW is rank-deficient at rank > 1, its
    extra singular vectors then being rounding noise. More heads and a wider init (peakier
    attention) make the instances' updates differ; left-side one-step checks at rank > 1
    score layer 0 only.
    """
    return tiny_model(
        "bert",
        hidden=64,
        seed=0,
        num_attention_heads=16,
        intermediate_size=128,
        initializer_range=0.2,
        max_position_embeddings=512,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Small csv datasets: single text with string ids, text pairs, 3 classes, regression."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    labels = [int(v) for v in rng.integers(0, 2, 40)]
    pd.DataFrame(
        {"id": [f"s{k:02d}" for k in range(40)], "text": _texts(rng, labels), "label": labels}
    ).to_csv(folder / "text.csv", index=False)
    labels = [int(v) for v in rng.integers(0, 2, 24)]
    pd.DataFrame(
        {
            "sentence1": _texts(rng, labels),
            "sentence2": _texts(rng, [1 - v for v in labels]),
            "label": labels,
        }
    ).to_csv(folder / "pairs.csv", index=False)
    labels = [k % 3 for k in range(12)]
    pd.DataFrame({"text": _texts(rng, [v % 2 for v in labels]), "label": labels}).to_csv(
        folder / "three.csv", index=False
    )
    pd.DataFrame(
        {"text": _texts(rng, [1] * 12), "label": np.round(rng.uniform(0, 5, 12), 2)}
    ).to_csv(folder / "regression.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def text_csv(data_dir) -> str:
    return str(data_dir / "text.csv")


@pytest.fixture(scope="module")
def examples(text_csv) -> Examples:
    return load_examples(DataSpec(text_csv))


def _train(data: str, model: str, folder: Path, targets: tuple[str, ...] = ("value",)) -> str:
    config = TrainConfig(model=model, rank=4, epochs=2, batch_size=8, targets=targets, lr=1e-2)
    return str(train_adapter(DataSpec(data), config, folder, progress=False))


@pytest.fixture(scope="module")
def reference(scoring_model, text_csv, tmp_path_factory) -> str:
    """Rank-4 adapter on the value projections of the tiny model, trained on text.csv."""
    return _train(text_csv, scoring_model, tmp_path_factory.mktemp("ref") / "adapter")


@pytest.fixture(scope="module")
def pair_reference(scoring_model, data_dir, tmp_path_factory) -> str:
    """Rank-4 adapter of the tiny model trained on the text-pair dataset."""
    return _train(str(data_dir / "pairs.csv"), scoring_model, tmp_path_factory.mktemp("pref") / "a")


@pytest.fixture(scope="module")
def query_value_reference(scoring_model, text_csv, tmp_path_factory) -> str:
    """Rank-4 adapter on query and value of every layer (the reference script's targets)."""
    folder = tmp_path_factory.mktemp("qvref") / "adapter"
    return _train(text_csv, scoring_model, folder, targets=("query", "value"))


@pytest.fixture(scope="module")
def three_class_reference(scoring_model, data_dir, tmp_path_factory) -> str:
    """Rank-4 adapter with a 3-class head, trained on three.csv."""
    return _train(str(data_dir / "three.csv"), scoring_model, tmp_path_factory.mktemp("tref") / "a")


@pytest.fixture(scope="module")
def regression_reference(scoring_model, data_dir, tmp_path_factory) -> str:
    """Rank-4 adapter with a 1-output regression head, trained on regression.csv."""
    folder = tmp_path_factory.mktemp("rref") / "adapter"
    return _train(str(data_dir / "regression.csv"), scoring_model, folder)


@pytest.fixture(scope="module")
def peaked_reference(tiny_model, text_csv, tmp_path_factory) -> str:
    """Rank-4 adapter of a random BERT whose heads attend sharply, so that one-step updates of
    every layer have rank 4 with well separated singular values.

    The last layer's one-step update is sign(g) with g rank 1 per head (see ``scoring_model``), so
    it reaches rank 4 only when the heads' attention patterns differ: here hidden 128 with 32
    heads, and query and key weights scaled by 4 for peaked attention (the head keeps its
    ordinary init, so the logits do not saturate).
    """
    model = tiny_model(
        "bert",
        hidden=128,
        seed=0,
        qk_scale=4.0,
        num_attention_heads=32,
        intermediate_size=256,
        initializer_range=0.2,
        max_position_embeddings=512,
    )
    return _train(text_csv, model, tmp_path_factory.mktemp("peaked-ref") / "adapter")


def _score(data, reference, **settings) -> pd.DataFrame:
    return score_instances(data, reference, ScoreConfig(**settings), progress=False)


def _layer_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("layer_")]


# --------------------------------------------------------------------------------------------
# 1. The batched engine equals the literal reset-and-train loop


@dataclass(frozen=True)
class Case:
    """One engine-vs-loop comparison on the first 12 instances of ``data``.

    ``packed``: also assert that the engine packs sequences into rows (so the case cannot pass
    on the padded path by falling back). ``well_conditioned``: first assert that every ΔW the loop
    produces has rank ``rank`` with well separated singular values, so that its leading singular
    vectors, and hence the scores, are well defined at all.
    """

    settings: dict
    reference: str = "reference"  # the fixture
    data: str = "text.csv"
    packed: bool = False
    well_conditioned: bool = False


EQUIVALENCE_CASES = {
    "rank1": Case({"rank": 1}, packed=True),
    # Only layer 0 at rank 4: the tiny model's last-layer one-step update is often rank-deficient
    # (see the scoring_model fixture), and singular vectors beyond its rank are arbitrary in both.
    "rank4-layer0": Case({"rank": 4, "targets": ("0.attention.self.value",)}),
    "rank4-all-layers-peaked": Case(
        {"rank": 4}, reference="peaked_reference", packed=True, well_conditioned=True
    ),
    "rank1-steps3": Case({"rank": 1, "steps": 3}),
    "rank4-steps2-lr1e-2-alpha8": Case({"rank": 4, "steps": 2, "lr": 1e-2, "alpha": 8.0}),
    "rank2-right": Case({"rank": 2, "side": "right"}),
    "rank1-seed7": Case({"rank": 1, "seeds": (7,)}),
    "rank1-eps1e-5": Case({"rank": 1, "eps": 1e-5}),  # eps matters in the closed form
    "rank2-steps3-wd5": Case({"rank": 2, "steps": 3, "lr": 1e-2, "weight_decay": 5.0}),
    # betas do not enter the first step (bias correction), so they are checked over 3 steps,
    # where these change layer scores by up to 0.04
    "rank2-steps3-betas": Case({"rank": 2, "steps": 3, "lr": 1e-2, "betas": (0.5, 0.9)}),
    # text.csv has 8 to 26 tokens per instance: some are cut, some are not
    "rank1-max-length-14": Case({"rank": 1, "max_length": 14}, packed=True),
    "rank2-steps2-max-length-14": Case({"rank": 2, "steps": 2, "max_length": 14}),
    "query-value-rank1": Case({"rank": 1}, reference="query_value_reference", packed=True),
    "query-value-rank1-steps2": Case({"rank": 1, "steps": 2}, reference="query_value_reference"),
    "pairs-rank1": Case({"rank": 1}, reference="pair_reference", data="pairs.csv", packed=True),
    "pairs-rank2-steps2": Case(
        {"rank": 2, "steps": 2}, reference="pair_reference", data="pairs.csv"
    ),
    "three-classes-rank1": Case(
        {"rank": 1}, reference="three_class_reference", data="three.csv", packed=True
    ),
    "three-classes-rank2-steps2": Case(
        {"rank": 2, "steps": 2, "lr": 1e-2}, reference="three_class_reference", data="three.csv"
    ),
    "regression-rank1": Case(
        {"rank": 1}, reference="regression_reference", data="regression.csv", packed=True
    ),
    "regression-rank2-steps2": Case(
        {"rank": 2, "steps": 2, "lr": 1e-2},
        reference="regression_reference",
        data="regression.csv",
    ),
}

_LOOP_SETTINGS = ("rank", "steps", "lr", "alpha", "betas", "weight_decay", "eps", "max_length")
"""ScoreConfig fields that the literal loop takes under the same name."""


def _assert_well_conditioned(loop: LiteralLoop, subset: Examples) -> None:
    """Every ΔW of the loop: rank ``loop.rank``, singular values at least 5 % of the largest and
    1 % apart, so singular vectors and their order are stable under rounding."""
    r = loop.rank
    for n in range(len(subset)):
        for name, delta_w in loop.delta_weights(subset, n).items():
            s = torch.linalg.svdvals(delta_w)[:r]
            s = s / s[0]
            assert s[-1] > 0.05, f"instance {n}, {name}: s_r / s_1 = {s[-1]:.1e}"
            assert (s[:-1] - s[1:]).min() > 0.01, f"instance {n}, {name}: {s.tolist()}"


def _check_against_loop(
    reference: str,
    subset: Examples,
    pad_to: int = 64,
    well_conditioned: bool = False,
    **settings,
) -> float:
    """Score ``subset`` with the engine and the literal loop, both on the CPU; assert that every
    layer score agrees and return the max abs difference of the RepMatch scores."""
    frame = score_instances(
        subset, reference, ScoreConfig(**settings), progress=False, device="cpu"
    )
    names = list(load_adapter(reference).layers)
    if "targets" in settings:
        names = [n for n in names if any(n.endswith("." + t) for t in settings["targets"])]
    loop = LiteralLoop(
        reference,
        seed=settings.get("seeds", (0,))[0],
        side=settings.get("side", "left"),
        targets=names,
        pad_to=pad_to,
        **{k: v for k, v in settings.items() if k in _LOOP_SETTINGS},
    )
    if well_conditioned:
        _assert_well_conditioned(loop, subset)
    expected = loop.layer_scores(subset)
    leaves = [n.split(".") for n in names]
    assert _layer_columns(frame) == [f"layer_{p[-4]}_{p[-1]}" for p in leaves]
    layers = frame[_layer_columns(frame)].to_numpy()
    assert np.abs(layers - expected).max() <= TOLERANCE
    assert np.ptp(expected.mean(axis=1)) > 1e-2  # the instances are told apart at all
    return float(np.abs(frame["score"].to_numpy() - expected.mean(axis=1)).max())


@pytest.mark.parametrize("name", list(EQUIVALENCE_CASES))
def test_engine_matches_literal_loop(name, request, data_dir):
    case = EQUIVALENCE_CASES[name]
    reference = request.getfixturevalue(case.reference)
    subset = load_examples(DataSpec(str(data_dir / case.data))).select(range(12))
    if case.packed:
        scorer = InstanceScorer(load_adapter(reference), ScoreConfig(**case.settings), device="cpu")
        assert scorer.position_offset is not None, "the engine did not pack rows"
    if "max_length" in case.settings:
        tokenizer = load_tokenizer(load_adapter(reference).base_model)
        lengths = np.array([len(ids) for ids in tokenizer(subset.texts)["input_ids"]])
        assert (lengths > case.settings["max_length"]).any()
        assert (lengths < case.settings["max_length"]).any()
    difference = _check_against_loop(
        reference, subset, batch_size=5, well_conditioned=case.well_conditioned, **case.settings
    )
    assert difference <= TOLERANCE, f"{name}: max |engine - loop| = {difference:.2e}"


@pytest.mark.parametrize("steps", [1, 2])
def test_seed_ensemble_equals_single_seed_runs(steps, reference, examples):
    subset = examples.select(range(16))
    ensemble = _score(subset, reference, steps=steps, seeds=(0, 1, 2), batch_size=6)
    per_seed = []
    for seed in (0, 1, 2):
        single = _score(subset, reference, steps=steps, seeds=(seed,), batch_size=6)
        column = ensemble[f"score_seed{seed}"].to_numpy()
        assert np.abs(column - single["score"].to_numpy()).max() <= SAME
        per_seed.append(column)
    per_seed = np.stack(per_seed)
    assert np.abs(ensemble["score"].to_numpy() - per_seed.mean(axis=0)).max() <= 1e-12
    assert np.abs(ensemble["score_std"].to_numpy() - per_seed.std(axis=0)).max() <= 1e-12
    assert np.ptp(per_seed, axis=0).max() > 1e-3  # the seeds do differ
    expected, _ = literal_layer_scores(reference, subset, rank=1, steps=steps, seed=2)
    assert np.abs(per_seed[2] - expected.mean(axis=1)).max() <= TOLERANCE


@pytest.fixture(scope="module")
def sst2_reference(shared_data, tmp_path_factory) -> str:
    """Bundled-model adapter trained on the first 64 SST-2 training instances."""
    if not (shared_data / "sst2").is_dir():
        missing(f"SST-2 is absent from {shared_data} (see shared/data/README.md)")
    config = TrainConfig(model=BUNDLED_MODEL, rank=4, epochs=1, batch_size=16)
    folder = tmp_path_factory.mktemp("sst2") / "adapter"
    data = DataSpec(str(shared_data / "sst2"), limit=64)
    return str(train_adapter(data, config, folder, progress=False))


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [{"rank": 1}, {"rank": 4}, {"rank": 1, "steps": 3}],
    ids=["rank1", "rank4", "rank1-steps3"],
)
def test_bundled_model_matches_literal_loop(settings, sst2_reference, shared_data):
    validation = load_examples(DataSpec(str(shared_data / "sst2"), split="validation", limit=8))
    difference = _check_against_loop(
        sst2_reference, validation, pad_to=128, batch_size=3, **settings
    )
    assert difference <= TOLERANCE, f"max |engine - loop| = {difference:.2e}"


# --------------------------------------------------------------------------------------------
# 1b. What one-step scores see of the labels


# The label property (docs/method.md, section 4). With 2 classes dL/dlogits is a multiple of
# (1, -1), with regression a scalar, so a label change only rescales g by a factor (maybe
# negative); Adam's first step sign(g) keeps the sign pattern up to that sign, and subspaces
# ignore signs. With 3 or more classes the direction of dL/dlogits, and so g, depends on the label.
# eps is set far below the tiny model's gradients: with eps near |g| (the default 1e-8 is, for some
# entries, on this random model) the first step g / (|g| + eps) depends on the scale of g, and
# binary scores then move by ~3e-4.
LABEL_CONFIG = ScoreConfig(rank=1, seeds=(0, 1), eps=1e-12)


def _relabelled(data: Path, folder: Path, change) -> DataSpec:
    """A copy of the csv ``data`` with ``change`` applied to its label column."""
    frame = pd.read_csv(data)
    frame["label"] = change(frame["label"].to_numpy())
    frame.to_csv(folder / data.name, index=False)
    return DataSpec(str(folder / data.name))


def _label_effect(data: Path, reference: str, relabelled: DataSpec) -> float:
    """Max abs difference of every score column between the original and relabelled data."""
    before = score_instances(DataSpec(str(data)), reference, LABEL_CONFIG, progress=False)
    after = score_instances(relabelled, reference, LABEL_CONFIG, progress=False)
    assert list(after["id"]) == list(before["id"])
    assert (after["label"] != before["label"]).all()
    assert np.ptp(before["score"]) > 1e-2  # the scores do tell instances apart
    columns = [c for c in before.columns if c.startswith("score")] + _layer_columns(before)
    return float(np.abs(after[columns].to_numpy() - before[columns].to_numpy()).max())


def test_binary_scores_do_not_see_the_labels(reference, text_csv, tmp_path):
    flipped = _relabelled(Path(text_csv), tmp_path, lambda labels: 1 - labels)
    assert _label_effect(Path(text_csv), reference, flipped) <= SAME


def test_regression_scores_do_not_see_the_labels(regression_reference, data_dir, tmp_path):
    rng = np.random.default_rng(1)
    data = data_dir / "regression.csv"
    changed = _relabelled(data, tmp_path, lambda y: np.round(rng.uniform(0, 5, len(y)), 2) + 0.01)
    assert _label_effect(data, regression_reference, changed) <= SAME


def test_three_class_scores_see_the_labels(three_class_reference, data_dir, tmp_path):
    data = data_dir / "three.csv"
    shifted = _relabelled(data, tmp_path, lambda labels: (labels + 1) % 3)
    assert _label_effect(data, three_class_reference, shifted) > 1e-3


# --------------------------------------------------------------------------------------------
# 2. Batch and chunk composition do not change any score


BATCH_CASES = {
    "rank1": {"rank": 1},
    "rank1-steps3": {"rank": 1, "steps": 3},
    "rank4-layer0": {"rank": 4, "targets": ("0.attention.self.value",)},
    "rank2-right-steps2": {"rank": 2, "steps": 2, "side": "right"},
}


@pytest.mark.parametrize("case", list(BATCH_CASES))
def test_batch_and_chunk_sizes_do_not_matter(case, reference, examples):
    settings = {"seeds": (0, 1), **BATCH_CASES[case]}
    frames = [
        _score(examples, reference, batch_size=b, chunk_size=c, **settings)
        for b, c in ((64, 4096), (1, 4096), (7, 4096), (64, 5), (7, 4))
    ]
    columns = ["score", "score_seed0", "score_seed1", *_layer_columns(frames[0])]
    for frame in frames[1:]:
        assert list(frame["id"]) == list(frames[0]["id"])
        difference = np.abs(frame[columns].to_numpy() - frames[0][columns].to_numpy()).max()
        assert difference <= SAME


# (rank 4 on layer 0 only: see the scoring_model fixture)
@pytest.mark.parametrize(
    "settings",
    [{"rank": 1}, {"rank": 4, "seeds": (0, 1), "targets": ("0.attention.self.value",)}],
)
def test_packed_rows_score_like_padded_batches(settings, pair_reference, data_dir):
    pairs = load_examples(DataSpec(str(data_dir / "pairs.csv")))  # two segments per input
    config = ScoreConfig(batch_size=8, **settings)
    scorer = InstanceScorer(load_adapter(pair_reference), config, device="cpu")
    assert scorer.position_offset == 0  # BERT: one-step scores pack sequences into rows
    packed = scorer.score(pairs)
    scorer.position_offset = None
    padded = scorer.score(pairs)
    assert (packed - padded).abs().max() <= SAME
    assert packed.std() > 1e-3  # the instances differ


def test_mpnet_scores_alike_cut_packed_or_neither(trained_adapter, tiny_data):
    """MPNet (relative position bias, eager attention): the cut and packing are exact."""
    examples = load_examples(DataSpec(str(tiny_data["single"])))
    config = ScoreConfig(batch_size=8, seeds=(0, 1))
    scorer = InstanceScorer(load_adapter(trained_adapter("mpnet")), config, device="cpu")
    assert scorer.readout.blocks is not None and scorer.position_offset == 2
    packed = scorer.score(examples)
    scorer.position_offset = None
    padded = scorer.score(examples)
    scorer.readout = ReadoutCut()
    plain = scorer.score(examples)
    assert (packed - padded).abs().max() <= SAME and (padded - plain).abs().max() <= SAME
    assert packed.std() > 1e-3  # the instances differ


# --------------------------------------------------------------------------------------------
# 3. Output: Parquet in data order, stable ids, the run record


def test_parquet_output_and_run_record(reference, text_csv, examples, tmp_path):
    out = tmp_path / "scores.parquet"
    config = ScoreConfig(seeds=(0, 1), batch_size=8)
    returned = score_instances(DataSpec(text_csv), reference, config, out=out, progress=False)
    stored = pd.read_parquet(out)
    layers = ["layer_0_value", "layer_1_value"]
    assert list(stored.columns) == [
        "id",
        "label",
        "score",
        "score_std",
        "score_seed0",
        "score_seed1",
        *layers,
    ]
    assert list(stored["id"]) == [f"s{k:02d}" for k in range(40)]  # the csv's id column, in order
    assert list(stored["label"]) == list(examples.labels)
    assert stored[layers].notna().all().all() and stored["score"].std() > 1e-3
    # the mean over seeds of the layer means is the mean over layers of the seed means
    assert np.abs(stored["score"] - stored[layers].mean(axis=1)).max() <= 1e-6
    pd.testing.assert_frame_equal(stored, returned)
    in_memory = score_instances(DataSpec(text_csv), reference, config, progress=False)
    pd.testing.assert_frame_equal(in_memory, returned)

    assert not out.with_name("scores.parquet.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet", "scores.parquet.json"]
    record = json.loads(out.with_name("scores.parquet.json").read_text())
    assert record["score"] == config.to_dict()
    assert record["data_fingerprint"] == examples.fingerprint()
    assert record["data"]["source"] == text_csv
    assert record["num_examples"] == 40
    assert record["reference"] == str(Path(reference).resolve())
    assert record["layers"] == list(load_adapter(reference).layers)
    assert record["device"] == str(resolve_device("auto"))
    expected = spearmanr(stored["score_seed0"], stored["score_seed1"]).statistic
    assert record["seed_spearman"] == {"0-1": pytest.approx(expected, abs=1e-12)}
    assert record["score_std"] == "population std over the seeds (ddof 0)"
    seeds = stored[["score_seed0", "score_seed1"]].to_numpy()
    np.testing.assert_allclose(stored["score_std"], seeds.std(axis=1, ddof=0), atol=1e-12)


def test_row_index_ids_and_single_seed_columns(pair_reference, data_dir, tmp_path):
    out = tmp_path / "pairs.parquet"
    data = DataSpec(str(data_dir / "pairs.csv"))
    score_instances(data, pair_reference, ScoreConfig(), out=out, progress=False)
    stored = pd.read_parquet(out)
    assert list(stored["id"]) == list(range(24))
    assert [c for c in stored.columns if c.startswith("score")] == ["score"]
    record = json.loads(out.with_name("pairs.parquet.json").read_text())
    assert record["seed_spearman"] is None and record["score_std"] is None


# --------------------------------------------------------------------------------------------
# 4. Resuming an interrupted run


class _Interrupting:
    """Wraps ``_score_chunk``: records the ids of every chunk, interrupts at call ``stop_at``."""

    def __init__(self, real, stop_at: int | None = None) -> None:
        self.real, self.stop_at, self.chunks = real, stop_at, []

    def __call__(self, scorer, examples, layer_columns):
        self.chunks.append(list(examples.ids))
        if len(self.chunks) == self.stop_at:
            raise KeyboardInterrupt
        return self.real(scorer, examples, layer_columns)


def _interrupted_run(monkeypatch, text_csv, reference, out, config) -> None:
    """Run until the 3rd chunk raises KeyboardInterrupt: chunks 0 and 1 are stored."""
    wrapper = _Interrupting(repmatch.scoring._score_chunk, stop_at=3)
    monkeypatch.setattr(repmatch.scoring, "_score_chunk", wrapper)
    with pytest.raises(KeyboardInterrupt):
        score_instances(DataSpec(text_csv), reference, config, out=out, progress=False)
    monkeypatch.undo()
    partial = out.with_name(out.name + ".partial")
    assert sorted(p.name for p in partial.iterdir()) == [
        "chunk-00000.parquet",
        "chunk-00001.parquet",
        "run.json",
    ]
    assert not out.exists()


RESUME_CONFIG = ScoreConfig(chunk_size=8, batch_size=3, seeds=(0, 1))


def test_resume_finishes_without_recomputing(monkeypatch, reference, text_csv, tmp_path):
    full = tmp_path / "full.parquet"
    score_instances(DataSpec(text_csv), reference, RESUME_CONFIG, out=full, progress=False)

    out = tmp_path / "resumed.parquet"
    _interrupted_run(monkeypatch, text_csv, reference, out, RESUME_CONFIG)
    wrapper = _Interrupting(repmatch.scoring._score_chunk)
    monkeypatch.setattr(repmatch.scoring, "_score_chunk", wrapper)
    score_instances(
        DataSpec(text_csv), reference, RESUME_CONFIG, out=out, resume=True, progress=False
    )
    assert wrapper.chunks == [[f"s{k:02d}" for k in range(s, s + 8)] for s in (16, 24, 32)]
    assert out.read_bytes() == full.read_bytes()
    assert pq.read_table(out).equals(pq.read_table(full))
    ids = list(pd.read_parquet(out)["id"])
    assert ids == [f"s{k:02d}" for k in range(40)] and len(set(ids)) == 40
    assert not out.with_name("resumed.parquet.partial").exists()

    with pytest.raises(RepmatchError, match="already exists.*overwrite"):
        score_instances(
            DataSpec(text_csv), reference, RESUME_CONFIG, out=out, resume=True, progress=False
        )
    score_instances(
        DataSpec(text_csv), reference, RESUME_CONFIG, out=out, overwrite=True, progress=False
    )
    assert pq.read_table(out).equals(pq.read_table(full))


def test_unfinished_run_needs_resume(monkeypatch, reference, text_csv, tmp_path):
    out = tmp_path / "scores.parquet"
    _interrupted_run(monkeypatch, text_csv, reference, out, RESUME_CONFIG)
    with pytest.raises(RepmatchError, match="unfinished run.*resume it"):
        score_instances(DataSpec(text_csv), reference, RESUME_CONFIG, out=out, progress=False)
    other = ScoreConfig(chunk_size=8, batch_size=3, seeds=(0, 1), lr=2e-3)
    with pytest.raises(RepmatchError, match=r"differs in score.lr: 0.001 -> 0.002;"):
        score_instances(DataSpec(text_csv), reference, other, out=out, resume=True)
    with pytest.raises(RepmatchError, match="differs in data_fingerprint: '"):
        score_instances(
            DataSpec(text_csv, limit=30), reference, RESUME_CONFIG, out=out, resume=True
        )
    partial = out.with_name("scores.parquet.partial")
    assert len(list(partial.glob("chunk-*.parquet"))) == 2  # refusals delete nothing


def test_corrupted_chunk_is_reported_and_kept(monkeypatch, reference, text_csv, tmp_path):
    out = tmp_path / "scores.parquet"
    _interrupted_run(monkeypatch, text_csv, reference, out, RESUME_CONFIG)
    partial = out.with_name("scores.parquet.partial")
    broken = partial / "chunk-00001.parquet"
    broken.write_bytes(broken.read_bytes()[:50])
    with pytest.raises(RepmatchError, match=r"chunk-00001\.parquet.*corrupted"):
        score_instances(
            DataSpec(text_csv), reference, RESUME_CONFIG, out=out, resume=True, progress=False
        )
    assert (partial / "chunk-00000.parquet").stat().st_size > 50
    assert broken.stat().st_size == 50 and (partial / "run.json").exists()
    assert not out.exists()
    broken.unlink()  # as the message says: delete it and resume to recompute only that chunk
    wrapper = _Interrupting(repmatch.scoring._score_chunk)
    monkeypatch.setattr(repmatch.scoring, "_score_chunk", wrapper)
    score_instances(
        DataSpec(text_csv), reference, RESUME_CONFIG, out=out, resume=True, progress=False
    )
    assert [chunk[0] for chunk in wrapper.chunks] == ["s08", "s16", "s24", "s32"]
    assert list(pd.read_parquet(out)["id"]) == [f"s{k:02d}" for k in range(40)]


def _score_argv(data, reference: str, out: Path, *extra: str) -> list[str]:
    """``repmatch score`` arguments, without the program name."""
    return ["score", str(data), "--reference", reference, "--out", str(out), "--quiet", *extra]


def test_killed_cli_run_resumes_to_the_same_file(
    reference, query_value_reference, tmp_path, capsys
):
    """A real interruption: ``repmatch score`` in a subprocess, SIGKILLed once its first chunk is
    on disk, finished with ``--resume``; the file equals an uninterrupted run's byte for byte.
    The partial run is also resumed with a garbled run record and with another reference: both
    are refused with one line and exit status 2."""
    rng = np.random.default_rng(5)
    labels = [int(v) for v in rng.integers(0, 2, 960)]
    data = tmp_path / "many.csv"
    pd.DataFrame({"text": _texts(rng, labels), "label": labels}).to_csv(data, index=False)
    chunking = ("--chunk-size", "16", "--batch-size", "8")  # 60 chunks, ~10 ms each
    full = tmp_path / "full.parquet"
    assert main(_score_argv(data, reference, full, *chunking)) == 0

    out = tmp_path / "killed.parquet"
    partial = tmp_path / "killed.parquet.partial"
    command = [sys.executable, "-m", "repmatch.cli", *_score_argv(data, reference, out, *chunking)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # the rounding of this process's one thread
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (partial / "chunk-00000.parquet").exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no chunk written in 120 s"
            time.sleep(0.001)
        process.kill()  # SIGKILL: no handler, no cleanup
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists(), "the run finished before it was killed"
    stored = len(list(partial.glob("chunk-*.parquet")))
    assert 1 <= stored < 60

    garbled = tmp_path / "garbled.parquet"
    shutil.copytree(partial, tmp_path / "garbled.parquet.partial")
    (tmp_path / "garbled.parquet.partial" / "run.json").write_text("{not json")
    other = tmp_path / "other.parquet"
    shutil.copytree(partial, tmp_path / "other.parquet.partial")
    for argv, message in [
        (_score_argv(data, reference, garbled, *chunking), "run.json"),
        (_score_argv(data, query_value_reference, other, *chunking), "reference"),
    ]:
        capsys.readouterr()
        assert main([*argv, "--resume"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("repmatch: error: ") and error.count("\n") == 1, error
        assert message in error
    assert len(list((tmp_path / "other.parquet.partial").glob("chunk-*"))) == stored

    resumed = subprocess.run(
        [*command, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == full.read_bytes()
    assert not partial.exists()


def test_sigterm_leaves_a_resumable_run_and_says_so(reference, tmp_path):
    """SIGTERM cleans up like Ctrl-C: exit 143, only finished chunks kept, no lock or temporary
    file left, and the message says how to finish; --resume then does."""
    rng = np.random.default_rng(6)
    labels = [int(v) for v in rng.integers(0, 2, 960)]
    data = tmp_path / "many.csv"
    pd.DataFrame({"text": _texts(rng, labels), "label": labels}).to_csv(data, index=False)
    out = tmp_path / "scores.parquet"
    partial = tmp_path / "scores.parquet.partial"
    argv = _score_argv(data, reference, out, "--chunk-size", "16", "--batch-size", "8")
    command = [sys.executable, "-m", "repmatch.cli", *argv]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (partial / "chunk-00000.parquet").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "repmatch: terminated" in err and "rerun with --resume" in err
    assert not out.exists()
    kept = sorted(path.name for path in tmp_path.iterdir())
    assert kept == ["many.csv", "scores.parquet.partial"]  # no lock, no temporary file
    names = {path.name for path in partial.iterdir()}
    assert "run.json" in names and all(n == "run.json" or n.endswith(".parquet") for n in names)
    assert not any(n.startswith(".") for n in names)
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(pq.read_table(out)) == 960 and not partial.exists()


def test_cli_resumes_a_run_with_targets(monkeypatch, reference, text_csv, tmp_path, capsys):
    """Defect 1: with --targets, --resume always refused (a tuple in the config, a list in the
    stored run.json)."""
    extra = ("--targets", "value", "--chunk-size", "8", "--batch-size", "3")
    full = tmp_path / "full.parquet"
    assert main(_score_argv(text_csv, reference, full, *extra)) == 0
    out = tmp_path / "scores.parquet"
    monkeypatch.setattr(
        repmatch.scoring, "_score_chunk", _Interrupting(repmatch.scoring._score_chunk, stop_at=3)
    )
    assert main(_score_argv(text_csv, reference, out, *extra)) == 130  # interrupted
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*_score_argv(text_csv, reference, out, *extra), "--resume"]) == 0, (
        capsys.readouterr().err
    )
    assert out.read_bytes() == full.read_bytes()
    # the summary counts what this run computed and what it read back (the 2 chunks of 8 stored
    # before the third was interrupted)
    summary = capsys.readouterr().out.splitlines()[0]
    total = len(pd.read_csv(text_csv))
    assert summary.startswith(f"scored {total - 16} instances in ")
    assert f"read 16 back from the interrupted run; {total} written to {out}" in summary


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_cli_checks_the_output_before_any_work(where, reference, text_csv, tmp_path, capsys):
    """An output that cannot be written is refused at once, before the model is even loaded."""
    if where == "folder":
        out = tmp_path / "scores.parquet"
        out.mkdir()
        expected = "is a folder"
    else:
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        out = tmp_path / "notes.txt" / "scores.parquet"
        expected = f"cannot write {out}: a file is in the way"
    calls = []
    original = repmatch.scoring.InstanceScorer.__init__

    def spy(self, *args, **kwargs):
        calls.append(1)
        original(self, *args, **kwargs)

    repmatch.scoring.InstanceScorer.__init__ = spy
    try:
        rc = main([*_score_argv(text_csv, reference, out), "--overwrite"])
    finally:
        repmatch.scoring.InstanceScorer.__init__ = original
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.count("\n") == 1, err
    assert calls == []  # refused before the scorer was built
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["scores.parquet"] if where == "folder" else ["notes.txt"]
    )


# --------------------------------------------------------------------------------------------
# 5. Bad input: clear errors, and nothing left behind


def _without_head(reference: str, folder: Path) -> str:
    """A copy of ``reference`` whose weights file lacks the classification head."""
    shutil.copytree(reference, folder)
    weights = folder / "adapter_model.safetensors"
    tensors = {k: v for k, v in load_file(weights).items() if ".lora_" in k}
    save_file(tensors, weights)
    return str(folder)


def _plain_peft(model: str, folder: Path) -> str:
    """An adapter saved by PEFT itself without a task type: LoRA factors only, no head."""
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["value"])
    get_peft_model(base, config).save_pretrained(folder)
    return str(folder)


def test_bad_references_are_refused(reference, scoring_model, text_csv, tmp_path):
    data = DataSpec(text_csv)
    cases = [
        (reference, ScoreConfig(model=BUNDLED_MODEL), "trained on .*not on the scoring model"),
        (reference, ScoreConfig(targets=("key",)), r"targets \['key'\] match none"),
        (_without_head(reference, tmp_path / "headless"), ScoreConfig(), "no classification head"),
        (_plain_peft(scoring_model, tmp_path / "plain"), ScoreConfig(), "no classification head"),
        (str(tmp_path / "missing"), ScoreConfig(), "adapter folder not found"),
    ]
    for k, (adapter, config, message) in enumerate(cases):
        out = tmp_path / f"out{k}.parquet"
        with pytest.raises(RepmatchError, match=message):
            score_instances(data, adapter, config, out=out, progress=False)
        assert list(tmp_path.glob(f"out{k}.parquet*")) == []  # no .partial blocks a rerun


def test_bad_data_is_refused(reference, data_dir, text_csv, tmp_path):
    cases = [
        (DataSpec(text_csv, labels=("7",)), "label filter"),
        (DataSpec(str(data_dir / "three.csv")), "label 2 of three .* reference's classes: 0, 1"),
        (DataSpec(str(data_dir / "regression.csv")), "regression"),
    ]
    for k, (data, message) in enumerate(cases):
        out = tmp_path / f"out{k}.parquet"
        with pytest.raises(RepmatchError, match=message):
            score_instances(data, reference, ScoreConfig(), out=out, progress=False)
        assert list(tmp_path.glob(f"out{k}.parquet*")) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rank": 0}, "rank must be positive"),
        ({"steps": 0}, "steps must be positive"),
        ({"seeds": (1, 1)}, "seeds must be distinct"),
        ({"seeds": ()}, "seeds must be distinct and non-empty"),
        ({"side": "up"}, "side must be"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(RepmatchError, match=message):
        ScoreConfig(**settings)


# --------------------------------------------------------------------------------------------
# 6. Command line


def test_cli_scores_and_prints_summary(reference, text_csv, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    argv = ["score", text_csv, "--reference", reference, "--out", str(out), "--rank", "1"]
    assert main([*argv, "--limit", "12", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "scored 12 instances" in printed and "most representative" in printed
    assert "Spearman" not in printed
    frame = pd.read_parquet(out)
    assert len(frame) == 12
    api = _score(load_examples(DataSpec(text_csv, limit=12)), reference, rank=1)
    assert np.abs(frame["score"].to_numpy() - api["score"].to_numpy()).max() <= SAME

    two = tmp_path / "two.parquet"
    argv = ["score", text_csv, "--reference", reference, "--out", str(two), "--seeds", "0", "1"]
    assert main([*argv, "--limit", "12", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ranking agreement between seeds (Spearman): 0-1:" in printed
    assert {"score_seed0", "score_seed1", "score_std"} <= set(pd.read_parquet(two).columns)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rank", "0"], "rank must be positive"),
        (["--targets", "key"], "match none"),
        (["--labels", "9"], "label filter"),
        (["--device", "cuda:99"], "device 'cuda:99'"),
    ],
)
def test_cli_errors_exit_2_without_traceback(extra, message, reference, text_csv, tmp_path, capsys):
    out = tmp_path / "bad.parquet"
    argv = ["score", text_csv, "--reference", reference, "--out", str(out), "--quiet", *extra]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("repmatch: error: ") and message in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_cli_refuses_existing_output_unless_overwrite(reference, text_csv, tmp_path, capsys):
    out = tmp_path / "scores.parquet"
    argv = ["score", text_csv, "--reference", reference, "--out", str(out), "--quiet"]
    assert main([*argv, "--limit", "5"]) == 0
    assert main([*argv, "--limit", "5"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--limit", "5", "--overwrite"]) == 0


# --------------------------------------------------------------------------------------------
# 7. Devices: the same scores on a GPU (run where there is one; CI machines have none)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "settings",
    [{"rank": 1}, {"rank": 2, "steps": 3, "lr": 1e-2}, {"rank": 1, "seeds": (0, 1, 2)}],
    ids=["one-step", "three-steps", "seed-ensemble"],
)
def test_gpu_scores_equal_cpu_scores(settings, reference, examples):
    config = ScoreConfig(**settings)
    cpu = score_instances(examples, reference, config, progress=False, device="cpu")
    gpu = score_instances(examples, reference, config, progress=False, device="cuda")
    columns = ["score", *_layer_columns(cpu)]
    assert np.abs(cpu[columns].to_numpy() - gpu[columns].to_numpy()).max() <= TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engine_on_gpu_matches_literal_loop_on_gpu(reference, examples):
    subset = examples.select(range(12))
    frame = score_instances(subset, reference, ScoreConfig(rank=1), progress=False, device="cuda")
    expected, _ = literal_layer_scores(reference, subset, rank=1, pad_to=64, device="cuda")
    assert np.abs(frame[_layer_columns(frame)].to_numpy() - expected).max() <= TOLERANCE


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_instance_scores_match_the_literal_loop(arch, trained_adapter, tiny_data):
    reference = trained_adapter(arch)
    examples = load_examples(DataSpec(str(tiny_data["single"]), limit=5))
    engine = score_instances(examples, reference, ScoreConfig(rank=1, batch_size=3), progress=False)
    literal = literal_scores(reference, examples, rank=1, pad_to=32)
    assert abs(engine["score"].to_numpy() - literal).max() <= 1e-4


# --------------------------------------------------------------------------------------------
# Notebook and ecosystem use


def test_in_memory_data_scores_like_its_file(reference, text_csv):
    """A DataFrame and a datasets.Dataset score exactly like the csv file they came from."""
    import datasets

    frame = pd.read_csv(text_csv)
    from_file = _score(DataSpec(text_csv), reference, rank=1)
    for data in (frame, datasets.Dataset.from_pandas(frame)):
        in_memory = _score(data, reference, rank=1)
        pd.testing.assert_frame_equal(in_memory, from_file)


def test_scoring_leaves_the_global_rng_alone(reference, text_csv):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    _score(DataSpec(text_csv, limit=4), reference, rank=2, seeds=(0, 1))
    assert torch.equal(torch.rand(3), expected)


def test_plain_peft_adapter_with_its_head_is_a_reference(scoring_model, text_csv, tmp_path):
    """An adapter trained with plain PEFT (task_type SEQ_CLS saves the head): no repmatch.json."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(3)
    base = AutoModelForSequenceClassification.from_pretrained(scoring_model, num_labels=2)
    config = LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4, target_modules=["value"])
    peft_model = get_peft_model(base, config)
    with torch.no_grad():  # a trained adapter has B != 0
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.02)
    peft_model.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / "repmatch.json").exists()
    out = tmp_path / "scores.parquet"
    argv = ["score", text_csv, "--reference", str(tmp_path / "plain"), "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    scores = pq.read_table(out).to_pandas()
    assert len(scores) == len(pd.read_csv(text_csv))
    assert scores["score"].between(0, 1).all() and scores["score"].std() > 0
