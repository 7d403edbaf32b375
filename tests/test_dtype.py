"""Lower precision (``dtype``) for training, scoring and evaluation: float32 stays the exact
default, bfloat16 runs the model's matmuls in bfloat16 and agrees with float32 by rank, float16 is
refused off CUDA, and the choice is recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr

from repmatch.adapters import load_adapter, load_adapter_model
from repmatch.compare import compare_adapters
from repmatch.config import EvalConfig, ScoreConfig, TrainConfig, key_json
from repmatch.data import DataSpec, load_examples
from repmatch.errors import RepmatchError
from repmatch.evaluation import evaluate_subsets, predict
from repmatch.lora import lora_config, wrap_with_lora
from repmatch.models import attention_kernel, compute_dtype, load_classifier, load_tokenizer
from repmatch.scoring import InstanceScorer, score_instances
from repmatch.tasks import get_task
from repmatch.training import _frozen_body_in, train_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(scoring_reference) -> str:
    return scoring_reference


def test_float32_is_the_default_everywhere():
    assert TrainConfig().dtype == ScoreConfig().dtype == EvalConfig().dtype == "float32"
    assert "dtype" not in key_json(EvalConfig())  # runs keyed before the field keep their keys
    assert EvalConfig(dtype="bfloat16").train_config(0).dtype == "bfloat16"
    assert compute_dtype("float32", torch.device("cpu")) is torch.float32
    assert compute_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


def _attention_ops(dtype: torch.dtype) -> set[str]:
    """The aten attention ops one attention forward/backward in ``dtype`` runs on the CPU, inside
    :func:`attention_kernel`."""
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(2, 4, 8, 16, dtype=dtype, requires_grad=True)
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool).tril()
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        with attention_kernel(dtype, torch.device("cpu")):
            torch.nn.functional.scaled_dot_product_attention(
                q, q, q, attn_mask=mask
            ).sum().backward()
    return {e.key for e in trace.key_averages() if "attention" in e.key}


def test_bfloat16_attention_on_the_cpu_avoids_the_fused_kernel():
    """torch's fused CPU attention has a slow bfloat16 backward; the math kernel is used then."""
    assert any("flash" in op for op in _attention_ops(torch.float32))  # torch's own choice
    assert not any("flash" in op for op in _attention_ops(torch.bfloat16))


@pytest.mark.parametrize("config", [TrainConfig, ScoreConfig])
def test_unknown_dtype_is_refused(config):
    with pytest.raises(RepmatchError, match="dtype must be one of float32, bfloat16, float16") as e:
        config(dtype="half")
    assert e.value.field == "dtype"


def test_float16_is_refused_for_scoring_and_on_the_cpu(tiny_data, tmp_path):
    with pytest.raises(RepmatchError, match="float16 is not offered for scoring.*bfloat16") as e:
        ScoreConfig(dtype="float16")
    assert e.value.field == "dtype"
    data = DataSpec(str(tiny_data["single"]))
    with pytest.raises(RepmatchError, match="float16 needs a CUDA GPU.*use bfloat16") as e:
        train_adapter(data, TrainConfig(dtype="float16"), tmp_path / "adapter", device="cpu")
    assert e.value.field == "dtype"
    assert not list(tmp_path.iterdir())  # no output, no lock, no partial folder


@pytest.mark.parametrize(
    "settings",
    [{"rank": 1}, {"rank": 2, "steps": 2, "lr": 1e-2}, {"rank": 1, "measure": "gradient"}],
    ids=["one-step", "two-steps", "gradient-measure"],
)
def test_bfloat16_scores_rank_instances_like_float32(settings, reference, tiny_data, tmp_path):
    data = DataSpec(str(tiny_data["single"]))
    exact = score_instances(data, reference, ScoreConfig(**settings), progress=False, device="cpu")
    out = tmp_path / "bf16.parquet"
    config = ScoreConfig(**settings, dtype="bfloat16")
    low = score_instances(data, reference, config, out=out, progress=False, device="cpu")
    assert list(low["id"]) == list(exact["id"])
    assert not np.array_equal(low["score"], exact["score"])  # it did run in another precision
    assert np.ptp(exact["score"]) > 1e-2
    assert spearmanr(low["score"], exact["score"])[0] >= 0.95
    assert np.abs(low["score"] - exact["score"]).max() < 0.1
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["score"]["dtype"] == "bfloat16"


