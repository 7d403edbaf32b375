"""Each supported architecture end to end on a tiny model: targets, training, PEFT, scoring."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

import repmatch.training as training
from conftest import ARCHITECTURES, FAST_TRAIN, VALUE_LEAF
from repmatch.adapters import load_adapter
from repmatch.compare import compare_adapters
from repmatch.data import DataSpec, load_examples
from repmatch.literal_loop import literal_scores
from repmatch.models import (
    load_classifier,
    load_tokenizer,
)
from repmatch.scoring import ScoreConfig, score_instances
from repmatch.training import TrainConfig, train_adapter

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

    def save_and_capture(peft_model, record, out, *, overwrite):
        with torch.no_grad():
            captured["logits"] = peft_model(**inputs).logits.clone()
        original_save(peft_model, record, out, overwrite=overwrite)

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


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_instance_scores_match_the_literal_loop(arch, trained_adapter, tiny_data):
    reference = trained_adapter(arch)
    examples = load_examples(DataSpec(str(tiny_data["single"]), limit=5))
    engine = score_instances(examples, reference, ScoreConfig(rank=1, batch_size=3), progress=False)
    literal = literal_scores(reference, examples, rank=1, pad_to=32)
    assert abs(engine["score"].to_numpy() - literal).max() <= 1e-4
