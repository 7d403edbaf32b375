"""Configs: validation names the field, JSON round trips, help text for every field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from repmatch.config import (
    AdamWSettings,
    ScoreConfig,
    TrainConfig,
    differences,
    help_text,
)
from repmatch.errors import RepmatchError


@pytest.mark.parametrize("config", [TrainConfig, ScoreConfig])
def test_every_field_has_help(config):
    for field in dataclasses.fields(config):
        assert help_text(config, field.name), field.name


@pytest.mark.parametrize(
    ("config", "values", "field"),
    [
        (TrainConfig, {"rank": 0}, "rank"),
        (TrainConfig, {"lr": -1.0}, "lr"),
        (TrainConfig, {"epochs": 1.5}, "epochs"),
        (TrainConfig, {"weight_decay": -0.1}, "weight_decay"),
        (TrainConfig, {"lora_dropout": 1.0}, "lora_dropout"),
        (TrainConfig, {"targets": ()}, "targets"),
        (TrainConfig, {"targets": "value"}, "targets"),
        (TrainConfig, {"num_labels": 0}, "num_labels"),
        (ScoreConfig, {"steps": 0}, "steps"),
        (ScoreConfig, {"seeds": (1, 1)}, "seeds"),
        (ScoreConfig, {"seeds": ()}, "seeds"),
        (ScoreConfig, {"side": "up"}, "side"),
        (ScoreConfig, {"betas": (0.9, 1.5)}, "betas"),
        (ScoreConfig, {"chunk_size": -4}, "chunk_size"),
        (ScoreConfig, {"batch_size": True}, "batch_size"),
    ],
)
def test_bad_values_name_the_field(config, values, field):
    with pytest.raises(RepmatchError, match=field) as caught:
        config(**values)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "config",
    [TrainConfig(targets=["query", "value"]), ScoreConfig(targets=["value"], seeds=[3, 1])],
)
def test_json_round_trip_is_equal(config):
    """Regression: tuples stored as lists made a stored run never equal the new one."""
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored == config.to_dict()
    assert type(config)(**stored) == config


def test_lists_become_tuples():
    config = ScoreConfig(seeds=[0, 1], betas=[0.8, 0.9], targets=["value"])
    assert config.seeds == (0, 1) and config.betas == (0.8, 0.9) and config.targets == ("value",)


def test_score_config_derived_settings():
    config = ScoreConfig(rank=4, alpha=8.0, lr=2e-3, betas=(0.8, 0.99), weight_decay=0.0)
    assert config.scaling == 2.0
    assert config.adamw == AdamWSettings(2e-3, (0.8, 0.99), 1e-8, 0.0)


def test_differences_name_old_and_new():
    old, new = ScoreConfig(rank=1).to_dict(), ScoreConfig(rank=4, seeds=(0, 1)).to_dict()
    assert differences(old, new) == ["rank: 1 -> 4", "seeds: [0] -> [0, 1]"]
    assert differences(old, old) == []


def test_head_seed_default_is_shared():
    """Regression: scoring fell back to head seed 0 while training defaults to 42."""
    from repmatch.config import DEFAULT_HEAD_SEED

    assert TrainConfig().head_seed == DEFAULT_HEAD_SEED == 42
