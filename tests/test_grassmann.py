"""Tests for repmatch.grassmann: low-rank singular vectors and Grassmann similarity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repmatch.grassmann import (
    _unclamped_grid,
    full_singular_vectors,
    grassmann_grid,
    layer_similarity,
    lowrank_singular_vectors,
    repmatch_score,
    shuffle_entries,
)

F64 = torch.float64
PROPERTY = settings(max_examples=50, deadline=None)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, gen: torch.Generator, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)


def _orthonormal(d: int, r: int, gen: torch.Generator, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Random (*batch, d, r) matrix with orthonormal columns."""
    q, _ = torch.linalg.qr(_randn(*batch, d, r, gen=gen))
    return q


def _well_conditioned(r: int, gen: torch.Generator) -> torch.Tensor:
    """Random invertible (r, r) matrix with singular values in [0.5, 2]."""
    q1 = _orthonormal(r, r, gen)
    q2 = _orthonormal(r, r, gen)
    s = 0.5 + 1.5 * torch.rand(r, generator=gen, dtype=F64)
    return q1 @ torch.diag(s) @ q2


def _oracle_grid(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    """Literal double loop over eq. 1 of the paper."""
    r1, r2 = U1.shape[-1], U2.shape[-1]
    out = torch.empty(r1, r2, dtype=F64)
    for i in range(1, r1 + 1):
        for j in range(1, r2 + 1):
            prod = U1[:, :i].T @ U2[:, :j]
            out[i - 1, j - 1] = torch.linalg.matrix_norm(prod, ord="fro") ** 2 / min(i, j)
    return out


def _assert_same_columns(U: torch.Tensor, V: torch.Tensor, atol: float = 1e-8) -> None:
    """Columns of U and V agree up to sign: |diag(U^T V)| == 1 and the projectors agree."""
    diag = (U.mT @ V).diagonal(dim1=-2, dim2=-1).abs()
    torch.testing.assert_close(diag, torch.ones_like(diag), atol=atol, rtol=0)
    torch.testing.assert_close(U @ U.mT, V @ V.mT, atol=atol, rtol=0)


shapes = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.integers(4, 24),  # d
    st.integers(1, 4),  # r1
    st.integers(1, 4),  # r2
)


# ---------------------------------------------------------------- singular vectors


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("rank", [1, 2, 4, 8])
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_lowrank_matches_full_svd(side: str, rank: int, batch: tuple[int, ...]) -> None:
    gen = _gen(1000 * rank + len(batch))
    d_out, d_in = 23, 17
    B = _randn(*batch, d_out, rank, gen=gen)
    A = _randn(*batch, rank, d_in, gen=gen)
    U, S = lowrank_singular_vectors(B, A, side=side)
    Uf, Sf = full_singular_vectors(B @ A, rank=rank, side=side)
    d = d_out if side == "left" else d_in
    assert U.shape == (*batch, d, rank)
    assert S.shape == (*batch, rank)
    assert U.dtype == F64 and S.dtype == F64
    torch.testing.assert_close(S, Sf, atol=1e-10, rtol=1e-10)
    _assert_same_columns(U, Uf)
    torch.testing.assert_close(U.mT @ U, torch.eye(rank, dtype=F64).expand_as(U.mT @ U))
    assert (S[..., :-1] >= S[..., 1:]).all()

    # scaling B scales the singular values by |s| and leaves the vectors alone
    Us, Ss = lowrank_singular_vectors(-2.5 * B, A, side=side)
    torch.testing.assert_close(Ss, 2.5 * S, atol=1e-10, rtol=1e-10)
    _assert_same_columns(Us, U)


def test_lowrank_broadcasts_batch_dims() -> None:
    gen = _gen(7)
    B = _randn(3, 1, 12, 4, gen=gen)
    A = _randn(5, 4, 9, gen=gen)
    U, S = lowrank_singular_vectors(B, A)
    assert U.shape == (3, 5, 12, 4) and S.shape == (3, 5, 4)
    Uf, Sf = full_singular_vectors(B @ A, rank=4)
    torch.testing.assert_close(S, Sf)
    _assert_same_columns(U, Uf)


