"""experiments/options.py: the options every experiment script shares, applied to the configs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from repmatch.config import BUNDLED_MODEL, EmbeddingConfig, EvalConfig, ScoreConfig, TrainConfig
from repmatch.errors import RepmatchError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from options import (  # noqa: E402
    REFERENCE_FLAGS,
    ExperimentOptions,
    add_arguments,
    add_reference_arguments,
    paper_epochs,
    reference_config,
    size,
)


def parse(*argv: str) -> ExperimentOptions:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return ExperimentOptions.from_args(parser.parse_args(list(argv)))


def test_defaults_are_the_bundled_model_on_auto_in_float32():
    options = parse()
    assert options == ExperimentOptions(BUNDLED_MODEL, "auto", "float32", None)


@pytest.mark.parametrize("cls", [TrainConfig, ScoreConfig, EvalConfig, EmbeddingConfig])
def test_apply_sets_the_fields_each_config_has(cls):
    options = parse("--model", "some/model", "--dtype", "bfloat16", "--max-length", "64")
    config = options.apply(cls())
    assert config.max_length == 64
    assert config.model == "some/model"
    assert getattr(config, "dtype", "bfloat16") == "bfloat16"  # EmbeddingConfig has no dtype


def test_reference_flags_default_to_the_papers_settings():
    parser = argparse.ArgumentParser()
    add_reference_arguments(parser)
    args = parser.parse_args([])
    assert set(REFERENCE_FLAGS) <= set(vars(args))
    config = reference_config(args)
    assert (config.rank, config.batch_size, config.lr) == (1, 40, 1e-3)
    assert config.targets == TrainConfig.targets and config.alpha == TrainConfig.alpha
    assert paper_epochs(args.ref_epochs, sentiment=True) == 10
    assert paper_epochs(args.ref_epochs, sentiment=False) == 5

    args = parser.parse_args(["--ref-rank", "4", "--ref-epochs", "2", "--ref-targets", "query"])
    config = reference_config(args)
    assert (config.rank, config.targets) == (4, ("query",))
    assert paper_epochs(args.ref_epochs, sentiment=True) == 2


def test_dataset_default_length_only_without_the_flag():
    assert parse().apply(TrainConfig(), max_length=256).max_length == 256
    assert parse().apply(TrainConfig()).max_length == TrainConfig().max_length
    assert parse("--max-length", "32").apply(TrainConfig(), max_length=256).max_length == 32
    assert parse().length(256) == 256 and parse("--max-length", "32").length(256) == 32


def test_eval_config_passes_its_dtype_to_each_run():
    config = parse("--dtype", "bfloat16").apply(EvalConfig())
    assert config.train_config(seed=3).dtype == "bfloat16"


def test_record_states_the_resolved_device():
    record = ExperimentOptions(device="cpu").record()
    assert record == {
        "model": BUNDLED_MODEL,
        "device": "cpu",
        "dtype": "float32",
        "max_length": None,
    }


@pytest.mark.parametrize("text, value", [("all", None), ("ALL", None), ("5", 5)])
def test_size_accepts_all(text, value):
    assert size(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "many", "1.5"])
def test_size_refuses_other_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match="'all'"):
        size(text)


def test_bad_options_are_refused():
    with pytest.raises(SystemExit):
        parse("--dtype", "float16")  # scoring refuses float16
    with pytest.raises(RepmatchError, match="max_length"):
        ExperimentOptions(max_length=0)


def test_a_script_runs_on_the_model_it_is_given(tiny_model, tiny_data, tmp_path):
    """experiments/instance_robustness.py end to end on a tiny model: the reference is trained
    on ``--model`` with ``--max-length``, and the summary records the options used."""
    model = tiny_model("bert")
    data = tmp_path / "data"  # a folder with train and validation splits
    data.mkdir()
    (data / "train.csv").write_text(tiny_data["single"].read_text())
    (data / "validation.csv").write_text(tiny_data["topics"].read_text())
    out = tmp_path / "summary.json"
    script = Path(__file__).resolve().parents[1] / "experiments" / "instance_robustness.py"
    argv = [
        *("--data", str(data), "--reference-size", "all"),
        *("--instances", "8", "--figure2-instances", "4", "--seeds", "2"),
        *("--work", str(tmp_path / "work"), "--out", str(out)),
        *("--model", model, "--device", "cpu", "--max-length", "32"),
    ]
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["options"] == {
        "model": str(Path(model).resolve()),
        "device": "cpu",
        "dtype": "float32",
        "max_length": 32,
    }
    reference = json.loads((tmp_path / "work" / "reference" / "repmatch.json").read_text())
    assert reference["model"] == summary["options"]["model"]
    assert reference["train"]["max_length"] == 32
    assert reference["num_examples"] == 40  # --reference-size all: the whole file
    for rank in ("rank1", "rank4"):  # Fig. 2 keeps each instance's two figures
        figure = summary[rank]["figure2"]
        for name, values in figure["per_instance"].items():
            assert len(values) == figure["instances"] == 4
            assert sum(values) / 4 == pytest.approx(figure[name], abs=1e-5)
