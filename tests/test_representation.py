"""Tests for repmatch.representation: pooled embeddings against the model run on each text alone
(encoder and decoder), the representation baseline against a direct computation of the whole
cosine matrix (chunking invariance, threshold edges, sampling), the baseline matrix beside
``repmatch datasets``, prototypicality scores and their files, and the command line.

Tiny random models with a wide init (initializer_range 0.5), so that their embeddings differ:
at the usual 0.02 every pair of a random BERT's [CLS] vectors has cosine 1.0000.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from repmatch.cli import main
from repmatch.config import BaselineConfig, EmbeddingConfig
from repmatch.data import DataSpec, load_examples
from repmatch.errors import RepmatchError
from repmatch.models import is_causal, load_base_model
from repmatch.representation import (
    baseline_matrix,
    centroid_cosines,
    pairs_above,
    pool,
    pooled_embeddings,
    prototypicality_scores,
    representation_baseline,
    sample_examples,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder(tiny_model) -> str:
    return tiny_model("bert", initializer_range=0.5)


@pytest.fixture(scope="module")
def decoder(tiny_model) -> str:
    return tiny_model("llama", initializer_range=0.5)


def _direct(folder: str, examples, *, position: int | None = 0) -> torch.Tensor:
    """Every instance run through the model alone (no padding): the hidden state at
    ``position``, or the mean over tokens for None. (N, H) float64."""
    model = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = []
    with torch.no_grad():
        for n in range(len(examples)):
            pair = examples.text_pairs[n] if examples.text_pairs is not None else None
            hidden = model(**tokenizer(examples.texts[n], pair, return_tensors="pt"))
            states = hidden.last_hidden_state[0]  # (T, H)
            rows.append(states.mean(dim=0) if position is None else states[position])
    return torch.stack(rows).double()


def _cosines(first: torch.Tensor, second: torch.Tensor) -> np.ndarray:
    """The whole cosine matrix, (N1, N2), float64."""
    unit = [torch.nn.functional.normalize(e.double(), dim=-1) for e in (first, second)]
    return (unit[0] @ unit[1].T).numpy()


def _clear_threshold(cosines: np.ndarray) -> float:
    """A threshold near the median cosine with no cosine within 1e-4 of it, so that rounding
    cannot move a pair across it."""
    values = np.unique(cosines.round(8))
    gaps = [(abs(k - len(values) / 2), k) for k in range(len(values) - 1)]
    for _, k in sorted(gaps):
        if values[k + 1] - values[k] > 2e-4:
            return float((values[k] + values[k + 1]) / 2)
    raise AssertionError("no gap of 2e-4 between the cosines")


# --------------------------------------------------------------------------------------------
# 1. Pooling and embeddings


def test_pool_reads_cls_the_last_real_token_or_the_mean():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert torch.equal(pool(hidden, mask, "cls", last_token=False), hidden[:, 0])
    assert torch.equal(
        pool(hidden, mask, "cls", last_token=True), torch.stack([hidden[0, 2], hidden[1, 1]])
    )
    mean = torch.stack([hidden[0, :3].mean(dim=0), hidden[1, :2].mean(dim=0)])
    assert torch.allclose(pool(hidden, mask, "mean", last_token=False), mean)


@pytest.mark.parametrize(
    ("arch", "causal"),
    [("bert", False), ("distilbert", False), ("roberta", False), ("llama", True)],
)
def test_causal_attention_is_detected(arch, causal, tiny_model):
    assert is_causal(load_base_model(tiny_model(arch))) is causal


@pytest.mark.parametrize(
    ("model", "data", "pooling", "position"),
    [
        ("encoder", "single", "cls", 0),
        ("encoder", "pair", "cls", 0),
        ("encoder", "single", "mean", None),
        ("decoder", "single", "cls", -1),  # a decoder's summary is its last token
        ("decoder", "pair", "mean", None),
    ],
)
def test_pooled_embeddings_equal_each_text_run_alone(
    model, data, pooling, position, request, tiny_data
):
    folder = request.getfixturevalue(model)
    examples = load_examples(DataSpec(str(tiny_data[data])))
    expected = _direct(folder, examples, position=position)
    for batch_size in (1, 7, 64):  # padded batches of every composition
        config = EmbeddingConfig(model=folder, pooling=pooling, batch_size=batch_size)
        got = pooled_embeddings(examples, config, progress=False)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert (got.double() - expected).abs().max() <= 1e-4
    assert _cosines(expected, expected).min() < 0.9  # the instances' vectors differ


def test_embeddings_leave_the_global_rng_and_grad_mode_alone(encoder, tiny_data):
    state = torch.random.get_rng_state()
    pooled_embeddings(DataSpec(str(tiny_data["single"]), limit=5), EmbeddingConfig(model=encoder))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.is_grad_enabled()


# --------------------------------------------------------------------------------------------
# 2. The representation baseline


def test_pairs_above_counts_strictly_above_at_every_chunk_size():
    first = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    second = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # cosines exactly [[1, 0, -1, 0], [0, 1, 0, 0]] (a zero vector has cosine 0 with all)
    expected = {1.0: 0, 0.9: 2, 0.0: 2, -0.5: 7, -1.0: 7}
    for threshold, count in expected.items():
        for chunk_size in (1, 2, 100):
            got, mean = pairs_above(first, second, threshold, chunk_size=chunk_size)
            assert got == count, (threshold, chunk_size)
            assert mean == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="chunk_size"):
        pairs_above(first, second, 0.5, chunk_size=0)


def test_baseline_equals_the_direct_computation(encoder, tiny_data):
    first = load_examples(DataSpec(str(tiny_data["single"])))
    second = load_examples(DataSpec(str(tiny_data["topics"])))
    cosines = _cosines(_direct(encoder, first), _direct(encoder, second))  # all 40 x 40 pairs
    threshold = _clear_threshold(cosines)
    expected = int((cosines > threshold).sum())
    assert 0.2 < expected / cosines.size < 0.8
    results = [
        representation_baseline(
            first,
            second,
            BaselineConfig(model=encoder, threshold=threshold, chunk_size=chunk_size),
            progress=False,
        )
        for chunk_size in (1, 3, 40, 1024)
    ]
    for result in results:
        assert result["pairs_above"] == expected and result["pairs"] == 1600
        assert result["percent"] == pytest.approx(100 * expected / 1600)
        assert result["mean_cosine"] == pytest.approx(cosines.mean(), abs=1e-5)
    assert results[0]["sizes"] == [40, 40] and results[0]["available"] == [40, 40]
    assert results[0]["config"]["threshold"] == threshold
    assert results[0]["data"][0]["data_fingerprint"] == first.fingerprint()
    # the edges: nothing is above the largest cosine, everything above just under the smallest
    top = representation_baseline(
        first, second, BaselineConfig(model=encoder, threshold=1.0), progress=False
    )
    assert top["percent"] == 0
    low = float(cosines.min()) - 1e-3
    bottom = representation_baseline(
        first, second, BaselineConfig(model=encoder, threshold=low), progress=False
    )
    assert bottom["percent"] == 100


def test_baseline_samples_at_most_n_with_its_seed(encoder, tiny_data):
    examples = load_examples(DataSpec(str(tiny_data["single"])))
    picked = sample_examples(examples, 10, seed=3)
    assert len(picked) == 10 and picked.ids == sorted(picked.ids)  # kept in data order
    assert sample_examples(examples, 10, seed=3).ids == picked.ids
    assert sample_examples(examples, 10, seed=4).ids != picked.ids
    assert sample_examples(examples, 40, seed=3) is examples  # all of a smaller one
    config = BaselineConfig(model=encoder, sample=10, seed=3, threshold=0.5)
    result = representation_baseline(examples, examples, config, progress=False)
    assert result["sizes"] == [10, 10] and result["available"] == [40, 40]
    assert result["config"]["sample"] == 10 and result["config"]["seed"] == 3
    vectors = _direct(encoder, picked)
    expected = int((_cosines(vectors, vectors) > 0.5).sum())
    assert result["pairs_above"] == expected


def test_baseline_matrix_is_symmetric_and_matches_the_pair(encoder, tiny_data):
    datasets = [DataSpec(str(tiny_data[name])) for name in ("single", "topics", "pair")]
    config = BaselineConfig(model=encoder, threshold=0.6)
    matrix = baseline_matrix(datasets, config, names=["a", "b", "c"], progress=False)
    assert matrix.names == ["a", "b", "c"] and matrix.sizes == [40, 40, 40]
    assert np.array_equal(matrix.percent, matrix.percent.T)
    pair = representation_baseline(datasets[0], datasets[1], config, progress=False)
    assert matrix.percent[0, 1] == pytest.approx(pair["percent"])
    assert matrix.above[0, 0] >= 40  # a dataset with itself: its (i, i) pairs have cosine 1
    assert matrix.to_csv().splitlines()[0] == "dataset,a,b,c"
    assert json.loads(json.dumps(matrix.to_dict()))["config"]["threshold"] == 0.6


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"sample": 0}, "sample"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"pooling": "max"}, "pooling"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_baseline_settings_name_the_field(values, field):
    with pytest.raises(RepmatchError) as caught:
        BaselineConfig(**values)
    assert caught.value.field == field


# --------------------------------------------------------------------------------------------
# 3. Prototypicality scores


def test_centroid_cosines_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-2.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    centroids = {c: unit[labels == c].mean(dim=0) for c in (0, 1)}
    expected = [
        float(unit[n] @ centroids[int(labels[n])] / centroids[int(labels[n])].norm())
        for n in range(4)
    ]
    assert torch.allclose(centroid_cosines(embeddings, labels), torch.tensor(expected))
    overall = unit.mean(dim=0)
    assert torch.allclose(centroid_cosines(embeddings, None), unit @ overall / overall.norm())


@pytest.mark.parametrize("data", ["single", "regression"])
def test_prototypicality_file_record_and_values(data, encoder, tiny_data, tmp_path):
    spec = DataSpec(str(tiny_data[data]))
    examples = load_examples(spec)
    out = tmp_path / "proto.parquet"
    config = EmbeddingConfig(model=encoder)
    returned = prototypicality_scores(spec, config, out=out, progress=False)
    stored = pd.read_parquet(out)
    pd.testing.assert_frame_equal(stored, returned)
    assert list(stored.columns) == ["id", "label", "score"]
    assert list(stored["id"]) == examples.ids and np.array_equal(stored["label"], examples.labels)
    labels = None if data == "regression" else torch.as_tensor(examples.labels)
    expected = centroid_cosines(_direct(encoder, examples), labels).numpy()
    assert np.abs(stored["score"].to_numpy() - expected).max() <= 1e-5
    assert np.ptp(expected) > 1e-2
    record = json.loads((tmp_path / "proto.parquet.json").read_text())
    assert record["format"] == "repmatch-scores/1" and record["method"] == "prototypicality"
    assert record["data"] == spec.to_dict() and record["data_fingerprint"] == examples.fingerprint()
    assert record["embedding"]["model"] == encoder and record["computed"] == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proto.parquet", "proto.parquet.json"]

    with pytest.raises(RepmatchError, match="already exists"):
        prototypicality_scores(spec, config, out=out, progress=False)
    prototypicality_scores(spec, config, out=out, overwrite=True, progress=False)
    foreign = tmp_path / "foreign.parquet"
    foreign.write_bytes(b"not ours")
    with pytest.raises(RepmatchError, match="not written by repmatch"):
        prototypicality_scores(spec, config, out=foreign, overwrite=True, progress=False)
    assert foreign.read_bytes() == b"not ours"


# --------------------------------------------------------------------------------------------
# 4. The command line


@pytest.mark.parametrize("argv", [[], ["baseline"], ["datasets"], ["score"]])
def test_cli_help_lists_the_baseline_and_its_options(argv, capsys):
    """Regression: a bare % in a help string broke ``repmatch --help``."""
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    expected = {(): "representation baseline", ("baseline",): "--threshold"}
    expected |= {("datasets",): "--baseline-threshold", ("score",): "prototypicality"}
    assert expected[tuple(argv)] in printed


def test_cli_baseline_json_and_text(encoder, tiny_data, capsys):
    argv = ["baseline", str(tiny_data["single"]), str(tiny_data["topics"]), "--model", encoder]
    assert main([*argv, "--threshold", "0.6", "--sample", "25", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    config = BaselineConfig(model=encoder, threshold=0.6, sample=25)
    api = representation_baseline(
        DataSpec(str(tiny_data["single"])), DataSpec(str(tiny_data["topics"])), config
    )
    assert printed["percent"] == pytest.approx(api["percent"]) and printed["sizes"] == [25, 25]
    assert {"pairs_above", "pairs", "threshold", "config"} <= set(printed)
    capsys.readouterr()
    assert main([*argv, "--threshold", "0.6", "--quiet", "--sample-seed", "2"]) == 0
    text = capsys.readouterr().out
    assert "% of 1,600 pairs have cosine > 0.6" in text and "40 of 40 instances" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold", "2"], "threshold must be a cosine in [-1, 1]"),
        (["--pooling", "cls", "--limit", "5", "--split", "nope"], "split"),
    ],
)
def test_cli_baseline_errors_exit_2(extra, message, encoder, tiny_data, capsys):
    argv = ["baseline", str(tiny_data["single"]), str(tiny_data["topics"]), "--model", encoder]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("repmatch: error: ") and message in err and "Traceback" not in err


def test_cli_baseline_needs_two_datasets(tiny_data, capsys):
    assert main(["baseline", str(tiny_data["single"])]) == 2
    assert "baseline compares two datasets, got 1" in capsys.readouterr().err


def test_cli_score_prototypicality(encoder, tiny_data, tmp_path, capsys):
    out = tmp_path / "proto.parquet"
    argv = ["score", str(tiny_data["single"]), "--method", "prototypicality", "--out", str(out)]
    assert main([*argv, "--model", encoder, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "scored 40 instances" in printed and "most prototypical" in printed
    api = prototypicality_scores(DataSpec(str(tiny_data["single"])), EmbeddingConfig(encoder))
    assert np.abs(pd.read_parquet(out)["score"].to_numpy() - api["score"].to_numpy()).max() < 1e-6

    assert main([*argv, "--model", encoder, "--reference", str(tmp_path), "--quiet"]) == 2
    assert "needs no reference" in capsys.readouterr().err
    plain = ["score", str(tiny_data["single"]), "--out", str(tmp_path / "x.parquet")]
    assert main(plain) == 2
    err = capsys.readouterr().err
    assert "pass --reference ADAPTER" in err and err.rstrip().endswith("[--reference]")
    assert not (tmp_path / "x.parquet").exists()


def test_cli_datasets_writes_the_baseline_beside_the_matrix(encoder, tiny_data, tmp_path, capsys):
    out = tmp_path / "matrix"
    argv = ["datasets", str(tiny_data["single"]), str(tiny_data["topics"]), "--model", encoder]
    argv += ["--rank", "2", "--batch-size", "8", "--lr", "1e-2", "--out", str(out), "--quiet"]
    assert main([*argv, "--baseline", "--baseline-threshold", "0.6"]) == 0
    printed = capsys.readouterr().out
    assert "RepMatch" in printed
    assert "representation baseline: % of pairs with cosine > 0.6" in printed
    assert {"matrix.csv", "baseline.csv", "baseline.json"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "baseline.json").read_text())
    assert record["format"] == "repmatch-baseline-matrix/1"
    config = BaselineConfig(model=encoder, max_length=128, threshold=0.6)
    datasets = [DataSpec(str(tiny_data[name])) for name in ("single", "topics")]
    expected = baseline_matrix(datasets, config, progress=False)
    assert np.allclose(record["percent"], expected.percent)
    assert record["data"] == [spec.to_dict() for spec in datasets]
    assert pd.read_csv(out / "baseline.csv").shape == (2, 3)