def test_rank_one_left_is_normalised_B() -> None:
    gen = _gen(3)
    B = _randn(31, 1, gen=gen)
    A = _randn(1, 13, gen=gen)
    U, S = lowrank_singular_vectors(B, A)
    expected = B / B.norm()
    assert torch.allclose(U, expected) or torch.allclose(U, -expected)
    torch.testing.assert_close(S, (B.norm() * A.norm()).reshape(1))
    V, _ = lowrank_singular_vectors(B, A, side="right")
    expected = A.T / A.norm()
    assert torch.allclose(V, expected) or torch.allclose(V, -expected)


def test_rank_larger_than_dims_is_truncated() -> None:
    gen = _gen(4)
    U, S = lowrank_singular_vectors(_randn(5, 8, gen=gen), _randn(8, 3, gen=gen), side="left")
    assert U.shape == (5, 3) and S.shape == (3,)
    U, S = lowrank_singular_vectors(_randn(4, 8, gen=gen), _randn(8, 9, gen=gen), side="right")
    assert U.shape == (9, 4) and S.shape == (4,)


@pytest.mark.parametrize("side", ["left", "right"])
def test_rank_deficient_B_gives_finite_orthonormal_vectors(side: str) -> None:
    gen = _gen(5)
    A = _randn(4, 11, gen=gen)
    B_zero_col = _randn(9, 4, gen=gen)
    B_zero_col[:, 2] = 0.0
    for B in (B_zero_col, torch.zeros(9, 4, dtype=F64)):
        U, S = lowrank_singular_vectors(B, A, side=side)
        assert torch.isfinite(U).all() and torch.isfinite(S).all()
        torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=F64))
        torch.testing.assert_close(grassmann_grid(U, U), torch.ones(4, 4, dtype=F64))
    assert (S == 0).all()  # the all-zero B
    _, S = lowrank_singular_vectors(B_zero_col, A, side=side)
    assert S[-1].abs() < 1e-12 and (S[:-1] > 1e-3).all()


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_dtype_is_promoted_to_at_least_float32(dtype: torch.dtype, expected: torch.dtype) -> None:
    gen = _gen(6)
    B = _randn(10, 3, gen=gen).to(dtype)
    A = _randn(3, 8, gen=gen).to(dtype)
    U, S = lowrank_singular_vectors(B, A)
    assert U.dtype == expected and S.dtype == expected
    U, S = full_singular_vectors(B @ A, rank=3)
    assert U.dtype == expected and S.dtype == expected
    assert grassmann_grid(U, U.to(dtype)).dtype == expected
    assert repmatch_score(torch.ones(3, dtype=dtype)).dtype == expected


def test_mixed_dtypes_promote() -> None:
    gen = _gen(8)
    U, S = lowrank_singular_vectors(_randn(6, 2, gen=gen).float(), _randn(2, 5, gen=gen))
    assert U.dtype == F64 and S.dtype == F64


def test_full_singular_vectors_all_by_default() -> None:
    gen = _gen(9)
    W = _randn(2, 7, 5, gen=gen)
    U, S = full_singular_vectors(W)
    assert U.shape == (2, 7, 5) and S.shape == (2, 5)
    V, _ = full_singular_vectors(W, side="right")
    assert V.shape == (2, 5, 5)
    torch.testing.assert_close(U @ torch.diag_embed(S) @ V.mT, W)


# ---------------------------------------------------------------- Grassmann grid


@PROPERTY
@given(shapes)
def test_grid_matches_double_loop_oracle(args: tuple[int, int, int, int]) -> None:
    seed, d, r1, r2 = args
    gen = _gen(seed)
    U1, U2 = _orthonormal(d, r1, gen), _orthonormal(d, r2, gen)
    torch.testing.assert_close(grassmann_grid(U1, U2), _oracle_grid(U1, U2))


@PROPERTY
@given(shapes, st.sampled_from([torch.float32, F64]), st.booleans())
def test_unclamped_grid_in_unit_interval_up_to_rounding(
    args: tuple[int, int, int, int], dtype: torch.dtype, same: bool
) -> None:
    """The clamp in grassmann_grid only removes rounding noise: before it, values of orthonormal
    inputs (random, or identical, where phi = 1 exactly) lie within a few ulps of [0, 1]."""
    seed, d, r1, r2 = args
    gen = _gen(seed)
    U1 = _orthonormal(d, r1, gen).to(dtype)
    U2 = U1 if same else _orthonormal(d, r2, gen).to(dtype)
    raw = _unclamped_grid(U1, U2)
    noise = 8 * torch.finfo(dtype).eps  # 1e-6 in float32, 2e-15 in float64
    assert raw.min() >= -noise and raw.max() <= 1 + noise
    grid = grassmann_grid(U1, U2)
    assert ((grid >= 0) & (grid <= 1)).all()
    torch.testing.assert_close(grid, raw, atol=noise, rtol=0)


