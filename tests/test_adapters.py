"""load_adapter: our adapters, plain-PEFT ones (head, head size, record) and broken folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from conftest import HIDDEN, VALUE_LEAF
from repmatch.adapters import RECORD_FILE, Adapter, load_adapter, load_adapter_model
from repmatch.errors import RepmatchError
from repmatch.models import BUNDLED_MODEL, load_classifier, resolve_model_path


def copy_adapter(folder: str | Path, to: Path) -> Path:
    """A copy of the adapter ``folder`` at ``to`` (fixture adapters are shared: never edit them)."""
    shutil.copytree(folder, to)
    return to


def rewrite_weights(folder: Path, change) -> None:
    """Apply ``change(key, tensor) -> tensor`` to every tensor of the adapter in ``folder``; a
    ``None`` result drops the tensor."""
    file = folder / "adapter_model.safetensors"
    tensors = {key: change(key, value) for key, value in load_file(str(file)).items()}
    save_file(
        {key: value.contiguous() for key, value in tensors.items() if value is not None}, file
    )


def _classifier(model_path: str, num_labels: int):
    return AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=num_labels, ignore_mismatched_sizes=True
    )


def plain_peft_adapter(model_path: str, leaf: str, folder: Path, **lora) -> Path:
    """An adapter made with plain PEFT the usual way: SEQ_CLS task, get_peft_model, save."""
    model = _classifier(model_path, num_labels=3)
    torch.manual_seed(0)
    config = LoraConfig(target_modules=[leaf], init_lora_weights=False, **lora)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------------------------
# Adapters made elsewhere


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "llama"])
def test_plain_peft_seq_cls_adapter_exposes_its_head(arch, tiny_model, tmp_path):
    folder = plain_peft_adapter(
        tiny_model(arch), VALUE_LEAF[arch], tmp_path / "plain", task_type="SEQ_CLS", r=2
    )
    assert not (folder / RECORD_FILE).exists()
    adapter = load_adapter(folder)
    assert adapter.record is None
    assert adapter.num_labels == 3
    assert adapter.task is None and adapter.label_names is None and adapter.head_seed is None
    assert len(adapter.layers) == 2

    # PEFT saves the head as base_model.model.<module>...: the keys fit the base model
    fresh = _classifier(tiny_model(arch), num_labels=3)
    state = fresh.state_dict()
    assert adapter.head and set(adapter.head) <= set(state)
    for key, value in adapter.head.items():
        assert value.shape == state[key].shape
    loaded = fresh.load_state_dict(adapter.head, strict=False)
    assert loaded.unexpected_keys == []
    for key, value in adapter.head.items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_plain_peft_head_is_the_saved_one(tiny_model, tmp_path):
    model = _classifier(tiny_model("bert"), num_labels=3)
    peft_model = get_peft_model(
        model, LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["value"])
    )
    with torch.no_grad():
        peft_model.base_model.model.classifier.modules_to_save["default"].weight.fill_(0.25)
    peft_model.save_pretrained(str(tmp_path / "plain"))
    head = load_adapter(tmp_path / "plain").head
    assert sorted(head) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(head["classifier.weight"], torch.full((3, HIDDEN), 0.25))


def test_plain_peft_adapter_without_a_head(tiny_model, tmp_path):
    folder = plain_peft_adapter(tiny_model("bert"), "value", tmp_path / "plain", r=3, lora_alpha=6)
    adapter = load_adapter(folder)
    assert adapter.head == {}
    assert adapter.num_labels is None and adapter.task is None
    assert adapter.ranks == {
        "bert.encoder.layer.0.attention.self.value": 3,
        "bert.encoder.layer.1.attention.self.value": 3,
    }
    assert all(f.scaling == pytest.approx(2.0) for f in adapter.layers.values())


def test_plain_peft_adapter_on_the_bundled_model_install_path(trained_adapter, tmp_path):
    """An adapter whose config names the bundled model's install folder is on the bundled model."""
    folder = copy_adapter(trained_adapter("bert"), tmp_path / "bundled")
    (folder / RECORD_FILE).unlink()
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = resolve_model_path(BUNDLED_MODEL)
    config_file.write_text(json.dumps(config))
    assert load_adapter(folder).base_model == BUNDLED_MODEL
    config["base_model_name_or_path"] = "some-org/some-model"
    config_file.write_text(json.dumps(config))
    assert load_adapter(folder).base_model == "some-org/some-model"


# --------------------------------------------------------------------------------------------
# Our adapters: the record


def test_record_fields(trained_adapter, tmp_path):
    pair = load_adapter(trained_adapter("bert", data="pair"))
    assert pair.num_labels == 3
    assert pair.task == "pair-classification"
    assert pair.head_seed == 42
    assert pair.label_names is None  # integer labels
    regression = load_adapter(trained_adapter("bert", data="regression", head_seed=7))
    assert regression.task == "regression"
    assert regression.num_labels == 1
    assert regression.head_seed == 7

    named = copy_adapter(trained_adapter("bert"), tmp_path / "named")
    record = json.loads((named / RECORD_FILE).read_text())
    record["label_names"] = ["negative", "positive"]
    (named / RECORD_FILE).write_text(json.dumps(record))
    assert load_adapter(named).label_names == ["negative", "positive"]


