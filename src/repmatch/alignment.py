r"""Label-aware comparisons of an instance's update with the reference update (pure tensor maths).

RepMatch compares the *subspaces* of two updates, and subspaces ignore signs. On a binary or
regression task a label change only rescales an instance's loss gradient by a (possibly negative)
factor, so the one-step update :math:`\Delta W(x)` flips sign and its subspace, hence its RepMatch
score, does not change (``docs/method.md`` §4). The two comparisons here keep the sign, and see
only the products :math:`\Delta W = BA`, not how they are factorised (:math:`(BR)(R^{-1}A)` gives
the same value):

- :func:`frobenius_cosine`: the signed Frobenius cosine of the one-step update with the reference,

  .. math::

      \cos(\Delta W(x), \Delta W_{ref}) = \frac{\langle B_1 A_1, B A\rangle_F}
      {\lVert B_1 A_1\rVert_F \, \lVert B A\rVert_F},
      \qquad \langle B_1 A_1, B A\rangle_F = \operatorname{tr}(A_1^\top B_1^\top B A)
      = \textstyle\sum_{ij} (B_1^\top B)_{ij} (A_1 A^\top)_{ij},

  from two :math:`r_1 \times r_2` Gram matrices, never a :math:`d_{out} \times d_{in}` product.
- :func:`gradient_cosine`: the cosine of the instance's negative loss gradient
  :math:`-G(x) = -\nabla_W L(x) = -\sum_t \delta_t h_t^\top` with the reference, from per-token
  sums (:math:`h_t`: the layer's input at token t, :math:`\delta_t`: the loss gradient at its
  output):

  .. math::

      \langle G, BA\rangle_F = \sum_t (B^\top\delta_t)\cdot(A h_t), \qquad
      \lVert G\rVert_F^2 = \sum_{t, t'} (\delta_t\cdot\delta_{t'})\,(h_t\cdot h_{t'}).

  Exact and deterministic: no LoRA init, no seed.

What averaging :func:`frobenius_cosine` over LoRA seeds estimates. PEFT starts from B = 0, so the
first AdamW step is :math:`\Delta W(x) = -c\,\operatorname{sign}(G A_0^\top) A_0` (c > 0, eps
negligible). For :math:`A_0` with i.i.d. :math:`N(0, \sigma^2)` entries,
:math:`E[\operatorname{sign}(G_i a)\,a] = \sqrt{2/\pi}\,\sigma\,G_i / \lVert G_i\rVert` for every
row :math:`G_i`, so :math:`E[\Delta W(x)] \propto -D^{-1}G` with :math:`D = \operatorname{diag}
(\lVert G_i\rVert)`: the gradient with every row scaled to unit length, not the gradient. Seed
averages converge to the alignment of that row-normalised gradient (which can even have the
opposite sign of the gradient's own alignment; see ``tests/test_alignment.py``). Only a plain SGD
step, :math:`\Delta W = -c\,G A_0^\top A_0` with :math:`E[A_0^\top A_0] = r\sigma^2 I`, would be
unbiased for :math:`-G`. :func:`gradient_cosine` computes the gradient's alignment exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["factor_inner", "frobenius_cosine", "gradient_cosine"]


def factor_inner(B1: Tensor, A1: Tensor, B2: Tensor, A2: Tensor) -> Tensor:
    r""":math:`\langle B_1 A_1, B_2 A_2\rangle_F` from the factors, in float64.

    Args:
        B1: (..., d_out, r1); A1: (..., r1, d_in); B2: (..., d_out, r2); A2: (..., r2, d_in).
            Batch dims broadcast.

    Returns:
        (...) float64: :math:`\sum_{ij} (B_1^\top B_2)_{ij} (A_1 A_2^\top)_{ij}`.
    """
    B1, A1, B2, A2 = (t.to(torch.float64) for t in (B1, A1, B2, A2))
    return ((B1.mT @ B2) * (A1 @ A2.mT)).sum(dim=(-2, -1))


def frobenius_cosine(B1: Tensor, A1: Tensor, B2: Tensor, A2: Tensor) -> Tensor:
    r"""Signed cosine of :math:`B_1 A_1` and :math:`B_2 A_2` in the Frobenius inner product.

    In [-1, 1]; flips sign with either update, is invariant to positive scales and to
    reparametrisations :math:`(BR)(R^{-1}A)`. An update that is zero gives 0.

    Args:
        B1: (..., d_out, r1); A1: (..., r1, d_in); B2: (..., d_out, r2); A2: (..., r2, d_in).
            Batch dims broadcast (e.g. B1 (N, d_out, r1) of N instances, A1 shared (r1, d_in)).

    Returns:
        (...) cosines, in the inputs' dtype promoted to at least float32.
    """
    dtype = torch.promote_types(torch.promote_types(B1.dtype, A1.dtype), torch.float32)
    cross = factor_inner(B1, A1, B2, A2)
    norms = factor_inner(B1, A1, B1, A1).clamp(min=0) * factor_inner(B2, A2, B2, A2).clamp(min=0)
    cosine = torch.where(norms > 0, cross / norms.sqrt().clamp(min=1e-300), 0.0)
    return cosine.clamp(-1.0, 1.0).to(dtype)


def gradient_cosine(
    inputs: Tensor, deltas: Tensor, segments: Tensor, n: int, B: Tensor, A: Tensor
) -> Tensor:
    r"""Cosine of every instance's negative weight gradient with :math:`BA`, from per-token terms.

    :math:`G_k = \sum_{t \in k} \delta_t h_t^\top` is instance k's loss gradient with respect to
    the layer's weight (never formed). Positive: a gradient step on the instance moves the weight
    along :math:`BA`.

    Args:
        inputs: (R, T, d_in) the layer's inputs :math:`h_t`, R rows of T tokens.
        deltas: (R, T, d_out) the loss gradient at the layer's outputs :math:`\delta_t`.
        segments: (R, T) int, the instance of every token in [0, n), -1 for tokens of none
            (padding); a row may hold several instances (packed sequences).
        n: number of instances.
        B: (d_out, r); A: (r, d_in): the reference update :math:`\Delta W = BA` (scale in B).

    Returns:
        (n,) float32 cosines; 0 for an instance whose gradient is zero.
    """
    h, delta = inputs.to(torch.float64), deltas.to(torch.float64)
    B, A = B.to(h), A.to(h)
    valid = segments >= 0
    owner = segments[valid]  # (tokens,)
    along = ((delta @ B) * (h @ A.mT)).sum(dim=-1)  # (R, T): (B^T δ_t) · (A h_t)
    inner = torch.zeros(n, dtype=h.dtype, device=h.device).index_add_(0, owner, along[valid])
    same = (segments[:, :, None] == segments[:, None, :]) & valid[:, :, None]  # (R, T, T)
    gram = (delta @ delta.mT) * (h @ h.mT) * same  # (δ_t·δ_t')(h_t·h_t') within an instance
    squared = torch.zeros_like(inner).index_add_(0, owner, gram.sum(dim=-1)[valid]).clamp(min=0)
    reference = factor_inner(B, A, B, A).clamp(min=0).sqrt()
    norms = squared.sqrt() * reference
    cosine = torch.where(norms > 0, -inner / norms.clamp(min=1e-300), 0.0)
    return cosine.clamp(-1.0, 1.0).float()