def test_clamp_does_not_detect_non_orthonormal_inputs() -> None:
    """As documented: columns of norm 2 give phi = 4 before the clamp, 1 after it."""
    U = _orthonormal(10, 2, _gen(16))
    torch.testing.assert_close(_unclamped_grid(2 * U, U), torch.full((2, 2), 2.0**2, dtype=F64))
    torch.testing.assert_close(grassmann_grid(2 * U, U), torch.ones(2, 2, dtype=F64))


@PROPERTY
@given(shapes)
def test_grid_is_symmetric_and_ignores_column_signs(args: tuple[int, int, int, int]) -> None:
    seed, d, r1, r2 = args
    gen = _gen(seed)
    U1, U2 = _orthonormal(d, r1, gen), _orthonormal(d, r2, gen)
    grid = grassmann_grid(U1, U2)
    assert grid.shape == (r1, r2)
    torch.testing.assert_close(grassmann_grid(U2, U1), grid.T, atol=1e-12, rtol=0)
    # flip the sign of the first column (always) and of each other one at random
    signs = torch.where(torch.rand(r1, generator=gen) < 0.5, -1.0, 1.0).to(F64)
    signs[0] = -1.0
    torch.testing.assert_close(grassmann_grid(U1 * signs, U2), grid, atol=1e-12, rtol=0)


