"""The ``repmatch`` command line: train, compare, datasets and demo; errors as one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import FAST_TRAIN, HIDDEN, hold_output_lock
from repmatch.cli import main
from repmatch.models import resolve_device

FAST_FLAGS = [
    "--rank",
    str(FAST_TRAIN["rank"]),
    "--batch-size",
    str(FAST_TRAIN["batch_size"]),
    "--epochs",
    str(FAST_TRAIN["epochs"]),
    "--lr",
    str(FAST_TRAIN["lr"]),
    "--quiet",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _env() -> dict[str, str]:
    return os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _assert_user_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("repmatch: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def cli_adapters(tmp_path_factory, tiny_model, tiny_data):
    """Two adapters trained through the CLI (seeds 0 and 1) on the tiny BERT."""
    folder = tmp_path_factory.mktemp("cli")
    outs = []
    for seed in (0, 1):
        out = folder / f"seed{seed}"
        argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert")]
        rc = main([*argv, *FAST_FLAGS, "--seed", str(seed), "--out", str(out)])
        assert rc == 0
        outs.append(out)
    return outs


def test_train_writes_an_adapter(cli_adapters, trained_adapter):
    first, _ = cli_adapters
    assert (first / "adapter_model.safetensors").read_bytes() == (
        Path(trained_adapter("bert", seed=0)) / "adapter_model.safetensors"
    ).read_bytes()  # the CLI trains exactly what the API trains
    record = json.loads((first / "repmatch.json").read_text())
    assert record["train"]["rank"] == 2 and record["train"]["seed"] == 0


def test_train_prints_where(tiny_model, tiny_data, tmp_path, capsys):
    out = tmp_path / "a"
    argv = ["train", str(tiny_data["regression"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--limit", "10", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"adapter saved to {out}"
    record = json.loads((out / "repmatch.json").read_text())
    assert record["task"] == "regression" and record["num_examples"] == 10
    assert record["device"] == str(resolve_device("auto"))


def test_compare_text(cli_adapters, capsys):
    assert main(["compare", *map(str, cli_adapters)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("RepMatch = ") and "(left singular vectors)" in out[0]
    score = float(out[0].split()[2])
    assert 0.0 < score < 1.0
    assert out[1].split() == ["layer", "grid", "score"]
    assert [line.split()[:3] for line in out[2:]] == [
        ["layer", "0", "value"],
        ["layer", "1", "value"],
    ]
    assert all(line.split()[3] == "2x2" for line in out[2:])
    layer_scores = [float(line.split()[-1]) for line in out[2:]]
    assert score == pytest.approx(sum(layer_scores) / 2, abs=1e-4)


def test_compare_json(cli_adapters, capsys):
    assert main(["compare", *map(str, cli_adapters), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data["score"], float) and 0.0 < data["score"] < 1.0
    assert sorted(data["layers"]) == [
        "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.1.attention.self.value",
    ]
    assert data["score"] == pytest.approx(sum(data["layers"].values()) / 2)
    assert data["side"] == "left" and data["notes"] == []
    assert "shuffled_baseline" not in data


def test_compare_itself_json(cli_adapters, capsys):
    first = str(cli_adapters[0])
    assert main(["compare", first, first, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == pytest.approx(1.0, abs=1e-6)


def test_compare_heatmap(cli_adapters, tmp_path, capsys):
    png = tmp_path / "plots" / "grids.png"
    assert main(["compare", *map(str, cli_adapters), "--heatmap", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert capsys.readouterr().out.startswith("RepMatch = ")


def test_compare_shuffled_baseline(cli_adapters, capsys):
    assert main(["compare", *map(str, cli_adapters), "--shuffled-baseline"]) == 0
    out = capsys.readouterr().out.splitlines()
    score = float(out[0].split()[2])
    assert out[1].split() == ["layer", "grid", "score", "shuffled"]
    assert out[-1].startswith("shuffled baseline = ")
    baseline = float(out[-1].split("=")[1])
    assert 0.0 <= baseline < score
    assert main(["compare", *map(str, cli_adapters), "--shuffled-baseline", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shuffled_baseline"]["score"] == pytest.approx(baseline, abs=1e-4)


def test_compare_right_side_note(cli_adapters, capsys):
    first = str(cli_adapters[0])
    assert main(["compare", first, first, "--side", "right"]) == 0
    captured = capsys.readouterr()
    assert "(right singular vectors)" in captured.out
    assert captured.err.startswith("note: right singular vectors mostly reflect")
    assert main(["compare", *map(str, cli_adapters), "--side", "right"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_datasets_writes_the_matrix(tiny_model, tiny_data, tmp_path, capsys):
    out = tmp_path / "matrix"
    data = [str(tiny_data["single"]), str(tiny_data["topics"])]
    rc = main(["datasets", *data, "--model", tiny_model("bert"), *FAST_FLAGS, "--out", str(out)])
    assert rc == 0
    title, *printed = capsys.readouterr().out.splitlines()
    assert title == "RepMatch"  # one seed: no ± (the baseline, when asked for, follows)
    assert printed[0].split() == ["single", "topics"]
    assert printed[1].split()[:2] == ["single", "1.0000"]
    assert printed[2].split()[0] == "topics" and printed[2].split()[2] == "1.0000"
    assert printed[-1] == f"written to {out}/matrix.csv, matrix.json, matrix.png"
    matrix = json.loads((out / "matrix.json").read_text())
    assert matrix["names"] == ["single", "topics"]
    assert float(printed[1].split()[2]) == pytest.approx(matrix["mean"][0][1], abs=1e-4)
    assert (out / "matrix.csv").read_text().startswith("dataset,single,topics\n")
    assert (out / "matrix.png").read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------------------------
# Errors: exit status 2 and one line on stderr


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--text-column", "nope"], ["nope", "--text-column"]),
        (["--labels", "9"], ["empty", "--labels"]),
        (["--num-labels", "1"], ["outside the head's 1 classes"]),
        (["--rank", str(HIDDEN + 1)], ["rank 33", "layer bert.encoder", "rank <= 32", "[--rank]"]),
        (["--rank", "0"], ["rank must be positive"]),
        (["--targets", "nope"], ["LoRA target 'nope'"]),
        (["--limit", "0"], ["--limit"]),
        (["--device", "gpu0"], ["unknown device 'gpu0'", "cuda:N"]),
        # no such GPU: either none at all, or fewer than 100
        (["--device", "cuda:99"], ["device 'cuda:99'"]),
    ],
    ids=[
        "column",
        "empty-subset",
        "label-range",
        "rank-too-large",
        "rank-zero",
        "target",
        "limit",
        "device",
        "missing-gpu",
    ],
)
def test_train_errors(extra, fragments, tiny_model, tiny_data, tmp_path, capsys):
    out = tmp_path / "a"
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    rc = main([*argv, *extra, "--out", str(out)])
    captured = capsys.readouterr()
    _assert_user_error(rc, captured.err, *fragments)
    assert captured.out == ""
    assert not out.exists()


def test_train_missing_data(tiny_model, tmp_path, capsys):
    missing = tmp_path / "nowhere.csv"
    rc = main(["train", str(missing), "--model", tiny_model("bert"), "--out", str(tmp_path / "a")])
    _assert_user_error(rc, capsys.readouterr().err, "no such file or folder", str(missing))


def test_train_unknown_model(tiny_data, tmp_path, capsys):
    argv = ["train", str(tiny_data["single"]), "--model", str(tmp_path / "no-model")]
    rc = main([*argv, "--out", str(tmp_path / "a")])
    _assert_user_error(rc, capsys.readouterr().err, "could not load model", "no such folder")


def test_train_existing_output(cli_adapters, tiny_model, tiny_data, capsys):
    before = (cli_adapters[0] / "adapter_model.safetensors").read_bytes()
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    rc = main([*argv, "--seed", "5", "--out", str(cli_adapters[0])])
    _assert_user_error(rc, capsys.readouterr().err, "already exists", "--overwrite")
    assert (cli_adapters[0] / "adapter_model.safetensors").read_bytes() == before


def test_compare_missing_adapter(cli_adapters, tmp_path, capsys):
    rc = main(["compare", str(cli_adapters[0]), str(tmp_path / "nowhere")])
    _assert_user_error(rc, capsys.readouterr().err, "adapter folder not found")


def test_compare_different_base_models(trained_adapter, capsys):
    bert, electra = trained_adapter("bert"), trained_adapter("electra")
    capsys.readouterr()  # whatever training the fixtures printed
    rc = main(["compare", bert, electra])
    _assert_user_error(rc, capsys.readouterr().err, "different base models")
    # the flag lets it through: both tiny models have 2 value layers of 32x32 (different names)
    rc = main(["compare", bert, electra, "--allow-different-base"])
    _assert_user_error(rc, capsys.readouterr().err, "share no adapted layer")


def test_datasets_needs_two(tiny_model, tiny_data, tmp_path, capsys):
    argv = ["datasets", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    rc = main([*argv, "--out", str(tmp_path / "m")])
    _assert_user_error(rc, capsys.readouterr().err, "at least two datasets")


def test_argparse_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "only-one"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Real processes


def test_subprocess_compare_json(cli_adapters):
    result = subprocess.run(
        [sys.executable, "-m", "repmatch.cli", "compare", *map(str, cli_adapters), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert 0.0 < data["score"] < 1.0 and len(data["layers"]) == 2
    assert "Traceback" not in result.stderr


def test_script_errors_exit_2_without_traceback(tiny_model, tiny_data, tmp_path):
    script = Path(sys.executable).with_name("repmatch")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "repmatch.cli"]
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert")]
    result = subprocess.run(
        [*command, *argv, "--rank", "64", "--out", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    _assert_user_error(result.returncode, result.stderr, "rank 64 is larger than layer")
    assert result.stdout == ""
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_demo_finds_the_planted_relations(tmp_path, capsys):
    """The demo on 200 instances per task (the default is 400), one torch thread: the sentiment
    pair is the most similar and the salted-in outliers rank lowest, well above chance."""
    from repmatch.demo import run_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_demo(tmp_path / "demo", size=200, progress=False)
    finally:
        torch.set_num_threads(threads)
    similarity = result["similarity"]
    assert similarity["movies"] == pytest.approx(1.0, abs=1e-6)
    assert similarity["restaurants"] > max(similarity["topics"], similarity["shuffled"])
    assert result["sentiment_first"] is True
    assert result["outliers"] == 10 and result["chance"] == pytest.approx(1.0)
    assert result["caught"] >= 5  # half the outliers among the 10 lowest; chance finds 1
    out = tmp_path / "demo"
    assert (out / "similarity" / "matrix.png").read_bytes()[:8] == PNG_MAGIC
    scores = pd.read_csv(out / "instance-scores.csv")
    assert len(scores) == 100 and scores["outlier"].sum() == 10
    lowest = scores.nsmallest(10, "score")["outlier"].sum()
    assert lowest == result["caught"]
    assert f"{result['caught']} of the 10 lowest-scoring" in capsys.readouterr().out


def test_demo_refuses_a_size_too_small(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--size", "10", "--quiet"]) == 2
    assert "size >= 40" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_help_imports_nothing_heavy():
    """`repmatch --help` must be instant: the parser is built without torch or transformers."""
    import subprocess
    import sys

    code = (
        "import sys; from repmatch.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_datasets_refuses_seed_with_seeds(capsys):
    """Regression: `datasets` accepted --seed and --seeds together."""
    with pytest.raises(SystemExit) as caught:
        main(["datasets", "a.csv", "b.csv", "--out", "x", "--seed", "1", "--seeds", "0", "1"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Bad inputs to `score` and `train`: one line, exit 2, nothing written


def _copy_adapter(source: str, folder: Path) -> Path:
    import shutil

    shutil.copytree(source, folder)
    return folder


def _bad_head(source: str, folder: Path) -> Path:
    """The adapter with its classifier weight widened to 3 rows: the head no longer fits."""
    from safetensors.torch import load_file, save_file

    _copy_adapter(source, folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    key = next(k for k in weights if k.endswith("classifier.weight"))
    weights[key] = weights[key].repeat(2, 1)[:3]
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return folder


def _truncated(source: str, folder: Path) -> Path:
    _copy_adapter(source, folder)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return folder


@pytest.mark.parametrize(
    ("make", "extra", "fragments"),
    [
        (_bad_head, [], ["head weight classifier.bias", "has shape (2,)", "model's is (3,)"]),
        (_truncated, [], ["cannot read adapter weights"]),
        (None, ["--max-length", "1000"], ["max_length 1000", "128 positions", "[--max-length]"]),
        (None, ["--rank", "0"], ["rank must be positive", "[--rank]"]),
        (None, ["--resume"], []),
    ],
    ids=["head-shape", "corrupted-safetensors", "max-length", "rank", "resume-nothing"],
)
def test_score_errors(make, extra, fragments, cli_adapters, tmp_path, capsys):
    reference = str(cli_adapters[0])
    if make is not None:
        reference = str(make(reference, tmp_path / "reference"))
    data = tmp_path / "long.csv"
    long_text = " ".join(["word"] * 300)
    data.write_text(f"text,label\n{long_text},1\nshort one,0\n")
    out = tmp_path / "scores.parquet"
    rc = main(["score", str(data), "--reference", reference, "--out", str(out), *extra])
    captured = capsys.readouterr()
    if extra == ["--resume"]:  # resuming with nothing stored simply scores (long text: error)
        _assert_user_error(rc, captured.err, "max_length 512")
    else:
        _assert_user_error(rc, captured.err, *fragments)
    assert list(tmp_path.glob("scores.parquet*")) == []


def test_non_utf8_data(tiny_model, tmp_path, capsys):
    data = tmp_path / "latin1.csv"
    data.write_bytes("text,label\ncaf\xe9 cr\xe8me,1\n".encode("latin-1"))
    rc = main(["train", str(data), "--model", tiny_model("bert"), "--out", str(tmp_path / "a")])
    _assert_user_error(rc, capsys.readouterr().err, "not UTF-8")
    assert not (tmp_path / "a").exists()


def _interrupt_after(command: list[str], marker: str, timeout: float = 240) -> subprocess.Popen:
    """Run ``command``, send SIGINT once ``marker`` appears on its stderr, wait for it to end."""
    import signal
    import threading

    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        text=True,
        # A job started in the background (`cmd &`) inherits SIGINT ignored, and Python then
        # keeps ignoring it: give the child the default handler, as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[str] = []

    def watch() -> None:
        assert process.stderr is not None
        while chunk := process.stderr.read(1):
            seen.append(chunk)

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    deadline = __import__("time").monotonic() + timeout
    while marker not in "".join(seen):
        assert process.poll() is None, "finished before it could be interrupted: " + "".join(seen)
        assert __import__("time").monotonic() < deadline, "never reached " + marker
        __import__("time").sleep(0.05)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)  # generous: CI machines may be loaded
    except subprocess.TimeoutExpired:
        process.kill()
        reader.join(timeout=10)
        raise AssertionError(
            "still running 120 s after Ctrl-C; its stderr:\n" + "".join(seen)
        ) from None
    reader.join(timeout=10)
    process.stderr_text = "".join(seen)  # type: ignore[attr-defined]
    return process


def test_ctrl_c_while_training_exits_130_and_writes_nothing(tiny_model, tmp_path):
    rows = "\n".join(f"{'good ' * (i % 7 + 1)}film {i},{i % 2}" for i in range(4000))
    data = tmp_path / "big.csv"
    data.write_text("text,label\n" + rows + "\n")
    script = Path(sys.executable).with_name("repmatch")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "repmatch.cli"]
    out = tmp_path / "adapter"
    argv = ["train", str(data), "--model", tiny_model("bert"), "--epochs", "50", "--out", str(out)]
    process = _interrupt_after([*command, *argv], marker="train big")
    assert process.returncode == 130, process.stderr_text
    assert process.stderr_text.strip().splitlines()[-1] == "repmatch: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv"]


def test_every_command_refuses_an_output_another_run_is_writing(
    cli_adapters, tiny_model, tiny_data, tmp_path, capsys
):
    """One writer per output: score, train and datasets each refuse at once, naming the process."""
    data = str(tiny_data["single"])
    model = ["--model", tiny_model("bert"), *FAST_FLAGS]
    commands = {
        "scores.parquet": ["score", data, "--reference", str(cli_adapters[0]), "--quiet"],
        "adapter": ["train", data, *model],
        "matrix": ["datasets", data, str(tiny_data["topics"]), *model],
    }
    for name, argv in commands.items():
        out = tmp_path / name
        holder = hold_output_lock(out)
        try:
            rc = main([*argv, "--out", str(out)])
            _assert_user_error(rc, capsys.readouterr().err, f"process {holder.pid}")
            assert not out.exists()
        finally:
            holder.kill()
            holder.wait(timeout=30)
        assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err  # free after SIGKILL
        assert out.exists() and not (tmp_path / f".{name}.lock").exists()
