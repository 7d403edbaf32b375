"""Issue 19, the cases its first adversarial pass left open, run through the CLI.

Each failed before its fix: a raw errno for an output folder that cannot hold files, "no label
column found" when the text column was pointed at the label column, "seeds must be distinct" for
``evaluate --seeds -1``, a partial folder left by a killed demo, a full disk on a later chunk of
``score`` without a word on ``--resume``, a pair-text task scored against a single-text reference
and a regression adapter compared with a classifier without a note.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import fail_at_rename
from repmatch import artifacts
from repmatch.cli import main
from repmatch.config import TrainConfig
from test_cli import FAST_FLAGS, _assert_user_error


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _train(tiny_data, tiny_model, data: str = "single") -> list[str]:
    return ["train", str(tiny_data[data]), "--model", tiny_model("bert"), *FAST_FLAGS]


# 1. an output folder that cannot hold files ----------------------------------------------------

needs_proc = pytest.mark.skipif(
    not Path("/proc/self").is_dir(), reason="needs Linux's /proc, a folder that takes no new files"
)


@needs_proc
@pytest.mark.parametrize(
    ("out", "cause"),
    [
        ("/proc/x", "folder /proc does not accept new files"),
        ("/proc/new/x", "cannot create folder /proc/new"),
    ],
)
def test_train_into_a_folder_that_takes_no_files(out, cause, tiny_data, tiny_model, capsys):
    rc = main([*_train(tiny_data, tiny_model), "--out", out])
    err = capsys.readouterr().err
    _assert_user_error(rc, err, f"cannot write {out}: {cause}", "choose a writable location")
    assert "No such file or directory" not in err
    assert not os.path.lexists(out)


@needs_proc
@pytest.mark.parametrize("heatmap", ["/proc/h.png", "/proc/new/h.png"])
def test_compare_heatmap_in_a_folder_that_takes_no_files(heatmap, trained_adapter, capsys):
    adapter = trained_adapter("bert")
    rc = main(["compare", adapter, adapter, "--heatmap", heatmap])
    err = capsys.readouterr().err
    _assert_user_error(rc, err, f"cannot write {heatmap}: ", "/proc", "choose a writable location")
    assert "No such file or directory" not in err
    assert not os.path.lexists(heatmap)


# 2. the text column pointed at the label or text column ----------------------------------------


@pytest.mark.parametrize(
    ("flag", "column", "fragments"),
    [
        ("--text-column", "label", ["text_column 'label' is the label column", "[--text-column]"]),
        (
            "--text-pair-column",
            "text",
            ["text_pair_column 'text' is the text column", "[--text-pair-column]"],
        ),
    ],
)
def test_a_text_column_that_is_another_role(
    flag, column, fragments, tiny_data, tiny_model, tmp_path, capsys
):
    rc = main([*_train(tiny_data, tiny_model), flag, column, "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    _assert_user_error(rc, err, "same column", *fragments)
    assert "column found" not in err
    assert not (tmp_path / "a").exists()


# 3. evaluate --seeds is a count -----------------------------------------------------------------


@pytest.mark.parametrize("count", ["-1", "0"])
def test_evaluate_seeds_is_a_count(count, tiny_data, tiny_model, capsys):
    single = str(tiny_data["single"])
    argv = ["evaluate", "--train", single, "--eval", single, "--model", tiny_model("bert")]
    rc = main([*argv, "--seeds", count, "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    _assert_user_error(rc, err, "N >= 1", "0..N-1", f"got {count}", "[--seeds]")
    assert "distinct" not in err


# 4. a demo stopped at any point leaves the previous output or nothing --------------------------


@pytest.fixture
def fast_demo(monkeypatch, tiny_model):
    """The demo trains the tiny BERT instead of the bundled model (seconds, not minutes)."""
    monkeypatch.setattr(
        "repmatch.demo.TrainConfig", functools.partial(TrainConfig, model=tiny_model("bert"))
    )


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def _earlier_demo(out: Path) -> None:
    from repmatch.demo import write_demo_record

    (out / "data").mkdir(parents=True)
    (out / "data" / "movies.csv").write_text("the earlier demo's data\n")
    write_demo_record(out)


def _demo(out: Path, *extra: str) -> int:
    return main(["demo", "--out", str(out), "--size", "40", "--quiet", "--device", "cpu", *extra])


@pytest.mark.parametrize("earlier", [False, True])
def test_a_killed_demo_leaves_the_previous_output_or_nothing(
    earlier, fast_demo, tmp_path, monkeypatch, capsys
):
    """SIGKILL after the adapters are trained: no cleanup runs (``rmtree`` and the rollback do
    nothing); the next run cleans what is left and writes the whole demo."""
    out = tmp_path / "demo"
    if earlier:
        _earlier_demo(out)
    before = _snapshot(tmp_path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("repmatch.demo.score_instances", killed)
        m.setattr("shutil.rmtree", lambda *args, **kwargs: None)
        m.setattr(artifacts, "_roll_back", lambda folder: None)
        assert _demo(out, "--overwrite") == 130
    assert {k: v for k, v in _snapshot(tmp_path).items() if ".repmatch-" not in k} == before
    assert _demo(out, "--overwrite") == 0
    assert "caught" not in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # the stale staging folder removed
    assert (out / "demo.json").is_file() and (out / "instance-scores.csv").is_file()
    assert "earlier demo" not in (out / "data" / "movies.csv").read_text()
    texts = [p.read_text() for p in out.rglob("*.json")]
    assert not any(".repmatch-" in text for text in texts)  # records name the final paths
    assert any(str(out / "data" / "movies.csv") in text for text in texts)


@pytest.mark.parametrize("n", [0, 1])
def test_a_demo_failing_at_a_commit_point_keeps_the_earlier_one(
    n, fast_demo, tmp_path, monkeypatch, capsys
):
    """Renames of the demo folder's commit (counted from its start, after the adapters' and the
    matrix's own commits inside the staged folder): 0 the earlier demo aside, 1 the new one in."""
    out = tmp_path / "demo"
    _earlier_demo(out)
    before = _snapshot(tmp_path)
    armed: dict[str, list[str]] = {}  # the renames of the demo folder's commit
    commit = artifacts.OutputSet.commit

    def failing_commit(outputs):
        if [member for member, _ in outputs.members] == [out]:
            armed["calls"] = fail_at_rename(monkeypatch, n)
        return commit(outputs)

    monkeypatch.setattr(artifacts.OutputSet, "commit", failing_commit)
    rc = _demo(out, "--overwrite")
    monkeypatch.undo()
    assert armed.get("calls", []).index("failed") == n
    _assert_user_error(rc, capsys.readouterr().err.strip().splitlines()[-1], f"cannot write {out}")
    assert _snapshot(tmp_path) == before