@PROPERTY
@given(shapes)
def test_identical_subspaces_score_one(args: tuple[int, int, int, int]) -> None:
    seed, d, r, _ = args
    gen = _gen(seed)
    U = _orthonormal(d, r, gen)
    # U[:, :i] and U[:, :j] share min(i, j) dimensions: phi = 1 everywhere
    torch.testing.assert_close(
        _unclamped_grid(U, U), torch.ones(r, r, dtype=F64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(layer_similarity(grassmann_grid(U, U)), torch.tensor(1.0, dtype=F64))


@PROPERTY
@given(shapes)
def test_orthogonal_subspaces_score_zero(args: tuple[int, int, int, int]) -> None:
    seed, d, r1, r2 = args
    gen = _gen(seed)
    Q = _orthonormal(d + r1 + r2, r1 + r2, gen)
    grid = grassmann_grid(Q[:, :r1], Q[:, r1:])
    torch.testing.assert_close(grid, torch.zeros(r1, r2, dtype=F64), atol=1e-12, rtol=0)


@PROPERTY
@given(shapes)
def test_contained_subspace(args: tuple[int, int, int, int]) -> None:
    seed, d, r1, extra = args
    gen = _gen(seed)
    r2 = r1 + extra
    Q = _orthonormal(d + r2, r2, gen)
    U1 = Q[:, :r1]
    # nested with the same leading columns: U1[:, :i] lies in U2[:, :j] whenever i <= j
    grid = grassmann_grid(U1, Q)
    upper = torch.ones(r1, r2, dtype=torch.bool).triu()
    torch.testing.assert_close(grid[upper], torch.ones_like(grid[upper]), atol=1e-12, rtol=0)
    # contained but in a rotated basis: only the full U2 (last column of the grid) contains U1
    U2 = Q @ _orthonormal(r2, r2, gen)
    grid = grassmann_grid(U1, U2)
    torch.testing.assert_close(grid[:, -1], torch.ones(r1, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(layer_similarity(grid), torch.tensor(1.0, dtype=F64))


@PROPERTY
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 6),
    st.sampled_from(["left", "right"]),
    st.floats(0.01, 100.0),
    st.floats(0.01, 100.0),
    st.booleans(),
)
def test_invariant_to_scale_and_reparametrisation(
    seed: int, r: int, side: str, c: float, c_prime: float, negate: bool
) -> None:
    gen = _gen(seed)
    d_out, d_in = 19, 14
    B1, A1 = _randn(d_out, r, gen=gen), _randn(r, d_in, gen=gen)
    B2, A2 = _randn(d_out, r, gen=gen), _randn(r, d_in, gen=gen)
    R = _well_conditioned(r, gen)
    c = -c if negate else c
    U1, _ = lowrank_singular_vectors(B1, A1, side=side)
    U2, _ = lowrank_singular_vectors(B2, A2, side=side)
    grid = grassmann_grid(U1, U2)

    V1, _ = lowrank_singular_vectors(c * B1 @ R, torch.linalg.solve(R, A1) / c_prime, side=side)
    torch.testing.assert_close(grassmann_grid(V1, U2), grid, atol=1e-8, rtol=0)
    torch.testing.assert_close(grassmann_grid(V1, U1).diagonal(), torch.ones(r, dtype=F64))


@PROPERTY
@given(shapes, st.booleans())
def test_whole_subspaces_ignore_a_change_of_basis_of_either(
    args: tuple[int, int, int, int], first: bool
) -> None:
    """phi(r1, r2) compares the whole subspaces, so any orthonormal basis of either gives the
    same value; the leading-column entries depend on the basis (they are what the grid adds)."""
    seed, d, r1, r2 = args
    gen = _gen(seed)
    U1, U2 = _orthonormal(d, r1, gen), _orthonormal(d, r2, gen)
    grid = grassmann_grid(U1, U2)
    if first:
        moved = grassmann_grid(U1 @ _orthonormal(r1, r1, gen), U2)
    else:
        moved = grassmann_grid(U1, U2 @ _orthonormal(r2, r2, gen))
    torch.testing.assert_close(moved[-1, -1], grid[-1, -1], atol=1e-12, rtol=0)
    assert 0.0 <= moved.min() and moved.max() <= 1.0


@PROPERTY
@given(shapes)
def test_grid_ignores_a_rotation_of_the_space(args: tuple[int, int, int, int]) -> None:
    """One orthogonal change of basis of the whole space (applied to both) keeps every entry."""
    seed, d, r1, r2 = args
    gen = _gen(seed)
    U1, U2, P = _orthonormal(d, r1, gen), _orthonormal(d, r2, gen), _orthonormal(d, d, gen)
    torch.testing.assert_close(
        grassmann_grid(P @ U1, P @ U2), grassmann_grid(U1, U2), atol=1e-12, rtol=0
    )


@PROPERTY
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 5),
    st.integers(1, 5),
    st.sampled_from(["left", "right"]),
    st.sampled_from([torch.float32, F64]),
)
def test_lora_layer_scores_lie_in_unit_interval_and_are_symmetric(
    seed: int, r1: int, r2: int, side: str, dtype: torch.dtype
) -> None:
    """From LoRA factors to a layer score: in [0, 1], the same in either order, 1 against
    itself."""
    gen = _gen(seed)
    d_out, d_in = 17, 11
    U1, _ = lowrank_singular_vectors(
        _randn(d_out, r1, gen=gen, dtype=dtype), _randn(r1, d_in, gen=gen, dtype=dtype), side
    )
    U2, _ = lowrank_singular_vectors(
        _randn(d_out, r2, gen=gen, dtype=dtype), _randn(r2, d_in, gen=gen, dtype=dtype), side
    )
    forward = layer_similarity(grassmann_grid(U1, U2))
    backward = layer_similarity(grassmann_grid(U2, U1))
    assert 0.0 <= float(forward) <= 1.0
    assert float(forward) == pytest.approx(float(backward), abs=1e-6)
    assert float(layer_similarity(grassmann_grid(U1, U1))) == pytest.approx(1.0, abs=1e-6)


def test_grid_batched_matches_unbatched() -> None:
    gen = _gen(10)
    U1 = _orthonormal(16, 3, gen, batch=(4, 2))
    U2 = _orthonormal(16, 5, gen, batch=(2,))
    grid = grassmann_grid(U1, U2)
    assert grid.shape == (4, 2, 3, 5)
    for a in range(4):
        for b in range(2):
            torch.testing.assert_close(grid[a, b], _oracle_grid(U1[a, b], U2[b]))
    assert layer_similarity(grid).shape == (4, 2)


# ---------------------------------------------------------------- reductions


