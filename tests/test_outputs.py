"""Every output whole or absent, through the command line.

A failure injected at the commit points of each command's output (the previous output moved
aside but the new one not yet in place; one file of a set in place, the next not) leaves the
previous output. A full disk, a corrupt gzip input, a record field of the wrong type, an
unwritable output path: one line naming the path and the cause, exit 2, nothing new left.
"""

from __future__ import annotations

import errno
import gzip
import json
import shutil
from pathlib import Path

import pytest

from conftest import FAST_TRAIN, fail_at_rename
from repmatch.cli import main
from repmatch.errors import RepmatchError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN_FLAGS = [f"--{key.replace('_', '-')}={value}" for key, value in FAST_TRAIN.items()]


def _assert_user_error(rc: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("repmatch: error: "), err
    assert all(fragment in lines[0] for fragment in fragments), err


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) with its bytes (None for a folder)."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_model, tiny_data, trained_adapter):
    """One output of every command that writes several files, in one folder; and for each, the
    command line that writes it again over the previous one."""
    folder = tmp_path_factory.mktemp("outputs")
    data, model = str(tiny_data["single"]), tiny_model("bert")
    train = ["--model", model, *TRAIN_FLAGS]
    reference = trained_adapter("bert")
    commands = {
        "adapter": [
            "train", data, *train, "--quiet", "--overwrite", "--out", str(folder / "adapter"),
        ],
        "scores": [
            "score", data, "--reference", reference, "--quiet", "--overwrite",
            "--out", str(folder / "scores.parquet"),
        ],
        "selection": [
            "select", str(folder / "scores.parquet"), "--top", "10", "--overwrite",
            "--out", str(folder / "top.jsonl"),
        ],
        "report": [
            "report", str(folder / "scores.parquet"), "--overwrite",
            "--out", str(folder / "report.html"),
        ],
        "overlap": [
            "overlap", str(tiny_data["pair"]), "--overwrite", "--out", str(folder / "overlap"),
        ],
        "evaluation": [
            "evaluate", "--train", str(folder / "top.jsonl"), "--eval", data, "--model", model,
            "--epochs", "1", "--seeds", "1", "--quiet", "--out", str(folder / "evaluation"),
        ],
        "matrix": [
            "datasets", data, str(tiny_data["topics"]), *train, "--quiet",
            "--out", str(folder / "matrix"),
        ],
    }  # fmt: skip
    for argv in commands.values():
        assert main(argv) == 0
    return folder, commands


@pytest.mark.parametrize(
    ("name", "n"),
    [
        ("adapter", 1),  # the old folder moved aside, the new one not yet in its place
        ("scores", 1),
        ("scores", 2),  # the new scores in place, the old record not yet moved
        ("selection", 1),
        ("selection", 3),  # the new rows in place, the old record aside, the new one not in
        ("report", 2),
        ("overlap", 3),
        ("evaluation", 2),
        ("matrix", 4),
    ],
)
def test_a_failure_while_committing_leaves_the_previous_output(
    written, name, n, monkeypatch, capsys
):
    folder, commands = written
    before = _snapshot(folder)
    capsys.readouterr()
    calls = fail_at_rename(monkeypatch, n)
    rc = main(commands[name])
    monkeypatch.undo()
    assert calls.index("failed") == n, calls
    _assert_user_error(rc, capsys.readouterr().err, "cannot write", "Input/output error")
    after = _snapshot(folder)
    if name == "scores":  # the chunks of the failed run stay, to be resumed
        after = {k: v for k, v in after.items() if not k.startswith("scores.parquet.partial")}
        shutil.rmtree(folder / "scores.parquet.partial")
    assert after == before


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("command", ["score", "select", "report", "overlap"])
def test_a_full_disk_is_one_line_and_leaves_nothing(
    command, written, tiny_data, trained_adapter, tmp_path, monkeypatch, capsys
):
    import pyarrow.parquet as pq

    scores = written[0] / "scores.parquet"
    out, argv, write = {
        "score": (
            tmp_path / "s.parquet",
            ["score", str(tiny_data["single"]), "--reference", trained_adapter("bert"), "--quiet"],
            (pq, "write_table"),
        ),
        "select": (
            tmp_path / "top.csv",
            ["select", str(scores), "--top", "5"],
            (Path, "write_bytes"),
        ),
        "report": (tmp_path / "r.html", ["report", str(scores)], (Path, "write_text")),
        "overlap": (tmp_path / "o", ["overlap", str(tiny_data["pair"])], (gzip.GzipFile, "write")),
    }[command]
    monkeypatch.setattr(*write, _full_disk)
    rc = main([*argv, "--out", str(out)])
    monkeypatch.undo()
    _assert_user_error(rc, capsys.readouterr().err, f"{out}", "no space left on the device")
    assert list(tmp_path.iterdir()) == []


