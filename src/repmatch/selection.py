"""Choosing instances by their scores: the top, the bottom or a random K, optionally class-balanced.

Stage: scores (Parquet from :mod:`repmatch.scoring`, with its run record ``<scores>.json``) ->
selection: a data file of the chosen instances' source rows, which every command reads like any
other data, and its record ``<file>.json`` (how they were chosen, from which scores, which ids).

- The scored data is reloaded from the data spec in the scores record (or given as ``data``) and
  must be what was scored: every scored id present and the same fingerprint.
- Ties are broken by id: among equal scores the smaller id comes first, for top and bottom alike.
- ``balanced``: every class gets its share of K in the proportions of the scored data, by largest
  remainder (the shares sum to K exactly; equal remainders go to the smaller class label first).
  Regression scores have no classes and are refused.
- ``random``: a uniform draw from numpy's generator seeded by ``seed`` (the global RNG is left
  alone) over the instances ordered by id, so it does not depend on the row order of the scores;
  with ``balanced``, a stratified draw.
- The file holds the text columns under their original names, the label (class names when the data
  named them, so the label set round-trips), the id and the score, in the order chosen (best first
  for top, worst first for bottom, draw order for random). The id column is ``id`` unless the data
  had an ``id``/``idx`` column. The score column is ``score``, or ``selection_score`` where a
  ``score`` column would be taken for the label when the file is read back (a label column named
  ``score``, as STS-B's, or one outside the auto-detected names). Formats by extension: ``.jsonl``,
  ``.json``, ``.csv``, ``.tsv``, ``.parquet``, each optionally ``.gz``.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import itertools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repmatch import distributed
from repmatch.artifacts import (
    check_record_slot,
    exclusive_output,
    output_set,
    record_notes,
    record_path,
    run_record,
)
from repmatch.config import SelectConfig, SelectHow, check_argument
from repmatch.data import FORMATS, DataSpec, Examples, as_examples, load_examples
from repmatch.data.columns import ID_COLUMNS, LABEL_COLUMNS
from repmatch.errors import RepmatchError, first_line

logger = logging.getLogger(__name__)

__all__ = [
    "SelectConfig",
    "Selection",
    "class_quotas",
    "load_scores",
    "select_from_scores",
    "select_instances",
    "select_to_file",
    "scored_examples",
    "selection_record",
    "write_selection",
]

SELECTION_FORMAT = run_record("selection")["format"]
"""The ``format`` of a selection record: tells a selection file from other data."""


@dataclass(frozen=True)
class Selection:
    """Chosen instances: ``examples`` in the order chosen (labels as in the scored data),
    ``scores`` (K,) their scores, and ``record``, what is saved beside the file."""

    examples: Examples
    scores: np.ndarray
    record: dict[str, Any]

    @property
    def ids(self) -> list:
        return list(self.examples.ids)

    def columns(self) -> dict[str, list]:
        """The rows to write, column by column: id, text(s), label, score (see the module doc)."""
        names = _column_names(self.examples)
        values = [
            self.examples.ids,
            self.examples.texts,
            self.examples.text_pairs,
            _label_values(self.examples),
            [float(score) for score in self.scores],
        ]
        return {
            name: list(column)
            for name, column in zip(names.values(), values, strict=True)
            if name is not None and column is not None
        }


def class_quotas(counts: Mapping[Any, int], k: int) -> dict[Any, int]:
    """Shares of ``k`` in the proportions of ``counts`` (class -> instances), by largest remainder.

    Each class gets ``floor(k * n_c / N)``, and the ``k`` minus their sum left over go one each to
    the classes with the largest remainders ``k * n_c mod N`` (ties: smaller class first). The
    shares sum to ``k`` and none exceeds its class when ``k <= N``.

    >>> class_quotas({0: 5, 1: 3, 2: 2}, 4)
    {0: 2, 1: 1, 2: 1}
    """
    total = sum(counts.values())
    if not 0 <= k <= total:
        raise RepmatchError(f"k must be between 0 and the {total} instances, got {k}")
    classes = sorted(counts)
    quotas = {c: k * counts[c] // total for c in classes}
    left = k - sum(quotas.values())
    by_remainder = sorted(classes, key=lambda c: (-(k * counts[c] % total), classes.index(c)))
    for c in by_remainder[:left]:
        quotas[c] += 1
    return quotas


def select_instances(
    scores: pd.DataFrame,
    k: int,
    *,
    how: SelectHow = "top",
    balanced: bool = False,
    seed: int = 0,
    score_column: str = "score",
) -> list:
    """Ids of the ``k`` instances of a scores table to keep, in the order chosen.

    ``scores``: one row per instance with columns ``id``, ``score_column`` and (for
    ``balanced``) ``label``, as :func:`repmatch.scoring.score_instances` returns. See the module
    docstring for ties, balancing and the random draw.

    >>> table = pd.DataFrame({"id": [3, 1, 2, 0], "label": [0, 0, 1, 1],
    ...                       "score": [0.5, 0.9, 0.5, 0.1]})
    >>> select_instances(table, 2), select_instances(table, 2, balanced=True)
    ([1, 2], [1, 2])
    >>> select_instances(table, 2, how="bottom")
    [0, 2]
    """
    config = SelectConfig(k=k, how=how, balanced=balanced, seed=seed, score_column=score_column)
    positions = _choose(scores, config, "the scores")
    ids = scores["id"].tolist()
    return [ids[p] for p in positions.tolist()]


def _choose(scores: pd.DataFrame, config: SelectConfig, where: str) -> np.ndarray:
    """Positions (rows of ``scores``) of the chosen instances, in the order chosen."""
    needed = ["id", config.score_column] + (["label"] if config.balanced else [])
    missing = [column for column in needed if column not in scores.columns]
    if missing:
        raise RepmatchError(
            f"{where} have no column {missing[0]!r} (columns: {', '.join(map(str, scores))})",
            field="score_column" if missing[0] == config.score_column else None,
        )
    n = len(scores)
    if config.k > n:
        raise RepmatchError(
            f"k={config.k} is more than the {n} instances of {where}; choose k <= {n}", field="k"
        )
    ids = scores["id"].tolist()
    try:
        by_id = np.array(sorted(range(n), key=ids.__getitem__), dtype=np.int64)
    except TypeError:
        raise RepmatchError(f"the ids of {where} mix numbers and strings") from None
    repeated = next((ids[a] for a, b in itertools.pairwise(by_id) if ids[a] == ids[b]), None)
    if repeated is not None:
        raise RepmatchError(f"id {repeated!r} occurs more than once in {where}")
    values = pd.to_numeric(scores[config.score_column], errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(np.isnan(values))
    if bad.size:
        raise RepmatchError(
            f"{bad.size} scores in column {config.score_column!r} of {where} are missing or not "
            f"numbers (e.g. id {ids[bad[0]]!r})",
            field="score_column",
        )
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[by_id] = np.arange(n)
    if config.how == "top":
        order = np.lexsort((id_rank, -values))
    elif config.how == "bottom":
        order = np.lexsort((id_rank, values))
    else:
        order = by_id[np.random.default_rng(config.seed).permutation(n)]
    if not config.balanced:
        return order[: config.k]
    labels = scores["label"].to_numpy()
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        kind = "numbers: a regression task" if labels.dtype.kind == "f" else "answers or texts"
        raise RepmatchError(
            f"balanced selection keeps class proportions, but the labels of {where} are not "
            f"classes ({kind}); select without balanced",
            field="balanced",
        )
    classes, counts = np.unique(labels, return_counts=True)
    quota = class_quotas(dict(zip(classes.tolist(), counts.tolist(), strict=True)), config.k)
    chosen = []
    for position in order.tolist():
        label = int(labels[position])
        if quota[label]:
            quota[label] -= 1
            chosen.append(position)
    return np.asarray(chosen, dtype=np.int64)


def load_scores(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A scores table written by ``repmatch score`` and its run record ``<path>.json``."""
    path = Path(path)
    if not path.is_file():
        raise RepmatchError(
            f"no such scores file: {str(path)!r}; pass a Parquet file written by repmatch score"
        )
    record_file = record_path(path)
    if not record_file.is_file():
        raise RepmatchError(
            f"{path} has no run record {record_file.name} beside it, so the data it scored is "
            "unknown; keep the record repmatch score wrote next to the scores"
        )
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError) as err:
        raise RepmatchError(f"cannot read run record {record_file} ({first_line(err)})") from None
    if not isinstance(record, dict) or not {"data", "data_fingerprint"} <= set(record):
        raise RepmatchError(
            f"{record_file} is not the run record of a scores file (it does not describe the "
            "scored data); pass scores written by repmatch score"
        )
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several kinds for a file that is not Parquet
        raise RepmatchError(f"cannot read {path} as Parquet ({first_line(err)})") from None
    return frame, record


