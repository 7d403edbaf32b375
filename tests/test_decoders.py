"""Decoder-only models with a sequence-classification head (LLaMA, Qwen2, Mistral styles, all
with grouped-query attention): the pad token, the last-token readout and its exact last-layer
cut, LoRA on the narrow value projection, and train -> compare -> score with the engine equal to
the literal per-instance loop."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import DECODERS, HIDDEN
from repmatch.adapters import load_adapter
from repmatch.batching import EncodedExamples
from repmatch.compare import compare_adapters
from repmatch.config import ScoreConfig, TrainConfig
from repmatch.data import DataSpec, as_examples, load_examples
from repmatch.literal_loop import LiteralLoop
from repmatch.models import (
    align_pad_token,
    cut_to_read_positions,
    last_position_blocks,
    load_classifier,
    load_tokenizer,
    packed_position_offset,
    read_positions,
)
from repmatch.scoring import InstanceScorer, score_instances
from repmatch.training import train_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KV_WIDTH = HIDDEN // 4 * 2
"""Output width of the tiny decoders' value projection: 2 key/value heads of 32 / 4 = 8."""

TEXTS = ["a good movie with a great cast", "the food was awful", "quite dull really", "fine"]


def _decoder(tiny_model, arch: str, tmp_path, **config) -> str:
    """A copy of the tiny decoder ``arch`` with ``config`` fields changed."""
    from transformers import AutoConfig

    folder = tmp_path / f"{arch}-changed"
    shutil.copytree(tiny_model(arch), folder)
    changed = AutoConfig.from_pretrained(folder)
    for key, value in config.items():
        setattr(changed, key, value)
    changed.save_pretrained(folder)
    return str(folder)


def _examples(texts: list[str]):
    """In-memory examples of ``texts`` with alternating labels."""
    return as_examples(pd.DataFrame({"text": texts, "label": [k % 2 for k in range(len(texts))]}))


def _logits_batched_and_alone(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of TEXTS right-padded in one batch (repmatch's batching) and each run alone."""
    model = load_classifier(path, num_labels=3, head_seed=42)
    tokenizer = load_tokenizer(path)
    align_pad_token(tokenizer, model)
    examples = _examples(TEXTS)
    encoded = EncodedExamples(tokenizer, examples, max_length=64)
    with torch.no_grad():
        batched = model(**encoded.batch(range(len(TEXTS)))).logits
        alone = torch.cat([model(**encoded.batch([k])).logits for k in range(len(TEXTS))])
    return batched, alone


@pytest.mark.parametrize("arch", DECODERS)
@pytest.mark.parametrize(
    "pad",
    ["config", "from-eos", "tokenizer-differs"],
    ids=["pad-in-config", "pad-from-eos", "tokenizer-pad-differs"],
)
def test_padding_does_not_move_the_last_token_readout(arch, pad, tiny_model, tmp_path):
    """The head reads each sequence's last real token however the batch is padded: the pad id
    comes from the config, else from the end-of-sequence id ([SEP], 102, which the bundled
    tokenizer appends), and the tokenizer pads with it even when its own pad token (0) differs."""
    if pad == "config":
        path = tiny_model(arch)
    elif pad == "from-eos":
        path = _decoder(tiny_model, arch, tmp_path, pad_token_id=None, eos_token_id=102)
    else:
        path = _decoder(tiny_model, arch, tmp_path, pad_token_id=7)
    batched, alone = _logits_batched_and_alone(path)
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)
    assert (alone[0] - alone[1]).abs().max() > 1e-4  # the rows differ at all


@pytest.mark.parametrize("arch", DECODERS)
def test_last_layer_cut_to_the_read_token_is_exact(arch, tiny_model):
    model = load_classifier(tiny_model(arch), num_labels=2, head_seed=42)
    tokenizer = load_tokenizer(tiny_model(arch))
    align_pad_token(tokenizer, model)
    blocks = last_position_blocks(model)
    assert blocks is not None
    projection, norm = blocks
    assert projection is model.base_model.layers[-1].self_attn.o_proj
    batch = EncodedExamples(tokenizer, _examples(TEXTS), max_length=64).batch(range(4))
    widths = []
    norm.register_forward_hook(lambda module, args, out: widths.append(out.shape[1]))
    with torch.no_grad():
        full = model(**batch).logits
        with cut_to_read_positions(blocks, read_positions(model, batch["input_ids"])):
            cut = model(**batch).logits
    torch.testing.assert_close(cut, full, rtol=1e-4, atol=1e-5)
    assert widths == [batch["input_ids"].shape[1], 1]  # the feed-forward block ran at one token
    # packing stays off: the head pools one position per row, not per packed sequence
    assert packed_position_offset(model, blocks) is None


@pytest.mark.parametrize("arch", DECODERS)
def test_train_compare_and_score_match_the_literal_loop(arch, tiny_model, tiny_data, tmp_path):
    data = DataSpec(str(tiny_data["single"]))
    settings = {"model": tiny_model(arch), "rank": 2, "batch_size": 8, "lr": 1e-2, "epochs": 2}
    adapters = [
        train_adapter(
            data, TrainConfig(**settings, seed=seed), tmp_path / f"s{seed}", progress=False
        )
        for seed in (0, 1)
    ]
    adapter = load_adapter(adapters[0])
    assert list(adapter.layers) == [f"model.layers.{k}.self_attn.v_proj" for k in range(2)]
    for factors in adapter.layers.values():  # grouped-query attention: v_proj is 32 -> 16
        assert factors.shape == (KV_WIDTH, HIDDEN) and factors.rank == 2
    record = json.loads((adapters[0] / "repmatch.json").read_text())
    assert record["epoch_losses"][-1] < record["epoch_losses"][0]
    assert compare_adapters(adapters[0], adapters[0]).score == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < compare_adapters(adapters[0], adapters[1]).score < 1.0

    subset = load_examples(data).select(range(12))
    for score in (ScoreConfig(rank=1, batch_size=5), ScoreConfig(rank=2, steps=2, lr=1e-2)):
        scorer = InstanceScorer(adapter, score, device="cpu")
        assert scorer.readout.last_token and scorer.position_offset is None
        engine = score_instances(subset, adapters[0], score, progress=False, device="cpu")
        loop = LiteralLoop(
            adapters[0], rank=score.rank, steps=score.steps, lr=score.lr, pad_to=48
        ).layer_scores(subset)
        layers = engine[[c for c in engine.columns if c.startswith("layer_")]].to_numpy()
        assert np.abs(layers - loop).max() <= 1e-4
        assert np.ptp(loop.mean(axis=1)) > 1e-3  # the instances are told apart at all
