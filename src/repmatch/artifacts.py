"""Outputs on disk: whole or absent, one writer at a time, run records, resumable chunk stores.

- One file (:func:`atomic_path`, :func:`write_json`): written under a temporary name unique to the
  writer in the same folder, flushed to the disk, then renamed into place (atomic on POSIX).
- Several files or folders that are one output (scores and their record, an adapter folder, a
  selection and its record, ...): :func:`output_set` stages every member in one hidden sibling
  folder, then commits them together (:class:`OutputSet`). A failure at any point leaves the
  previous output or nothing; a run killed while committing is rolled back by the next run that
  takes the same output's lock (:func:`exclusive_output`), which also removes staging folders
  left by killed runs.
- Errors of the filesystem (a full disk, a file where a folder should be, no permission, a folder
  that takes no new files such as ``/proc``) become one-line :class:`RepmatchError` naming the
  path and the cause (:func:`output_error`).

Every stage writes a run record (:func:`run_record`) next to its output: format, version, the
configuration and the data it used.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from repmatch import __version__
from repmatch.config import differences
from repmatch.errors import RepmatchError

RUN_FILE = "run.json"
"""The run record inside a chunk store, written with its first chunk."""

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ENOTDIR: "a file is in the way (a folder was expected there)",
    errno.EISDIR: "a folder is in the way (a file was expected there)",
    errno.EEXIST: "a file is in the way",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the filesystem is read-only",
    errno.ENAMETOOLONG: "the name is too long",
}


_ELSEWHERE = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS)
"""Causes that another location fixes."""


def output_error(path: str | Path, err: OSError) -> RepmatchError:
    """A one-line error for an ``OSError`` met while writing output ``path``: the cause in words."""
    if err.errno == errno.ENOENT:
        cause = _missing_folder(Path(path))
    else:
        cause = (
            (_CAUSES.get(err.errno) if err.errno is not None else None)
            or err.strerror
            or str(err)
            or type(err).__name__
        )
    fix = "; choose a writable location" if err.errno in _ELSEWHERE else ""
    return RepmatchError(f"cannot write {path}: {cause}{fix}")


def _missing_folder(path: Path) -> str:
    """The cause of ``ENOENT`` while writing ``path``: its folder cannot be made, or takes no new
    files (``/proc``), or vanished while being written."""
    folder = path.parent
    existing = next((p for p in folder.parents if p.is_dir()), None)
    if folder.is_dir() or existing is None:
        return f"folder {folder} does not accept new files"
    missing = next(p for p in [folder, *folder.parents] if p.parent == existing)
    return f"cannot create folder {missing} ({existing} does not accept new folders)"


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_folder(folder: Path, target: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(target, err) from None
    if not folder.is_dir():  # a file (or a link to one) of that name
        raise output_error(target, OSError(errno.ENOTDIR, "not a folder"))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (unique to this writer); once the block succeeds it
    is flushed to the disk and renamed to ``path``. An ``OSError`` becomes :func:`output_error`."""
    target = Path(path)
    _make_folder(target.parent, target)
    try:
        handle, name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
        )
    except OSError as err:
        raise output_error(target, err) from None
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, target)
        _fsync(target.parent)
    except OSError as err:
        raise output_error(target, err) from None
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: str | Path, payload: object) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2) + "\n")


_STAGE = ".repmatch-"
"""Staging folders of output ``out`` are named ``.<out name>.repmatch-XXXXXXXX`` beside it."""

_JOURNAL = "commit.json"
"""Inside a staging folder while its set is being committed: what to roll back."""


