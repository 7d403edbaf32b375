"""Cutting examples into batches: every position once, little padding, deterministic orders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repmatch.batching import length_grouped_batches, padding_aware_batches


def _cost(batches: list[np.ndarray], lengths: np.ndarray, overhead: int) -> int:
    return sum(overhead + len(b) * int(lengths[b].max()) for b in batches)


def _cheapest_contiguous(sorted_lengths: list[int], max_size: int, overhead: int) -> int:
    """Least cost over every way of cutting the sorted lengths, by plain recursion."""
    if not sorted_lengths:
        return 0
    return min(
        overhead
        + size * sorted_lengths[size - 1]
        + _cheapest_contiguous(sorted_lengths[size:], max_size, overhead)
        for size in range(1, min(max_size, len(sorted_lengths)) + 1)
    )


def _check_partition(batches: list[np.ndarray], n: int, max_size: int) -> None:
    positions = np.concatenate(batches)
    assert sorted(positions.tolist()) == list(range(n))
    assert all(1 <= len(b) <= max_size for b in batches)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=9),
    max_size=st.integers(1, 6),
    overhead=st.integers(0, 40),
)
def test_padding_aware_batches_are_the_cheapest_cuts(lengths, max_size, overhead):
    lengths = np.array(lengths)
    batches = padding_aware_batches(lengths, max_size, overhead)
    _check_partition(batches, len(lengths), max_size)
    expected = _cheapest_contiguous(sorted(lengths.tolist()), max_size, overhead)
    assert _cost(batches, lengths, overhead) == expected
    fixed = length_grouped_batches(lengths, max_size)
    assert _cost(batches, lengths, overhead) <= _cost(fixed, lengths, overhead)


def test_a_long_tail_gets_its_own_small_batch():
    lengths = np.array([5] * 30 + [120, 6, 7])
    batches = padding_aware_batches(lengths, 64, overhead_tokens=32)
    # 30 x 5 | 6, 7 | 120 costs 3 * 32 + 150 + 14 + 120 = 380 tokens; 32 x 7 | 120 costs 408
    assert [len(b) for b in batches] == [30, 2, 1]
    assert batches[-1].tolist() == [30]


def test_equal_lengths_fill_whole_batches():
    batches = padding_aware_batches(np.full(130, 9), 64, overhead_tokens=32)
    assert sorted(len(b) for b in batches) == [2, 64, 64]
    _check_partition(batches, 130, 64)


def test_length_grouped_batches_sorted_without_rng():
    lengths = np.array([7, 3, 9, 3, 1])
    batches = length_grouped_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[4, 1], [3, 0], [2]]


@pytest.mark.parametrize("seed", [0, 1])
def test_length_grouped_batches_with_rng_cover_everything(seed):
    lengths = np.random.default_rng(seed).integers(1, 50, 300)
    batches = length_grouped_batches(lengths, 8, np.random.default_rng(seed))
    _check_partition(batches, 300, 8)
    again = length_grouped_batches(lengths, 8, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
