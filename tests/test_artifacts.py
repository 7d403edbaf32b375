"""Atomic writes, run records and the chunk store's resume checks."""

from __future__ import annotations

import errno
import json
import os
import signal

import pyarrow as pa
import pytest

from conftest import fail_at_rename, hold_output_lock
from repmatch import __version__, artifacts
from repmatch.artifacts import (
    ChunkStore,
    atomic_path,
    exclusive_output,
    output_error,
    output_set,
    record_path,
    run_record,
    write_json,
)
from repmatch.errors import RepmatchError


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash")
    assert os.listdir(tmp_path) == []


def test_atomic_path_replaces(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert os.listdir(target.parent) == ["out.json"]


def test_run_record_has_format_and_version():
    record = run_record("scores", x=1)
    assert record == {"format": "repmatch-scores/1", "repmatch_version": __version__, "x": 1}


def _store(tmp_path, run, **kw):
    return ChunkStore(tmp_path / "s.parquet", run, ("score", "reference"), **kw)


def test_resume_names_every_difference(tmp_path):
    run = {"score": {"rank": 1, "lr": 0.001}, "reference": "/a"}
    store = _store(tmp_path, run, resume=False, overwrite=False)
    store.write(0, pa.table({"id": [1]}))
    changed = {"score": {"rank": 4, "lr": 0.001}, "reference": "/b"}
    with pytest.raises(RepmatchError) as caught:
        _store(tmp_path, changed, resume=True, overwrite=False)
    message = str(caught.value)
    assert "score.rank: 1 -> 4" in message and "reference: '/a' -> '/b'" in message
    assert "lr" not in message
    resumed = _store(tmp_path, run, resume=True, overwrite=False)
    assert resumed.done(0) and not resumed.done(1)


def test_unfinished_run_needs_resume(tmp_path):
    run = {"score": {}, "reference": "/a"}
    _store(tmp_path, run, resume=False, overwrite=False).write(0, pa.table({"id": [1]}))
    with pytest.raises(RepmatchError, match="unfinished run") as caught:
        _store(tmp_path, run, resume=False, overwrite=False)
    assert caught.value.field == "resume"


def test_corrupted_record_refused(tmp_path):
    run = {"score": {}, "reference": "/a"}
    _store(tmp_path, run, resume=False, overwrite=False).write(0, pa.table({"id": [1]}))
    (tmp_path / "s.parquet.partial" / "run.json").write_text("{not json")
    with pytest.raises(RepmatchError, match="missing or corrupted"):
        _store(tmp_path, run, resume=True, overwrite=False)


def test_output_folder_refused(tmp_path):
    (tmp_path / "s.parquet").mkdir()
    with pytest.raises(RepmatchError, match="is a folder"):
        _store(tmp_path, {}, resume=False, overwrite=True)


def test_second_writer_is_refused_naming_the_first(tmp_path):
    target = tmp_path / "scores.parquet"
    with exclusive_output(target):
        with pytest.raises(RepmatchError, match=rf"another repmatch run \(process {os.getpid()}\)"):
            with exclusive_output(target):
                pass
    assert os.listdir(tmp_path) == []  # the lock file goes with the lock
    with exclusive_output(target):  # and the output is free again
        pass


def test_a_killed_writer_never_blocks(tmp_path):
    target = tmp_path / "adapter"
    holder = hold_output_lock(target)
    try:
        with pytest.raises(RepmatchError, match=f"process {holder.pid}"):
            with exclusive_output(target):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (tmp_path / ".adapter.lock").exists()  # left behind by SIGKILL ...
    with exclusive_output(target):  # ... but not locked any more
        pass


def test_overwrite_replaces_only_our_own_outputs(tmp_path):
    out = tmp_path / "s.parquet"
    out.write_text("a user's file")
    run = run_record("scores")
    with pytest.raises(RepmatchError, match="not written by repmatch"):
        _store(tmp_path, run, resume=False, overwrite=True)
    write_json(tmp_path / "s.parquet.json", run_record("adapter"))  # another stage's record
    with pytest.raises(RepmatchError, match="not written by repmatch"):
        _store(tmp_path, run, resume=False, overwrite=True)
    write_json(tmp_path / "s.parquet.json", run)
    _store(tmp_path, run, resume=False, overwrite=True)  # ours: may be replaced
    assert out.read_text() == "a user's file"  # nothing touched before the run finishes


# --------------------------------------------------------------------------------------------
# Outputs of several files: staged, committed together, rolled back


def _snapshot(folder) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def _previous_output(tmp_path):
    """An output file with its record and a side folder, as an earlier run left them."""
    out = tmp_path / "s.parquet"
    out.write_text("old data")
    record_path(out).write_text('{"old": true}')
    (tmp_path / "s.parquet.partial").mkdir()
    (tmp_path / "s.parquet.partial" / "chunk-00000.parquet").write_text("old chunk")
    return out


def _commit_new(out):
    with output_set(out) as outputs:
        outputs.path(out).write_text("new data")
        write_json(outputs.path(record_path(out)), {"new": True})
        outputs.remove(out.with_name(out.name + ".partial"))


def test_a_set_is_committed_together_record_last(tmp_path, monkeypatch):
    out = _previous_output(tmp_path)
    calls = fail_at_rename(monkeypatch, n=99)
    _commit_new(out)
    monkeypatch.undo()
    placed = [call.split(" -> ")[1] for call in calls]
    assert placed.index("s.parquet.json") > placed.index("s.parquet")  # the record last
    assert _snapshot(tmp_path) == {
        "s.parquet": b"new data",
        "s.parquet.json": b'{\n  "new": true\n}\n',
    }


COMMIT_RENAMES = 5
"""Renames of ``_commit_new`` on a previous output: for each of data, record and the side
folder, the previous one aside, then the new one in place (none for the removed folder)."""


@pytest.mark.parametrize("n", range(COMMIT_RENAMES))
def test_a_failure_at_any_commit_point_leaves_the_previous_output(tmp_path, monkeypatch, n):
    out = _previous_output(tmp_path)
    before = _snapshot(tmp_path)
    calls = fail_at_rename(monkeypatch, n)
    with pytest.raises(RepmatchError, match=f"cannot write {out}: Input/output error"):
        _commit_new(out)
    assert calls.index("failed") == n  # then the rollback's renames
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before  # no new file, no staging folder: as it was


def test_a_commit_past_the_last_rename_is_whole(tmp_path, monkeypatch):
    out = _previous_output(tmp_path)
    calls = fail_at_rename(monkeypatch, n=99)
    _commit_new(out)
    assert len(calls) == COMMIT_RENAMES


@pytest.mark.parametrize("n", range(COMMIT_RENAMES))
def test_a_run_killed_while_committing_is_rolled_back_by_the_next(tmp_path, monkeypatch, n):
    """SIGKILL between two renames: no rollback runs; the next writer of the output restores
    the previous output before doing anything."""
    out = _previous_output(tmp_path)
    before = _snapshot(tmp_path)
    monkeypatch.setattr(artifacts, "_roll_back", lambda folder: None)
    monkeypatch.setattr(artifacts.shutil, "rmtree", lambda *args, **kwargs: None)
    fail_at_rename(monkeypatch, n, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _commit_new(out)
    monkeypatch.undo()
    assert _snapshot(tmp_path) != before  # a mix, and the staging folder
    with exclusive_output(out):
        assert _snapshot(tmp_path) == before | {".s.parquet.lock": f"{os.getpid()}\n".encode()}
    assert _snapshot(tmp_path) == before


def test_stale_staging_folders_are_removed_and_others_left_alone(tmp_path):
    out = tmp_path / "s.parquet"
    stale = tmp_path / ".s.parquet.repmatch-abcd1234"
    (stale / "new" / "0").mkdir(parents=True)
    (stale / "new" / "0" / "s.parquet").write_text("half")
    other = tmp_path / ".s.parquet.json.repmatch-abcd1234"  # another output's
    other.mkdir()
    with exclusive_output(out):
        pass
    assert sorted(os.listdir(tmp_path)) == [other.name]


def test_an_adapter_swap_keeps_the_old_folder_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    """--overwrite of a folder: moved aside, then the new one renamed in; a failure between the
    two (the old `rmtree` + `rename` lost both) puts the old one back."""
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "weights").write_text("old")
    calls = fail_at_rename(monkeypatch, n=1)  # 0: the old folder aside, 1: the new one in place
    with pytest.raises(RepmatchError, match="Input/output error"):
        with output_set(out) as outputs:
            staged = outputs.path(out)
            staged.mkdir()
            (staged / "weights").write_text("new")
    assert calls == ["adapter -> adapter", "failed", "adapter -> adapter"]  # aside, back
    monkeypatch.undo()
    assert _snapshot(tmp_path) == {"adapter": None, "adapter/weights": b"old"}


def test_temporary_names_are_unique_per_writer_and_flushed_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd)
    )
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1"  # the last rename wins, whole
    assert str(second) in synced and str(first) in synced
    assert os.listdir(tmp_path) == ["out.json"]