def select_from_scores(
    scores: str | Path, config: SelectConfig, *, data: DataSpec | Examples | object = None
) -> Selection:
    """Choose instances of the data scored in ``scores`` (a Parquet file with its record).

    The scored data is reloaded from the record's data spec, or taken from ``data`` (a
    :class:`DataSpec`, path, :class:`Examples`, DataFrame or Dataset; needed when in-memory data
    was scored). Raises if a scored id is not in the data, or the data is not what was scored.
    """
    path = Path(scores)
    frame, record = load_scores(path)
    examples = scored_examples(frame, record, data, path)
    positions = _choose(frame, config, f"scores {path.name}")
    chosen = examples.select(positions)
    values = frame[config.score_column].to_numpy(np.float64)[positions]
    columns = _column_names(chosen)
    selection_record = run_record(
        "selection",
        select=config.to_dict(),
        scores=str(path.resolve()),
        scores_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        scores_config=record.get("score"),
        reference=record.get("reference"),
        notes=record_notes(record),
        data=examples.spec.to_record() if examples.spec is not None else record.get("data"),
        data_name=examples.name,
        data_fingerprint=record["data_fingerprint"],
        num_scored=len(frame),
        num_selected=len(chosen),
        task=chosen.task,
        label_names=chosen.label_names,
        columns=columns,
        class_counts_scored=_class_counts(examples),
        class_counts=_class_counts(chosen),
        ids=chosen.ids,
    )
    return Selection(chosen, values, selection_record)


