"""compare_adapters on adapter folders: round trips, invariances, foreign adapters, mismatches.

Reading adapter folders (and broken ones) is tested in test_adapters.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from repmatch.adapters import RECORD_FILE, load_adapter
from repmatch.compare import RIGHT_SIDE_NOTE, compare_adapters, layer_subspaces, score_subspaces
from repmatch.errors import RepmatchError
from repmatch.grassmann import full_singular_vectors
from test_adapters import copy_adapter, plain_peft_adapter, rewrite_weights


def test_adapter_against_itself_scores_one(trained_adapter):
    folder = trained_adapter("bert", seed=0)
    result = compare_adapters(folder, folder)
    assert result.score == pytest.approx(1.0, abs=1e-6)
    assert len(result.layers) == 2
    for name, grid in result.grids.items():
        assert result.layers[name] == pytest.approx(1.0, abs=1e-6)
        assert grid.shape == (2, 2)
        # the same subspace: phi(i, i) = 1 for every leading-column count
        assert grid.diagonal() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_two_seeds_score_between_zero_and_one(trained_adapter):
    first, second = trained_adapter("bert", seed=0), trained_adapter("bert", seed=1)
    result = compare_adapters(first, second)
    assert 0.0 < result.score < 1.0
    assert result.first == first and result.second == second
    assert sorted(result.layers) == sorted(load_adapter(first).layers)
    assert result.score == pytest.approx(sum(result.layers.values()) / 2)
    for name, grid in result.grids.items():
        assert result.layers[name] == pytest.approx(grid.max())
        assert 0.0 <= grid.min() and grid.max() <= 1.0 + 1e-9
        # different LoRA seeds: the full rank-2 subspaces differ
        assert grid[-1, -1] < 0.99
    # symmetric
    assert compare_adapters(second, first).score == pytest.approx(result.score, abs=1e-6)


def test_to_dict_is_json(trained_adapter):
    result = compare_adapters(
        trained_adapter("bert", seed=0), trained_adapter("bert", seed=1), shuffled_baseline=True
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["score"] == pytest.approx(result.score)
    assert isinstance(data["score"], float)
    assert data["layers"] == pytest.approx(result.layers)
    assert data["side"] == "left"
    assert set(data["grids"]) == set(result.layers)
    assert all(len(grid) == 2 and len(grid[0]) == 2 for grid in data["grids"].values())
    assert data["shuffled_baseline"]["score"] == pytest.approx(result.baseline.score)


def test_different_ranks(trained_adapter):
    result = compare_adapters(
        trained_adapter("bert", seed=0, rank=2), trained_adapter("bert", seed=1, rank=4)
    )
    assert all(grid.shape == (2, 4) for grid in result.grids.values())
    assert 0.0 < result.score <= 1.0
    flipped = compare_adapters(
        trained_adapter("bert", seed=1, rank=4), trained_adapter("bert", seed=0, rank=2)
    )
    assert all(grid.shape == (4, 2) for grid in flipped.grids.values())
    assert flipped.score == pytest.approx(result.score, abs=1e-6)


def test_shuffled_baseline_is_lower(trained_adapter):
    result = compare_adapters(
        trained_adapter("bert", seed=0), trained_adapter("bert", seed=1), shuffled_baseline=True
    )
    baseline = result.baseline
    assert baseline is not None
    assert 0.0 <= baseline.score <= 1.0
    assert baseline.score < result.score - 0.3
    assert set(baseline.layers) == set(result.layers)
    assert baseline.second.startswith("shuffled ")
    again = compare_adapters(
        trained_adapter("bert", seed=0), trained_adapter("bert", seed=1), shuffled_baseline=True
    )
    assert again.baseline.score == baseline.score  # seeded shuffle
    other = compare_adapters(
        trained_adapter("bert", seed=0),
        trained_adapter("bert", seed=1),
        shuffled_baseline=True,
        baseline_seed=5,
    )
    assert other.baseline.score != baseline.score
    plain = compare_adapters(trained_adapter("bert"), trained_adapter("bert", seed=1))
    assert plain.baseline is None


@pytest.mark.parametrize("factor", ["B", "A"])
def test_invariant_to_scaling_a_factor(factor, trained_adapter, tmp_path):
    first, second = trained_adapter("bert", seed=0), trained_adapter("bert", seed=1)
    scaled = copy_adapter(second, tmp_path / "scaled")
    rewrite_weights(scaled, lambda key, value: value * -7.5 if f".lora_{factor}." in key else value)
    name = next(iter(load_adapter(second).layers))
    torch.testing.assert_close(
        getattr(load_adapter(scaled).layers[name], factor),
        getattr(load_adapter(second).layers[name], factor) * -7.5,
    )
    original = compare_adapters(first, second)
    result = compare_adapters(first, scaled)
    assert result.score == pytest.approx(original.score, abs=1e-6)
    for name in original.layers:
        assert result.grids[name] == pytest.approx(original.grids[name], abs=1e-6)


def test_invariant_to_reparametrisation(trained_adapter, tmp_path):
    """(B R)(R^-1 A) is the same update, so the same score."""
    first, second = trained_adapter("bert", seed=0), trained_adapter("bert", seed=1)
    moved = copy_adapter(second, tmp_path / "moved")
    generator = torch.Generator().manual_seed(3)
    mixing = torch.randn(2, 2, generator=generator, dtype=torch.float64) + 2 * torch.eye(2)
    inverse = torch.linalg.inv(mixing)

    def change(key, value):
        if ".lora_B." in key:
            return (value.double() @ mixing).float()
        if ".lora_A." in key:
            return (inverse @ value.double()).float()
        return value

    rewrite_weights(moved, change)
    assert compare_adapters(first, moved).score == pytest.approx(
        compare_adapters(first, second).score, abs=1e-5
    )


def test_plain_peft_adapter_can_be_compared(tiny_model, trained_adapter, tmp_path):
    folder = plain_peft_adapter(tiny_model("bert"), "value", tmp_path / "plain", r=3)
    assert load_adapter(folder).record is None
    assert compare_adapters(folder, folder).score == pytest.approx(1.0, abs=1e-6)

    # PEFT records the folder it loaded from; repmatch the resolved path: the same model
    ours = trained_adapter("bert", seed=0)
    result = compare_adapters(folder, ours)
    assert all(grid.shape == (3, 2) for grid in result.grids.values())
    assert 0.0 < result.score < 1.0


def test_different_base_models(trained_adapter):
    with pytest.raises(RepmatchError, match="different base models"):
        compare_adapters(trained_adapter("bert"), trained_adapter("electra"))


def test_different_target_sets_compare_the_shared_layers(trained_adapter):
    both = trained_adapter("bert", seed=0, targets=("query", "value"))
    value = trained_adapter("bert", seed=1)
    result = compare_adapters(both, value)
    value_layers = [f"bert.encoder.layer.{i}.attention.self.value" for i in range(2)]
    assert list(result.layers) == list(result.grids) == value_layers
    assert result.notes == [
        f"compared the 2 layers both adapters adapt; left out 2 layers only in {both} "
        "(layer 0 query, layer 1 query)"
    ]
    # the score is that of the value layers alone
    a, b = layer_subspaces(load_adapter(both)), layer_subspaces(load_adapter(value))
    expected, _, _ = score_subspaces(
        {name: a[name] for name in value_layers}, {name: b[name] for name in value_layers}
    )
    assert result.score == pytest.approx(expected, abs=1e-9)
    flipped = compare_adapters(value, both, shuffled_baseline=True)
    assert flipped.score == pytest.approx(result.score, abs=1e-6)
    assert flipped.notes[0].endswith(f"2 layers only in {both} (layer 0 query, layer 1 query)")
    assert list(flipped.baseline.layers) == value_layers
    # the same targets: nothing left out, no note
    assert compare_adapters(value, trained_adapter("bert", seed=2)).notes == []


def test_no_shared_layers(trained_adapter):
    with pytest.raises(RepmatchError, match=r"share no adapted layer .*targets in common") as e:
        compare_adapters(trained_adapter("bert"), trained_adapter("bert", targets=("query",)))
    assert "\n" not in str(e.value)


def test_different_shapes(trained_adapter, tmp_path):
    wide = copy_adapter(trained_adapter("bert", seed=1), tmp_path / "wide")
    generator = torch.Generator().manual_seed(0)

    def widen(key, value):
        if ".lora_B." in key:
            return torch.randn(48, value.shape[1], generator=generator)
        if ".lora_A." in key:
            return torch.randn(value.shape[0], 48, generator=generator)
        return value

    rewrite_weights(wide, widen)
    with pytest.raises(RepmatchError, match=r"shape \(32, 32\).*\(48, 48\)"):
        compare_adapters(trained_adapter("bert"), wide)


def test_unknown_side(trained_adapter):
    with pytest.raises(RepmatchError, match="side"):
        compare_adapters(trained_adapter("bert"), trained_adapter("bert"), side="middle")


def test_right_side_note_for_a_shared_seed(trained_adapter):
    same_seed = compare_adapters(
        trained_adapter("bert", seed=0), trained_adapter("bert", seed=0, lr=5e-3), side="right"
    )
    assert same_seed.side == "right"
    assert same_seed.notes == [RIGHT_SIDE_NOTE]
    assert same_seed.to_dict()["notes"] == [RIGHT_SIDE_NOTE]
    other_seed = compare_adapters(
        trained_adapter("bert", seed=0), trained_adapter("bert", seed=1), side="right"
    )
    assert other_seed.notes == []
    left = compare_adapters(trained_adapter("bert", seed=0), trained_adapter("bert", seed=1))
    assert left.notes == []
    # right singular vectors live in the input space; they differ from the left ones here
    assert other_seed.score != pytest.approx(left.score, abs=1e-3)
    # with a shared seed A barely moves, so the right side looks alike regardless of the data
    assert same_seed.score > 0.9


def test_no_right_side_note_without_records(trained_adapter, tmp_path):
    """Regression: adapters without records (seeds unknown) were noted as sharing a seed."""
    first = copy_adapter(trained_adapter("bert", seed=0), tmp_path / "first")
    second = copy_adapter(trained_adapter("bert", seed=0, lr=5e-3), tmp_path / "second")
    assert compare_adapters(first, second, side="right").notes == [RIGHT_SIDE_NOTE]
    (second / RECORD_FILE).unlink()
    assert compare_adapters(first, second, side="right").notes == []
    (first / RECORD_FILE).unlink()
    assert compare_adapters(first, second, side="right").notes == []


@pytest.mark.parametrize("side", ["left", "right"])
def test_lowrank_subspaces_match_a_full_svd(side, trained_adapter):
    adapter = load_adapter(trained_adapter("bert", seed=0, rank=4))
    subspaces = layer_subspaces(adapter, side)
    assert set(subspaces) == set(adapter.layers)
    for name, factors in adapter.layers.items():
        low = subspaces[name].double()
        full, _ = full_singular_vectors(factors.delta_weight(), factors.rank, side)
        assert low.shape == full.shape == (32, 4)
        # columns agree up to sign
        signs = torch.sign((low * full).sum(dim=0))
        torch.testing.assert_close(low * signs, full.double(), rtol=0, atol=1e-5)
        eye = torch.eye(4, dtype=torch.float64)
        torch.testing.assert_close(low.T @ low, eye, atol=1e-6, rtol=0)


def _dense_updates(folder: str) -> dict[str, torch.Tensor]:
    """Oracle input: every layer's dense ΔW = B·A (float64), read straight from the safetensors
    file by key name, without repmatch's adapter reader (the scale s is left out: the score
    cannot depend on it)."""
    weights = load_file(Path(folder) / "adapter_model.safetensors")
    updates = {}
    for key, A in weights.items():
        if ".lora_A." not in key:
            continue
        B = weights[key.replace(".lora_A.", ".lora_B.")]
        name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        updates[name] = B.double() @ A.double()  # (d_out, r) @ (r, d_in)
    return updates


def _literal_phi_grid(U1: torch.Tensor, U2: torch.Tensor) -> list[list[float]]:
    """Paper eq. 1 written out: phi(i, j) = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j)."""
    grid = []
    for i in range(1, U1.shape[1] + 1):
        row = []
        for j in range(1, U2.shape[1] + 1):
            overlap = U1[:, :i].T @ U2[:, :j]
            row.append(float((overlap**2).sum()) / min(i, j))
        grid.append(row)
    return grid


@pytest.mark.parametrize("side", ["left", "right"])
def test_scores_match_dense_svd_oracle(side, trained_adapter):
    """compare_adapters against the method written out literally: the dense ΔW of each layer, its
    full SVD (torch.linalg.svd), the first r singular vectors, the phi grid by a double loop, the
    layer score its maximum and the RepMatch score the mean over layers."""
    first, second = trained_adapter("bert", seed=0, rank=2), trained_adapter("bert", seed=1, rank=4)
    result = compare_adapters(first, second, side=side)
    dense1, dense2 = _dense_updates(first), _dense_updates(second)
    assert sorted(result.layers) == sorted(dense1) == sorted(dense2)
    expected_layers = {}
    for name in dense1:
        vectors = []
        for delta, rank in ((dense1[name], 2), (dense2[name], 4)):
            u, _, vh = torch.linalg.svd(delta)  # full SVD: u (d_out, d_out), vh (d_in, d_in)
            vectors.append(u[:, :rank] if side == "left" else vh[:rank].T)
        grid = _literal_phi_grid(*vectors)
        np.testing.assert_allclose(result.grids[name], grid, rtol=0, atol=1e-5)
        expected_layers[name] = max(max(row) for row in grid)
    assert result.layers == pytest.approx(expected_layers, abs=1e-5)
    expected = sum(expected_layers.values()) / len(expected_layers)
    assert result.score == pytest.approx(expected, abs=1e-5)
    assert 0.0 < expected < 1.0  # a score that tells the two adapters apart at all