# 5. a full disk on a later chunk of score --------------------------------------------------------


@pytest.mark.parametrize(
    ("full_at", "failed", "kept"),
    [(2, "s.parquet.partial/chunk-00001.parquet", 1), (5, "s.parquet", 4)],
    ids=["second-chunk", "joined-table"],
)
def test_a_full_disk_on_a_later_chunk_says_how_to_resume(
    full_at, failed, kept, tiny_data, trained_adapter, tmp_path, monkeypatch, capsys
):
    """40 instances in chunks of 10: Parquet writes 1-4 are the chunks, 5 the joined table."""
    argv = ["score", str(tiny_data["single"]), "--reference", trained_adapter("bert")]
    argv += ["--chunk-size", "10", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "whole.parquet")]) == 0
    capsys.readouterr()
    out = tmp_path / "s.parquet"
    real, written = pq.write_table, []

    def full_disk_at(table, where, *args, **kwargs):
        written.append(where)
        if len(written) == full_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk_at)
    rc = main([*argv, "--out", str(out)])
    monkeypatch.undo()
    partial = tmp_path / "s.parquet.partial"
    _assert_user_error(
        rc,
        capsys.readouterr().err,
        f"cannot write {tmp_path / failed}: no space left on the device",
        f"finished chunks are kept in {partial}",
        "[--resume]",
    )
    assert not out.exists()
    chunks = [f"chunk-{index:05d}.parquet" for index in range(kept)]
    assert sorted(os.listdir(partial)) == [*chunks, "run.json"]
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert f"read {10 * kept} back from the interrupted run" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "whole.parquet"))


