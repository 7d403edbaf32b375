"""The page: its shell (title, contents, CSS and the tiny script that counts decoded images),
the :class:`Section` each kind of run draws, and the small HTML pieces every section is made of
(escaping, numbers, tables, notes, settings, and matplotlib figures inlined as base64 PNG).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repmatch import __version__
from repmatch.artifacts import record_notes
from repmatch.report.runs import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GENERATOR = "repmatch report"
"""``<meta name="generator">`` of every page: how ``overwrite`` knows a page is a report."""

TEXT_LIMIT = 300
"""Instance texts longer than this many characters are cut in the page."""


@dataclass(frozen=True)
class Section:
    """One part of the page: an ``<h2>`` title and its HTML body."""

    kind: str
    title: str
    body: str


def _is_report(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head


_CSS = """
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: #1d1d1f; background: #f6f6f4; }
main { max-width: 1100px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: .4rem 0; }
h2 { font-size: 1.25rem; margin: 0 0 .5rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
h3 { font-size: 1.02rem; margin: 1.2rem 0 .4rem; }
section { background: #fff; border: 1px solid #e2e2de; border-radius: 6px;
          padding: 1rem 1.2rem; margin: 1.2rem 0; }
nav ol { margin: .3rem 0; padding-left: 1.4rem; }
.meta { color: #555; font-size: .9rem; }
.note { background: #fff6dc; border-left: 4px solid #e0b030; padding: .4rem .7rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .88rem; margin: .4rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f0ec; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { min-width: 18rem; max-width: 40rem; }
img { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
code { font-size: .85em; background: #f0f0ec; padding: 0 .2em; border-radius: 3px; }
"""

_SCRIPT = """
addEventListener("load", function () {
  var images = document.images, decoded = 0;
  for (var i = 0; i < images.length; i++) {
    images[i].setAttribute("data-natural-width", images[i].naturalWidth);
    if (images[i].complete && images[i].naturalWidth > 0) decoded++;
  }
  document.body.setAttribute("data-rendered", decoded + "/" + images.length);
});
"""


def _page(title: str, runs: list[Run], sections: list[Section]) -> str:
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    contents = "".join(
        f'<li><a href="#section-{i}">{_e(section.title)}</a></li>'
        for i, section in enumerate(sections, start=1)
    )
    given = ", ".join(f"<code>{_e(run.path)}</code> ({_e(run.kind)})" for run in runs)
    body = "".join(
        f'<section id="section-{i}" data-kind="{_e(section.kind)}">'
        f"<h2>{_e(section.title)}</h2>{section.body}</section>"
        for i, section in enumerate(sections, start=1)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="generator" content="{GENERATOR}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body><main>"
        f"<header><h1>{_e(title)}</h1>"
        f'<p class="meta">Made by repmatch {_e(__version__)} on {_e(when)} from {given}.</p>'
        f"<nav><ol>{contents}</ol></nav></header>\n{body}\n</main>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# HTML pieces


def _e(value: object) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value), quote=True)


def _num(value: object, digits: int = 4) -> str:
    """A number for a table cell: whole numbers as they are (ids too), floats to ``digits``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else f"{float(value):.{digits}f}"
    return _e(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], *, digits: int = 4) -> str:
    """A scrolling table; numbers right-aligned, everything escaped, ``_Raw`` cells kept."""

    def cell(value: object) -> str:
        if isinstance(value, _Raw):
            return f'<td class="{value.css}">{value.html}</td>'
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            return f'<td class="num">{_num(value, digits)}</td>'
        return f"<td>{_e('–' if value is None else value)}</td>"

    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


@dataclass(frozen=True)
class _Raw:
    """A table cell given as HTML (already escaped)."""

    html: str
    css: str = ""


def _facts(pairs: Sequence[tuple[str, object]]) -> str:
    """Settings as a two-column table, leaving out the ones that are not set."""
    return _table(["setting", "value"], [(k, _plain(v)) for k, v in pairs if v is not None])


def _plain(value: object) -> object:
    """A setting as text: floats to 4 significant digits (an lr of 1e-05 stays readable)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(_plain(v)) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _record_notes(record: dict) -> str:
    """The notes a run record carries, one paragraph each."""
    return "".join(_note(note) for note in record_notes(record))


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _saved_png(draw: Callable[[Path], None]) -> bytes:
    """PNG bytes of a plotting function that writes a file (``repmatch.plotting``)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "figure.png"
        draw(path)
        return path.read_bytes()


def _new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure that is not registered with pyplot (no global state; Agg canvas)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _short(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + f"… ({len(text):,} characters)"