def scored_examples(
    frame: pd.DataFrame, record: dict[str, Any], data: object, path: Path
) -> Examples:
    """The scored instances in the order of ``frame`` (a scores table and its ``record``),
    reloaded from the record's data spec or taken from ``data``, checked to be what was scored
    (every id found, the recorded fingerprint); raise a one-line error naming what differs."""
    if "id" not in frame.columns:
        raise RepmatchError(
            f"scores {path.name} have no id column; pass scores from repmatch score"
        )
    if data is None:
        spec = record.get("data")
        if spec is None:
            raise RepmatchError(
                f"{path.name} scores in-memory data ({record.get('data_name')}), which cannot be "
                "reloaded; pass the data that was scored",
                field="data",
            )
        try:
            examples = load_examples(DataSpec.from_dict(spec))
        except RepmatchError as err:
            raise RepmatchError(
                f"cannot reload the data scored in {path.name}: {err}; or pass the scored data",
                field="data",
            ) from None
    else:
        examples = as_examples(data)
    where = {value: position for position, value in enumerate(examples.ids)}
    ids = frame["id"].tolist()
    unknown = [value for value in ids if value not in where]
    if unknown:
        raise RepmatchError(
            f"id {unknown[0]!r} of scores {path.name} is not in {examples.name} ({len(unknown)} "
            f"of {len(ids)} scored ids are missing); pass the data these scores were computed on",
            field="data",
        )
    scored = examples.select([where[value] for value in ids])
    scored.spec = examples.spec
    if not _same_data(scored, frame, record["data_fingerprint"]):
        raise RepmatchError(
            f"{examples.name} is not the data scored in {path.name} (its fingerprint differs): "
            "the data changed since it was scored, or other data was passed; rescore it, or "
            "pass the data that was scored",
            field="data",
        )
    return scored


