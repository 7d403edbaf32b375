"""Building the page for the runs given (each kind draws its sections, in the order of
:data:`~repmatch.report.kinds.KINDS`) and writing it, atomically, with its run record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from repmatch import distributed
from repmatch.artifacts import (
    check_record_slot,
    exclusive_output,
    output_set,
    record_path,
    run_record,
    write_json,
)
from repmatch.config import check_argument
from repmatch.errors import RepmatchError, first_line
from repmatch.report.kinds import KINDS, _accepted, recognise
from repmatch.report.page import _is_report, _page
from repmatch.report.runs import Run


def build_report(runs: Sequence[str | Path | Run], *, title: str = "repmatch report") -> str:
    """The HTML page for ``runs`` (paths or recognised :class:`Run` objects)."""
    check_argument(runs, Sequence, "runs")
    if not runs:
        raise RepmatchError(f"give at least one run; {_accepted()}")
    recognised = [run if isinstance(run, Run) else recognise(run) for run in runs]
    sections = []
    for kind in KINDS:
        mine = [run for run in recognised if run.kind == kind.name]
        if not mine:
            continue
        try:
            sections += kind.draw(mine)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as err:
            paths = ", ".join(str(run.path) for run in mine)
            raise RepmatchError(
                f"{paths}: the {kind.name} record is incomplete or corrupted "
                f"({type(err).__name__}: {first_line(err)}); rerun the command that wrote it"
            ) from None
    return _page(title, recognised, sections)


def write_report(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    title: str = "repmatch report",
    overwrite: bool = False,
) -> Path:
    """Write :func:`build_report` to ``out`` (atomically) with its record ``<out>.json``.

    An existing ``out`` is replaced only with ``overwrite``, and only when it is a report. Under a
    launcher (``torchrun``) the main process writes; the others wait.
    """
    return distributed.on_main(
        lambda: _write_report(runs, Path(out), title=title, overwrite=overwrite)
    )


def _write_report(runs: Sequence[str | Path], out: Path, *, title: str, overwrite: bool) -> Path:
    with exclusive_output(out):
        if out.is_dir():
            raise RepmatchError(f"output {out} is a folder; name a file such as report.html")
        check_record_slot(out)
        if out.exists() and not overwrite:
            raise RepmatchError(f"{out} already exists; set overwrite to replace it", "overwrite")
        if out.exists() and not _is_report(out):
            raise RepmatchError(
                f"{out} is not a page repmatch report wrote; refusing to replace it even with "
                "overwrite: choose another output"
            )
        recognised = [recognise(run) for run in runs]
        page = build_report(recognised, title=title)
        record = run_record(
            "report",
            title=title,
            runs=[{"kind": run.kind, "path": str(run.path)} for run in recognised],
            bytes=len(page.encode()),
        )
        with output_set(out) as outputs:
            outputs.path(out).write_text(page, encoding="utf-8")
            write_json(outputs.path(record_path(out)), record)
    return out
