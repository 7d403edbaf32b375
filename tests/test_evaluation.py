"""Tests for repmatch.evaluation and ``repmatch evaluate``: the metrics on hand-checked cases,
fine-tuning every subset under every seed on a tiny model (full and LoRA), reproducible numbers,
the results files and resuming, label sets aligned by name, and bad input refused in one line
with nothing written; the select -> evaluate round trip through the command line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import repmatch.evaluation
from repmatch.artifacts import data_record, run_record, write_json
from repmatch.cli import main
from repmatch.config import EvalConfig, ScoreConfig, SelectConfig, key_json
from repmatch.data import DataSpec, load_examples
from repmatch.errors import RepmatchError
from repmatch.evaluation import evaluate_subsets, load_subset
from repmatch.scoring import score_instances
from repmatch.selection import select_to_file
from repmatch.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _assert_user_error(rc: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("repmatch: error: "), err
    assert all(fragment in lines[0] for fragment in fragments), err


# --------------------------------------------------------------------------------------------
# Metrics, computed by hand


def test_classification_metrics_by_hand():
    predictions = np.array([0, 0, 1, 1, 2, 2])
    labels = np.array([0, 1, 1, 1, 2, 0])
    # accuracy 4/6; F1 per class: 0: P 1/2 R 1/2 -> 1/2; 1: P 1 R 2/3 -> 4/5; 2: P 1/2 R 1 -> 2/3
    metrics = get_task("classification").metrics(predictions, labels)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_regression_metrics_by_hand():
    predictions = np.array([1.0, 2.0, 3.0, 10.0])
    labels = np.array([1.0, 3.0, 2.0, 4.0])
    # deviations (-3, -2, -1, 6) and (-1.5, 0.5, -0.5, 1.5): covariance 13, squares 50 and 5;
    # ranks (1, 2, 3, 4) and (1, 3, 2, 4): squared rank differences 2, so 1 - 6*2/(4*15) = 0.8
    metrics = get_task("regression").metrics(predictions, labels)
    assert metrics["pearson"] == pytest.approx(13 / np.sqrt(250))
    assert metrics["spearman"] == pytest.approx(0.8)


def test_summary_mean_and_sample_std_by_hand():
    runs = pd.DataFrame(
        {
            "subset": ["a", "a", "a", "b"],
            "seed": [0, 1, 2, 0],
            "num_train": [10, 10, 10, 5],
            "accuracy": [0.5, 0.7, 0.9, 0.6],
            "seconds": [1.0, 2.0, 3.0, 4.0],
        }
    )
    summary = repmatch.evaluation._summary(runs, ["accuracy"], ["a", "b"])
    a, b = summary.to_dict(orient="records")
    assert a["accuracy_mean"] == pytest.approx(0.7) and a["accuracy_std"] == pytest.approx(0.2)
    assert a["seeds"] == 3 and a["seconds_mean"] == pytest.approx(2.0)
    assert b["accuracy_mean"] == pytest.approx(0.6) and np.isnan(b["accuracy_std"])


def test_config_defaults_and_checks():
    assert EvalConfig().lr == 3e-5 and EvalConfig(method="lora").lr == 1e-3
    assert EvalConfig(method="lora", lr=0.5).lr == 0.5
    for bad, field in [({"method": "adapter"}, "method"), ({"seeds": ()}, "seeds")]:
        with pytest.raises(RepmatchError) as info:
            EvalConfig(**bad)
        assert info.value.field == field
    train = EvalConfig(seeds=(4,)).train_config(4)
    assert train.seed == 4 and train.head_seed == 4 and train.train_head and train.base_dropout


# --------------------------------------------------------------------------------------------
# Fine-tuning and evaluating on a tiny model


@pytest.fixture(scope="module")
def subsets(tmp_path_factory, tiny_data, trained_adapter) -> dict[str, Path]:
    """A top-12 and a random-12 selection of the tiny sentiment csv, through ``repmatch``."""
    folder = tmp_path_factory.mktemp("subsets")
    scores = folder / "scores.parquet"
    spec = DataSpec(str(tiny_data["single"]))
    score_instances(spec, trained_adapter("bert"), ScoreConfig(), out=scores)
    paths = {}
    for how in ("top", "random"):
        paths[how] = folder / f"{how}12.jsonl"
        rc = main(["select", str(scores), f"--{how}", "12", "--balanced", "--out", str(paths[how])])
        assert rc == 0
    return paths


def _config(tiny_model, **changes) -> EvalConfig:
    settings = {"model": tiny_model("bert"), "seeds": (0, 1), "epochs": 2, "batch_size": 4}
    return EvalConfig(**(settings | changes))


def test_every_subset_and_seed_reproducibly(subsets, tiny_model, tiny_data, tmp_path):
    config = _config(tiny_model, lr=1e-2)
    train = [subsets["top"], subsets["random"]]
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    result = evaluate_subsets(train, DataSpec(str(tiny_data["single"])), config, out=tmp_path)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert result.metrics == ["accuracy", "macro_f1"]
    assert result.runs[["subset", "seed"]].values.tolist() == [
        ["top12", 0],
        ["top12", 1],
        ["random12", 0],
        ["random12", 1],
    ]
    assert result.runs["accuracy"].between(0, 1).all() and (result.runs["seconds"] > 0).all()
    assert result.summary["subset"].tolist() == ["top12", "random12"]
    top = result.summary.iloc[0]
    accuracies = result.runs["accuracy"][:2]
    assert top["accuracy_mean"] == pytest.approx(accuracies.mean())
    assert top["accuracy_std"] == pytest.approx(accuracies.std(ddof=1))

    again = evaluate_subsets(train, DataSpec(str(tiny_data["single"])), config)
    assert again.runs.drop(columns="seconds").equals(result.runs.drop(columns="seconds"))

    record = json.loads((tmp_path / "results.json").read_text())
    assert record["format"] == "repmatch-evaluation/1" and record["evaluate"] == config.to_dict()
    assert record["evaluation"]["num_examples"] == 40 and len(record["runs"]) == 4
    assert all(run["seconds"] > 0 and len(run["epoch_losses"]) == 2 for run in record["runs"])
    losses = {tuple(run["epoch_losses"]) for run in record["runs"]}
    assert len(losses) == 4  # every subset and seed trains another model
    assert pd.read_csv(tmp_path / "results.csv")["subset"].tolist() == ["top12", "random12"]
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 4
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4


def test_finished_runs_are_read_back(subsets, tiny_model, tiny_data, tmp_path, monkeypatch):
    config = _config(tiny_model)
    data = DataSpec(str(tiny_data["single"]))
    first = evaluate_subsets([subsets["top"]], data, config, out=tmp_path)
    (next((tmp_path / "runs").glob("*seed1*.json"))).unlink()  # as if stopped before seed 1
    calls = []
    original = repmatch.evaluation._run
    monkeypatch.setattr(
        repmatch.evaluation, "_run", lambda *a, **k: calls.append(a[2]) or original(*a, **k)
    )
    again = evaluate_subsets([subsets["top"]], data, config, out=tmp_path)
    assert calls == [1]
    assert again.runs.drop(columns="seconds").equals(first.runs.drop(columns="seconds"))
    evaluate_subsets([subsets["top"]], data, _config(tiny_model, epochs=1), out=tmp_path)
    assert calls == [1, 0, 1]  # other settings: nothing reused


def test_lora_and_regression(tiny_model, tiny_data, tmp_path):
    frame = pd.read_csv(tiny_data["regression"])
    result = evaluate_subsets(
        [frame[:20], frame[20:]],
        frame,
        _config(tiny_model, method="lora", seeds=(0,), epochs=1),
    )
    assert result.metrics == ["pearson", "spearman"]
    assert result.runs["pearson"].between(-1, 1).all() and len(result.runs) == 2
    assert np.isnan(result.summary["pearson_std"]).all()  # one seed: no spread


def _named(rng: random.Random, labels: list[str]) -> pd.DataFrame:
    words = {"neg": ["bad", "dull"], "pos": ["good", "fine"], "mid": ["okay", "so-so"]}
    return pd.DataFrame(
        {"text": [" ".join(rng.choices(words[y] + ["film"], k=4)) for y in labels], "label": labels}
    )


def _labels_seen_by_runs(monkeypatch) -> list:
    """(subset labels, evaluation labels) as each run gets them, appended as runs start."""
    seen = []
    original = repmatch.evaluation._run

    def capture(subset, evaluation, *args, **kwargs):
        seen.append((subset.examples.labels.tolist(), evaluation.labels.tolist()))
        return original(subset, evaluation, *args, **kwargs)

    monkeypatch.setattr(repmatch.evaluation, "_run", capture)
    return seen


def test_label_sets_are_aligned_by_name(tiny_model, monkeypatch):
    rng = random.Random(0)
    only_pos = _named(rng, ["pos"] * 6)  # read alone, "pos" is its class 0
    both = _named(rng, ["neg", "pos"] * 4)
    evaluation = _named(rng, ["pos", "neg"] * 5)
    seen = _labels_seen_by_runs(monkeypatch)
    result = evaluate_subsets([only_pos, both], evaluation, _config(tiny_model, seeds=(0,)))
    assert result.record["label_names"] == ["neg", "pos"] and result.record["num_labels"] == 2
    assert seen[0] == ([1] * 6, [1, 0] * 5)  # "pos" is class 1 of the head, in every data set
    assert seen[1] == ([0, 1] * 4, [1, 0] * 5)


def test_evaluation_labels_no_subset_has(tiny_model, tmp_path):
    rng = random.Random(0)
    train = _named(rng, ["neg", "pos"] * 4)
    evaluation = _named(rng, ["neg", "pos", "mid"] * 3)
    with pytest.raises(RepmatchError, match="has label 'mid' .* that no training subset has"):
        evaluate_subsets([train], evaluation, _config(tiny_model), out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    numbered = pd.DataFrame({"text": ["a b", "c d", "e f"], "label": [0, 1, 2]})
    with pytest.raises(RepmatchError, match="has label 2 .* no training subset has"):
        evaluate_subsets([numbered[:2]], numbered, _config(tiny_model))


def test_unseen_classes_included_on_request(tiny_model, monkeypatch):
    rng = random.Random(0)
    train = _named(rng, ["neg", "pos"] * 4)
    evaluation = _named(rng, ["neg", "pos", "mid"] * 3)
    seen = _labels_seen_by_runs(monkeypatch)
    config = _config(tiny_model, seeds=(0,), unseen_classes="include")
    result = evaluate_subsets([train], evaluation, config)
    assert result.record["label_names"] == ["mid", "neg", "pos"]
    assert result.record["num_labels"] == 3
    assert seen[0] == ([1, 2] * 4, [1, 2, 0] * 3)  # "mid" is a head class no subset trains
    numbered = pd.DataFrame({"text": ["a b", "c d", "e f"], "label": [0, 1, 2]})
    result = evaluate_subsets([numbered[:2]], numbered, config)
    assert result.record["num_labels"] == 3 and len(result.runs) == 1


def test_added_setting_keeps_earlier_run_keys(tiny_model):
    data = pd.DataFrame({"text": ["a b", "c d", "e f"], "label": [0, 1, 0]})
    examples = load_subset(data)
    default = EvalConfig(model=tiny_model("bert"))
    included = EvalConfig(model=tiny_model("bert"), unseen_classes="include")
    assert "unseen_classes" not in key_json(default)  # added later, left out at its default
    assert key_json(included)["unseen_classes"] == "include"
    keys = [repmatch.evaluation._run_key(c, examples, examples, 0) for c in (default, included)]
    assert keys[0] != keys[1]


def test_subsets_of_different_kinds(tiny_model, tiny_data):
    with pytest.raises(RepmatchError, match="different task kinds"):
        evaluate_subsets(
            [tiny_data["single"], tiny_data["pair"]], tiny_data["single"], _config(tiny_model)
        )
    with pytest.raises(RepmatchError, match="is a regression task but the training subsets"):
        evaluate_subsets([tiny_data["single"]], tiny_data["regression"], _config(tiny_model))


def test_output_folder_not_ours(subsets, tiny_model, tiny_data, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RepmatchError, match="not empty and holds no evaluation"):
        evaluate_subsets([subsets["top"]], tiny_data["single"], _config(tiny_model), out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------------------------
# Command line


def test_cli_select_then_evaluate(subsets, tiny_model, tiny_data, tmp_path, capsys):
    flags = ["--model", tiny_model("bert"), "--seeds", "2", "--epochs", "1", "--lr", "0.01"]
    train = ["--train", str(subsets["top"]), "--train", str(subsets["random"])]
    argv = ["evaluate", *train, "--eval", str(tiny_data["single"]), *flags, "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("full fine-tuning, 1 epochs, lr 0.01, batch size 16, seeds 0..1")
    assert lines[1].split() == ["subset", "n", "accuracy", "macro_f1", "s/run"]
    assert lines[2].split()[:2] == ["top12", "12"] and "±" in lines[2]
    assert lines[-1].endswith("results.json")
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert printed["summary"][0]["subset"] == "top12" and len(printed["runs"]) == 4
    drop = {"seconds", "seconds_mean"}
    assert [{k: v for k, v in row.items() if k not in drop} for row in printed["summary"]] == [
        {k: v for k, v in row.items() if k not in drop} for row in saved["summary"]
    ]


def test_evaluating_on_the_training_data_says_so(subsets, tiny_model, tiny_data, tmp_path, capsys):
    flags = ["--model", tiny_model("bert"), "--seeds", "1", "--epochs", "1", "--quiet"]
    single = str(tiny_data["single"])
    argv = ["evaluate", "--train", single, "--train", str(subsets["top"]), "--eval", single]
    assert main([*argv, *flags, "--out", str(tmp_path / "out")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "is the evaluation data itself" in notes[0]  # not the top12 one
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["notes"] == [notes[0].removeprefix("note: ")]


def test_cli_errors_are_one_line(subsets, tiny_model, tiny_data, tmp_path, capsys):
    base = ["evaluate", "--train", str(subsets["top"]), "--model", tiny_model("bert")]
    rc = main([*base, "--eval", str(tiny_data["single"]), "--seeds", "0"])
    _assert_user_error(rc, capsys.readouterr().err, "seeds is a count", "[--seeds]")
    rc = main([*base, "--eval", str(tiny_data["topics"]), "--labels", "7"])
    _assert_user_error(rc, capsys.readouterr().err, "[--labels]")
    rc = main([*base, "--eval", str(tiny_data["single"]), "--dtype", "float16", "--device", "cpu"])
    _assert_user_error(rc, capsys.readouterr().err, "float16 needs a CUDA GPU", "[--dtype]")
    rc = main([*base, "--eval", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    _assert_user_error(rc, capsys.readouterr().err, "no such file")
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_extractive_qa_selected_and_evaluated(tiny_model, tmp_path):
    """QA rows go through select (answers written back as read) and evaluate (EM and F1)."""
    words = "river city king stone bridge market north winter castle harbor".split()
    rows = []
    for k in range(12):
        context = " ".join(words[k % 5 :] + words[: k % 5])
        answer = words[(k + 3) % 10]
        start = context.index(answer)
        question = f"where is the {words[k % 10]}?"
        rows.append(
            {
                "id": f"q{k}",
                "question": question,
                "context": context,
                "answers": {"text": [answer], "answer_start": [start]},
            }
        )
    pd.DataFrame(rows).to_json(tmp_path / "qa.jsonl", orient="records", lines=True)
    examples = load_examples(DataSpec(str(tmp_path / "qa.jsonl")))
    scores = tmp_path / "scores.parquet"  # scores made up: selection needs no model
    pd.DataFrame(
        {
            "id": examples.ids,
            "label": [a["text"] for a in examples.answers],
            "score": np.linspace(0, 1, 12),
        }
    ).to_parquet(scores)
    write_json(f"{scores}.json", run_record("scores", **data_record(examples)))
    selection = select_to_file(scores, SelectConfig(k=6), tmp_path / "top.csv")
    back = load_subset(tmp_path / "top.csv")
    assert back.task == "extractive-qa" and back.ids == [f"q{k}" for k in range(11, 5, -1)]
    assert back.answers == selection.examples.answers
    result = evaluate_subsets(
        [tmp_path / "top.csv"], examples, _config(tiny_model, seeds=(0,), epochs=1)
    )
    assert result.metrics == ["exact_match", "f1"]
    assert 0 <= result.runs["exact_match"].iloc[0] <= result.runs["f1"].iloc[0] <= 100
