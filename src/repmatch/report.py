"""The report: one self-contained HTML page for whatever repmatch runs it is given.

A *run* is the output of a stage, recognised by its run record (never by guessing from data):

- an adapter folder (``repmatch.json``, or any PEFT LoRA folder with ``adapter_config.json``);
  two or more adapters given together are also compared, pair by pair, with their per-layer grids;
- a comparison saved with ``repmatch compare A B --json > FILE.json``;
- a ``repmatch datasets`` folder (``matrix.json``, and ``baseline.json`` when it holds the
  representation baseline), or that file;
- instance scores ``FILE.parquet`` with their record ``FILE.parquet.json`` (either path);
- a selection ``FILE`` (any data format) with its record ``FILE.json`` (``repmatch select``);
- a ``repmatch evaluate`` folder (``results.json``);
- a ``repmatch overlap`` folder (``overlap.json``).

Every kind is one :class:`Kind` in :data:`KINDS`: the record files it is found by, the format
its record declares, a one-line description for the error message, and the function that draws
its sections; a new kind of run is one more entry. The page carries its images as base64 PNG
(matplotlib, Agg) and its CSS inline, and fetches nothing; every text from data or records is
escaped. A tiny inline script marks, once the page has loaded, how many images decoded
(``<body data-rendered="decoded/total">``), which is what the headless-browser test reads.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import itertools
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repmatch import __version__
from repmatch.artifacts import atomic_path, exclusive_output, record_path, run_record, write_json
from repmatch.errors import RepmatchError, first_line

GENERATOR = "repmatch report"
"""``<meta name="generator">`` of every page: how ``overwrite`` knows a page is a report."""

TOP = 10
"""How many of the highest- and lowest-scored instances a scores section lists."""

TEXT_LIMIT = 300
"""Instance texts longer than this many characters are cut in the page."""

_COMPARISON_KEYS = {"score", "layers", "grids", "side", "first", "second"}


@dataclass(frozen=True)
class Run:
    """One output named on the command line: its kind, path and run record (None: no record)."""

    kind: str
    path: Path
    record: dict | None


@dataclass(frozen=True)
class Section:
    """One part of the page: an ``<h2>`` title and its HTML body."""

    kind: str
    title: str
    body: str


@dataclass(frozen=True)
class Kind:
    """A kind of run the report draws.

    ``records``: file names of its record inside an output folder; ``format``: the record's
    ``format`` prefix (``repmatch-<kind>/``); ``accepts``: what to pass, for the error message;
    ``draw``: all runs of this kind given (in order) -> their sections.
    """

    name: str
    records: tuple[str, ...]
    format: str | None
    accepts: str
    draw: Callable[[list[Run]], list[Section]]


# --------------------------------------------------------------------------------------------
# Recognising runs


def recognise(path: str | Path) -> Run:
    """The run at ``path``; a one-line error naming it and listing what the report accepts."""
    path = Path(path)
    if not path.exists():
        raise RepmatchError(f"{path}: no such file or folder; {_accepted()}")
    if path.is_dir():
        for kind in KINDS:
            for name in kind.records:
                if (path / name).is_file():
                    record = _read_record(path / name)
                    if _format_of(record) == kind.format:
                        return Run(kind.name, path, record)
        if (path / "adapter_config.json").is_file():
            return Run("adapter", path, None)  # a PEFT adapter made elsewhere
        raise RepmatchError(f"{path}: a folder the report does not recognise; {_accepted()}")
    if record_path(path).is_file():  # an output file with its record FILE.json beside it
        record_file, output = record_path(path), path
    elif path.suffix == ".json":  # a record given itself
        record_file, output = path, path.with_suffix("")
    else:
        raise RepmatchError(f"{path}: a file the report does not recognise; {_accepted()}")
    record = _read_record(record_file)
    for kind in KINDS:
        if kind.format is None or _format_of(record) != kind.format:
            continue
        if kind.records:  # the record of an output folder
            return Run(kind.name, record_file.parent, record)
        if output.is_file():
            return Run(kind.name, output, record)
    if _COMPARISON_KEYS <= set(record):
        return Run("comparison", path, record)
    raise RepmatchError(f"{path}: a file the report does not recognise; {_accepted()}")


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


def _accepted() -> str:
    return "the report takes " + "; ".join(kind.accepts for kind in KINDS)


# --------------------------------------------------------------------------------------------
# The page


def build_report(runs: Sequence[str | Path | Run], *, title: str = "repmatch report") -> str:
    """The HTML page for ``runs`` (paths or recognised :class:`Run` objects)."""
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
        except (KeyError, TypeError, ValueError, IndexError) as err:
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

    An existing ``out`` is replaced only with ``overwrite``, and only when it is a report.
    """
    out = Path(out)
    with exclusive_output(out):
        if out.is_dir():
            raise RepmatchError(f"output {out} is a folder; name a file such as report.html")
        if out.exists() and not overwrite:
            raise RepmatchError(f"{out} already exists; set overwrite to replace it", "overwrite")
        if out.exists() and not _is_report(out):
            raise RepmatchError(
                f"{out} is not a page repmatch report wrote; refusing to replace it even with "
                "overwrite: choose another output"
            )
        recognised = [recognise(run) for run in runs]
        page = build_report(recognised, title=title)
        with atomic_path(out) as temporary:
            temporary.write_text(page, encoding="utf-8")
        write_json(
            record_path(out),
            run_record(
                "report",
                title=title,
                runs=[{"kind": run.kind, "path": str(run.path)} for run in recognised],
                bytes=len(page.encode()),
            ),
        )
    return out


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


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _saved_png(draw: Callable[[Path], None]) -> bytes:
    """PNG bytes of a plotting function that writes a file (``repmatch.plotting``)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "figure.png"
        draw(path)
        return path.read_bytes()


def _new_figure(width: float, height: float):
    """A matplotlib figure that is not registered with pyplot (no global state; Agg canvas)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _short(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + f"… ({len(text):,} characters)"


def _data_name(record: dict) -> str:
    return str(record.get("data_name") or "data")


# --------------------------------------------------------------------------------------------
# Adapters and comparisons


def _draw_adapters(runs: list[Run]) -> list[Section]:
    from repmatch.compare import compare_adapters

    rows = []
    for run in runs:
        record = run.record or {}
        train = record.get("train") or {}
        losses = record.get("epoch_losses") or [None]
        rows.append(
            (
                str(run.path),
                record.get("data_name"),
                record.get("num_examples"),
                record.get("task"),
                record.get("model"),
                train.get("rank"),
                train.get("seed"),
                train.get("epochs"),
                _plain(train.get("lr")),
                losses[-1],
            )
        )
    header = ["adapter", "data", "instances", "task", "model", "rank", "seed", "epochs", "lr"]
    body = _table([*header, "final loss"], rows)
    if any(run.record is None for run in runs):
        body += _note("Adapters without repmatch.json were made elsewhere: settings unknown.")
    sections = [Section("adapter", "Adapters", body)]
    for first, second in itertools.combinations(runs, 2):
        title = f"Adapter comparison: {first.path.name} vs {second.path.name}"
        try:
            comparison = compare_adapters(first.path, second.path)
        except RepmatchError as err:
            sections.append(Section("comparison", title, _note(f"Not comparable: {err}")))
            continue
        sections.append(Section("comparison", title, _comparison_body(comparison)))
    return sections


def _draw_comparisons(runs: list[Run]) -> list[Section]:
    from repmatch.compare import Comparison

    sections = []
    for run in runs:
        record = run.record or {}
        comparison = Comparison(
            score=float(record["score"]),
            layers={k: float(v) for k, v in record["layers"].items()},
            grids={k: np.asarray(v, dtype=float) for k, v in record["grids"].items()},
            side=record["side"],
            first=str(record["first"]),
            second=str(record["second"]),
            notes=list(record.get("notes") or []),
        )
        title = f"Adapter comparison: {run.path.name}"
        sections.append(Section("comparison", title, _comparison_body(comparison)))
    return sections


def _comparison_body(comparison) -> str:
    from repmatch.lora import short_layer_name
    from repmatch.plotting import plot_layer_grids

    png = _saved_png(lambda path: plot_layer_grids(comparison, path))
    layers = [
        (short_layer_name(name), "×".join(map(str, comparison.grids[name].shape)), score)
        for name, score in comparison.layers.items()
    ]
    return (
        f"<p><b>RepMatch = {comparison.score:.4f}</b> ({_e(comparison.side)} singular vectors) "
        f"between <code>{_e(comparison.first)}</code> and <code>{_e(comparison.second)}</code>. "
        "Each panel is a layer's Grassmann grid φ(i, j) over the ranks of the two updates; "
        "a layer scores its grid's maximum, RepMatch is their mean.</p>"
        + _img(png, "per-layer Grassmann grids")
        + _table(["layer", "grid", "score"], layers)
        + "".join(_note(note) for note in comparison.notes)
    )


# --------------------------------------------------------------------------------------------
# Dataset matrices


def _draw_matrices(runs: list[Run]) -> list[Section]:
    from repmatch.plotting import plot_similarity_matrix

    sections = []
    for run in runs:
        record = run.record or {}
        names = [str(name) for name in record["names"]]
        mean = np.asarray(record["mean"], dtype=float)
        std = np.asarray(record["std"], dtype=float)
        seeds = list(record.get("seeds") or [])
        several = len(seeds) > 1
        shown_std = std if several else None
        png = _saved_png(
            lambda path, m=mean, s=shown_std, n=names: plot_similarity_matrix(m, n, path, std=s)
        )
        cells = [
            [name]
            + [
                f"{mean[i, j]:.3f} ± {std[i, j]:.3f}" if several else f"{mean[i, j]:.4f}"
                for j in range(len(names))
            ]
            for i, name in enumerate(names)
        ]
        explain = (
            f"Each entry is the mean ± std of RepMatch over the {len(record.get('seed_pairs', []))}"
            " ordered pairs of different LoRA seeds, so the diagonal measures seed robustness."
            if several
            else "One seed: each entry compares the two datasets' adapters; the diagonal is 1."
        )
        config = record.get("config") or {}
        train = config.get("train") or {}
        settings = [
            ("seeds", seeds),
            ("side", record.get("side")),
            *((key, train.get(key)) for key in ("model", "rank", "lr", "epochs", "batch_size")),
            ("targets", train.get("targets")),
        ]
        body = (
            f"<p>{_e(explain)}</p>"
            + _img(png, "RepMatch between datasets")
            + _table(["", *names], cells)
            + "<h3>Settings</h3>"
            + _facts(settings)
            + _baseline(run.path / BASELINE_FILE)
        )
        sections.append(Section("matrix", f"Dataset matrix: {run.path}", body))
    return sections


BASELINE_FILE = "baseline.json"
"""The representation baseline a ``datasets`` run writes beside its matrix when asked for."""


def _baseline(path: Path) -> str:
    """The representation baseline beside a matrix (paper Table 2), when there is one."""
    if not path.is_file():
        return ""
    record = _read_record(path)
    if _format_of(record) != "repmatch-baseline-matrix/":
        return ""
    names = [str(name) for name in record["names"]]
    percent = np.asarray(record["percent"], dtype=float)
    config = record.get("config") or {}
    rows = [
        [name, *(f"{value:.2f} %" for value in row)]
        for name, row in zip(names, percent, strict=True)
    ]
    settings = [
        ("threshold", config.get("threshold")),
        ("model", config.get("model")),
        ("pooling", config.get("pooling")),
        ("instances embedded", record.get("sizes")),
    ]
    return (
        "<h3>Representation baseline</h3><p>The paper's baseline beside RepMatch: the share of "
        "instance pairs (one from each dataset) whose pooled embeddings of the base model have a "
        f"cosine above {_e(config.get('threshold'))}.</p>"
        + _table(["", *names], rows)
        + _facts(settings)
    )


# --------------------------------------------------------------------------------------------
# Instance scores


def _draw_scores(runs: list[Run]) -> list[Section]:
    return [Section("scores", f"Instance scores: {run.path}", _scores_body(run)) for run in runs]


def _scores_body(run: Run) -> str:
    import pandas as pd

    record = run.record or {}
    try:
        table = pd.read_parquet(run.path)
    except (OSError, ValueError) as err:
        raise RepmatchError(f"{run.path}: cannot read the scores ({first_line(err)})") from None
    if "score" not in table or "id" not in table:
        raise RepmatchError(f"{run.path}: not a scores table (no 'id' and 'score' columns)")
    config = record.get("score") or {}
    seeds = list(config.get("seeds") or [])
    names = _class_names(record)
    settings = [
        ("data", record.get("data_name")),
        ("instances", len(table)),
        ("method", record.get("method")),
        ("embedding", record.get("embedding")),
        ("reference", record.get("reference")),
        ("measure", config.get("measure")),
        *((key, config.get(key)) for key in ("rank", "lr", "steps", "seeds", "side")),
        ("seconds", record.get("seconds")),
        ("instances per second", record.get("instances_per_second")),
        ("device", record.get("device")),
    ]
    scores = table["score"].to_numpy(dtype=float)
    body = _facts(settings) + "<h3>Distribution</h3>" + _img(_histogram(scores), "histogram")
    body += _table(
        ["mean", "std", "min", "median", "max"],
        [[scores.mean(), scores.std(), scores.min(), float(np.median(scores)), scores.max()]],
    )
    body += _per_class(table, names)
    body += _extremes(table, record, names)
    body += _stability(table, record, seeds)
    return body


def _class_names(record: dict) -> list[str] | None:
    """The reference adapter's class names, when its record is still where it was."""
    reference = record.get("reference")
    if not reference:
        return None
    try:
        names = json.loads((Path(reference) / "repmatch.json").read_text()).get("label_names")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(name) for name in names] if isinstance(names, list) else None


