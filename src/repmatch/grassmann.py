r"""Subspace maths behind RepMatch: singular vectors of LoRA updates and Grassmann similarity.

This module owns the pure linear algebra (tensors in, tensors out; no files, no printing, no
state). A LoRA layer has the update :math:`\Delta W = s\,BA` with :math:`B \in \mathbb{R}^{d_{out}
\times r}` and :math:`A \in \mathbb{R}^{r \times d_{in}}`. Its singular vectors (left by default,
right on request) span the subspace the update writes to (reads from). Two such subspaces
:math:`U_1 \in \mathbb{R}^{d \times r_1}`, :math:`U_2 \in \mathbb{R}^{d \times r_2}` with
orthonormal columns are compared with the Grassmann similarity of the paper (eq. 1)

.. math::

    \phi(i, j) = \frac{\lVert U_1[:, :i]^\top U_2[:, :j] \rVert_F^2}{\min(i, j)},
    \qquad 1 \le i \le r_1,\ 1 \le j \le r_2,

which lies in :math:`[0, 1]`. A layer's score is the maximum of :math:`\phi` over the grid, and the
RepMatch score is the mean of the layer scores over layers. Both are invariant to the scale
:math:`s` and to reparametrisations :math:`(BR)(R^{-1}A)`, because they only see the singular
subspaces of :math:`\Delta W`.

Shape errors here are programmer errors, so they raise :class:`ValueError` (not the user-facing
:class:`repmatch.errors.RepmatchError`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from repmatch.config import Side

__all__ = [
    "Side",
    "full_singular_vectors",
    "grassmann_grid",
    "layer_similarity",
    "lowrank_singular_vectors",
    "repmatch_score",
    "shuffle_entries",
]


_SIDES = ("left", "right")


def _result_dtype(*tensors: Tensor) -> torch.dtype:
    """Common dtype of ``tensors`` promoted to at least float32; complex inputs are rejected."""
    dtype = torch.float32
    for t in tensors:
        if t.dtype.is_complex:
            raise ValueError(f"expected real tensors, got dtype {t.dtype}")
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_side(side: str) -> None:
    if side not in _SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def _check_tensor(name: str, t: object) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(t).__name__}; convert it with "
            "torch.as_tensor"
        )


def _check_matrix(name: str, t: Tensor) -> None:
    """Require ``t`` to be a (..., m, n) tensor with m, n >= 1."""
    _check_tensor(name, t)
    if t.ndim < 2:
        raise ValueError(f"{name} must have shape (..., m, n), got {tuple(t.shape)}")
    if t.shape[-2] == 0 or t.shape[-1] == 0:
        raise ValueError(f"{name} must have non-empty matrix dims, got {tuple(t.shape)}")


def _broadcast_batch(name1: str, t1: Tensor, name2: str, t2: Tensor) -> None:
    """Require the leading (batch) dims of two (..., m, n) tensors to broadcast."""
    try:
        torch.broadcast_shapes(t1.shape[:-2], t2.shape[:-2])
    except RuntimeError as exc:
        raise ValueError(
            f"batch dims of {name1} {tuple(t1.shape)} and {name2} {tuple(t2.shape)} "
            "do not broadcast"
        ) from exc


def lowrank_singular_vectors(B: Tensor, A: Tensor, side: Side = "left") -> tuple[Tensor, Tensor]:
    r"""Singular vectors and values of :math:`\Delta W = BA` without forming :math:`\Delta W`.

    Computes the QR decompositions :math:`B = Q_B R_B` and :math:`A^\top = Q_A R_A`, the SVD of
    the small core :math:`R_B R_A^\top = U_s S V_s^\top`, and returns the left singular vectors
    :math:`Q_B U_s` or the right singular vectors :math:`Q_A V_s`. Cost is
    :math:`O((d_{out} + d_{in})\,r^2)`, never :math:`O(d^3)`; an ``A`` without batch dims (shared
    by a batch of ``B``) is factorised once. The QR and SVD run in float64 for accuracy.

    Args:
        B: (..., d_out, r) LoRA ``B`` (include the scale ``s`` here or not: the singular vectors
            do not depend on it, the singular values scale by ``|s|``).
        A: (..., r, d_in) LoRA ``A``. Batch dims of ``B`` and ``A`` broadcast.
        side: ``"left"`` for the output space (columns of :math:`U`, length d_out) or
            ``"right"`` for the input space (length d_in).

    Returns:
        ``(U, S)``: ``U`` of shape (..., d_out, k) for ``"left"`` or (..., d_in, k) for
        ``"right"`` with orthonormal columns ordered by descending singular value, and ``S`` of
        shape (..., k), where ``k = min(r, d_out, d_in)`` (``k = r`` for any real LoRA layer).
        Both are in the input dtype promoted to at least float32 (float16/bfloat16 -> float32,
        float64 stays float64). For a rank-deficient update (e.g. an untrained layer with
        ``B = 0``) the columns are still orthonormal and finite, but those whose singular value
        is zero are an arbitrary basis of the complement and carry no information. Each column
        is defined only up to sign (and, for repeated singular values, up to rotation).

    Raises:
        TypeError: if a tensor argument is not a ``torch.Tensor`` (a list or NumPy array).
        ValueError: if the shapes do not fit, ``side`` is unknown or the SVD fails on
            non-finite entries.
    """
    _check_side(side)
    _check_matrix("B", B)
    _check_matrix("A", A)
    if B.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"inner dims differ: B {tuple(B.shape)} is (..., d_out, r) and A {tuple(A.shape)} "
            "must be (..., r, d_in) with the same r"
        )
    _broadcast_batch("B", B, "A", A)
    out_dtype = _result_dtype(B, A)

    q_b, r_b = torch.linalg.qr(B.to(torch.float64))  # (..., d_out, m), (..., m, r)
    q_a, r_a = torch.linalg.qr(A.to(torch.float64).mT)  # (..., d_in, p), (..., p, r)
    try:
        u_s, s, vh_s = torch.linalg.svd(r_b @ r_a.mT, full_matrices=False)  # core (..., m, p)
    except torch.linalg.LinAlgError as err:  # only non-finite entries stop it (no check: no sync)
        raise ValueError(
            "B and A must be finite: the SVD of B @ A did not converge (NaN or infinite entries)"
        ) from err
    if side == "left":
        u = q_b @ u_s  # (..., d_out, k)
    else:
        u = q_a @ vh_s.mT  # (..., d_in, k)
    return u.to(out_dtype), s.to(out_dtype)


def full_singular_vectors(
    delta_w: Tensor, rank: int | None = None, side: Side = "left"
) -> tuple[Tensor, Tensor]:
    r"""Singular vectors and values of a dense matrix by a full SVD (slow reference path).

    Needed where :math:`\Delta W` is not low rank, e.g. the shuffled-entries baseline
    (:func:`shuffle_entries`), and as a test oracle for :func:`lowrank_singular_vectors`. The SVD
    runs in float64.

    Args:
        delta_w: (..., d_out, d_in) matrix.
        rank: keep the first ``rank`` singular vectors, ``1 <= rank <= min(d_out, d_in)``;
            ``None`` keeps all ``min(d_out, d_in)``.
        side: ``"left"`` (vectors of length d_out) or ``"right"`` (length d_in).

    Returns:
        ``(U, S)``: ``U`` of shape (..., d_out, k) or (..., d_in, k), columns ordered by
        descending singular value, and ``S`` of shape (..., k), with ``k = rank`` or
        ``min(d_out, d_in)``; dtype as in :func:`lowrank_singular_vectors`.

    Raises:
        TypeError: if a tensor argument is not a ``torch.Tensor`` (a list or NumPy array).
        ValueError: if ``delta_w`` is not a matrix, ``rank`` is out of range or ``side`` is
            unknown.
    """
    _check_side(side)
    _check_matrix("delta_w", delta_w)
    full = min(delta_w.shape[-2], delta_w.shape[-1])
    if rank is None:
        rank = full
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
        raise ValueError(
            f"rank must be an int in [1, {full}] for delta_w {tuple(delta_w.shape)}, got {rank!r}"
        )
    out_dtype = _result_dtype(delta_w)
    u, s, vh = torch.linalg.svd(delta_w.to(torch.float64), full_matrices=False)
    vecs = u[..., :rank] if side == "left" else vh[..., :rank, :].mT
    return vecs.to(out_dtype), s[..., :rank].to(out_dtype)


def grassmann_grid(U1: Tensor, U2: Tensor) -> Tensor:
    r"""Grassmann similarity :math:`\phi(i, j)` for every pair of leading-column counts.

    .. math::

        \phi(i, j) = \frac{\lVert U_1[:, :i]^\top U_2[:, :j] \rVert_F^2}{\min(i, j)}

    Vectorised: with :math:`M = (U_1^\top U_2)^{\circ 2}` (elementwise square), the numerator is
    the 2-D cumulative sum of :math:`M`. The columns of ``U1`` and ``U2`` are assumed orthonormal
    (not checked); the grid is invariant to the sign of each column.

    For orthonormal columns :math:`\phi` lies in :math:`[0, 1]`, and computed values leave that
    range only by rounding: a few units in the last place, up to about :math:`5 \cdot 10^{-7}`
    above 1 in float32. The result is clamped to :math:`[0, 1]` to remove that noise. The clamp
    does not detect inputs that are not orthonormal: their values can exceed 1 (columns of norm 2
    give up to 4) and come out as 1.

    Args:
        U1: (..., d, r1) orthonormal columns.
        U2: (..., d, r2) orthonormal columns; batch dims broadcast with ``U1``'s.

    Returns:
        (..., r1, r2) grid; entry ``[i - 1, j - 1]`` is :math:`\phi(i, j)`. Dtype is the common
        dtype of the inputs promoted to at least float32.

    Raises:
        TypeError: if a tensor argument is not a ``torch.Tensor`` (a list or NumPy array).
        ValueError: if the inputs are not matrices or their ``d`` differ.
    """
    _check_matrix("U1", U1)
    _check_matrix("U2", U2)
    if U1.shape[-2] != U2.shape[-2]:
        raise ValueError(
            f"U1 {tuple(U1.shape)} and U2 {tuple(U2.shape)} must share d in (..., d, r)"
        )
    _broadcast_batch("U1", U1, "U2", U2)
    return _unclamped_grid(U1, U2).clamp(0.0, 1.0)


def _unclamped_grid(U1: Tensor, U2: Tensor) -> Tensor:
    """:func:`grassmann_grid` before the clamp to [0, 1]: (..., r1, r2); inputs not checked."""
    dtype = _result_dtype(U1, U2)
    m = (U1.to(dtype).mT @ U2.to(dtype)).square()  # (..., r1, r2)
    cum = m.cumsum(dim=-2).cumsum(dim=-1)
    r1, r2 = m.shape[-2], m.shape[-1]
    i = torch.arange(1, r1 + 1, device=m.device, dtype=dtype)
    j = torch.arange(1, r2 + 1, device=m.device, dtype=dtype)
    denom = torch.minimum(i[:, None], j[None, :])  # (r1, r2)
    return cum / denom


def layer_similarity(grid: Tensor) -> Tensor:
    """Layer score: the maximum of the Grassmann grid.

    Args:
        grid: (..., r1, r2) output of :func:`grassmann_grid`.

    Returns:
        (...) maximum over the last two dims.

    Raises:
        TypeError: if a tensor argument is not a ``torch.Tensor`` (a list or NumPy array).
        ValueError: if ``grid`` is not a non-empty (..., r1, r2) tensor.
    """
    _check_matrix("grid", grid)
    return grid.amax(dim=(-2, -1))


def repmatch_score(layer_scores: Tensor) -> Tensor:
    """RepMatch score: the mean of the layer scores over layers.

    Args:
        layer_scores: (..., L) scores from :func:`layer_similarity`, layers last.

    Returns:
        (...) mean over the last dim, in the input dtype promoted to at least float32.

    Raises:
        TypeError: if a tensor argument is not a ``torch.Tensor`` (a list or NumPy array).
        ValueError: if ``layer_scores`` has no dims or ``L == 0``.
    """
    _check_tensor("layer_scores", layer_scores)
    if layer_scores.ndim < 1 or layer_scores.shape[-1] == 0:
        raise ValueError(
            f"layer_scores must have shape (..., L) with L >= 1, got {tuple(layer_scores.shape)}"
        )
    return layer_scores.to(_result_dtype(layer_scores)).mean(dim=-1)


def shuffle_entries(delta_w: Tensor, generator: torch.Generator) -> Tensor:
    """Randomly permute the entries of each matrix (the paper's Fig. 1b control).

    Shuffling destroys the low-rank structure while keeping the distribution of values, so the
    result is (generically) full rank; use :func:`full_singular_vectors` on it. With leading batch
    dims each matrix gets its own independent permutation. Deterministic for a given generator
    state.

    Args:
        delta_w: (..., d_out, d_in) matrix.
        generator: source of randomness; may live on a different device than ``delta_w``.

    Returns:
        (..., d_out, d_in) tensor with the same dtype, device and multiset of values per matrix.

    Raises:
        TypeError: if a tensor argument is not a ``torch.Tensor`` (a list or NumPy array).
        ValueError: if ``delta_w`` is not a (..., d_out, d_in) tensor.
    """
    _check_matrix("delta_w", delta_w)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    batch = delta_w.shape[:-2]
    n = delta_w.shape[-2] * delta_w.shape[-1]
    flat = delta_w.reshape(*batch, n)
    if not batch:
        perm = torch.randperm(n, generator=generator, device=generator.device)
    else:
        keys = torch.rand(
            (*batch, n), generator=generator, device=generator.device, dtype=torch.float64
        )
        perm = keys.argsort(dim=-1)  # always a permutation, whatever the ties
    return flat.gather(-1, perm.to(delta_w.device)).reshape(delta_w.shape)