HEADS = [
    # head weights (shapes), recorded num_labels, expected num_labels
    ({"classifier.weight": (3, HIDDEN), "classifier.bias": (3,)}, None, 3),
    (
        {"classifier.dense.weight": (HIDDEN, HIDDEN), "classifier.out_proj.weight": (5, HIDDEN)},
        None,
        5,
    ),
    ({"pre_classifier.weight": (HIDDEN, HIDDEN), "classifier.weight": (2, HIDDEN)}, None, 2),
    ({"score.weight": (1, HIDDEN)}, None, 1),
    # an output as wide as the hidden layer: ambiguous without a record
    (
        {
            "classifier.dense.weight": (HIDDEN, HIDDEN),
            "classifier.out_proj.weight": (HIDDEN, HIDDEN),
        },
        None,
        None,
    ),
    (
        {
            "classifier.dense.weight": (HIDDEN, HIDDEN),
            "classifier.out_proj.weight": (HIDDEN, HIDDEN),
        },
        HIDDEN,
        HIDDEN,
    ),
    ({}, 4, None),  # no head: no head size, whatever the record says
]


@pytest.mark.parametrize(("shapes", "recorded", "expected"), HEADS)
def test_num_labels_from_the_head(shapes, recorded, expected):
    head = {key: torch.zeros(shape) for key, shape in shapes.items()}
    record = None if recorded is None else {"num_labels": recorded}
    adapter = Adapter(Path("a"), "m", layers={}, head=head, record=record)
    assert adapter.num_labels == expected


# --------------------------------------------------------------------------------------------
# Broken folders: one line that names the problem


def _error(folder: Path, match: str) -> str:
    with pytest.raises(RepmatchError, match=match) as info:
        load_adapter(folder)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_folder(tmp_path):
    _error(tmp_path / "nowhere", "adapter folder not found")


def test_folder_without_adapter_config(trained_adapter, tmp_path):
    broken = copy_adapter(trained_adapter("bert"), tmp_path / "broken")
    (broken / "adapter_config.json").unlink()
    _error(broken, "no adapter_config.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"r": 2,', r"adapter_config.json: not valid JSON \(Expecting .* at line 1\)"),
        (b"\xff\xfe\x00garbage", r"adapter_config.json: 'utf-8' codec can't decode"),
        (b"[1, 2]", r"adapter_config.json: expected a JSON object"),
    ],
)
def test_unreadable_adapter_config(content, message, trained_adapter, tmp_path):
    broken = copy_adapter(trained_adapter("bert"), tmp_path / "broken")
    (broken / "adapter_config.json").write_bytes(content)
    _error(broken, rf"cannot read .*{message}")


def test_non_lora_adapter(trained_adapter, tmp_path):
    other = copy_adapter(trained_adapter("bert"), tmp_path / "ia3")
    config_file = other / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["peft_type"] = "IA3"
    config_file.write_text(json.dumps(config))
    _error(other, r"holds a PEFT adapter of type 'IA3' .*not LoRA")


def test_truncated_weights(trained_adapter, tmp_path):
    broken = copy_adapter(trained_adapter("bert"), tmp_path / "broken")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _error(broken, r"cannot read adapter weights in .*broken \(.+\); the file is truncated")


def test_no_weights_file(trained_adapter, tmp_path):
    broken = copy_adapter(trained_adapter("bert"), tmp_path / "broken")
    (broken / "adapter_model.safetensors").unlink()
    _error(broken, "has no adapter_model.safetensors or adapter_model.bin")


@pytest.mark.parametrize(("kept", "dropped"), [("A", "B"), ("B", "A")])
def test_lora_factor_without_its_partner(kept, dropped, trained_adapter, tmp_path):
    broken = copy_adapter(trained_adapter("bert"), tmp_path / "broken")
    victim = "bert.encoder.layer.1.attention.self.value"
    rewrite_weights(
        broken,
        lambda key, value: (
            None if key.startswith(f"base_model.model.{victim}.lora_{dropped}") else value
        ),
    )
    _error(broken, rf"module {victim} has lora_{kept} but no lora_{dropped} weight")


def test_weights_without_lora_factors(trained_adapter, tmp_path):
    broken = copy_adapter(trained_adapter("bert"), tmp_path / "broken")
    rewrite_weights(broken, lambda key, value: None if ".lora_" in key else value)
    _error(broken, "no LoRA factors")


def test_fingerprint_follows_the_weights(trained_adapter, tmp_path):
    folder = trained_adapter("bert")
    assert load_adapter(folder).fingerprint() == load_adapter(folder).fingerprint()
    changed = copy_adapter(folder, tmp_path / "changed")
    rewrite_weights(changed, lambda key, value: value * 2 if ".lora_B." in key else value)
    assert load_adapter(changed).fingerprint() != load_adapter(folder).fingerprint()


# --------------------------------------------------------------------------------------------
# The model an adapter describes


@pytest.mark.parametrize("data", ["pair", "regression"])
def test_adapter_model_is_base_plus_delta_w_and_head(data, trained_adapter, tiny_model):
    folder = trained_adapter("bert", data=data, head_seed=7, train_head=True)
    adapter = load_adapter(folder)
    model = load_adapter_model(folder, device="cpu")
    assert not model.training
    # by hand: the seeded base model, ΔW = s·B·A added to each adapted weight, the saved head
    expected = load_classifier(
        tiny_model("bert"), num_labels=adapter.num_labels, head_seed=7, task=adapter.task
    )
    modules = dict(expected.named_modules())
    with torch.no_grad():
        for name, factors in adapter.layers.items():
            modules[name].weight += factors.delta_weight().float()
    expected.load_state_dict(adapter.head, strict=False)
    inputs = {"input_ids": torch.tensor([[2, 5, 7, 9, 3]]), "attention_mask": torch.ones(1, 5)}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, expected(**inputs).logits)


def test_adapter_model_needs_a_head(trained_adapter, tmp_path):
    folder = copy_adapter(trained_adapter("bert"), tmp_path / "headless")
    (folder / RECORD_FILE).unlink()
    rewrite_weights(folder, lambda key, tensor: tensor if ".lora_" in key else None)
    with pytest.raises(RepmatchError, match="holds no head to predict with"):
        load_adapter_model(folder)
