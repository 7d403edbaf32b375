"""Tests for repmatch.literal_loop, the slow reference the engine is checked against: its two ways
of resetting agree, its padding is inert, and it truncates or refuses long instances."""

from __future__ import annotations

import pytest
import torch

from repmatch.data import DataSpec, load_examples
from repmatch.literal_loop import LiteralLoop

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setting(trained_adapter, tiny_data):
    """A tiny BERT reference adapter and the first 6 instances of its data."""
    examples = load_examples(DataSpec(str(tiny_data["single"]))).select(range(6))
    return trained_adapter("bert"), examples


def test_checkpoint_reset_equals_fresh_copies(setting, tmp_path):
    """The benchmark resets like the authors' script (reload model and optimizer from disk); the
    tests use a fresh deep copy per instance. Over 3 steps, any state that leaked from one
    instance to the next (Adam moments, trained factors) would change the later updates."""
    reference, examples = setting
    settings = {"rank": 2, "steps": 3, "lr": 1e-2}
    fresh = LiteralLoop(reference, **settings)
    reloaded = LiteralLoop(reference, checkpoint_dir=tmp_path, **settings)
    updates = [fresh.delta_weights(examples, n) for n in range(3)]
    for n, expected in enumerate(updates):
        for name, delta_w in reloaded.delta_weights(examples, n).items():
            torch.testing.assert_close(delta_w, expected[name], atol=1e-12, rtol=0)
    for name, delta_w in updates[0].items():  # the instances differ
        assert (updates[1][name] - delta_w).abs().max() > 1e-3 * delta_w.abs().max()


def test_padding_does_not_change_updates(setting):
    reference, examples = setting
    short = LiteralLoop(reference, rank=1, pad_to=16).delta_weights(examples, 0)
    long = LiteralLoop(reference, rank=1, pad_to=64).delta_weights(examples, 0)
    for name, delta_w in short.items():
        torch.testing.assert_close(long[name], delta_w, atol=1e-9, rtol=1e-5)


def test_long_instances_are_truncated_or_refused(setting):
    reference, examples = setting  # 8 tokens each ([CLS], 6 words, [SEP])
    with pytest.raises(ValueError, match="8 tokens, more than pad_to=6"):
        LiteralLoop(reference, rank=1, pad_to=6).delta_weights(examples, 0)
    steps = {"rank": 1, "steps": 3, "lr": 1e-2}  # one sign(g) step hardly sees the cut
    cut = LiteralLoop(reference, pad_to=6, max_length=5, **steps).delta_weights(examples, 0)
    full = LiteralLoop(reference, **steps).delta_weights(examples, 0)
    for name, delta_w in full.items():
        assert (cut[name] - delta_w).abs().max() > 1e-2 * delta_w.abs().max()


@pytest.mark.parametrize("reload", [False, True])
def test_the_loop_leaves_the_global_rng_alone(reload, setting, tmp_path):
    reference, examples = setting
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    loop = LiteralLoop(reference, rank=2, checkpoint_dir=tmp_path if reload else None)
    first = loop.delta_weights(examples, 0)
    loop.delta_weights(examples, 1)
    assert torch.equal(torch.rand(3), expected)
    # and the LoRA init is still drawn from the loop's seed, whatever the global state
    torch.manual_seed(99)
    again = LiteralLoop(reference, rank=2).delta_weights(examples, 0)
    for name, delta_w in first.items():
        torch.testing.assert_close(again[name], delta_w, atol=1e-12, rtol=0)