class OutputSet:
    """The members of one output (files or folders), staged, then committed together.

    Members are given by their final path, in commit order: give the run record last, so that
    a reader never finds a record without what it describes. :meth:`path` is where a member is
    written first; :meth:`remove` names a path that the new output no longer has.

    Committing moves each existing member aside into the staging folder, then the staged one
    into place, with a journal (``commit.json``) beside them: an error restores every previous
    member; a run killed in between is rolled back by :func:`recover`. Removing the journal
    is the commit point; the previous members are deleted after it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # the staging folder: new/<i>/, old/<i>/ and the journal
        self.members: list[tuple[Path, bool]] = []  # (final path, staged: else removed)

    def _slot(self, kind: str, index: int) -> Path:
        return self.folder / kind / str(index)

    def path(self, member: str | Path) -> Path:
        """Where to write ``member`` (a file or a folder) before the commit."""
        member = Path(member)
        slot = self._slot("new", len(self.members))
        slot.mkdir(parents=True)
        self.members.append((member, True))
        return slot / member.name

    def remove(self, member: str | Path) -> None:
        """``member`` is not part of the new output: deleted by the commit (if it exists)."""
        self.members.append((Path(member), False))

    def commit(self) -> None:
        """Flush the staged members to the disk, then swap them in (see the class docstring)."""
        for index, (member, staged) in enumerate(self.members):
            if staged and not os.path.lexists(self._slot("new", index) / member.name):
                raise RuntimeError(f"{member} was staged but never written")
        for path in self.folder.joinpath("new").rglob("*"):
            if path.is_file() and not path.is_symlink():
                _fsync(path)
        missing = {m.parent for m, _ in self.members if not m.parent.exists()}
        created = sorted({p for m in missing for p in [m, *m.parents] if not p.exists()})
        journal = {
            "members": [[os.path.abspath(member), staged] for member, staged in self.members],
            "created": [os.path.abspath(folder) for folder in created],
        }
        write_json(self.folder / _JOURNAL, journal)
        try:
            for folder in created:
                folder.mkdir(exist_ok=True)
            for index, (member, staged) in enumerate(self.members):
                if os.path.lexists(member):
                    self._slot("old", index).mkdir(parents=True)
                    os.replace(member, self._slot("old", index) / member.name)
                if staged:
                    os.replace(self._slot("new", index) / member.name, member)
            for parent in {member.parent for member, _ in self.members}:
                _fsync(parent)
            (self.folder / _JOURNAL).unlink()  # the commit point
        except BaseException:
            _roll_back(self.folder)
            raise


def _roll_back(folder: Path) -> None:
    """Undo the interrupted commit of staging folder ``folder``: every previous member back."""
    try:
        journal = json.loads((folder / _JOURNAL).read_text())
    except FileNotFoundError:
        return  # never started, or committed
    except (OSError, ValueError):
        journal = {}  # the journal itself was cut short: nothing was moved yet
    for index, (member, staged) in reversed(list(enumerate(journal.get("members", [])))):
        member = Path(member)
        new, old = folder / "new" / str(index) / member.name, folder / "old" / str(index)
        if staged and not os.path.lexists(new) and os.path.lexists(member):
            _delete(member)  # the new member, already in place
        if os.path.lexists(old / member.name):
            os.replace(old / member.name, member)
    for created in reversed(journal.get("created", [])):
        try:
            os.rmdir(created)  # a folder the commit made for its members, if still empty
        except OSError:
            pass
    (folder / _JOURNAL).unlink()


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _stages(out: Path) -> list[Path]:
    """The staging folders of output ``out`` (its own, or left by killed runs)."""
    pattern = re.compile(re.escape(f".{out.name}{_STAGE}") + r"[a-z0-9_]{8}")
    try:
        names = os.listdir(out.parent)
    except OSError:
        return []
    return [out.parent / name for name in names if pattern.fullmatch(name)]


def recover(out: str | Path) -> None:
    """Clean up after killed runs that wrote output ``out``: a commit cut short is rolled back
    (the previous output restored), staging folders removed. Call with ``out``'s lock held."""
    for folder in _stages(Path(out)):
        _roll_back(folder)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def output_set(out: str | Path) -> Iterator[OutputSet]:
    """Stage the members of output ``out`` (see :class:`OutputSet`); commit them when the block
    succeeds, else leave everything as it was. Hold ``out``'s lock (:func:`exclusive_output`).

    The members may be ``out`` itself and its siblings (a file and its record) or paths inside
    the folder ``out`` (``results.csv``, ...): on the same filesystem as ``out``'s parent.
    An ``OSError`` (a full disk, ...) becomes :func:`output_error` naming ``out``.
    """
    out = Path(out)
    _make_folder(out.parent, out)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{out.name}{_STAGE}", dir=out.parent))
    except OSError as err:
        raise output_error(out, err) from None
    outputs = OutputSet(folder)
    try:
        yield outputs
        outputs.commit()
    except OSError as err:
        raise output_error(out, err) from None
    except RepmatchError as err:  # an error naming a staged path: name the output's own instead
        message = str(err)
        for index, (member, _) in enumerate(outputs.members):
            message = message.replace(str(outputs._slot("new", index) / member.name), str(member))
        raise RepmatchError(message, field=err.field) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def exclusive_output(path: str | Path) -> Iterator[None]:
    """Only one run writes output ``path`` at a time: hold its lock for the block.

    The lock is ``fcntl.flock`` on a hidden file beside the output (``.<name>.lock``, holding
    the owner's process id), removed when the block ends. A second run is refused at once,
    naming that process; the operating system releases the lock when its owner exits in any way,
    SIGKILL included, so a lock file left by a dead run never blocks the next one. Once the lock
    is held, what killed runs left of ``path`` is cleaned up (:func:`recover`).
    """
    target = Path(path)
    lock_file = target.parent / f".{target.name}.lock"
    _make_folder(target.parent, target)
    handle = _acquire(lock_file, target)
    try:
        recover(target)
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
            raise output_error(target, err) from None
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