def _same_data(scored: Examples, frame: pd.DataFrame, fingerprint: str) -> bool:
    """Whether ``scored`` has the recorded fingerprint, directly or with the labels the scores
    carry (scoring maps class labels through the reference's classes), renamed one-to-one."""
    if scored.fingerprint() == fingerprint:
        return True
    if "label" not in frame.columns:
        return False
    try:
        labels = np.asarray(frame["label"].tolist(), dtype=scored.labels.dtype)
        relabelled = dataclasses.replace(scored, labels=labels)
    except (TypeError, ValueError):
        return False
    if relabelled.fingerprint() != fingerprint:
        return False
    pairs = set(zip(scored.labels.tolist(), labels.tolist(), strict=True))
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def _class_counts(examples: Examples) -> dict[str, int] | None:
    """Instances per class, by class name (or index); ``None`` without classes."""
    labels = examples.labels
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        return None
    values, counts = np.unique(labels, return_counts=True)
    names = examples.label_names
    return {
        (names[v] if names is not None else str(v)): int(c)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True)
    }


def _column_names(examples: Examples) -> dict[str, str | None]:
    """Names of the written columns: id, text, text_pair, label, score (see the module doc)."""
    columns = examples.columns
    label = columns["label"]
    id_name = columns["id"] if columns["id"] in ID_COLUMNS else "id"
    detected_first = LABEL_COLUMNS[: LABEL_COLUMNS.index("score")]
    score = "score" if label in detected_first else "selection_score"
    names = {
        "id": id_name,
        "text": columns["text"],
        "text_pair": columns["text_pair"],
        "label": label,
        "score": score,
    }
    used = [name for name in names.values() if name is not None]
    if len(set(used)) != len(used):
        raise RepmatchError(
            f"the columns of {examples.name} clash with the id or score column of a selection "
            f"({names}); rename the data's columns"
        )
    return names


def _label_values(examples: Examples) -> list:
    """Labels as they are written: class names when the data has them, else numbers; extractive
    QA answers as read (``{"text": [...], "answer_start": [...]}``)."""
    labels = examples.labels
    if examples.answers is not None:  # extractive QA: every gold answer, as read
        return list(examples.answers)
    if examples.label_names is not None:
        return [examples.label_names[value] for value in labels.tolist()]
    if np.issubdtype(labels.dtype, np.floating):
        return [float(str(value)) for value in labels]  # shortest repr of a float32 label
    return labels.tolist()


