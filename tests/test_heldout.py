"""Held-out evaluation of a trained adapter (repmatch.heldout, ``repmatch train --eval``): the
metrics and majority-class rate recorded, labels mapped by class name, bad data refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import FAST_TRAIN
from repmatch.adapters import RECORD_FILE, load_adapter, load_adapter_model
from repmatch.cli import main
from repmatch.data import DataSpec, as_examples
from repmatch.errors import RepmatchError
from repmatch.heldout import check_heldout, learning_verdict, majority_rate, record_heldout
from repmatch.models import load_tokenizer
from repmatch.report import build_report
from repmatch.tasks import get_task
from repmatch.training import TrainConfig, train_adapter, train_or_reuse
from test_cli import FAST_FLAGS, _assert_user_error

HELDOUT_LABELS = [1, 1, 1, 1, 1, 1, 0, 0]
"""Six of class 1, two of class 0: majority-class rate 6 / 8 = 0.75."""


def _heldout_csv(folder: Path, labels: list, name: str = "heldout.csv") -> Path:
    words = {0: "bad awful cold", 1: "good great warm", 2: "plain", "pos": "good", "neg": "bad"}
    texts = [f"the movie was {words[label]} number {i}" for i, label in enumerate(labels)]
    path = folder / name
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def _config(tiny_model) -> TrainConfig:
    return TrainConfig(model=tiny_model("bert"), **FAST_TRAIN)


def _accuracy_by_hand(adapter: Path, heldout: Path) -> float:
    """Accuracy of the adapter's model, one instance at a time, on integer-labelled data."""
    frame = pd.read_csv(heldout)
    model = load_adapter_model(adapter, device="cpu")
    tokenizer = load_tokenizer(load_adapter(adapter).base_model)
    with torch.no_grad():
        predicted = [
            int(model(**tokenizer(text, return_tensors="pt")).logits.argmax(-1))
            for text in frame["text"]
        ]
    return float(np.mean(np.asarray(predicted) == frame["label"].to_numpy()))


def test_training_records_metrics_majority_rate_and_data(tiny_model, tiny_data, tmp_path):
    heldout = _heldout_csv(tmp_path, HELDOUT_LABELS)
    out = train_adapter(
        DataSpec(str(tiny_data["single"])),
        _config(tiny_model),
        tmp_path / "adapter",
        progress=False,
        heldout=DataSpec(str(heldout)),
    )
    record = json.loads((out / RECORD_FILE).read_text())["heldout"]
    assert record["majority_rate"] == 0.75
    assert record["num_examples"] == 8
    assert record["data"]["source"] == str(heldout)
    assert record["data_fingerprint"] == as_examples(DataSpec(str(heldout))).fingerprint()
    assert record["max_length"] == TrainConfig().max_length
    assert set(record["metrics"]) == {"accuracy", "macro_f1"}
    assert record["metrics"]["accuracy"] == pytest.approx(_accuracy_by_hand(out, heldout))


def test_regression_records_metrics_without_a_majority_rate(tiny_model, tiny_data, tmp_path):
    frame = pd.read_csv(tiny_data["regression"])
    heldout = tmp_path / "heldout.csv"
    frame.iloc[:10].to_csv(heldout, index=False)
    train = tmp_path / "train.csv"
    frame.iloc[10:].to_csv(train, index=False)
    out = train_adapter(
        DataSpec(str(train)),
        _config(tiny_model),
        tmp_path / "adapter",
        progress=False,
        heldout=DataSpec(str(heldout)),
    )
    record = json.loads((out / RECORD_FILE).read_text())["heldout"]
    assert record["majority_rate"] is None
    assert {"pearson", "spearman"} <= set(record["metrics"])


def test_labels_are_mapped_through_the_adapters_class_names(tmp_path):
    heldout = _heldout_csv(tmp_path, ["pos", "pos", "pos"])  # its own class 0 is "pos"
    examples = check_heldout(
        DataSpec(str(heldout)),
        task=get_task("classification"),
        label_names=["neg", "pos"],
        num_labels=2,
    )
    assert examples.labels.tolist() == [1, 1, 1]
    assert examples.label_names == ["neg", "pos"]


