"""Outputs on disk: atomic writes, run records, and the chunk store that lets a run resume.

Every file is written under a temporary name in the same folder and renamed into place when
complete (an atomic rename on POSIX filesystems), so a crash never leaves a half-written one.
Every stage writes a run record (:func:`run_record`) next to its output: format, version, the
configuration and the data it used.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from repmatch import __version__
from repmatch.config import differences
from repmatch.errors import RepmatchError

RUN_FILE = "run.json"
"""The run record inside a chunk store, written with its first chunk."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp{target.suffix}")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: str | Path, payload: object) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2) + "\n")


@contextmanager
def exclusive_output(path: str | Path) -> Iterator[None]:
    """Only one run writes output ``path`` at a time: hold its lock for the block.

    The lock is ``fcntl.flock`` on a hidden file beside the output (``.<name>.lock``, holding
    the owner's process id), removed when the block ends. A second run is refused at once,
    naming that process; the operating system releases the lock when its owner exits in any way,
    SIGKILL included, so a lock file left by a dead run never blocks the next one.
    """
    target = Path(path)
    lock_file = target.parent / f".{target.name}.lock"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RepmatchError(f"cannot write output {target}: {err.strerror or err}") from None
    handle = _acquire(lock_file, target)
    try:
        yield
    finally:
        lock_file.unlink(missing_ok=True)  # before releasing: a waiting opener re-checks the inode
        handle.close()


def _acquire(lock_file: Path, target: Path) -> IO[str]:
    """Open and lock ``lock_file``; the open file, holding this process id."""
    while True:
        try:
            handle = open(lock_file, "a+")  # noqa: SIM115 - closed by exclusive_output
        except OSError as err:
            raise RepmatchError(f"cannot write output {target}: {err.strerror or err}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RepmatchError(
                f"{target} is being written by another repmatch run (process {holder}); wait "
                "for it to finish or choose another output"
            ) from None
        try:
            current = os.stat(lock_file).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(handle.fileno()).st_ino:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()  # the previous owner removed this file as we locked it: open the new one


def run_record(kind: str, **fields: Any) -> dict[str, Any]:
    """The record of one run of stage ``kind`` (``adapter``, ``scores``, ``matrix``, ...)."""
    return {"format": f"repmatch-{kind}/1", "repmatch_version": __version__, **fields}


def data_record(examples: Any) -> dict[str, Any]:
    """What a run used as data (:class:`~repmatch.data.Examples`): spec, name, fingerprint, size."""
    return {
        "data": examples.spec.to_record() if examples.spec is not None else None,
        "data_name": examples.name,
        "data_fingerprint": examples.fingerprint(),
        "num_examples": len(examples),
    }


def record_path(out: Path) -> Path:
    """Where the run record of output file ``out`` goes: ``<out>.json``."""
    return out.with_name(out.name + ".json")


def _made_by(out: Path, kind: str) -> bool:
    """Whether ``out`` has the run record of a repmatch stage of format ``kind`` beside it."""
    try:
        record = json.loads(record_path(out).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == kind


class ChunkStore:
    """Finished chunks of a streamed table next to its output ``out``, and their final join.

    Chunks live in ``<out>.partial/chunk-NNNNN.parquet`` with the run record ``run.json``; a
    resumed run must have the same ``identity`` (configuration, data, reference), else it is
    refused with every difference named. ``finish`` writes ``out`` and ``<out>.json`` and removes
    the folder.

    Several processes may share one store (:mod:`repmatch.distributed`): chunks are named by
    their index alone, so each process writes and resumes the chunks it was given, whatever the
    number of processes of the earlier run. The main process checks the store (``check=True``);
    the others open it with ``check=False`` once it has.
    """

    def __init__(
        self,
        out: Path,
        run: dict,
        identity: tuple[str, ...],
        *,
        resume: bool,
        overwrite: bool,
        check: bool = True,
    ) -> None:
        self.out = out
        self.folder = out.with_name(out.name + ".partial")
        self.run = run
        if check:
            self._check(identity, resume=resume, overwrite=overwrite)

    def _check(self, identity: tuple[str, ...], *, resume: bool, overwrite: bool) -> None:
        out = self.out
        if out.is_dir():
            raise RepmatchError(f"output {out} is a folder; name a file such as scores.parquet")
        if out.exists() and not overwrite:
            raise RepmatchError(
                f"{out} already exists; set overwrite to replace it"
                + (" (this run is already complete)" if resume else ""),
                field="overwrite",
            )
        if out.exists() and not _made_by(out, self.run["format"]):
            raise RepmatchError(
                f"{out} was not written by repmatch (no run record {out.name}.json of the same "
                "kind beside it); refusing to replace it even with overwrite: choose another output"
            )
        if self.folder.exists() and not resume:
            raise RepmatchError(
                f"an unfinished run is stored in {self.folder}; resume it to finish it, "
                "or delete that folder to start over",
                field="resume",
            )
        if resume and self.folder.exists():
            self._check_same_run(identity)

    def _check_same_run(self, identity: tuple[str, ...]) -> None:
        run_file = self.folder / RUN_FILE
        try:
            stored = json.loads(run_file.read_text())
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError):
            raise RepmatchError(
                f"cannot resume: {run_file} is missing or corrupted; delete {self.folder} to "
                "start over"
            ) from None
        changed = []
        for key in identity:
            old, new = stored.get(key), self.run.get(key)
            if old == new:
                continue
            if isinstance(old, dict) and isinstance(new, dict):
                changed += [f"{key}.{line}" for line in differences(old, new)]
            else:
                changed.append(f"{key}: {old!r} -> {new!r}")
        if changed:
            raise RepmatchError(
                f"cannot resume the run stored in {self.folder}: it differs in "
                + "; ".join(changed)
                + "; rerun with the same settings, or delete the folder to start over"
            )

    def _chunk(self, index: int) -> Path:
        return self.folder / f"chunk-{index:05d}.parquet"

    def done(self, index: int) -> bool:
        return self._chunk(index).exists()

    def read(self, index: int) -> Any:
        """The Arrow table of a finished chunk."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(self._chunk(index))
        except (OSError, pa.ArrowException) as err:
            raise RepmatchError(
                f"chunk file {self._chunk(index)} is corrupted ({err}); delete that file and "
                "resume to recompute only it"
            ) from None

    def write(self, index: int, table: Any) -> None:
        """Save one finished chunk (an Arrow table), atomically."""
        import pyarrow.parquet as pq

        # The folder is created with the first chunk, so a run refused before computing anything
        # (bad reference, labels, ...) leaves nothing behind that would block a corrected rerun.
        run_file = self.folder / RUN_FILE
        if not run_file.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(run_file, self.run)
        with atomic_path(self._chunk(index)) as temporary:
            pq.write_table(table, temporary)

    def finish(self, table: Any, run: dict) -> None:
        """Write the joined table and its record; remove the chunks."""
        import pyarrow.parquet as pq

        with atomic_path(self.out) as temporary:
            pq.write_table(table, temporary)
        write_json(record_path(self.out), run)
        shutil.rmtree(self.folder)