def record_notes(record: dict[str, Any]) -> list[str]:
    """The notes of a run record (e.g. scores of data of another task kind); of a record edited
    by hand, its text notes only."""
    notes = record.get("notes")
    return [notes] if isinstance(notes, str) else [n for n in notes or [] if isinstance(n, str)]


def record_path(out: Path) -> Path:
    """Where the run record of output file ``out`` goes: ``<out>.json``."""
    return out.with_name(out.name + ".json")


def check_record_slot(out: Path) -> None:
    """Refuse output file ``out`` when ``<out>.json``, where its run record goes, is a file that
    repmatch did not write (a user's JSON): it would be replaced without a word."""
    record_file = record_path(out)
    if not record_file.exists():
        return
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        record = None
    made = isinstance(record, dict) and str(record.get("format", "")).startswith("repmatch-")
    if not made:
        raise RepmatchError(
            f"{record_file}, where the run record of {out.name} goes, is not a repmatch record; "
            "refusing to replace it even with overwrite: choose another output"
        )


def _made_by(out: Path, kind: str) -> bool:
    """Whether ``out`` has the run record of a repmatch stage of format ``kind`` beside it."""
    try:
        record = json.loads(record_path(out).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == kind


_OTHER_FORMATS = (".csv", ".tsv", ".json", ".jsonl", ".gz", ".txt", ".html", ".xlsx")
"""Suffixes of formats other than Parquet: a streamed table is never written under one."""


class ChunkStore:
    """Finished chunks of a streamed table next to its output ``out``, and their final join.

    Chunks live in ``<out>.partial/chunk-NNNNN.parquet`` with the run record ``run.json``; a
    resumed run must have the same ``identity`` (configuration, data, reference), else it is
    refused with every difference named. ``finish`` writes ``out`` and ``<out>.json`` and removes
    the folder.

    Several processes may share one store (:mod:`repmatch.distributed`): chunks are named by
    their index alone, so each process writes and resumes the chunks it was given, whatever the
    number of processes of the earlier run. The main process checks the store (``check=True``)
    and alone writes ``run.json``; the others open it with ``check=False`` once it has.
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
        self.writes_run = check  # one process writes the run record
        if check:
            self._check(identity, resume=resume, overwrite=overwrite)

    def _check(self, identity: tuple[str, ...], *, resume: bool, overwrite: bool) -> None:
        out = self.out
        if out.is_dir():
            raise RepmatchError(f"output {out} is a folder; name a file such as scores.parquet")
        if out.suffix.lower() in _OTHER_FORMATS:  # Parquet bytes under a name that says otherwise
            stem = Path(out.stem)  # scores.jsonl.gz -> scores.jsonl -> scores
            base = stem.stem if stem.suffix.lower() in (".parquet", *_OTHER_FORMATS) else stem.name
            raise RepmatchError(
                f"output {out.name} names a {out.suffix} file, but the table is written as "
                f"Parquet; name it {base}.parquet",
                field="out",
            )
        check_record_slot(out)
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
        created = not self.folder.exists()
        try:
            run_file = self.folder / RUN_FILE
            if self.writes_run and not run_file.exists():
                write_json(run_file, self.run)
            with atomic_path(self._chunk(index)) as temporary:
                pq.write_table(table, temporary)
        except BaseException as err:
            finished = any(self.folder.glob("chunk-*.parquet"))
            if created and self.writes_run and not finished:
                shutil.rmtree(self.folder, ignore_errors=True)  # nothing to resume: no trace
            if finished and isinstance(err, RepmatchError):  # a full disk, ...
                raise self._resumable(err) from None
            raise

    def _resumable(self, err: RepmatchError) -> RepmatchError:
        """``err`` met while the finished chunks are kept: saying how to go on from them."""
        return RepmatchError(
            f"{err}; the finished chunks are kept in {self.folder}: once that is fixed, rerun "
            "with resume to finish",
            field="resume",
        )

    def finish(self, table: Any, run: dict) -> None:
        """Write the joined table and its record, and remove the chunks: one commit."""
        import pyarrow.parquet as pq

        try:
            with output_set(self.out) as outputs:
                pq.write_table(table, outputs.path(self.out))
                write_json(outputs.path(record_path(self.out)), run)
                outputs.remove(self.folder)
        except RepmatchError as err:
            raise self._resumable(err) from None
