"""Base models: seeded heads, pad ids, position limits, and where the head reads the last layer
(the first-position cut and packing, each switched on only where a probe shows it is exact)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import ARCHITECTURES
from repmatch.errors import RepmatchError
from repmatch.models import (
    _pad_id,
    check_lengths,
    cut_to_read_positions,
    first_position_block,
    load_classifier,
    load_tokenizer,
    max_positions,
    packed_position_offset,
    packing_mask,
)

TEXTS = ["a good movie with a great cast", "the food was awful", "quite dull really"]


def _inputs(model_path: str) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(model_path)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.mark.parametrize(
    ("eos", "pad"), [(None, 0), (2, 2), ([128001, 128009], 128001), ((7,), 7), ([], 0)]
)
def test_pad_id_from_eos(eos, pad):
    """Regression: LLaMA-3/Qwen configs list several end-of-sequence ids; the pad id is one int."""
    assert _pad_id(eos) == pad and type(_pad_id(eos)) is int


def test_model_with_a_list_of_eos_ids_gets_an_int_pad_id(tiny_model, tmp_path):
    from transformers import AutoConfig

    folder = tmp_path / "llama-eos-list"
    shutil.copytree(tiny_model("llama"), folder)
    config = AutoConfig.from_pretrained(folder)
    config.pad_token_id, config.eos_token_id = None, [3, 4]
    config.save_pretrained(folder)
    model = load_classifier(str(folder), num_labels=2, head_seed=42)
    assert model.config.pad_token_id == 3


def test_head_seed_sets_the_head(tiny_model):
    first = load_classifier(tiny_model("bert"), num_labels=2, head_seed=42)
    again = load_classifier(tiny_model("bert"), num_labels=2, head_seed=42)
    other = load_classifier(tiny_model("bert"), num_labels=2, head_seed=7)
    torch.testing.assert_close(first.classifier.weight, again.classifier.weight)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)
    assert not any(p.requires_grad for p in first.parameters()) and not first.training


@pytest.mark.parametrize(("arch", "limit"), [("bert", 128), ("roberta", 129), ("llama", 128)])
def test_max_positions(arch, limit, tiny_model):
    # the tiny RoBERTa has 130 positions and pad id 0: ids start at 1, so 129 tokens fit
    model = load_classifier(tiny_model(arch), num_labels=2, head_seed=42)
    assert max_positions(model) == limit


def test_inputs_longer_than_the_positions_are_refused(tiny_model):
    model = load_classifier(tiny_model("bert"), num_labels=2, head_seed=42)
    check_lengths(model, np.array([5, 128]), ["a", "b"], max_length=512)
    with pytest.raises(RepmatchError, match="max_length 512 .* 128 positions.*'b' has 200") as e:
        check_lengths(model, np.array([5, 200]), ["a", "b"], max_length=512)
    assert e.value.field == "max_length"


FIRST_POSITION_HEADS = {"bert", "roberta", "electra"}
"""Architectures whose classification head reads the last layer at position 0 ([CLS]) only."""


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_last_layer_cut_to_the_position_the_head_reads(arch, tiny_model):
    model = load_classifier(tiny_model(arch), num_labels=2, head_seed=42)
    block = first_position_block(model)
    assert (block is not None) == (arch in FIRST_POSITION_HEADS)
    inputs = _inputs(tiny_model(arch))
    seen = []
    with torch.no_grad():
        full = model(**inputs).logits
        with cut_to_read_positions(block):
            if block is not None:
                block.register_forward_hook(lambda m, args, out: seen.append(out.shape))
            cut = model(**inputs).logits
    torch.testing.assert_close(cut, full, rtol=1e-4, atol=1e-5)
    if block is not None:
        assert seen and seen[0][1] == 1  # the block computed one position per sequence


def test_no_cut_when_the_head_reads_every_position(tiny_model):
    model = load_classifier(tiny_model("bert"), num_labels=2, head_seed=42)
    pooler = model.bert.pooler
    pooler.forward = lambda hidden: pooler.activation(pooler.dense(hidden.mean(dim=1)))
    assert first_position_block(model) is None


def test_mpnet_is_cut_behind_its_attention_and_packed_with_additive_masks(tiny_model):
    """MPNet's output projection sits inside its self-attention, so the cut starts at the
    residual norm behind it; its eager attention adds a 4-d mask to the scores, so packed rows
    get 0 / lowest-value masks (a boolean one would let the sequences see each other)."""
    model = load_classifier(tiny_model("mpnet"), num_labels=2, head_seed=42)
    block = first_position_block(model)
    assert block is model.mpnet.encoder.layer[-1].attention.LayerNorm
    assert packed_position_offset(model, block) == 2  # positions count from pad_token_id + 1
    boolean = torch.eye(3, dtype=torch.bool)[None, None]
    additive = packing_mask(model, boolean)
    assert additive.dtype == torch.float32 and additive[0, 0, 0, 0] == 0
    assert additive[0, 0, 0, 1] == torch.finfo(torch.float32).min
    bert = load_classifier(tiny_model("bert"), num_labels=2, head_seed=42)
    assert packing_mask(bert, boolean) is boolean  # scaled-dot-product attention reads it as is


PACKED_POSITION_OFFSET = {"bert": 0, "electra": 0, "roberta": 1, "distilbert": None, "llama": None}
"""First position id when sequences are packed into rows (RoBERTa: pad_token_id + 1); None: no
packing."""


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_packing_only_where_it_reproduces_padded_logits(arch, tiny_model):
    model = load_classifier(tiny_model(arch), num_labels=2, head_seed=42)
    block = first_position_block(model)
    assert packed_position_offset(model, block) == PACKED_POSITION_OFFSET[arch]
