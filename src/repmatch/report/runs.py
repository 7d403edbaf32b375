"""What the report is given: a :class:`Run` (an output named on the command line, with its run
record) and the reading of run records, shared by recognising runs (:mod:`.kinds`) and by the
sections that read a record beside their run (the representation baseline of a matrix).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repmatch.errors import RepmatchError, first_line


@dataclass(frozen=True)
class Run:
    """One output named on the command line: its kind, path and run record (None: no record)."""

    kind: str
    path: Path
    record: dict | None


def _format_of(record: dict) -> str | None:
    """``repmatch-scores/`` for a record of format ``repmatch-scores/1``."""
    value = record.get("format")
    return value.rsplit("/", 1)[0] + "/" if isinstance(value, str) and "/" in value else None


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RepmatchError(f"{path}: not a readable JSON record ({first_line(err)})") from None
    if not isinstance(record, dict):
        raise RepmatchError(f"{path}: not a run record (a JSON {type(record).__name__})")
    return record


def _typed(record: dict, key: str, kind: type) -> Any:
    """``record[key]`` when it is a ``kind``; else a TypeError naming the field, which the report
    words as a corrupted record: a field edited into another type is never drawn as it is."""
    value = record.get(key)
    if not isinstance(value, kind):
        shown = "missing" if key not in record else f"{type(value).__name__} {value!r:.40}"
        raise TypeError(f"field {key!r} should be a {kind.__name__}, not {shown}")
    return value