def test_layer_similarity_is_max_and_repmatch_is_mean() -> None:
    gen = _gen(11)
    grids = torch.rand(3, 5, 4, 6, generator=gen, dtype=F64)
    layer = layer_similarity(grids)
    assert layer.shape == (3, 5)
    torch.testing.assert_close(layer, grids.reshape(3, 5, -1).max(dim=-1).values)
    torch.testing.assert_close(repmatch_score(layer), layer.sum(dim=-1) / 5)
    assert repmatch_score(torch.tensor([0.2, 0.4, 0.9])).item() == pytest.approx(0.5)
    assert layer_similarity(torch.tensor([[0.1, 0.7], [0.3, 0.2]])).item() == pytest.approx(0.7)


# ---------------------------------------------------------------- shuffled control


def test_shuffle_is_a_deterministic_permutation() -> None:
    W = _randn(13, 7, gen=_gen(12))
    S1 = shuffle_entries(W, _gen(99))
    S2 = shuffle_entries(W, _gen(99))
    S3 = shuffle_entries(W, _gen(100))
    assert S1.shape == W.shape and S1.dtype == W.dtype
    assert torch.equal(S1, S2)
    assert not torch.equal(S1, S3)
    assert not torch.equal(S1, W)
    assert torch.equal(S1.flatten().sort().values, W.flatten().sort().values)


def test_shuffle_batched_permutes_each_matrix_independently() -> None:
    W = _randn(1, 6, 5, gen=_gen(13)).expand(3, 6, 5).contiguous()
    S = shuffle_entries(W, _gen(1))
    assert S.shape == W.shape
    for k in range(3):
        assert torch.equal(S[k].flatten().sort().values, W[k].flatten().sort().values)
    assert not torch.equal(S[0], S[1])
    assert torch.equal(S, shuffle_entries(W, _gen(1)))


def test_shuffled_rank_one_is_full_rank_and_dissimilar() -> None:
    gen = _gen(14)
    W = _randn(384, 1, gen=gen) @ _randn(1, 384, gen=gen)
    S = shuffle_entries(W, _gen(15))
    assert torch.linalg.matrix_rank(S).item() == 384
    U, _ = full_singular_vectors(W, rank=1)
    Us, _ = full_singular_vectors(S, rank=1)
    assert layer_similarity(grassmann_grid(U, Us)).item() < 0.1


# ---------------------------------------------------------------- shape errors


def test_shape_errors_raise_value_error() -> None:
    z = torch.zeros
    with pytest.raises(ValueError, match="inner dims"):
        lowrank_singular_vectors(z(8, 3), z(4, 5))
    with pytest.raises(ValueError, match="do not broadcast"):
        lowrank_singular_vectors(z(2, 8, 3), z(3, 3, 5))
    with pytest.raises(ValueError, match=r"\(8,\)"):
        lowrank_singular_vectors(z(8), z(1, 5))
    with pytest.raises(ValueError, match="non-empty"):
        lowrank_singular_vectors(z(8, 0), z(0, 5))
    with pytest.raises(ValueError, match="side"):
        lowrank_singular_vectors(z(8, 2), z(2, 5), side="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank"):
        full_singular_vectors(z(8, 5), rank=6)
    with pytest.raises(ValueError, match="rank"):
        full_singular_vectors(z(8, 5), rank=0)
    with pytest.raises(ValueError, match="side"):
        full_singular_vectors(z(8, 5), side="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(10, 2\).*\(11, 2\)"):
        grassmann_grid(z(10, 2), z(11, 2))
    with pytest.raises(ValueError, match="do not broadcast"):
        grassmann_grid(z(2, 10, 2), z(3, 10, 2))
    with pytest.raises(ValueError):
        grassmann_grid(z(10), z(10, 2))
    with pytest.raises(ValueError):
        layer_similarity(z(4))
    with pytest.raises(ValueError):
        repmatch_score(z(3, 0))
    with pytest.raises(ValueError):
        repmatch_score(torch.tensor(1.0))
    with pytest.raises(ValueError):
        shuffle_entries(z(5), _gen(0))
    with pytest.raises(ValueError, match="complex"):
        grassmann_grid(z(4, 2, dtype=torch.complex64), z(4, 2))


def test_lowrank_of_non_finite_factors_is_a_value_error() -> None:
    B, A = torch.randn(8, 2), torch.randn(2, 6)
    B[3, 1] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        lowrank_singular_vectors(B, A)
