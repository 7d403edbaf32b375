"""Tests for repmatch.alignment and the label-aware measures of ``repmatch score``.

The maths against explicit d×d computations (Gram formulas, per-token sums with packed rows),
its invariances, what averaging one-step cosines over LoRA inits estimates (Monte Carlo), and on
tiny models: the scorer's ``cosine`` and ``gradient`` measures against a literal per-instance
computation, and their sign following a binary or regression label where RepMatch's does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from repmatch.adapters import load_adapter
from repmatch.alignment import factor_inner, frobenius_cosine, gradient_cosine
from repmatch.batching import EncodedExamples
from repmatch.cli import main
from repmatch.config import ScoreConfig
from repmatch.data import DataSpec, load_examples
from repmatch.errors import RepmatchError
from repmatch.literal_loop import LiteralLoop
from repmatch.models import load_classifier, load_tokenizer
from repmatch.scoring import InstanceScorer, score_instances
from repmatch.tasks import get_task
from repmatch.training import TrainConfig, train_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dense_cosine(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """cos of two (..., d_out, d_in) matrices in the Frobenius inner product, by their entries."""
    inner = (first * second).sum(dim=(-2, -1))
    return inner / (first.flatten(-2).norm(dim=-1) * second.flatten(-2).norm(dim=-1))


# --------------------------------------------------------------------------------------------
# 1. The maths against explicit d×d products


def test_frobenius_cosine_equals_the_dense_cosine():
    g = _generator(0)
    B1, A1 = torch.randn(5, 12, 3, generator=g), torch.randn(3, 9, generator=g)  # shared A
    B2, A2 = torch.randn(12, 4, generator=g), torch.randn(4, 9, generator=g)
    got = frobenius_cosine(B1, A1, B2, A2)
    expected = _dense_cosine(B1.double() @ A1.double(), B2.double() @ A2.double())
    assert got.shape == (5,) and got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, atol=1e-6)
    assert factor_inner(B1, A1, B2, A2).dtype == torch.float64
    dense_inner = ((B1.double() @ A1.double()) * (B2.double() @ A2.double())).sum(dim=(-2, -1))
    assert torch.allclose(factor_inner(B1, A1, B2, A2), dense_inner, rtol=1e-10)
    per_instance_a = torch.randn(5, 3, 9, generator=g, dtype=torch.float64)  # A of each instance
    expected = _dense_cosine(B1.double() @ per_instance_a, B2.double() @ A2.double())
    assert torch.allclose(frobenius_cosine(B1.double(), per_instance_a, B2, A2), expected)


def test_frobenius_cosine_invariances_and_edges():
    g = _generator(1)
    B1, A1 = torch.randn(16, 2, generator=g, dtype=torch.float64), torch.randn(2, 10, generator=g)
    B2, A2 = torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randn(3, 10, generator=g)
    A1, A2 = A1.double(), A2.double()
    value = frobenius_cosine(B1, A1, B2, A2)
    R = torch.tensor([[2.0, 1.0], [-0.5, 3.0]], dtype=torch.float64)  # invertible
    assert torch.allclose(frobenius_cosine(B1 @ R, torch.linalg.inv(R) @ A1, B2, A2), value)
    assert torch.allclose(frobenius_cosine(7.0 * B1, A1, B2, 0.1 * A2), value)  # positive scales
    assert torch.allclose(frobenius_cosine(-B1, A1, B2, A2), -value)  # the sign is kept
    assert torch.allclose(frobenius_cosine(B1, A1, B1, A1), torch.tensor(1.0, dtype=value.dtype))
    assert frobenius_cosine(torch.zeros_like(B1), A1, B2, A2) == 0  # a zero update: 0, not NaN


def test_gradient_cosine_equals_the_dense_gradient_cosine():
    """Two rows: row 0 packs instances 0 and 1 and ends in padding, row 1 holds instance 2."""
    g = _generator(2)
    d_in, d_out, rank = 7, 5, 2
    h = torch.randn(2, 6, d_in, generator=g)
    delta = torch.randn(2, 6, d_out, generator=g)
    segments = torch.tensor([[0, 0, 1, 1, 1, -1], [2, 2, 2, 2, -1, -1]])
    B, A = torch.randn(d_out, rank, generator=g), torch.randn(rank, d_in, generator=g)
    got = gradient_cosine(h, delta, segments, 3, B, A)
    reference = (B @ A).double()
    for k in range(3):
        rows, columns = torch.nonzero(segments == k, as_tuple=True)
        gradient = delta[rows, columns].double().T @ h[rows, columns].double()  # (d_out, d_in)
        expected = _dense_cosine(-gradient, reference)
        assert abs(float(got[k]) - float(expected)) <= 1e-6, k
    # padding tokens carry no weight, whatever their values
    noisy = h.clone()
    noisy[segments < 0] = 1e3
    assert torch.allclose(gradient_cosine(noisy, delta, segments, 3, B, A), got)
    # an instance without tokens gets 0
    assert gradient_cosine(h, delta, segments, 4, B, A)[3] == 0


# --------------------------------------------------------------------------------------------
# 2. What averaging one-step cosines over random A_0 estimates (alignment module docstring)


def _one_step_mean(gradient: torch.Tensor, samples: int, *, adam: bool) -> torch.Tensor:
    """Mean over Gaussian rank-1 A_0 of the first step's -ΔW / c: sign(G a) a^T (Adam's first
    step, eps -> 0) or G a a^T (SGD)."""
    a = torch.randn(samples, gradient.shape[1], generator=_generator(3), dtype=torch.float64)
    g = a @ gradient.T  # (samples, d_out): G a for every sample
    step = g.sign() if adam else g
    return -(step.T @ a) / samples  # mean of -step a^T: (d_out, d_in)


def test_seed_averages_estimate_the_row_normalised_gradient_not_the_gradient():
    """G's rows have norms 10 and 1; R agrees with -G on the big row and disagrees on the small
    one, so cos(-G, R) > 0, but the row-normalised gradient's cosine with R is < 0."""
    d_in = 40
    G = torch.zeros(2, d_in, dtype=torch.float64)
    G[0, 0], G[1, 1] = 10.0, 1.0
    R = torch.zeros(2, d_in, dtype=torch.float64)
    R[0, 0], R[1, 1] = -1.0, 3.0
    normalised = G / G.norm(dim=1, keepdim=True)
    assert _dense_cosine(-G, R) > 0.1 and _dense_cosine(-normalised, R) < -0.1

    sgd = _one_step_mean(G, 20_000, adam=False)
    adam = _one_step_mean(G, 20_000, adam=True)
    assert _dense_cosine(sgd, -G) > 0.98  # SGD: E[ΔW] ∝ -G, unbiased
    assert _dense_cosine(adam, -normalised) > 0.98  # Adam's sign step: E[ΔW] ∝ -D^-1 G
    assert _dense_cosine(adam, -G) < 0.85
    # so the seed mean of the one-step cosine has the opposite sign of the gradient's alignment
    assert _dense_cosine(adam, R) < 0 < _dense_cosine(-G, R)


