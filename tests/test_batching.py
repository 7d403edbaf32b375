"""Cutting examples into batches: every position once, little padding, deterministic orders;
packing sequences into rows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repmatch.batching import EncodedExamples, length_grouped_batches, padding_aware_batches


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


class _CountingTokenizer:
    """Token ids 100, 101, ... per text (no model needed); segment 1 from the 3rd token on."""

    pad_token_id = 0

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 0

    def __call__(self, texts, pairs, **_):
        ids = [[100 + k for k in range(int(text))] for text in texts]
        types = [[int(k >= 2) for k in range(len(row))] for row in ids]
        return {"input_ids": ids, "token_type_ids": types}


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=10),
    extra_width=st.integers(0, 15),
    offset=st.sampled_from([0, 2]),
)
def test_packed_rows_hold_every_sequence_once_and_see_only_themselves(lengths, extra_width, offset):
    examples = SimpleNamespace(
        texts=[str(n) for n in lengths], text_pairs=None, task="classification"
    )
    encoded = EncodedExamples(_CountingTokenizer(), examples, max_length=512)
    positions = list(range(len(lengths)))[::-1]
    width = max(lengths) + extra_width
    packed = encoded.packed(positions, width, position_offset=offset)

    assert sorted(packed.order.tolist()) == sorted(positions)
    ids, segments = packed.inputs["input_ids"], packed.segments
    assert ids.shape == segments.shape and ids.shape[1] <= width
    assert packed.inputs["attention_mask"].shape == (ids.shape[0], 1, ids.shape[1], ids.shape[1])
    rows, columns = packed.starts
    for n, position in enumerate(packed.order):
        row, start, length = int(rows[n]), int(columns[n]), lengths[position]
        assert (segments[row] == n).sum() == length  # contiguous from its start, nowhere else
        assert (segments == n).sum() == length
        span = slice(start, start + length)
        assert (segments[row, span] == n).all()
        assert ids[row, span].tolist() == encoded.features["input_ids"][position]
        assert packed.inputs["token_type_ids"][row, span].tolist() == [
            int(k >= 2) for k in range(length)
        ]
        assert packed.inputs["position_ids"][row, span].tolist() == [
            k + offset for k in range(length)
        ]
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] >= 0)
    expected = same | torch.eye(ids.shape[1], dtype=torch.bool)
    assert torch.equal(packed.inputs["attention_mask"][:, 0], expected)
    assert (ids[segments < 0] == 0).all()  # padding is the pad id


def test_packing_fills_rows_first_fit_longest_first():
    examples = SimpleNamespace(
        texts=["6", "3", "3", "2", "5"], text_pairs=None, task="classification"
    )
    packed = EncodedExamples(_CountingTokenizer(), examples, max_length=512).packed(range(5), 8)
    assert packed.inputs["input_ids"].shape == (3, 8)  # 19 tokens: [6, 2], [5, 3], [3]
    assert packed.order.tolist() == [0, 3, 4, 1, 2]
    with pytest.raises(ValueError, match="does not fit"):
        EncodedExamples(_CountingTokenizer(), examples, max_length=512).packed(range(5), 5)


def test_packed_attention_mask_is_the_hand_written_one():
    """Sequences of 3 and 2 tokens packed into rows of 5: diagonal blocks, and a padding token
    sees only itself (so its softmax row is never empty)."""
    examples = SimpleNamespace(texts=["3", "2"], text_pairs=None, task="classification")
    packed = EncodedExamples(_CountingTokenizer(), examples, max_length=512).packed([0, 1], 5)
    assert packed.inputs["input_ids"].tolist() == [[100, 101, 102, 100, 101]]
    x, o = True, False
    expected = [  # row: the attending token, column: the token it sees
        [x, x, x, o, o],
        [x, x, x, o, o],
        [x, x, x, o, o],
        [o, o, o, x, x],
        [o, o, o, x, x],
    ]
    assert packed.inputs["attention_mask"].tolist() == [[expected]]
    assert packed.inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1]]

    # a third sequence of 2 does not fit the row of 5: a second row, padded with one token
    examples = SimpleNamespace(texts=["3", "2", "2"], text_pairs=None, task="classification")
    packed = EncodedExamples(_CountingTokenizer(), examples, max_length=512).packed([0, 1, 2], 5)
    assert packed.inputs["input_ids"].tolist() == [
        [100, 101, 102, 100, 101],
        [100, 101, 0, 0, 0],
    ]
    second = [
        [x, x, o, o, o],
        [x, x, o, o, o],
        [o, o, x, o, o],
        [o, o, o, x, o],
        [o, o, o, o, x],
    ]
    assert packed.inputs["attention_mask"].tolist() == [[expected], [second]]