def selection_record(path: str | Path) -> dict[str, Any] | None:
    """The selection record beside data file ``path``, or ``None`` if it has none; raise if a
    field that reading the selection back needs has the wrong type."""
    where = record_path(Path(path))
    try:
        record = json.loads(where.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != SELECTION_FORMAT:
        return None
    columns, task = record.get("columns"), record.get("task")
    if columns is not None and not (
        isinstance(columns, dict)
        and all(isinstance(v, (str, type(None))) for v in columns.values())
    ):
        raise RepmatchError(
            f"{where}: field 'columns' should map roles to column names, got {columns!r}; "
            "write the selection again with repmatch select"
        )
    if task is not None and not isinstance(task, str):
        raise RepmatchError(
            f"{where}: field 'task' should be a task name, got {task!r}; "
            "write the selection again with repmatch select"
        )
    return record


def write_selection(selection: Selection, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the chosen rows to ``out`` (format by extension) and the record ``<out>.json``.

    Both are staged and committed together (:func:`repmatch.artifacts.output_set`); an existing
    ``out`` is replaced only with ``overwrite`` and only if it is a selection.
    """
    out = Path(out)
    with exclusive_output(out):
        _check_output(out, overwrite)
        _write(selection, out)
    return out


def select_to_file(
    scores: str | Path,
    config: SelectConfig,
    out: str | Path,
    *,
    data: DataSpec | Examples | object = None,
    overwrite: bool = False,
) -> Selection:
    """:func:`select_from_scores`, then :func:`write_selection` to ``out`` (checked first).

    Under a launcher (``torchrun``) the main process selects and writes; the others wait and
    return the same selection."""
    check_argument(config, SelectConfig)
    return distributed.on_main(
        lambda: _select_to_file(scores, config, Path(out), data=data, overwrite=overwrite)
    )


def _select_to_file(
    scores: str | Path,
    config: SelectConfig,
    out: Path,
    *,
    data: DataSpec | Examples | object,
    overwrite: bool,
) -> Selection:
    with exclusive_output(out):
        _check_output(out, overwrite)
        selection = select_from_scores(scores, config, data=data)
        _write(selection, out)
    logger.info("wrote %d instances to %s", len(selection.examples), out)
    return selection


def _output_format(out: Path) -> tuple[str, bool]:
    """``(format, gzipped)`` of an output file name; raise for an unknown extension."""
    name = out.name.lower()
    gzipped = name.endswith(".gz")
    extension = name.removesuffix(".gz").rpartition(".")[2]
    if "." not in name.removesuffix(".gz") or extension not in FORMATS:
        raise RepmatchError(
            f"cannot tell the format of {out.name!r}; name the output .jsonl, .json, .csv, "
            ".tsv or .parquet (optionally .gz)",
            field="out",
        )
    return extension, gzipped


def _check_output(out: Path, overwrite: bool) -> None:
    _output_format(out)
    if out.is_dir():
        raise RepmatchError(f"output {out} is a folder; name a file such as top100.jsonl")
    check_record_slot(out)
    if not out.exists():
        return
    if not overwrite:
        raise RepmatchError(f"{out} already exists; set overwrite to replace it", field="overwrite")
    if selection_record(out) is None:
        raise RepmatchError(
            f"{out} is not a selection (no selection record {out.name}.json beside it); "
            "refusing to replace it even with overwrite: choose another output"
        )


def _write(selection: Selection, out: Path) -> None:
    fmt, gzipped = _output_format(out)
    columns = selection.columns()
    with output_set(out) as outputs:
        data_file = outputs.path(out)
        record_file = outputs.path(record_path(out))
        if fmt == "parquet":
            _write_parquet(columns, data_file, gzipped)
        else:
            text = _FORMATTERS[fmt](columns)
            data = text.encode("utf-8")
            data_file.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
        record_file.write_text(json.dumps(selection.record, indent=2) + "\n")


def _write_parquet(columns: dict[str, list], path: Path, gzipped: bool) -> None:
    buffer = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buffer, index=False)
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)


def _cell(value: Any) -> Any:
    """A csv/tsv cell: mappings and lists as JSON text (as the readers parse them back)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def _cells(columns: dict[str, list]) -> list[list[Any]]:
    return [[_cell(v) for v in row] for row in zip(*columns.values(), strict=True)]


def _rows(columns: dict[str, list]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _jsonl(columns: dict[str, list]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _rows(columns))


def _json(columns: dict[str, list]) -> str:
    return json.dumps(_rows(columns), ensure_ascii=False) + "\n"


def _csv(columns: dict[str, list]) -> str:
    buffer = io.StringIO()
    # CRLF rows (RFC 4180): the writer then quotes every field holding a \r or \n, so a bare
    # carriage return in a text reads back as part of the text, not as the end of a row.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(list(columns))
    writer.writerows(_cells(columns))
    return buffer.getvalue()


def _tsv(columns: dict[str, list]) -> str:
    """Tab-separated without quoting, as the reader expects (GLUE style)."""
    rows = [[str(cell) for cell in row] for row in _cells(columns)]
    for row in rows:
        bad = next((cell for cell in row if any(c in cell for c in "\t\n\r")), None)
        if bad is not None:
            raise RepmatchError(
                f"{bad[:40]!r} holds a tab or line break, which .tsv cannot store; write "
                ".jsonl, .csv or .parquet instead",
                field="out",
            )
    lines = ["\t".join(row) for row in rows]
    return "\n".join(["\t".join(columns), *lines]) + "\n"


_FORMATTERS = {"jsonl": _jsonl, "json": _json, "csv": _csv, "tsv": _tsv}