def test_bfloat16_scorer_keeps_the_engine_maths_in_float32(reference):
    scorer = InstanceScorer(load_adapter(reference), ScoreConfig(dtype="bfloat16"), device="cpu")
    assert {p.dtype for p in scorer.model.parameters()} == {torch.bfloat16}
    assert all(a0.dtype == torch.float32 for f in scorer.initial.values() for a0 in f.values())
    assert scorer.position_offset is not None  # the probes ran (in float32) and still pack rows
    exact = InstanceScorer(load_adapter(reference), ScoreConfig(), device="cpu")
    for seed, factors in exact.initial.items():  # the same LoRA inits as float32
        for name, a0 in factors.items():
            assert torch.equal(scorer.initial[seed][name], a0)


def test_bfloat16_training_keeps_float32_weights_and_trains_a_like_adapter(
    tiny_model, tiny_data, tmp_path
):
    data = DataSpec(str(tiny_data["single"]))
    settings = {"model": tiny_model("bert"), "rank": 2, "batch_size": 8, "lr": 1e-2}
    exact = train_adapter(data, TrainConfig(**settings), tmp_path / "f32", progress=False)
    low = train_adapter(
        data, TrainConfig(**settings, dtype="bfloat16"), tmp_path / "bf16", progress=False
    )
    tensors = load_file(low / "adapter_model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    reference = load_file(exact / "adapter_model.safetensors")
    assert any(not torch.equal(tensors[k], reference[k]) for k in tensors)
    assert load_adapter(low).record["train"]["dtype"] == "bfloat16"
    # the same init and data: the updates span nearly the same subspaces
    assert compare_adapters(exact, low).score > 0.9


def test_bfloat16_training_casts_only_the_frozen_body(tiny_model):
    """The body's frozen weights go to bfloat16 (autocast would cast them every step); the LoRA
    factors and the saved head stay float32 for the optimizer."""
    model = load_classifier(tiny_model("bert"), num_labels=2, head_seed=0)
    config = lora_config(["encoder.layer.0.attention.self.value"], rank=2, alpha=4.0,
                         modules_to_save=["classifier"])  # fmt: skip
    peft_model = wrap_with_lora(model, config, seed=0)
    for name, parameter in peft_model.named_parameters():
        parameter.requires_grad = "lora_" in name
    _frozen_body_in(peft_model, torch.bfloat16)
    dtypes = {name: p.dtype for name, p in peft_model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n or "classifier" in n} == {torch.float32}
    body = {d for n, d in dtypes.items() if "lora_" not in n and "classifier" not in n}
    assert body == {torch.bfloat16}


def test_bfloat16_prediction_agrees_with_float32(reference, tiny_data):
    """Prediction in bfloat16 leaves the model float32 and nearly every prediction as it was."""
    model, adapter = load_adapter_model(reference, device="cpu"), load_adapter(reference)
    tokenizer, cpu = load_tokenizer(adapter.base_model), torch.device("cpu")
    examples = load_examples(DataSpec(str(tiny_data["single"])))
    task = get_task("classification")
    settings = {"max_length": 128, "batch_size": 16, "device": cpu}
    exact = predict(model, tokenizer, examples, task, **settings)
    low = predict(model, tokenizer, examples, task, **settings, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert len(np.unique(exact)) == 2 and np.mean(low == exact) >= 0.9


@pytest.mark.parametrize("method", ["full", "lora"])
def test_bfloat16_evaluation_is_recorded_and_keyed_apart(method, tiny_model, tiny_data, tmp_path):
    data = DataSpec(str(tiny_data["single"]))
    settings = {"model": tiny_model("bert"), "method": method, "seeds": (0,), "epochs": 1}
    exact = evaluate_subsets([data], data, EvalConfig(**settings), progress=False)
    low = evaluate_subsets(
        [data], data, EvalConfig(**settings, dtype="bfloat16"), out=tmp_path, progress=False
    )
    assert low.record["evaluate"]["dtype"] == "bfloat16"
    assert exact.record["runs"][0]["key"] != low.record["runs"][0]["key"]
    assert abs(low.runs["accuracy"][0] - exact.runs["accuracy"][0]) <= 0.2