# 6. task kinds: scored data against its reference, adapters of regression and classification ----


@pytest.mark.parametrize(("data", "trained_on"), [("pair", "single"), ("single", "pair")])
def test_score_notes_data_of_another_task_kind(
    data, trained_on, tiny_data, trained_adapter, tmp_path, capsys
):
    """Single text against a pair reference (an unrelated-task control) is scored, with a note
    on stderr and in the record."""
    reference = trained_adapter("bert", data=trained_on)
    out = tmp_path / "s.parquet"
    argv = ["score", str(tiny_data[data]), "--reference", reference, "--labels", "0", "1"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    kinds = {"single": "classification", "pair": "pair-classification"}
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert f"{data} is {kinds[data]} data" in notes[0]
    assert f"{reference} was trained on {kinds[trained_on]} data" in notes[0]
    assert json.loads((tmp_path / "s.parquet.json").read_text())["notes"] == [notes[0][6:]]
    assert pd.read_parquet(out)["score"].notna().all()


def test_score_refuses_classification_data_against_a_regression_reference(
    tiny_data, trained_adapter, tmp_path, capsys
):
    reference = trained_adapter("bert", data="regression")
    out = tmp_path / "s.parquet"
    rc = main(
        ["score", str(tiny_data["single"]), "--reference", reference, "--quiet", "--out", str(out)]
    )
    _assert_user_error(
        rc, capsys.readouterr().err, "is classification data", "was trained on regression data"
    )
    assert list(tmp_path.iterdir()) == []


def test_compare_notes_a_regression_adapter_against_a_classifier(trained_adapter, capsys):
    single, pair = trained_adapter("bert"), trained_adapter("bert", data="pair")
    assert main(["compare", single, pair]) == 0  # another task, other classes: the paper's use
    assert "note:" not in capsys.readouterr().err
    regression = trained_adapter("bert", data="regression")
    assert main(["compare", single, regression]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert f"{regression} is regression and {single} is classification" in notes[0]


def test_datasets_notes_regression_beside_classification(tiny_data, tiny_model, tmp_path, capsys):
    argv = ["datasets", str(tiny_data["single"]), str(tiny_data["regression"])]
    rc = main([*argv, "--model", tiny_model("bert"), *FAST_FLAGS, "--out", str(tmp_path / "m")])
    assert rc == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert "regression is regression and single is classification" in notes[0]


@pytest.mark.parametrize(
    ("command", "trains", "kept"),
    [
        ("evaluate", "repmatch.evaluation._fine_tune_full", "runs"),
        ("datasets", "repmatch.similarity.train_or_reuse", "adapters"),
    ],
)
def test_an_interrupted_run_says_how_to_go_on(
    command, trains, kept, tiny_data, tiny_model, tmp_path, monkeypatch, capsys
):
    """Fourth pass: Ctrl-C or SIGTERM in the second training of ``evaluate``/``datasets`` said
    only "interrupted", though the finished runs are kept and a rerun goes on from them."""
    single, topics, out = str(tiny_data["single"]), str(tiny_data["topics"]), tmp_path / "out"
    model = ["--model", tiny_model("bert"), "--quiet", "--out", str(out)]
    if command == "evaluate":
        argv = ["evaluate", "--train", single, "--eval", topics, "--seeds", "2", "--epochs", "1"]
    else:
        argv = ["datasets", single, topics, *FAST_FLAGS]
    module, name = trains.rsplit(".", 1)
    real, calls = getattr(__import__(module, fromlist=[name]), name), []

    def second_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(trains, second_interrupted)
        assert main([*argv, *model]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "repmatch: interrupted",
        f"repmatch: finished {kept} are kept in {out / kept}; rerun the same command to go on "
        "from them",
    ]
    assert main([*argv, *model]) == 0