# --------------------------------------------------------------------------------------------
# 3. The scorer's label-aware measures on tiny models


LABEL_AWARE = ("cosine", "gradient")


def _qa_file(folder: Path) -> Path:
    """24 SQuAD-style rows: a context of 8 to 20 words, the answer one of them."""
    rng = np.random.default_rng(0)
    words = "river city king stone bridge market north winter castle harbor".split()
    rows = []
    for k in range(24):
        context = [str(w) for w in rng.choice(words, int(rng.integers(8, 20)))]
        i = int(rng.integers(1, len(context)))
        start = len(" ".join(context[:i])) + 1
        answers = {"text": [context[i]], "answer_start": [start]}
        rows.append({"id": f"q{k}", "question": f"what follows {context[i - 1]}?"})
        rows[-1] |= {"context": " ".join(context), "answers": answers}
    path = folder / "qa.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return path


@pytest.fixture(scope="module")
def datasets(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """The tiny csv datasets of conftest and a tiny extractive QA one."""
    return dict(tiny_data) | {"qa": _qa_file(tmp_path_factory.mktemp("qa"))}


@pytest.fixture(scope="module")
def references(tiny_model, datasets, tmp_path_factory):
    """Factory: ``references(name)`` -> a rank-4 adapter trained on ``datasets[name]``.

    The model is the scoring tests' random BERT (hidden 64, 16 heads, wide init): its instances'
    one-step updates differ enough for RepMatch scores to tell them apart, so a RepMatch score
    that stays put under a label change says something.
    """
    model = tiny_model(
        "bert",
        hidden=64,
        seed=0,
        num_attention_heads=16,
        intermediate_size=128,
        initializer_range=0.2,
        max_position_embeddings=512,
    )
    cache: dict[str, str] = {}

    def train(data: str) -> str:
        if data not in cache:
            config = TrainConfig(model=model, rank=4, epochs=2, batch_size=8, lr=1e-2)
            folder = tmp_path_factory.mktemp(f"aligned-{data}") / "adapter"
            cache[data] = str(
                train_adapter(DataSpec(str(datasets[data])), config, folder, progress=False)
            )
        return cache[data]

    return train


def _relabelled(data: Path, folder: Path, labels: np.ndarray, column: str = "label") -> DataSpec:
    frame = pd.read_csv(data)
    frame[column] = labels
    path = folder / f"relabelled-{data.name}"
    frame.to_csv(path, index=False)
    return DataSpec(str(path))


def _scores(data, reference: str, **settings) -> pd.DataFrame:
    return score_instances(data, reference, ScoreConfig(**settings), progress=False, device="cpu")


def _literal_gradient_cosines(reference: str, examples) -> np.ndarray:
    """cos(-∇_W L(x), ΔW_ref) per instance and layer by plain autograd, one instance at a time,
    with the dense weight gradient: (N, L)."""
    adapter = load_adapter(reference)
    task = get_task(adapter.task)
    model = load_classifier(
        adapter.base_model, task=task, num_labels=adapter.num_labels, head_seed=0
    )
    model.load_state_dict(adapter.head, strict=False)
    tokenizer = load_tokenizer(adapter.base_model)
    names = list(adapter.layers)
    weights = [model.get_submodule(name).weight for name in names]
    for weight in weights:
        weight.requires_grad_(True)
    out = np.zeros((len(examples), len(names)))
    for n in range(len(examples)):
        alone = examples.select([n])
        encoded = EncodedExamples(tokenizer, alone, max_length=512)
        inputs = encoded.batch([0])  # no padding: one instance
        loss = task.loss(task.logits(model(**inputs), inputs), task.loss_targets(alone, encoded))
        gradients = torch.autograd.grad(loss, weights)
        for k, (name, gradient) in enumerate(zip(names, gradients, strict=True)):
            reference_dw = adapter.layers[name].delta_weight()
            out[n, k] = float(_dense_cosine(-gradient.double(), reference_dw))
    return out


def _literal_update_cosines(reference: str, examples, **settings) -> np.ndarray:
    """cos(ΔW(x), ΔW_ref) per instance and layer from the reset-and-train loop's dense ΔW."""
    adapter = load_adapter(reference)
    loop = LiteralLoop(reference, **settings)
    out = np.zeros((len(examples), len(loop.names)))
    for n in range(len(examples)):
        for k, (name, delta_w) in enumerate(loop.delta_weights(examples, n).items()):
            out[n, k] = float(_dense_cosine(delta_w, adapter.layers[name].delta_weight()))
    return out


@pytest.mark.parametrize("data", ["single", "pair", "regression", "qa"])
def test_gradient_measure_matches_plain_autograd(data, references, datasets):
    reference = references(data)
    examples = load_examples(DataSpec(str(datasets[data]))).select(range(12))
    frame = _scores(examples, reference, measure="gradient", batch_size=5)
    expected = _literal_gradient_cosines(reference, examples)
    layers = frame[[c for c in frame.columns if c.startswith("layer_")]].to_numpy()
    assert np.abs(layers - expected).max() <= 1e-5
    assert np.abs(frame["score"].to_numpy() - expected.mean(axis=1)).max() <= 1e-5
    assert np.ptp(expected.mean(axis=1)) > 1e-2  # the instances are told apart


@pytest.mark.parametrize(
    "settings",
    [{"rank": 1}, {"rank": 2, "seeds": (3,)}, {"rank": 2, "steps": 2, "lr": 1e-2}],
    ids=["rank1", "rank2-seed3", "rank2-steps2"],
)
def test_cosine_measure_matches_the_literal_loop(settings, references, tiny_data):
    reference = references("single")
    examples = load_examples(DataSpec(str(tiny_data["single"]))).select(range(12))
    frame = _scores(examples, reference, measure="cosine", batch_size=5, **settings)
    loop_settings = {k: v for k, v in settings.items() if k != "seeds"}
    expected = _literal_update_cosines(
        reference, examples, seed=settings.get("seeds", (0,))[0], pad_to=32, **loop_settings
    )
    layers = frame[[c for c in frame.columns if c.startswith("layer_")]].to_numpy()
    assert np.ptp(expected) > 1e-2  # cosines of a few hundredths, told apart
    assert np.abs(layers - expected).max() <= 1e-6


def test_gradient_measure_packed_rows_equal_padded_batches(references, tiny_data):
    reference = references("pair")
    examples = load_examples(DataSpec(str(tiny_data["pair"])))
    scorer = InstanceScorer(
        load_adapter(reference), ScoreConfig(measure="gradient", batch_size=8), device="cpu"
    )
    assert scorer.position_offset is not None  # BERT: packed rows
    packed = scorer.score(examples)
    scorer.position_offset = None
    padded = scorer.score(examples)
    assert (packed - padded).abs().max() <= 1e-5 and packed.std() > 1e-3


# eps far below the gradients, so that Adam's first step is sign(g) (see test_scoring.LABEL_CONFIG)
FLIP = {"rank": 1, "seeds": (0, 1), "eps": 1e-12}


def test_binary_label_flip_flips_label_aware_scores_not_repmatch(references, tiny_data, tmp_path):
    reference = references("single")
    data = Path(tiny_data["single"])
    flipped = _relabelled(data, tmp_path, 1 - pd.read_csv(data)["label"].to_numpy())
    before = _scores(DataSpec(str(data)), reference, **FLIP)
    after = _scores(flipped, reference, **FLIP)
    assert np.ptp(before["score"]) > 1e-2  # RepMatch tells the instances apart ...
    assert np.abs(after["score"] - before["score"]).max() <= 1e-5  # ... but not their labels
    for measure in LABEL_AWARE:
        settings = {**FLIP, "measure": measure} if measure == "cosine" else {"measure": measure}
        before = _scores(DataSpec(str(data)), reference, **settings)
        after = _scores(flipped, reference, **settings)
        assert np.abs(before["score"]).min() > 1e-6, measure  # a sign to flip
        assert np.abs(after["score"] + before["score"]).max() <= 1e-5, measure
        columns = [c for c in before.columns if c.startswith(("layer_", "score_seed"))]
        assert np.abs(after[columns].to_numpy() + before[columns].to_numpy()).max() <= 1e-5


def test_regression_label_across_the_prediction_flips_label_aware_scores(
    references, tiny_data, tmp_path
):
    """Targets far above and far below every prediction: the gradient (f - y) ∂f/∂W changes sign
    and size, the label-aware scores change sign, RepMatch stays the same."""
    reference = references("regression")
    data = Path(tiny_data["regression"])
    size = len(pd.read_csv(data))
    (tmp_path / "high").mkdir(), (tmp_path / "low").mkdir()
    high = _relabelled(data, tmp_path / "high", np.full(size, 100.0), column="score")
    low = _relabelled(data, tmp_path / "low", np.full(size, -100.0), column="score")
    above, below = _scores(high, reference, **FLIP), _scores(low, reference, **FLIP)
    assert np.ptp(above["score"]) > 1e-2
    assert np.abs(above["score"] - below["score"]).max() <= 1e-5
    for measure in LABEL_AWARE:
        settings = {**FLIP, "measure": measure} if measure == "cosine" else {"measure": measure}
        above, below = _scores(high, reference, **settings), _scores(low, reference, **settings)
        assert np.abs(above["score"]).min() > 1e-6, measure
        assert np.abs(above["score"] + below["score"]).max() <= 1e-5, measure


def test_three_class_label_change_moves_gradient_scores(references, tiny_data, tmp_path):
    reference = references("pair")
    data = Path(tiny_data["pair"])
    shifted = _relabelled(data, tmp_path, (pd.read_csv(data)["label"].to_numpy() + 1) % 3)
    before = _scores(DataSpec(str(data)), reference, measure="gradient")
    after = _scores(shifted, reference, measure="gradient")
    assert np.abs(after["score"] - before["score"]).max() > 1e-3
    assert np.abs(after["score"] + before["score"]).max() > 1e-3  # not a mere sign flip


# --------------------------------------------------------------------------------------------
# 4. Configuration, record and command line


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"measure": "angle"}, "measure"),
        ({"measure": "gradient", "seeds": (0, 1)}, "seeds"),
        ({"measure": "gradient", "steps": 2}, "steps"),
    ],
)
def test_bad_measure_settings_name_the_field(settings, field):
    with pytest.raises(RepmatchError) as caught:
        ScoreConfig(**settings)
    assert caught.value.field == field