def test_the_run_record_of_a_shared_store_is_written_by_the_checking_process(tmp_path):
    run = {"format": "repmatch-scores/1"}
    other = ChunkStore(tmp_path / "s.parquet", run, (), resume=False, overwrite=False, check=False)
    other.write(1, pa.table({"id": [1]}))
    assert sorted(os.listdir(tmp_path / "s.parquet.partial")) == ["chunk-00001.parquet"]
    main = ChunkStore(tmp_path / "s.parquet", run, (), resume=True, overwrite=False, check=False)
    main.writes_run = True
    main.write(0, pa.table({"id": [0]}))
    assert json.loads((tmp_path / "s.parquet.partial" / "run.json").read_text()) == run


def test_a_first_chunk_that_cannot_be_written_leaves_no_trace(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    store = _store(tmp_path, {"score": {}, "reference": "/a"}, resume=False, overwrite=False)
    with pytest.raises(
        RepmatchError, match="s.parquet.partial/chunk-00000.parquet: no space left on the device"
    ):
        store.write(0, pa.table({"id": [1]}))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
        (FileExistsError(errno.EEXIST, "File exists"), "a file is in the way"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), "a file is in the way (a folder"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "the filesystem is read-only"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
    ],
)
def test_output_errors_name_the_path_and_the_cause(error, cause):
    assert str(output_error("out/x.parquet", error)).startswith(
        f"cannot write out/x.parquet: {cause}"
    )
