"""dataset_similarity: the matrix, its files, adapter reuse and seed statistics."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import repmatch.training as training
from conftest import FAST_TRAIN
from repmatch.compare import compare_adapters
from repmatch.data import DataSpec, load_examples
from repmatch.errors import RepmatchError
from repmatch.similarity import _unique_names, dataset_similarity
from repmatch.training import TrainConfig, adapter_key, train_or_reuse

NAMES = ["single", "topics", "pair"]


@pytest.fixture(scope="module")
def config(tiny_model) -> TrainConfig:
    return TrainConfig(model=tiny_model("bert"), **FAST_TRAIN)


@pytest.fixture(scope="module")
def specs(tiny_data) -> list[DataSpec]:
    return [DataSpec(str(tiny_data[name])) for name in NAMES]


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory, specs, config):
    out = tmp_path_factory.mktemp("similarity") / "run"
    return out, dataset_similarity(specs, config, out, progress=False)


def test_one_seed_matrix(one_seed):
    out, result = one_seed
    assert result.names == NAMES
    assert result.seeds == [0]
    assert result.mean.shape == result.std.shape == (3, 3)
    np.testing.assert_allclose(result.mean, result.mean.T, atol=1e-9)
    np.testing.assert_allclose(np.diag(result.mean), 1.0, atol=1e-6)
    assert np.all(result.std == 0)
    off = result.mean[~np.eye(3, dtype=bool)]
    assert np.all((off >= 0) & (off < 1))
    # entries are the RepMatch of the two datasets' adapters
    adapters = {name: result.adapters[name][0] for name in NAMES}
    assert result.mean[0, 1] == pytest.approx(
        compare_adapters(adapters["single"], adapters["topics"]).score
    )
    for name, folder in adapters.items():
        assert Path(folder).parent == out / "adapters" / name
        assert Path(folder).name.startswith("seed0-")
        assert (Path(folder) / "adapter_model.safetensors").is_file()


def test_files_written(one_seed, specs, config):
    out, result = one_seed
    rows = list(csv.reader((out / "matrix.csv").read_text().splitlines()))
    assert rows[0] == ["dataset", *NAMES]
    assert [row[0] for row in rows[1:]] == NAMES
    np.testing.assert_allclose(
        [[float(cell) for cell in row[1:]] for row in rows[1:]], result.mean, atol=1e-6
    )
    data = json.loads((out / "matrix.json").read_text())
    assert data["names"] == NAMES
    np.testing.assert_allclose(data["mean"], result.mean)
    assert data["seeds"] == [0]
    assert data["side"] == "left"
    assert data["config"]["train"] | {"seed": 0} == config.to_dict()
    assert data["config"]["data"] == [spec.to_dict() for spec in specs]
    assert np.asarray(data["per_seed_pair"]).shape == (1, 3, 3)
    png = (out / "matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]


def test_rerun_reuses_the_adapters(one_seed, specs, config, monkeypatch):
    out, first = one_seed
    stamps = {
        path: path.stat().st_mtime_ns for path in out.glob("adapters/*/*/adapter_model.safetensors")
    }
    assert len(stamps) == 3

    def no_training(*args, **kwargs):
        raise AssertionError("the adapter should have been reused")

    monkeypatch.setattr(training, "train_adapter", no_training)
    again = dataset_similarity(specs, config, out, progress=False)
    np.testing.assert_array_equal(again.mean, first.mean)
    assert again.adapters == first.adapters
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


def test_changed_config_trains_new_adapters(one_seed, specs, config, monkeypatch):
    out, first = one_seed
    trained = []
    monkeypatch.setattr(
        training, "train_adapter", lambda examples, cfg, folder, **kw: trained.append(cfg)
    )
    examples = load_examples(specs[0])
    changed = replace(config, lr=5e-3)
    assert adapter_key(changed, examples) != adapter_key(config, examples)
    folder = Path(first.adapters["single"][0])
    train_or_reuse(examples, config, folder, progress=False)
    assert trained == []  # the record matches: reused
    train_or_reuse(examples, changed, folder, progress=False)
    assert trained == [changed]  # the record does not match: trained again
    other_data = load_examples(specs[1])
    train_or_reuse(other_data, config, folder, progress=False)
    assert trained == [changed, config]  # nor does the data fingerprint


def test_adapter_from_before_a_new_setting_is_reused(one_seed, specs, config, monkeypatch):
    """A record written before a setting existed matches that setting's default."""
    out, first = one_seed
    trained = []
    monkeypatch.setattr(
        training, "train_adapter", lambda examples, cfg, folder, **kw: trained.append(cfg)
    )
    folder = Path(first.adapters["single"][0])
    record = json.loads((folder / "repmatch.json").read_text())
    del record["train"]["dtype"], record["train"]["gradient_checkpointing"]
    (folder / "repmatch.json").write_text(json.dumps(record))
    examples = load_examples(specs[0])
    train_or_reuse(examples, config, folder, progress=False)
    assert trained == []  # the missing settings are at their defaults: reused
    train_or_reuse(examples, replace(config, dtype="bfloat16"), folder, progress=False)
    assert len(trained) == 1  # not at the default: trained again


