"""train_adapter: reproducibility, the frozen seeded head, the record, atomic output, errors."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import peft
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

import repmatch.training as training
from conftest import ARCHITECTURES, FAST_TRAIN, HIDDEN, VALUE_LEAF
from repmatch.adapters import RECORD_FILE, load_adapter
from repmatch.compare import compare_adapters
from repmatch.data import DataSpec, load_examples
from repmatch.errors import RepmatchError
from repmatch.models import BUNDLED_MODEL, load_classifier, load_tokenizer
from repmatch.training import TrainConfig, train_adapter


def _train(
    model: str, data: Path, out: Path, *, overwrite: bool = False, device=None, **overrides
) -> Path:
    settings = FAST_TRAIN | overrides
    config = TrainConfig(model=model, **settings)
    return train_adapter(
        DataSpec(str(data)), config, out, overwrite=overwrite, progress=False, device=device
    )


def _tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def _lora_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    return {key: value for key, value in _tensors(folder).items() if ".lora_" in key}


# --------------------------------------------------------------------------------------------
# Reproducibility and the head


def test_same_seed_gives_identical_adapters(tiny_model, tiny_data, trained_adapter, tmp_path):
    first = trained_adapter("bert", seed=0)
    second = _train(tiny_model("bert"), tiny_data["single"], tmp_path / "again", seed=0)
    a, b = _tensors(first), _tensors(second)
    assert sorted(a) == sorted(b)
    assert len(_lora_tensors(first)) == 4  # A and B of two layers
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_different_seed_gives_different_adapters(trained_adapter):
    a = _lora_tensors(trained_adapter("bert", seed=0))
    b = _lora_tensors(trained_adapter("bert", seed=1))
    assert sorted(a) == sorted(b)
    for key in a:
        assert not torch.allclose(a[key], b[key]), key


def test_head_is_frozen_at_its_seeded_init(tiny_model, trained_adapter):
    adapter = load_adapter(trained_adapter("bert", seed=0))
    init = dict(load_classifier(tiny_model("bert"), num_labels=2, head_seed=42).named_parameters())
    other = dict(load_classifier(tiny_model("bert"), num_labels=2, head_seed=7).named_parameters())
    assert sorted(adapter.head) == ["classifier.bias", "classifier.weight"]
    assert adapter.head["classifier.weight"].shape == (2, HIDDEN)
    for key, value in adapter.head.items():
        assert torch.equal(value, init[key]), key
    # the head seed matters: another seed gives another head
    assert not torch.equal(adapter.head["classifier.weight"], other["classifier.weight"])
    assert adapter.record["head_modules"] == ["classifier"]


def test_train_head_option_changes_the_head(tiny_model, trained_adapter):
    adapter = load_adapter(trained_adapter("bert", seed=0, train_head=True))
    init = dict(load_classifier(tiny_model("bert"), num_labels=2, head_seed=42).named_parameters())
    assert not torch.allclose(adapter.head["classifier.weight"], init["classifier.weight"])
    assert adapter.record["train"]["train_head"] is True
    frozen = load_adapter(trained_adapter("bert", seed=0))
    # training the head also changes what LoRA learns
    key = next(iter(frozen.layers))
    assert not torch.allclose(frozen.layers[key].B, adapter.layers[key].B)


# --------------------------------------------------------------------------------------------
# What is saved


def test_record_holds_config_data_and_fingerprint(tiny_model, tiny_data, trained_adapter):
    folder = Path(trained_adapter("bert", seed=0))
    record = json.loads((folder / RECORD_FILE).read_text())
    expected = TrainConfig(model=tiny_model("bert"), seed=0, **FAST_TRAIN).to_dict()
    assert record["train"] == expected
    assert record["train"]["targets"] == ["value"]
    examples = load_examples(DataSpec(str(tiny_data["single"])))
    assert record["data_fingerprint"] == examples.fingerprint()
    assert len(record["data_fingerprint"]) == 64
    assert record["data"] == DataSpec(str(tiny_data["single"])).to_dict()
    assert record["num_examples"] == 40
    assert record["task"] == "classification"
    assert record["num_labels"] == 2
    assert record["target_modules"] == [
        "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.1.attention.self.value",
    ]
    assert len(record["epoch_losses"]) == 1 and record["epoch_losses"][0] > 0
    # a local model is recorded by its absolute path, in both files
    assert record["model"] == str(Path(tiny_model("bert")).resolve())
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == record["model"]
    assert adapter_config["r"] == FAST_TRAIN["rank"]
    assert adapter_config["lora_alpha"] == 8.0


@pytest.mark.slow
def test_bundled_model_is_recorded_by_its_portable_name(tiny_data, tmp_path):
    out = train_adapter(
        DataSpec(str(tiny_data["single"]), limit=8),
        TrainConfig(rank=1, batch_size=8),
        tmp_path / "bundled",
        progress=False,
    )
    record = json.loads((out / RECORD_FILE).read_text())
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert record["model"] == BUNDLED_MODEL
    assert record["train"]["model"] == BUNDLED_MODEL
    assert adapter_config["base_model_name_or_path"] == BUNDLED_MODEL
    assert "site-packages" not in (out / "adapter_config.json").read_text()
    assert len(load_adapter(out).layers) == 6  # MiniLM-L6: one value projection per layer


def test_pair_and_regression_tasks_train(trained_adapter):
    pair = load_adapter(trained_adapter("bert", data="pair"))
    assert pair.record["task"] == "pair-classification"
    assert pair.record["num_labels"] == 3
    assert pair.head["classifier.weight"].shape == (3, HIDDEN)
    regression = load_adapter(trained_adapter("bert", data="regression"))
    assert regression.record["task"] == "regression"
    assert regression.record["num_labels"] == 1
    assert regression.head["classifier.weight"].shape == (1, HIDDEN)
    for adapter in (pair, regression):
        assert all(factors.B.abs().max() > 0 for factors in adapter.layers.values())


def test_query_and_value_targets(trained_adapter):
    adapter = load_adapter(trained_adapter("bert", targets=("query", "value")))
    assert sorted(adapter.layers) == [
        f"bert.encoder.layer.{i}.attention.self.{leaf}"
        for i in (0, 1)
        for leaf in ("query", "value")
    ]
    assert adapter.record["train"]["targets"] == ["query", "value"]


def test_num_labels_larger_than_the_data(trained_adapter):
    adapter = load_adapter(trained_adapter("bert", num_labels=5))
    assert adapter.record["num_labels"] == 5
    assert adapter.head["classifier.weight"].shape == (5, HIDDEN)


# --------------------------------------------------------------------------------------------
# Output folder handling


def _fail_after_saving(monkeypatch):
    original = peft.PeftModel.save_pretrained

    def save_then_fail(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise RuntimeError("disk full")

    monkeypatch.setattr(peft.PeftModel, "save_pretrained", save_then_fail)


def test_failure_while_saving_leaves_no_folder(tiny_model, tiny_data, tmp_path, monkeypatch):
    _fail_after_saving(monkeypatch)
    out = tmp_path / "adapter"
    with pytest.raises(RuntimeError, match="disk full"):
        _train(tiny_model("bert"), tiny_data["single"], out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no hidden .adapter.partial either


def test_failure_writing_the_record_keeps_the_old_adapter(
    tiny_model, tiny_data, trained_adapter, tmp_path, monkeypatch
):
    out = tmp_path / "adapter"
    _train(tiny_model("bert"), tiny_data["single"], out, seed=0)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    import repmatch.training as training

    real_dumps = json.dumps

    def dumps(payload, *args, **kwargs):
        if isinstance(payload, dict) and payload.get("format") == "repmatch-adapter/1":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dumps(payload, *args, **kwargs)

    monkeypatch.setattr(training.json, "dumps", dumps)
    with pytest.raises(RepmatchError, match=f"cannot write {out}: no space left on the device"):
        _train(tiny_model("bert"), tiny_data["single"], out, overwrite=True, seed=1)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter"]


def test_overwrite_replaces_the_adapter(tiny_model, tiny_data, trained_adapter, tmp_path):
    out = tmp_path / "adapter"
    _train(tiny_model("bert"), tiny_data["single"], out, seed=0)
    (out / "stale.txt").write_text("left over")
    _train(tiny_model("bert"), tiny_data["single"], out, overwrite=True, seed=1)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / RECORD_FILE).read_text())["train"]["seed"] == 1
    seed1 = _lora_tensors(trained_adapter("bert", seed=1))
    for key, value in _lora_tensors(out).items():
        assert torch.equal(value, seed1[key])


def test_existing_output_needs_overwrite(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(RepmatchError, match="already exists.*set overwrite"):
        _train(tiny_model("bert"), tiny_data["single"], out)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]


def test_existing_empty_output_folder_is_used(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    _train(tiny_model("bert"), tiny_data["single"], out)
    assert (out / "adapter_model.safetensors").is_file()


def test_output_path_that_is_a_file(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "adapter"
    out.write_text("not a folder")
    with pytest.raises(RepmatchError, match="not a folder"):
        train_adapter(
            DataSpec(str(tiny_data["single"])),
            TrainConfig(model=tiny_model("bert")),
            out,
            overwrite=True,
            progress=False,
        )
    assert out.read_text() == "not a folder"


# --------------------------------------------------------------------------------------------
# User errors


def test_rank_larger_than_the_layer(tiny_model, tiny_data, tmp_path):
    with pytest.raises(RepmatchError) as info:
        _train(tiny_model("bert"), tiny_data["single"], tmp_path / "a", rank=HIDDEN + 1)
    message = str(info.value)
    assert "rank 33" in message
    assert "bert.encoder.layer.0.attention.self.value" in message
    assert "rank <= 32" in message
    assert not (tmp_path / "a").exists()


def test_label_outside_the_head(tiny_model, tiny_data, tmp_path):
    # three-class data, two-output head
    with pytest.raises(RepmatchError, match=r"outside the head's 2 classes.*label 2"):
        _train(tiny_model("bert"), tiny_data["pair"], tmp_path / "a", num_labels=2)
    # a label 3 in otherwise binary data
    frame = tmp_path / "labels.csv"
    frame.write_text("text,label\na good day,0\na bad day,1\nsomething else,3\n")
    with pytest.raises(RepmatchError, match=r"1 labels of labels are outside the head's 2"):
        _train(tiny_model("bert"), frame, tmp_path / "b", num_labels=2)
    # a one-output head for classification
    with pytest.raises(RepmatchError, match="outside the head's 1 classes"):
        _train(tiny_model("bert"), tiny_data["single"], tmp_path / "c", num_labels=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["labels.csv"]


def test_empty_subset(tiny_model, tiny_data, tmp_path):
    spec = DataSpec(str(tiny_data["single"]), labels=("9",))
    config = TrainConfig(model=tiny_model("bert"), **FAST_TRAIN)
    with pytest.raises(RepmatchError, match="empty"):
        train_adapter(spec, config, tmp_path / "a", progress=False)
    examples = load_examples(DataSpec(str(tiny_data["single"]))).select([])
    with pytest.raises(RepmatchError, match="no instances"):
        train_adapter(examples, config, tmp_path / "b", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unknown_target(tiny_model, tiny_data, tmp_path):
    with pytest.raises(RepmatchError, match=r"target 'attention_out'.*name a module"):
        _train(tiny_model("bert"), tiny_data["single"], tmp_path / "a", targets=("attention_out",))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rank", 0),
        ("rank", -2),
        ("lr", -1.0),
        ("lr", 0.0),
        ("epochs", 0),
        ("batch_size", 0),
        ("alpha", 0.0),
        ("max_length", 0),
        ("weight_decay", -0.1),
        ("lora_dropout", 1.0),
        ("num_labels", 0),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(RepmatchError, match=rf"^{field} must be"):
        TrainConfig(**{field: value})


def test_empty_targets():
    with pytest.raises(RepmatchError, match="targets"):
        TrainConfig(targets=())


@pytest.mark.parametrize("model", ["/nonexistent/tiny-model", "./no-such-model-here"])
def test_unknown_model_path(model, tiny_data, tmp_path):
    with pytest.raises(RepmatchError, match="could not load model") as info:
        _train(model, tiny_data["single"], tmp_path / "a")
    assert model in str(info.value)
    assert "\n" not in str(info.value)


def test_model_folder_without_weights(tiny_data, tmp_path):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    with pytest.raises(RepmatchError, match="could not load model"):
        _train(str(folder), tiny_data["single"], tmp_path / "a")


# --------------------------------------------------------------------------------------------
# Devices (run where there is a CUDA GPU; CI machines have none)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_gives_the_cpu_adapter_up_to_rounding(tiny_model, tiny_data, tmp_path):
    """The README's claim on tensors: a seed gives the same LoRA factors (and head) on the GPU
    as on the CPU, to float32 rounding, after the optimizer has moved them."""
    model, data = tiny_model("bert"), tiny_data["single"]
    cpu = _train(model, data, tmp_path / "cpu", device="cpu")
    gpu = _train(model, data, tmp_path / "gpu", device="cuda")
    assert json.loads((gpu / RECORD_FILE).read_text())["device"].startswith("cuda")
    expected, result = _tensors(cpu), _tensors(gpu)
    assert sorted(result) == sorted(expected)
    trained = [key for key in expected if "lora_B" in key]
    assert trained and all(expected[key].abs().max() > 1e-3 for key in trained)  # B moved from 0
    for key in expected:
        torch.testing.assert_close(result[key], expected[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("base_dropout", [False, True])
def test_training_leaves_the_global_rng_alone(base_dropout, tiny_model, tiny_data, tmp_path):
    config = TrainConfig(model=tiny_model("bert"), base_dropout=base_dropout, **FAST_TRAIN)
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    first = train_adapter(
        DataSpec(str(tiny_data["single"])), config, tmp_path / "a", progress=False
    )
    assert torch.equal(torch.rand(4), expected)
    # and with dropout on, the run is still reproducible: its draws are seeded by config.seed
    torch.manual_seed(99)
    again = train_adapter(
        DataSpec(str(tiny_data["single"])), config, tmp_path / "b", progress=False
    )
    weights = "adapter_model.safetensors"
    assert (first / weights).read_bytes() == (again / weights).read_bytes()


# Every supported architecture: train, load with PEFT, compare

TEXTS = ["a good movie with a great cast", "the food was awful", "quite dull really"]


def _inputs(model_path: str) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(model_path)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_load_with_peft_and_compare(
    arch, tiny_model, tiny_data, trained_adapter, tmp_path, monkeypatch
):
    model_path = tiny_model(arch)
    inputs = _inputs(model_path)
    captured = {}
    original_save = training._save_atomically

    def save_and_capture(peft_model, record, out, **options):
        with torch.no_grad():
            captured["logits"] = peft_model(**inputs).logits.clone()
        original_save(peft_model, record, out, **options)

    monkeypatch.setattr(training, "_save_atomically", save_and_capture)
    out = train_adapter(
        DataSpec(str(tiny_data["single"])),
        TrainConfig(model=model_path, seed=0, **FAST_TRAIN),
        tmp_path / "adapter",
        progress=False,
    )
    assert (out / "adapter_model.safetensors").is_file()

    adapter = load_adapter(out)
    assert len(adapter.layers) == 2
    assert all(name.endswith("." + VALUE_LEAF[arch]) for name in adapter.layers)
    for factors in adapter.layers.values():
        assert factors.rank == FAST_TRAIN["rank"]
        assert factors.B.abs().max() > 0  # trained: PEFT initialises B at zero

    # plain PEFT loads it and reproduces the trained model's outputs
    base = load_classifier(model_path, num_labels=2, head_seed=42)
    untrained_logits = base(**inputs).logits.detach().clone()
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        logits = reloaded(**inputs).logits
    torch.testing.assert_close(logits, captured["logits"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logits, untrained_logits, atol=1e-6)

    # the head stored in the adapter is the frozen seeded init
    head_init = dict(load_classifier(model_path, num_labels=2, head_seed=42).named_parameters())
    assert adapter.head
    for key, value in adapter.head.items():
        torch.testing.assert_close(value, head_init[key], rtol=0, atol=0)

    # RepMatch against an adapter of another LoRA seed
    other = trained_adapter(arch, seed=1)
    comparison = compare_adapters(out, other)
    assert set(comparison.layers) == set(adapter.layers)
    assert 0.0 <= comparison.score <= 1.0
    assert all(0.0 <= value <= 1.0 + 1e-6 for value in comparison.layers.values())
    assert comparison.score == pytest.approx(sum(comparison.layers.values()) / 2)
    itself = compare_adapters(out, out)
    assert itself.score == pytest.approx(1.0, abs=1e-5)


def test_overwrite_never_deletes_a_folder_repmatch_did_not_write(tiny_model, tiny_data, tmp_path):
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    config = TrainConfig(model=tiny_model("bert"), **FAST_TRAIN)
    with pytest.raises(RepmatchError, match="did not write.*refusing to delete it"):
        train_adapter(
            DataSpec(str(tiny_data["single"])), config, precious, overwrite=True, progress=False
        )
    assert (precious / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_gradient_checkpointing_recomputes_layers_and_trains_the_same_adapter(
    arch, tiny_model, tiny_data, tmp_path
):
    from torch.nn.modules.module import register_module_forward_hook

    calls = {"count": 0}

    def count(module, args, output):
        calls["count"] += isinstance(module, torch.nn.Linear)

    counted = {}
    for checkpointing in (False, True):
        calls["count"] = 0
        handle = register_module_forward_hook(count)
        try:
            out = _train(
                tiny_model(arch),
                tiny_data["single"],
                tmp_path / str(checkpointing),
                gradient_checkpointing=checkpointing,
            )
        finally:
            handle.remove()
        counted[checkpointing] = calls["count"]
    assert counted[True] > counted[False]  # the layers ran again in the backward pass
    plain, checkpointed = _tensors(tmp_path / "False"), _tensors(out)
    for key in plain:  # dropout stayed off: the same gradients, the same adapter
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-6, atol=1e-7)
    assert load_adapter(out).record["train"]["gradient_checkpointing"] is True


@pytest.mark.parametrize("arch", ["bert", "roberta", "llama"])
def test_last_layer_cut_to_the_read_position_trains_the_same_adapter(
    arch, tiny_model, tiny_data, tmp_path, monkeypatch
):
    """Training computes the last layer at the position the head reads only ([CLS], or a
    decoder's last token) where a probe shows it exact: the adapter is the one without the cut."""
    from repmatch.models import ReadoutCut

    widths = []
    probe = training._readout_cut

    def watched(model, task, config):
        cut = probe(model, task, config)
        blocks = cut.blocks if isinstance(cut.blocks, tuple) else (cut.blocks,)
        blocks[-1].register_forward_hook(lambda module, args, out: widths.append(out.shape[1]))
        return cut

    monkeypatch.setattr(training, "_readout_cut", watched)
    cut = _train(tiny_model(arch), tiny_data["single"], tmp_path / "cut", epochs=2)
    assert widths and set(widths) == {1}  # every step ran the cut block at one position
    monkeypatch.setattr(training, "_readout_cut", lambda model, task, config: ReadoutCut())
    plain = _train(tiny_model(arch), tiny_data["single"], tmp_path / "plain", epochs=2)
    expected, result = _tensors(plain), _tensors(cut)
    for key in expected:
        torch.testing.assert_close(result[key], expected[key], rtol=1e-4, atol=1e-6)