@pytest.mark.parametrize(
    "labels, data, fragment",
    [
        ([0, 1, 2], None, "label 2"),  # a class the adapter never saw
        (None, "pair", "pair-classification"),  # another task kind
        (None, "single", "training data itself"),
    ],
    ids=["unseen-label", "other-task", "training-data"],
)
def test_bad_heldout_data_is_refused_before_training(
    labels, data, fragment, tiny_model, tiny_data, tmp_path
):
    heldout = _heldout_csv(tmp_path, labels) if labels else tiny_data[data]
    out = tmp_path / "adapter"
    with pytest.raises(RepmatchError, match=fragment) as error:
        train_adapter(
            DataSpec(str(tiny_data["single"])),
            _config(tiny_model),
            out,
            progress=False,
            heldout=DataSpec(str(heldout)),
        )
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_a_reused_adapter_is_evaluated_once(tiny_model, tiny_data, tmp_path):
    examples = as_examples(DataSpec(str(tiny_data["single"])))
    folder = train_or_reuse(examples, _config(tiny_model), tmp_path / "ref", progress=False)
    weights = (folder / "adapter_model.safetensors").stat().st_mtime_ns
    heldout = DataSpec(str(_heldout_csv(tmp_path, HELDOUT_LABELS)))
    train_or_reuse(examples, _config(tiny_model), folder, progress=False, heldout=heldout)
    assert (folder / "adapter_model.safetensors").stat().st_mtime_ns == weights  # not retrained
    record = json.loads((folder / RECORD_FILE).read_text())["heldout"]
    assert record["majority_rate"] == 0.75
    written = (folder / RECORD_FILE).stat().st_mtime_ns
    assert record_heldout(folder, heldout) == record
    assert (folder / RECORD_FILE).stat().st_mtime_ns == written  # recorded already: kept


@pytest.mark.parametrize(
    "accuracy, majority, verdict",
    [
        (0.80, 0.50, "learned"),
        (0.53, 0.50, "learned"),
        (0.51, 0.50, "did not learn (within 2 points of the majority rate)"),
        (0.40, 0.50, "did not learn (within 2 points of the majority rate)"),
    ],
)
def test_learning_verdict(accuracy, majority, verdict):
    assert learning_verdict(accuracy, majority) == verdict


def test_majority_rate_by_hand():
    assert majority_rate(np.array(HELDOUT_LABELS)) == 0.75
    assert majority_rate(np.array([2, 0, 1, 2, 2])) == 0.6


def test_cli_prints_and_report_shows_the_heldout_evaluation(
    tiny_model, tiny_data, tmp_path, capsys
):
    heldout = _heldout_csv(tmp_path, HELDOUT_LABELS)
    out = tmp_path / "adapter"
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--out", str(out), "--eval", str(heldout)]) == 0
    printed = capsys.readouterr().out
    assert "held-out heldout (8 instances): accuracy" in printed
    assert "majority-class rate 0.7500" in printed
    page = build_report([out])
    assert "Held-out evaluation" in page
    assert "majority rate" in page
    assert "0.7500" in page
    accuracy = json.loads((out / RECORD_FILE).read_text())["heldout"]["metrics"]["accuracy"]
    assert learning_verdict(accuracy, 0.75) in page


@pytest.mark.parametrize(
    "eval_arg, fragment",
    [("{unseen}", "label 2"), ("{folder}", "@validation")],
    ids=["unseen-label", "folder-without-split"],
)
def test_cli_refuses_bad_heldout_data_in_one_line(
    eval_arg, fragment, tiny_model, tiny_data, tmp_path, capsys
):
    unseen = _heldout_csv(tmp_path, [0, 1, 2])
    source = eval_arg.format(unseen=unseen, folder=tiny_data["single"].parent)
    out = tmp_path / "adapter"
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    rc = main([*argv, "--out", str(out), "--eval", source])
    _assert_user_error(rc, capsys.readouterr().err, fragment)
    assert not out.exists()