def test_an_output_under_a_regular_file_is_refused(written, tiny_data, tmp_path, capsys):
    folder, commands = written
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    adapter = str(folder / "adapter")
    argvs = [
        [*commands["adapter"][:-2], "--out", str(blocker / "adapter")],
        [*commands["scores"][:-2], "--out", str(blocker / "s.parquet")],
        [*commands["selection"][:-2], "--out", str(blocker / "top.jsonl")],
        [*commands["report"][:-2], "--out", str(blocker / "r.html")],
        [*commands["overlap"][:-2], "--out", str(blocker / "o")],
        [*commands["evaluation"][:-2], "--out", str(blocker / "e")],
        [*commands["matrix"][:-2], "--out", str(blocker / "m")],
        ["compare", adapter, adapter, "--heatmap", str(blocker / "grids.png")],
    ]
    for argv in argvs:
        rc = main(argv)
        _assert_user_error(rc, capsys.readouterr().err, str(blocker), "a file is in the way")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"] and blocker.read_text() == "mine"


def test_an_unwritable_heatmap_path_is_refused(written, tmp_path, capsys):
    adapter = str(written[0] / "adapter")
    rc = main(["compare", adapter, adapter, "--heatmap", str(tmp_path / "grids.xyz")])
    _assert_user_error(rc, capsys.readouterr().err, "grids.xyz", "image format")
    rc = main(["compare", adapter, adapter, "--heatmap", "/proc/grids.png"])
    _assert_user_error(rc, capsys.readouterr().err, "cannot write /proc/grids.png")
    assert list(tmp_path.iterdir()) == []


def test_heatmaps_with_a_shuffled_baseline_are_written_together(
    written, tmp_path, monkeypatch, capsys
):
    adapter = str(written[0] / "adapter")
    argv = ["compare", adapter, adapter, "--shuffled-baseline", "--heatmap"]
    assert main([*argv, str(tmp_path / "grids.png")]) == 0
    before = _snapshot(tmp_path)
    assert sorted(before) == ["grids-shuffled.png", "grids.png"]
    fail_at_rename(monkeypatch, 2)  # the new grids in place, the old shuffled ones aside
    rc = main([*argv, str(tmp_path / "grids.png"), "--overwrite"])
    _assert_user_error(rc, capsys.readouterr().err, "grids.png", "Input/output error")
    assert _snapshot(tmp_path) == before


def test_corrupt_gzip_input_is_one_line(tiny_model, tiny_data, trained_adapter, tmp_path, capsys):
    packed = gzip.compress(Path(tiny_data["single"]).read_bytes())
    damaged = tmp_path / "damaged.csv.gz"
    damaged.write_bytes(packed[:40] + bytes(b ^ 0xFF for b in packed[40:80]) + packed[80:])
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(packed[:-30])
    out = tmp_path / "out"
    rc = main(["train", str(damaged), "--model", tiny_model("bert"), "--quiet", "--out", str(out)])
    _assert_user_error(rc, capsys.readouterr().err, "damaged.csv.gz", "gzip stream is corrupted")
    argv = ["score", str(cut), "--reference", trained_adapter("bert"), "--quiet", "--out", str(out)]
    _assert_user_error(main(argv), capsys.readouterr().err, "cut.csv.gz", "cut short")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.csv.gz", "damaged.csv.gz"]


def test_a_record_field_of_the_wrong_type_is_one_line(
    written, tiny_data, trained_adapter, tmp_path, capsys
):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_adapter("bert"), adapter)
    record = json.loads((adapter / "repmatch.json").read_text())
    (adapter / "repmatch.json").write_text(json.dumps(record | {"label_names": 2}))
    argv = ["score", str(tiny_data["single"]), "--reference", str(adapter), "--quiet"]
    rc = main([*argv, "--out", str(tmp_path / "s.parquet")])
    _assert_user_error(rc, capsys.readouterr().err, "repmatch.json", "'label_names'", "a list")

    selection = written[0] / "top.jsonl"
    edited = tmp_path / "top.jsonl"
    shutil.copy(selection, edited)
    record = json.loads(Path(f"{selection}.json").read_text())
    Path(f"{edited}.json").write_text(json.dumps(record | {"columns": "text"}))
    evaluate = written[1]["evaluation"][:-2]
    evaluate[evaluate.index("--train") + 1] = str(edited)
    rc = main([*evaluate, "--out", str(tmp_path / "e")])
    _assert_user_error(rc, capsys.readouterr().err, "top.jsonl.json", "'columns'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "top.jsonl", "top.jsonl.json"]


def test_a_failed_demo_leaves_no_folder(tmp_path, monkeypatch):
    import repmatch.demo as demo

    def fail(*args, **kwargs):
        raise RepmatchError("stopped")

    monkeypatch.setattr(demo, "dataset_similarity", fail)
    with pytest.raises(RepmatchError, match="stopped"):
        demo.run_demo(tmp_path / "demo", progress=False)
    assert list(tmp_path.iterdir()) == []