def _reuse(one_seed, run: Path, names: dict[str, str]) -> None:
    """Copy the one-seed run's adapters into ``run``, renamed per ``names`` (new -> old)."""
    out, _ = one_seed
    for new, old in names.items():
        shutil.copytree(out / "adapters" / old, run / "adapters" / new)


def test_two_seeds(tmp_path, specs, config, one_seed):
    _reuse(one_seed, tmp_path / "run", {"single": "single", "topics": "topics"})  # seed 0
    result = dataset_similarity(specs[:2], config, tmp_path / "run", seeds=(0, 1), progress=False)
    assert result.seeds == [0, 1]
    assert set(result.adapters["single"]) == {0, 1}
    diagonal = np.diag(result.mean)
    assert np.all(diagonal < 1.0 - 1e-6) and np.all(diagonal > 0)
    assert np.all(result.std >= 0) and result.std.max() > 0
    np.testing.assert_allclose(result.mean, result.mean.T, atol=1e-9)
    # each entry averages the two cross-seed comparisons
    a0, b1 = result.adapters["single"][0], result.adapters["topics"][1]
    a1, b0 = result.adapters["single"][1], result.adapters["topics"][0]
    expected = [compare_adapters(a0, b1).score, compare_adapters(a1, b0).score]
    assert result.mean[0, 1] == pytest.approx(np.mean(expected))
    assert result.std[0, 1] == pytest.approx(np.std(expected, ddof=0))  # population std
    assert result.std[0, 1] != pytest.approx(np.std(expected, ddof=1))
    data = json.loads((tmp_path / "run" / "matrix.json").read_text())
    np.testing.assert_allclose(data["std"], result.std)
    assert data["std_of"] == "population std over the seed pairs (ddof 0)"
    assert data["seed_pairs"] == [[0, 1], [1, 0]]
    assert (tmp_path / "run" / "matrix.png").is_file()


def test_needs_two_datasets(specs, config, tmp_path):
    with pytest.raises(RepmatchError, match="at least two datasets"):
        dataset_similarity(specs[:1], config, tmp_path / "run", progress=False)
    with pytest.raises(RepmatchError, match="seeds"):
        dataset_similarity(specs, config, tmp_path / "run", seeds=(0, 0), progress=False)
    with pytest.raises(RepmatchError, match="seeds"):
        dataset_similarity(specs, config, tmp_path / "run", seeds=(), progress=False)
    assert not (tmp_path / "run").exists()


def test_same_dataset_twice_gets_distinct_names(specs, config, tmp_path, one_seed):
    _reuse(one_seed, tmp_path / "run", {"single": "single", "single#2": "single"})
    result = dataset_similarity([specs[0], specs[0]], config, tmp_path / "run", progress=False)
    assert result.names == ["single", "single#2"]
    assert result.mean == pytest.approx(np.ones((2, 2)), abs=1e-6)


def test_unique_names_never_collide():
    """Regression: ['a', 'a', 'a#2'] became ['a', 'a#2', 'a#2']."""
    names = _unique_names(["a", "a", "a#2"])
    assert len(set(names)) == 3
    assert names[0] == "a" and names[2] == "a#2"
    assert _unique_names(["x", "y", "x", "x"]) == ["x", "y", "x#2", "x#3"]


def test_matrix_json_records_the_seeds_used(tmp_path, specs, config, one_seed):
    """Regression: matrix.json recorded config.seed, not the per-seed replacement."""
    _reuse(one_seed, tmp_path / "run", {"single": "single", "topics": "topics"})
    dataset_similarity(
        specs[:2], replace(config, seed=7), tmp_path / "run", seeds=(0,), progress=False
    )
    data = json.loads((tmp_path / "run" / "matrix.json").read_text())
    assert data["config"]["seeds"] == [0]
    assert "seed" not in data["config"]["train"]
    assert data["seeds"] == [0]


def test_matrix_as_a_data_frame(one_seed):
    _, result = one_seed
    frame = result.to_frame()
    assert list(frame.index) == list(frame.columns) == NAMES
    np.testing.assert_array_equal(frame.to_numpy(), result.mean)
