"""Atomic writes, run records and the chunk store's resume checks."""

from __future__ import annotations

import json
import os
import signal

import pyarrow as pa
import pytest

from conftest import hold_output_lock
from repmatch import __version__
from repmatch.artifacts import ChunkStore, atomic_path, exclusive_output, run_record, write_json
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