def test_cli_measure_is_recorded_and_part_of_the_resume_identity(
    references, tiny_data, tmp_path, capsys
):
    reference = references("single")
    out = tmp_path / "aligned.parquet"
    argv = ["score", str(tiny_data["single"]), "--reference", reference, "--out", str(out)]
    assert main([*argv, "--measure", "gradient", "--limit", "10", "--quiet"]) == 0
    assert "most aligned with the reference" in capsys.readouterr().out
    record = json.loads(out.with_name("aligned.parquet.json").read_text())
    assert record["method"] == "repmatch" and record["score"]["measure"] == "gradient"
    frame = pd.read_parquet(out)
    assert list(frame.columns[:3]) == ["id", "label", "score"]
    assert (frame["score"].abs() <= 1).all()

    partial = tmp_path / "other.parquet.partial"
    partial.mkdir()
    stored = dict(record, score=dict(record["score"], measure="cosine"))
    (partial / "run.json").write_text(json.dumps(stored))
    argv = ["score", str(tiny_data["single"]), "--reference", reference, "--quiet"]
    argv += ["--out", str(tmp_path / "other.parquet"), "--measure", "gradient", "--limit", "10"]
    assert main([*argv, "--resume"]) == 2
    assert "score.measure: 'cosine' -> 'gradient'" in capsys.readouterr().err
