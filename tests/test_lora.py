"""LoRA targets, seeded inits (matching PEFT, leaving the caller's RNG alone), layer names."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from conftest import ARCHITECTURES, VALUE_LEAF
from repmatch.errors import RepmatchError
from repmatch.lora import check_rank, draw_lora_init, find_target_modules, short_layer_name
from repmatch.models import load_classifier


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_classifier(tiny_model("bert"), num_labels=2, head_seed=42)


def test_roles_and_names(model):
    values = find_target_modules(model, ("value",))
    both = find_target_modules(model, ("value", "query"))
    assert len(values) == 2 and all(name.endswith(".value") for name in values)
    assert len(both) == 4
    assert both.index(values[0]) < both.index(values[1])  # model order, not target order
    dense = find_target_modules(model, ("dense",))  # a module name: every Linear leaf named so
    assert dense and all(name.rsplit(".", 1)[-1] == "dense" for name in dense)
    assert not any(name.startswith("classifier") for name in dense)  # never the head
    with pytest.raises(RepmatchError, match="no Linear module for LoRA target 'nope'"):
        find_target_modules(model, ("nope",))


def test_rank_larger_than_layer(model):
    names = find_target_modules(model, ("value",))
    check_rank(model, names, 32)
    with pytest.raises(RepmatchError, match="rank 33 is larger") as caught:
        check_rank(model, names, 33)
    assert caught.value.field == "rank"


def test_init_matches_peft_seeded_globally(model):
    names = find_target_modules(model, ("value",))
    drawn = draw_lora_init(model, names, rank=2, alpha=4.0, seeds=(3, 5))
    for seed in (3, 5):
        torch.manual_seed(seed)
        config = LoraConfig(r=2, lora_alpha=4.0, target_modules=names)
        wrapped = get_peft_model(copy.deepcopy(model), config)
        for name in names:
            expected = wrapped.base_model.model.get_submodule(name).lora_A["default"].weight
            torch.testing.assert_close(drawn[seed][name], expected.detach())
    assert not torch.equal(drawn[3][names[0]], drawn[5][names[0]])


def test_seeded_draws_leave_the_global_rng_alone(tiny_model, model):
    names = find_target_modules(model, ("value",))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    draw_lora_init(model, names, rank=2, alpha=4.0, seeds=(0,))
    load_classifier(tiny_model("bert"), num_labels=2, head_seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_short_layer_name():
    assert short_layer_name("bert.encoder.layer.3.attention.self.value") == "layer 3 value"
    assert short_layer_name("model.layers.10.self_attn.v_proj") == "layer 10 v_proj"
    assert short_layer_name("classifier") == "classifier"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_value_role_finds_one_module_per_layer(arch, tiny_model):
    model = load_classifier(tiny_model(arch), num_labels=2, head_seed=42)
    names = find_target_modules(model, ("value",))
    assert len(names) == model.config.num_hidden_layers == 2
    assert [name.rsplit(".", 1)[-1] for name in names] == [VALUE_LEAF[arch]] * 2
    assert [name for name in names if ".0." in name] and [name for name in names if ".1." in name]
    for name in names:
        layer = model.get_submodule(name)
        assert isinstance(layer, torch.nn.Linear)
        # LLaMA's grouped-query attention: 2 key/value heads of size 32 / 4
        assert (layer.in_features, layer.out_features) == (32, 16 if arch == "llama" else 32)