def _label_text(label: object, names: list[str] | None) -> str:
    """A class index with its name when known; answer texts (extractive QA) joined by ``|``."""
    if names is not None and isinstance(label, (int, np.integer)) and 0 <= label < len(names):
        return f"{label} ({names[label]})"
    if isinstance(label, (list, tuple, np.ndarray)):
        return _short(" | ".join(str(value) for value in label))
    return str(label)


def _histogram(scores: np.ndarray) -> bytes:
    figure = _new_figure(6.4, 2.8)
    ax = figure.add_subplot()
    ax.hist(scores, bins=min(50, max(10, len(scores) // 10)), color="#3b6ea8")
    ax.set_xlabel("score")
    ax.set_ylabel("instances")
    return _figure_png(figure)


def _per_class(table, names: list[str] | None) -> str:
    if "label" not in table:
        return ""
    labels = table["label"].to_numpy()
    if labels.dtype.kind not in "iuf":
        return _note(
            "The labels are not classes or numbers (e.g. answer texts): no per-class view."
        )
    if labels.dtype.kind == "f":  # regression: score against the label
        figure = _new_figure(5.0, 3.2)
        ax = figure.add_subplot()
        ax.scatter(labels, table["score"], s=6, alpha=0.5, color="#3b6ea8")
        ax.set_xlabel("label")
        ax.set_ylabel("score")
        return "<h3>Score against the label</h3>" + _img(_figure_png(figure), "score vs label")
    classes = sorted(set(labels.tolist()))
    groups = [table["score"].to_numpy(dtype=float)[labels == c] for c in classes]
    figure = _new_figure(min(2.0 + 1.1 * len(classes), 10.0), 3.2)
    ax = figure.add_subplot()
    ax.boxplot(groups, showfliers=False)
    ax.set_xticks(range(1, len(classes) + 1), [_label_text(c, names) for c in classes])
    ax.set_ylabel("score")
    rows = [
        (_label_text(c, names), len(g), g.mean(), float(np.median(g)), g.std())
        for c, g in zip(classes, groups, strict=True)
    ]
    return (
        "<h3>Per class</h3>"
        + _img(_figure_png(figure), "scores per class")
        + _table(["label", "instances", "mean", "median", "std"], rows)
    )


def _extremes(table, record: dict, names: list[str] | None) -> str:
    texts, problem = _texts(record)
    ranked = table.sort_values("score", kind="stable", ascending=False)
    body = f"<h3>Top and bottom {TOP}</h3>"
    if problem:
        body += _note(f"Instance texts are not shown: {problem}")
    with_std = "score_std" in table
    for title, rows in (("Most representative", ranked[:TOP]), ("Least", ranked[::-1][:TOP])):
        lines = []
        for rank, row in zip(_ranks(title, len(ranked)), rows.itertuples(), strict=False):
            label = _label_text(row.label, names) if "label" in table else None
            line = [rank, row.id, label, float(row.score)]
            if with_std:
                line.append(float(row.score_std))
            if texts is not None:
                line.append(_Raw(_text_cell(texts.get(row.id)), "text"))
            lines.append(line)
        header = ["rank", "id", "label", "score", *(["std"] if with_std else [])]
        header += ["text"] if texts is not None else []
        body += f"<p><b>{_e(title)}</b></p>" + _table(header, lines)
    return body


def _ranks(title: str, n: int) -> range:
    return range(1, TOP + 1) if title.startswith("Most") else range(n, n - TOP, -1)


def _text_cell(text: tuple[str, str | None] | None) -> str:
    if text is None:
        return "<i>id not found in the data</i>"
    first, second = text
    cell = _e(_short(first))
    return cell if second is None else f"{cell}<br><b>⇒</b> {_e(_short(second))}"


def _texts(record: dict) -> tuple[dict | None, str | None]:
    """id -> (text, text pair) of the scored data reloaded from its spec, or (None, why not)."""
    from repmatch.data import DataSpec, load_examples

    spec = record.get("data")
    if not isinstance(spec, dict):
        return None, "the scored data were in memory (no data spec in the record)"
    try:
        examples = load_examples(DataSpec.from_dict(spec))
    except RepmatchError as err:
        return None, f"the data cannot be loaded from {spec.get('source')!r} ({err})"
    pairs = examples.text_pairs or [None] * len(examples)
    texts = dict(zip(examples.ids, zip(examples.texts, pairs, strict=True), strict=True))
    if examples.fingerprint() != record.get("data_fingerprint"):
        return texts, "the data were reloaded, but they differ from the scored data"
    return texts, None


def _stability(table, record: dict, seeds: list[int]) -> str:
    if len(seeds) < 2:
        return ""
    spearman = record.get("seed_spearman") or {}
    body = "<h3>Seed stability</h3>"
    body += (
        "<p>Spearman correlation between the instance rankings of each pair of LoRA init "
        "seeds: how far a ranking depends on the seed.</p>"
    )
    body += _table(["seeds", "Spearman"], sorted(spearman.items()))
    first, second = (f"score_seed{seed}" for seed in seeds[:2])
    if first in table and second in table:
        figure = _new_figure(4.2, 4.0)
        ax = figure.add_subplot()
        ax.scatter(table[first], table[second], s=5, alpha=0.5, color="#3b6ea8")
        ax.set_xlabel(f"score, seed {seeds[0]}")
        ax.set_ylabel(f"score, seed {seeds[1]}")
        body += _img(_figure_png(figure), "scores of two seeds")
    return body


# --------------------------------------------------------------------------------------------
# Selections


SELECTION_ROWS = 20
"""How many chosen instances a selection section lists (in the order chosen)."""


def _draw_selections(runs: list[Run]) -> list[Section]:
    return [
        Section("selection", f"Selection: {run.path}", _selection_body(run, run.record or {}))
        for run in runs
    ]


def _selection_body(run: Run, record: dict) -> str:
    how = record["select"]
    settings = [
        ("chosen", f"{how['how']} {how['k']}" + (", class-balanced" if how["balanced"] else "")),
        ("seed", how["seed"] if how["how"] == "random" else None),
        ("ranked by", how.get("score_column")),
        ("scores", record.get("scores")),
        ("reference", record.get("reference")),
        ("data", record.get("data_name")),
        ("instances", f"{record['num_selected']:,} of {record['num_scored']:,} scored"),
    ]
    body = _facts(settings)
    scored, chosen = record.get("class_counts_scored"), record.get("class_counts") or {}
    if scored:
        rows = [
            (
                name,
                count,
                count / record["num_scored"],
                chosen.get(name, 0),
                chosen.get(name, 0) / max(record["num_selected"], 1),
            )
            for name, count in scored.items()
        ]
        body += "<h3>Classes</h3>" + _table(
            ["class", "scored", "share", "selected", "share"], rows, digits=3
        )
    return body + _chosen_rows(run.path, record.get("columns") or {})


def _chosen_rows(path: Path, columns: dict) -> str:
    """The first :data:`SELECTION_ROWS` rows of the selection file, as written."""
    from repmatch.data import DataSpec
    from repmatch.data.readers import open_source

    title = f"<h3>The first {SELECTION_ROWS} chosen, in the order chosen</h3>"
    try:
        table = open_source(DataSpec(str(path)))
    except RepmatchError as err:
        return title + _note(f"The selection file cannot be read: {err}")
    names = [columns.get(key) for key in ("id", "label", "score", "text", "text_pair")]
    present = [name for name in names if name is not None and name in table.columns]
    values = {name: table.get(name)[:SELECTION_ROWS] for name in present}
    rows = []
    for i in range(min(SELECTION_ROWS, table.num_rows)):
        row: list[object] = []
        for key, name in zip(("id", "label", "score", "text", "text_pair"), names, strict=True):
            if name not in values:
                continue
            value = values[name][i]
            row.append(_Raw(_e(_short(str(value))), "text") if key.startswith("text") else value)
        rows.append(row)
    return title + _table(present, rows)


# --------------------------------------------------------------------------------------------
# Evaluations


def _draw_evaluations(runs: list[Run]) -> list[Section]:
    return [
        Section("evaluation", f"Evaluation: {run.path}", _evaluation_body(run.record or {}))
        for run in runs
    ]


def _evaluation_body(record: dict) -> str:
    config = record.get("evaluate") or {}
    evaluation = record.get("evaluation") or {}
    metrics = [str(metric) for metric in record["metrics"]]
    summary = record["summary"]
    settings = [
        ("evaluated on", f"{evaluation.get('data_name')} ({evaluation.get('num_examples')})"),
        ("model", record.get("model")),
        ("task", record.get("task")),
        *((key, config.get(key)) for key in ("method", "epochs", "lr", "batch_size", "seeds")),
        ("device", record.get("device")),
    ]
    rows = [
        [row["subset"], row["num_train"], row["seeds"]]
        + [_mean_std(row.get(f"{m}_mean"), row.get(f"{m}_std")) for m in metrics]
        for row in summary
    ]
    body = (
        "<p>Fine-tuned on each subset once per seed and evaluated on the same data: mean ± "
        "sample std over seeds.</p>" + _table(["subset", "instances", "seeds", *metrics], rows)
    )
    if metrics and summary:
        body += _img(_metric_bars(summary, metrics[0]), f"{metrics[0]} per subset")
    per_run = [
        [run["subset"], run["seed"], *(run["metrics"].get(m) for m in metrics), _seconds(run)]
        for run in record.get("runs") or []
    ]
    return (
        body
        + "<h3>Every run</h3>"
        + _table(["subset", "seed", *metrics, "seconds"], per_run)
        + "<h3>Settings</h3>"
        + _facts(settings)
    )


def _seconds(run: dict) -> object:
    seconds = run.get("seconds")
    return _Raw(f"{seconds:.1f}", "num") if isinstance(seconds, (int, float)) else None


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" + ("" if std is None or math.isnan(std) else f" ± {std:.4f}")


def _metric_bars(summary: list[dict], metric: str) -> bytes:
    names = [str(row["subset"]) for row in summary]
    means = [row.get(f"{metric}_mean") or 0.0 for row in summary]
    stds = [row.get(f"{metric}_std") or 0.0 for row in summary]
    figure = _new_figure(min(2.5 + 1.0 * len(names), 10.0), 3.0)
    ax = figure.add_subplot()
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="#3b6ea8")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(metric)
    return _figure_png(figure)


# --------------------------------------------------------------------------------------------
# Overlap subsets


def _draw_overlap(runs: list[Run]) -> list[Section]:
    sections = []
    for run in runs:
        record = run.record or {}
        rows = [
            (band, _band(*record["bands"][band]), size, record["files"].get(band))
            for band, size in record["sizes"].items()
        ]
        source = record.get("source") or {}
        entailment = record.get("entailment_name") or f"label {record.get('entailment_label')}"
        body = (
            f"<p>{record['non_entailment']:,} of {source.get('num_examples', 0):,} instances "
            f"of <code>{_e(_data_name(source))}</code> are not entailment "
            f"(entailment = {_e(entailment)}).</p>"
            + _table(["subset", "overlap", "instances", "file"], rows)
            + f'<p class="meta">{_e(record.get("definition"))}</p>'
        )
        sections.append(Section("overlap", f"Overlap subsets: {run.path}", body))
    return sections


def _band(low: float, high: float) -> str:
    """``60–80 %``, or ``100 %`` for a band of one value."""
    return f"{100 * low:g} %" if low == high else f"{100 * low:g}–{100 * high:g} %"


# --------------------------------------------------------------------------------------------
# The kinds


KINDS: tuple[Kind, ...] = (
    Kind(
        "adapter",
        ("repmatch.json",),
        "repmatch-adapter/",
        "adapter folders (compared pair by pair when several)",
        _draw_adapters,
    ),
    Kind(
        "comparison",
        (),
        None,
        "a comparison saved by `repmatch compare A B --json > FILE.json`",
        _draw_comparisons,
    ),
    Kind(
        "matrix",
        ("matrix.json",),
        "repmatch-matrix/",
        "a `repmatch datasets` folder (matrix.json)",
        _draw_matrices,
    ),
    Kind(
        "scores",
        (),
        "repmatch-scores/",
        "instance scores FILE.parquet with FILE.parquet.json",
        _draw_scores,
    ),
    Kind(
        "selection",
        (),
        "repmatch-selection/",
        "a selection FILE with FILE.json (`repmatch select`)",
        _draw_selections,
    ),
    Kind(
        "evaluation",
        ("results.json",),
        "repmatch-evaluation/",
        "a `repmatch evaluate` folder (results.json)",
        _draw_evaluations,
    ),
    Kind(
        "overlap",
        ("overlap.json",),
        "repmatch-overlap/",
        "a `repmatch overlap` folder (overlap.json)",
        _draw_overlap,
    ),
)
