"""Loading labelled text data and the subset of it to use.

This module owns everything between "the user named some data" and "here are the texts, labels
and stable ids": reading local files (csv, tsv, json, jsonl, parquet, each optionally gzipped),
folders of split files and Hugging Face Hub datasets; detecting the text, label and id columns and
the task kind; mapping labels to class indices; and cutting subsets (label filter, indices file,
limit or random sample). :class:`DataSpec` says what to load, :func:`load_examples` loads it into
:class:`Examples`.

File conventions: ``.tsv`` files are read without quote handling (GLUE style: a ``"`` is an
ordinary character, so fields cannot hold tabs or newlines); ``.csv`` files use standard quoting.
In csv/tsv files every cell is text, so "NA" or "null" stay text; label and id columns are turned
into numbers when every value is one.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from repmatch.errors import RepmatchError

logger = logging.getLogger(__name__)

TaskKind = Literal["classification", "pair-classification", "regression"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)

FORMATS: tuple[str, ...] = ("csv", "tsv", "json", "jsonl", "parquet")
"""File formats understood, by extension; each may also carry a trailing ``.gz``."""

TEXT_PAIR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("premise", "hypothesis"),
    ("sentence1", "sentence2"),
    ("question1", "question2"),
)
TEXT_COLUMNS: tuple[str, ...] = ("text", "sentence", "review", "content", "document")
LABEL_COLUMNS: tuple[str, ...] = ("label", "labels", "gold_label", "score")
ID_COLUMNS: tuple[str, ...] = ("id", "idx")

_FLAGS = {
    "source": "the data source",
    "split": "--split",
    "hub_config": "--hub-config",
    "text_column": "--text-column",
    "text_pair_column": "--text-pair-column",
    "label_column": "--label-column",
    "id_column": "--id-column",
    "task": "--task",
    "limit": "--limit",
    "sample": "--sample",
    "seed": "--sample-seed",
    "indices_file": "--indices-file",
    "labels": "--labels",
}
_FORMATS_HINT = "use .csv, .tsv, .json, .jsonl or .parquet, optionally with .gz"
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_INT_TEXT = re.compile(r"[+-]?\d+")
_CANONICAL_INT = re.compile(r"-?(0|[1-9]\d*)")
_SPLIT_STEM = re.compile(r"(train|valid|validation|dev|test)(_\w+)?$")
_FINGERPRINT_VERSION = "repmatch-examples-v1"


# --------------------------------------------------------------------------------------------
# What to load


@dataclass(frozen=True)
class DataSpec:
    """Where the data is and which part of it to use.

    Saved as JSON next to outputs, so every field is JSON-serialisable (see :meth:`to_dict`).
    ``split`` applies to folders and Hub names (default ``'train'``; a folder without a train split
    but with a single file uses that file). Column names and ``task`` are detected when ``None``.
    The subset is cut in this order: ``labels`` filter, ``indices_file``, then ``limit`` (first N)
    or ``sample`` (N at random with ``seed``, kept in data order).
    """

    source: str
    split: str | None = None
    hub_config: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    task: TaskKind | None = None
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    indices_file: str | None = None
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Check every field, normalising paths to ``str`` and ``labels`` to a tuple of ``str``."""
        for field in ("source", "indices_file"):
            value = getattr(self, field)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, field, os.fspath(value))
        if not isinstance(self.source, str) or not self.source.strip():
            raise RepmatchError(
                f"data source must be a file, folder or Hugging Face Hub name, got {self.source!r}"
            )
        for field in (
            "split",
            "hub_config",
            "text_column",
            "text_pair_column",
            "label_column",
            "id_column",
            "indices_file",
        ):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise RepmatchError(
                    f"{field} must be a non-empty string, got {value!r}; fix {_FLAGS[field]}"
                )
        if self.task is not None and self.task not in TASK_KINDS:
            raise RepmatchError(
                f"task {self.task!r} is not one of {', '.join(TASK_KINDS)}; "
                "pass one of them to --task or leave it out to detect it"
            )
        for field in ("limit", "sample"):
            value = getattr(self, field)
            if value is not None and (not _is_int(value) or value < 1):
                raise RepmatchError(
                    f"{field} must be a positive whole number, got {value!r}; "
                    f"pass {_FLAGS[field]} N with N >= 1"
                )
        if self.limit is not None and self.sample is not None:
            raise RepmatchError(
                f"limit={self.limit} and sample={self.sample} cannot be used together; "
                "pass either --limit or --sample"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise RepmatchError(
                f"seed must be a whole number >= 0, got {self.seed!r}; fix --sample-seed"
            )
        if self.labels is not None:
            object.__setattr__(self, "labels", _normalise_label_filter(self.labels))
        named = [
            (field, getattr(self, field))
            for field in ("text_column", "text_pair_column", "label_column", "id_column")
            if getattr(self, field) is not None
        ]
        for i, (field, value) in enumerate(named):
            for other, other_value in named[i + 1 :]:
                if value == other_value:
                    raise RepmatchError(
                        f"{field} and {other} are both {value!r}; "
                        f"pass different columns to {_FLAGS[field]} and {_FLAGS[other]}"
                    )

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict (``labels`` as a list)."""
        out = dataclasses.asdict(self)
        out["labels"] = list(self.labels) if self.labels is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSpec:
        """Rebuild a spec from :meth:`to_dict` output; unknown keys are an error."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in known]
        if unknown:
            raise RepmatchError(
                f"unknown data spec field {unknown[0]!r}; known fields: {', '.join(known)}"
            )
        return cls(**dict(data))


def _is_int(value: object) -> bool:
    """True for a whole number that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _normalise_label_filter(labels: object) -> tuple[str, ...]:
    """The ``labels`` filter as a tuple of strings; a single value becomes a 1-tuple."""
    if isinstance(labels, (str, int)):
        labels = (labels,)
    if not isinstance(labels, Sequence) or isinstance(labels, bytes):
        raise RepmatchError(
            f"labels must be a list of label values or names, got {labels!r}; fix --labels"
        )
    out = []
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise RepmatchError(
                f"labels must be strings (label values or names), got {label!r}; fix --labels"
            )
        out.append(str(label).strip() if isinstance(label, str) else str(label))
    if not out:
        raise RepmatchError("labels filter is empty; pass at least one label to --labels")
    return tuple(out)


# --------------------------------------------------------------------------------------------
# What was loaded


@dataclass(eq=False)
class Examples:
    """A loaded (subset of a) dataset.

    Positions run 0..n-1; ``ids`` are the stable instance ids (the row index in the split, or the
    values of the id column). ``labels`` are int64 class indices for classification kinds and
    float32 for regression. ``num_labels`` counts the classes of the full split, so a subset
    missing a class still has the full count. ``label_names`` gives the class names when labels
    were strings (mapped in sorted order) or the Hub dataset names its classes, else ``None``.
    ``columns`` records the columns used under the keys text, text_pair, label and id.
    """

    name: str
    task: TaskKind
    texts: list[str]
    text_pairs: list[str] | None
    labels: np.ndarray
    ids: list[int] | list[str]
    num_labels: int
    label_names: list[str] | None
    columns: dict[str, str | None]
    spec: DataSpec | None = None  # what these were loaded from; None once re-selected

    def __post_init__(self) -> None:
        """Check that the per-instance fields have one entry per instance."""
        n = len(self.texts)
        sizes = [len(self.ids), len(self.labels)]
        if self.text_pairs is not None:
            sizes.append(len(self.text_pairs))
        if any(size != n for size in sizes):
            raise ValueError(f"Examples fields have different lengths: {n} texts vs {sizes}")

    def __len__(self) -> int:
        """Number of instances."""
        return len(self.texts)

    def __repr__(self) -> str:
        """Short summary (the texts would be far too long to show)."""
        return (
            f"Examples(name={self.name!r}, task={self.task!r}, n={len(self)}, "
            f"num_labels={self.num_labels}, columns={self.columns!r})"
        )

    def __eq__(self, other: object) -> bool:
        """Equal when every field, including label values and dtype, is equal."""
        if not isinstance(other, Examples):
            return NotImplemented
        return (
            self.name == other.name
            and self.task == other.task
            and self.texts == other.texts
            and self.text_pairs == other.text_pairs
            and self.labels.dtype == other.labels.dtype
            and np.array_equal(self.labels, other.labels)
            and self.ids == other.ids
            and self.num_labels == other.num_labels
            and self.label_names == other.label_names
            and self.columns == other.columns
        )

    __hash__ = None  # type: ignore[assignment]

    def select(self, positions: Sequence[int] | np.ndarray) -> Examples:
        """A new :class:`Examples` holding the instances at ``positions``, in that order."""
        index = np.asarray(positions)
        if index.size == 0:
            index = index.astype(np.int64)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"positions must be a 1-d sequence of ints, got dtype {index.dtype}")
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(
                f"positions must lie in 0..{len(self) - 1}, got {int(index.min())}.."
                f"{int(index.max())}"
            )
        picks = index.tolist()
        return Examples(
            name=self.name,
            task=self.task,
            texts=[self.texts[i] for i in picks],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in picks],
            labels=self.labels[index].copy(),
            ids=[self.ids[i] for i in picks],
            num_labels=self.num_labels,
            label_names=None if self.label_names is None else list(self.label_names),
            columns=dict(self.columns),
        )

    def fingerprint(self) -> str:
        """SHA-256 hex digest over task, ids, texts, text pairs and labels.

        Stable across runs and machines; any change to a text, label or id (including an id's
        type, ``5`` vs ``"5"``) changes it. Names, columns and label names are not included.
        """
        labels = self.labels.tolist()
        payload = [_FINGERPRINT_VERSION, self.task, self.ids, self.texts, self.text_pairs, labels]
        data = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=True)
        return hashlib.sha256(data.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------------------------
# Finding files


def _parse_filename(path: Path) -> tuple[str, str, bool] | None:
    """``(stem, format, gzipped)`` for a supported data file name, else ``None``."""
    name = path.name
    gzipped = name.lower().endswith(".gz")
    if gzipped:
        name = name[:-3]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or ext.lower() not in FORMATS:
        return None
    return stem, ext.lower(), gzipped


def _split_files(folder: Path) -> dict[str, list[Path]]:
    """Split name -> data files in ``folder`` (more than one file per split is an error later)."""
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        parsed = _parse_filename(path)
        if parsed is not None:
            out.setdefault(parsed[0], []).append(path)
    return out


def list_splits(folder: str | Path) -> list[str]:
    """Names of the splits in ``folder``: files named ``<split>.<ext>[.gz]``, sorted."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise RepmatchError(f"no such folder: {str(folder)!r}; pass a folder of split files")
    return sorted(_split_files(path))


def _looks_like_path(source: str) -> bool:
    """Whether a source that does not exist was meant as a local path, not a Hub name."""
    if source.startswith(("/", "./", "../", "~", ".\\", "..\\")) or source in (".", ".."):
        return True
    if os.sep in source.replace("/", "") or (os.altsep and os.altsep in source.replace("/", "")):
        return True
    if _parse_filename(Path(source)) is not None:
        return True
    return _HUB_NAME.fullmatch(source) is None


def _display(path: Path) -> str:
    """``parent/name`` for messages, e.g. ``sst2/train.jsonl.gz``."""
    parent = path.resolve().parent.name
    return f"{parent}/{path.name}" if parent else path.name


# --------------------------------------------------------------------------------------------
# Reading tables


@dataclass
class _Table:
    """Raw columns of one split, before any column is interpreted."""

    name: str
    where: str
    columns: list[str]
    num_rows: int
    get: Callable[[str], list[Any]]
    untyped: bool = False
    class_names: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _read_bytes(path: Path, gzipped: bool) -> bytes:
    """The file's bytes, gunzipped when ``gzipped``."""
    where = _display(path)
    try:
        if gzipped:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise RepmatchError(f"could not read {where}: {_one_line(exc)}; check the file") from exc


def _decode(data: bytes, where: str) -> str:
    """UTF-8 text (a leading byte-order mark is dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RepmatchError(
            f"{where} is not UTF-8 text (bad byte at offset {exc.start}); re-save it as UTF-8"
        ) from exc


def _records_table(records: list[Any], name: str, where: str) -> _Table:
    """A table over JSON records; columns are the union of their keys, in order seen."""
    columns: dict[str, None] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RepmatchError(
                f"record {i} of {where} is a {type(record).__name__}, not an object; "
                "each record must map column names to values"
            )
        for key in record:
            columns.setdefault(key, None)
    return _Table(
        name=name,
        where=where,
        columns=list(columns),
        num_rows=len(records),
        get=lambda column: [record.get(column) for record in records],
    )


def _json_lines(text: str, where: str) -> list[Any]:
    """Parse JSON Lines, skipping blank lines."""
    records = []
    # Split on "\n" only: str.splitlines() would also split on characters such as U+2028
    # that JSON allows unescaped inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RepmatchError(
                f"line {number} of {where} is not valid JSON ({exc.msg}); fix or remove that line"
            ) from exc
    return records


def _read_json(text: str, name: str, where: str, lines: bool) -> _Table:
    """A ``.json`` or ``.jsonl`` file: JSON Lines, an array of records or an object of columns."""
    if lines:
        return _records_table(_json_lines(text, where), name, where)
    stripped = text.lstrip()
    try:
        data = json.loads(stripped) if stripped else []
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and stripped.startswith("{"):
            return _records_table(_json_lines(text, where), name, where)
        raise RepmatchError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "it must be a JSON array of records or JSON Lines"
        ) from exc
    if isinstance(data, list):
        return _records_table(data, name, where)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        sizes = {len(v) for v in data.values()}
        if len(sizes) != 1:
            raise RepmatchError(
                f"{where} holds columns of different lengths ({sorted(sizes)}); "
                "every column must have one value per row"
            )
        return _Table(name, where, list(data), sizes.pop(), lambda column: list(data[column]))
    if isinstance(data, dict):
        return _records_table([data], name, where)
    raise RepmatchError(
        f"{where} holds a JSON {type(data).__name__}; it must be an array of records or JSON Lines"
    )


def _frame_table(frame: pd.DataFrame, name: str, where: str, untyped: bool = False) -> _Table:
    """A table over a pandas DataFrame."""
    return _Table(
        name=name,
        where=where,
        columns=[str(c) for c in frame.columns],
        num_rows=len(frame),
        get=lambda column: frame[column].tolist(),
        untyped=untyped,
    )


def _read_file(path: Path, name: str) -> _Table:
    """Read one data file in the format named by its extension."""
    parsed = _parse_filename(path)
    where = _display(path)
    if parsed is None:
        raise RepmatchError(f"unsupported file type: {path.name!r}; {_FORMATS_HINT}")
    _, fmt, gzipped = parsed
    data = _read_bytes(path, gzipped)
    if fmt in ("json", "jsonl"):
        return _read_json(_decode(data, where), name, where, lines=fmt == "jsonl")
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except (OSError, ValueError) as exc:
            raise RepmatchError(
                f"could not read {where} as parquet ({_one_line(exc)}); check the file"
            ) from exc
        return _frame_table(frame, name, where)
    text = _decode(data, where)
    if not text.strip():
        return _Table(name, where, [], 0, lambda column: [])
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep="\t" if fmt == "tsv" else ",",
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise RepmatchError(
            f"could not read {where} as {fmt} ({_one_line(exc)}); fix the file"
        ) from exc
    return _frame_table(frame, name, where, untyped=True)


def _read_hub(spec: DataSpec) -> _Table:
    """Load a Hugging Face Hub dataset split; class names come from ClassLabel features."""
    split = spec.split or "train"
    base = spec.hub_config or spec.source.rstrip("/").rsplit("/", 1)[-1]
    name = f"{base}/{split}"
    label = spec.source + (f" ({spec.hub_config})" if spec.hub_config else "")
    logger.info("loading %s split %s from the Hugging Face Hub", label, split)
    try:
        import datasets

        dataset = datasets.load_dataset(spec.source, spec.hub_config, split=split)
        frame = dataset.to_pandas()
        features = dataset.features
    except Exception as exc:
        raise RepmatchError(
            f"could not load {spec.source!r} from the Hugging Face Hub ({_one_line(exc)}); "
            "pass a local file or folder, or check the name and your connection"
        ) from exc
    table = _frame_table(frame, name, f"{label} split {split}")
    for column, feature in features.items():
        names = getattr(feature, "names", None)
        if isinstance(feature, datasets.ClassLabel) and names:
            table.class_names[column] = [str(n) for n in names]
    return table


def _one_line(exc: BaseException, width: int = 200) -> str:
    """The first line of an exception's message, shortened to ``width`` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


def _open_source(spec: DataSpec) -> _Table:
    """Read the split named by ``spec``: a file, a folder of split files or a Hub dataset."""
    path = Path(spec.source).expanduser()
    if path.exists():
        if spec.hub_config is not None:
            raise RepmatchError(
                f"--hub-config {spec.hub_config!r} only applies to Hugging Face Hub names, "
                f"but {spec.source!r} is a local path; leave --hub-config out"
            )
        if path.is_dir():
            return _read_folder(path, spec.split)
        parsed = _parse_filename(path)
        if parsed is None:
            raise RepmatchError(f"unsupported file type: {path.name!r}; {_FORMATS_HINT}")
        if spec.split is not None and spec.split != parsed[0]:
            raise RepmatchError(
                f"--split {spec.split!r} applies to folders and Hub names, but {spec.source!r} "
                "is a single file; leave --split out or pass the folder"
            )
        return _read_file(path, _file_name(path, parsed[0]))
    if _looks_like_path(spec.source):
        raise RepmatchError(f"no such file or folder: {spec.source!r}; check the path")
    return _read_hub(spec)


def _file_name(path: Path, stem: str) -> str:
    """Display name of a single file: its stem, prefixed by its folder when the stem is a split
    name (``sst2/train.jsonl.gz`` -> ``sst2/train``, ``reviews.csv`` -> ``reviews``)."""
    if _SPLIT_STEM.match(stem) and path.resolve().parent.name:
        return f"{path.resolve().parent.name}/{stem}"
    return stem


def _read_folder(folder: Path, split: str | None) -> _Table:
    """Read one split from a folder of ``<split>.<ext>`` files."""
    folder_name = folder.resolve().name
    splits = _split_files(folder)
    if not splits:
        raise RepmatchError(
            f"no data files in {str(folder)!r}; expected files named <split>.<ext>: {_FORMATS_HINT}"
        )
    available = ", ".join(sorted(splits))
    if split is None:
        if "train" in splits:
            split = "train"
        elif len(splits) == 1:
            split = next(iter(splits))
        else:
            raise RepmatchError(
                f"{folder_name} has no 'train' split; available splits: {available}; "
                "pass --split with one of them"
            )
    elif split not in splits:
        raise RepmatchError(
            f"split {split!r} not found in {folder_name}; available splits: {available}; "
            "pass --split with one of them"
        )
    files = splits[split]
    if len(files) > 1:
        raise RepmatchError(
            f"split {split!r} in {folder_name} has several files "
            f"({', '.join(f.name for f in files)}); keep only one"
        )
    return _read_file(files[0], f"{folder_name}/{split}")


# --------------------------------------------------------------------------------------------
# Columns


def _preview(names: Sequence[object], limit: int = 30) -> str:
    """Comma-separated names, shortened when there are many."""
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _explicit(table: _Table, column: str, field: str) -> str:
    """Check that a column the user named exists."""
    if column not in table.columns:
        raise RepmatchError(
            f"column {column!r} not found in {table.where}; available columns: "
            f"{_preview(table.columns)}; pass {_FLAGS[field]}"
        )
    return column


def _auto(
    table: _Table, candidates: Sequence[str], exclude: Sequence[str | None] = ()
) -> str | None:
    """The first candidate column present (exact name first, then ignoring case)."""
    by_lower: dict[str, str] = {}
    for column in table.columns:
        if column not in exclude:
            by_lower.setdefault(column.lower(), column)
    for candidate in candidates:
        if candidate in table.columns and candidate not in exclude:
            return candidate
    for candidate in candidates:
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    return None


def _choose_columns(spec: DataSpec, table: _Table) -> dict[str, str | None]:
    """The text, text_pair, label and id columns to use (``None`` where absent)."""
    text: str | None = None
    pair: str | None = None
    if spec.text_column is not None:
        text = _explicit(table, spec.text_column, "text_column")
        if spec.text_pair_column is not None:
            pair = _explicit(table, spec.text_pair_column, "text_pair_column")
    elif spec.text_pair_column is not None:
        pair = _explicit(table, spec.text_pair_column, "text_pair_column")
        firsts = [a for a, b in TEXT_PAIR_COLUMNS if b == pair.lower()]
        text = _auto(table, firsts + [a for a, _ in TEXT_PAIR_COLUMNS] + list(TEXT_COLUMNS), [pair])
    else:
        for first, second in TEXT_PAIR_COLUMNS:
            a, b = _auto(table, [first]), _auto(table, [second])
            if a is not None and b is not None:
                text, pair = a, b
                break
        else:
            text = _auto(table, TEXT_COLUMNS)
    if text is None:
        raise RepmatchError(
            f"no text column found in {table.where} (columns: {_preview(table.columns)}); "
            "pass --text-column"
        )
    if spec.label_column is not None:
        label = _explicit(table, spec.label_column, "label_column")
    else:
        label = _auto(table, LABEL_COLUMNS, [text, pair])
        if label is None:
            raise RepmatchError(
                f"no label column found in {table.where} (columns: {_preview(table.columns)}); "
                "pass --label-column"
            )
    if spec.id_column is not None:
        id_column: str | None = _explicit(table, spec.id_column, "id_column")
    else:
        id_column = _auto(table, ID_COLUMNS, [text, pair, label])
    used = [c for c in (text, pair, label, id_column) if c is not None]
    if len(set(used)) != len(used):
        raise RepmatchError(
            f"the same column is used twice in {table.where} (text={text!r}, text_pair={pair!r}, "
            f"label={label!r}, id={id_column!r}); pass distinct columns"
        )
    return {"text": text, "text_pair": pair, "label": label, "id": id_column}


# --------------------------------------------------------------------------------------------
# Values


def _is_missing(value: object) -> bool:
    """True for None, NA, NaT and NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return False


def _texts(table: _Table, column: str) -> list[str]:
    """A text column as strings; missing or non-string values are an error."""
    values = table.get(column)
    if all(type(v) is str for v in values):
        return values
    out: list[str] = []
    for row, value in enumerate(values):
        if isinstance(value, str):
            out.append(str(value))
            continue
        if _is_missing(value):
            count = sum(1 for v in values if _is_missing(v))
            raise RepmatchError(
                f"text column {column!r} in {table.where} is missing in {count} rows "
                f"(first: row {row}, counting from 0); fill or drop those rows"
            )
        raise RepmatchError(
            f"text column {column!r} in {table.where} holds {_short(value)} "
            f"({type(value).__name__}) in row {row}, not a string; pass the right --text-column"
        )
    return out


def _short(value: object, width: int = 40) -> str:
    """``repr(value)`` shortened to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _numbers_from_text(values: list[Any]) -> list[Any]:
    """Turn csv/tsv cell strings into ints or floats when every non-empty cell is one."""
    present = [v for v in values if isinstance(v, str) and v.strip()]
    if not present:
        return values
    if all(_INT_TEXT.fullmatch(v.strip()) for v in present):
        return [int(v) if isinstance(v, str) and v.strip() else v for v in values]
    try:
        floats = [float(v) for v in present]
    except ValueError:
        return values
    if any(math.isnan(f) for f in floats):  # "nan" as a label is not a number to convert
        return values
    return [float(v) if isinstance(v, str) and v.strip() else v for v in values]


@dataclass
class _Labels:
    """Label column of the full split, interpreted."""

    column: str
    kind: Literal["int", "float", "str"]
    raw: np.ndarray  # int64 class values (may be negative) / float64 / int64 string indices
    names: list[str] | None  # class names for "str" (sorted) or from the Hub


def _labels(table: _Table, column: str) -> _Labels:
    """Interpret the label column of the full split (ints, fractional floats or strings)."""
    values = table.get(column)
    if table.untyped:
        values = _numbers_from_text(values)
    missing = [
        row
        for row, v in enumerate(values)
        if _is_missing(v) or (isinstance(v, str) and not v.strip())
    ]
    if missing:
        raise RepmatchError(
            f"label column {column!r} in {table.where} is missing in {len(missing)} rows "
            f"(first: row {missing[0]}, counting from 0); fill or drop those rows"
        )
    kinds: dict[str, int] = {}
    for row, value in enumerate(values):
        if isinstance(value, (bool, np.bool_, str)):
            kind = "str"
        elif isinstance(value, (int, np.integer)):
            kind = "int"
        elif isinstance(value, (float, np.floating)):
            kind = "float"
        else:
            raise RepmatchError(
                f"label column {column!r} in {table.where} holds a {type(value).__name__} "
                f"({_short(value)}) in row {row}; labels must be numbers or strings, "
                "pass the right --label-column"
            )
        kinds.setdefault(kind, row)
    if "str" in kinds and len(kinds) > 1:
        number_row = min(row for kind, row in kinds.items() if kind != "str")
        raise RepmatchError(
            f"label column {column!r} in {table.where} mixes strings (row {kinds['str']}) and "
            f"numbers (row {number_row}); make the labels all one type"
        )
    if "str" in kinds:
        strings = [str(v) for v in values]
        names = sorted(set(strings))
        index = {name: i for i, name in enumerate(names)}
        return _Labels(column, "str", np.array([index[s] for s in strings], dtype=np.int64), names)
    raw = np.asarray(values, dtype=np.float64) if "float" in kinds else None
    if raw is not None:
        bad = np.flatnonzero(~np.isfinite(raw))
        if bad.size:
            raise RepmatchError(
                f"label column {column!r} in {table.where} holds {values[bad[0]]} in row "
                f"{bad[0]}; labels must be finite numbers"
            )
        if not np.all(raw == np.round(raw)):
            return _Labels(column, "float", raw, None)
    ints = np.asarray(values if raw is None else raw, dtype=np.int64)
    return _Labels(column, "int", ints, table.class_names.get(column))


def _ids(table: _Table, column: str | None) -> list[int] | list[str]:
    """Stable ids: the id column's values (unique ints or strings) or the row numbers."""
    if column is None:
        return list(range(table.num_rows))
    values = table.get(column)
    if table.untyped and all(_CANONICAL_INT.fullmatch(v) for v in values):
        # Only canonical integers become ints, so ids such as "007" keep their spelling.
        values = [int(v) for v in values]
    out: list[Any] = []
    seen_types: set[type] = set()
    for row, value in enumerate(values):
        if _is_missing(value) or (isinstance(value, str) and not value.strip()):
            raise RepmatchError(
                f"id column {column!r} in {table.where} is missing in row {row}; "
                "fill it or pass another --id-column"
            )
        if isinstance(value, str):
            out.append(str(value))
        elif _is_int(value):
            out.append(int(value))
        elif isinstance(value, (float, np.floating)) and float(value).is_integer():
            out.append(int(value))
        else:
            raise RepmatchError(
                f"id column {column!r} in {table.where} holds a {type(value).__name__} "
                f"({_short(value)}) in row {row}; ids must be whole numbers or strings"
            )
        seen_types.add(type(out[-1]))
    if len(seen_types) > 1:
        raise RepmatchError(
            f"id column {column!r} in {table.where} mixes numbers and strings; "
            "make the ids all one type or pass another --id-column"
        )
    first_row: dict[Any, int] = {}
    for row, value in enumerate(out):
        if value in first_row:
            raise RepmatchError(
                f"id column {column!r} in {table.where} repeats id {value!r} "
                f"(rows {first_row[value]} and {row}); ids must be unique, pass another --id-column"
            )
        first_row[value] = row
    return out


def _detect_task(
    spec: DataSpec, labels: _Labels, columns: dict[str, str | None], where: str
) -> str:
    """The task kind: explicit, else from the labels and text columns; checks they agree."""
    label_column = columns["label"] or ""
    if spec.task is not None:
        task: str = spec.task
    elif labels.kind == "float" or label_column.lower() == "score":
        task = "regression"
    elif columns["text_pair"] is not None:
        task = "pair-classification"
    else:
        task = "classification"
    if task == "regression" and labels.kind == "str":
        raise RepmatchError(
            f"task 'regression' needs numeric labels, but {label_column!r} in {where} holds "
            f"strings (e.g. {labels.names[0]!r}); pass --task classification or another "
            "--label-column"
        )
    if task != "regression" and labels.kind == "float":
        example = next(v for v in labels.raw if v != round(v))
        raise RepmatchError(
            f"task {task!r} needs whole-number or string labels, but {label_column!r} in {where} "
            f"holds {example:g}; pass --task regression"
        )
    if task == "pair-classification" and columns["text_pair"] is None:
        raise RepmatchError(
            f"task 'pair-classification' needs a second text column, but none was found in "
            f"{where}; pass --text-pair-column"
        )
    if task == "classification" and columns["text_pair"] is not None:
        raise RepmatchError(
            f"task 'classification' takes one text column, but {where} has the pair "
            f"{columns['text']!r}/{columns['text_pair']!r}; pass --task pair-classification, "
            "or --text-column alone to use one text"
        )
    return task


# --------------------------------------------------------------------------------------------
# Subsets


def _read_indices_file(path_text: str) -> list[str]:
    """Ids listed in an indices file (one per line, or a JSON list), as strings."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise RepmatchError(f"indices file not found: {path_text!r}; fix --indices-file")
    where = path.name
    text = _decode(_read_bytes(path, path.name.lower().endswith(".gz")), where)
    if path.name.lower().removesuffix(".gz").endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RepmatchError(
                f"indices file {where} is not valid JSON ({exc.msg}); it must be a JSON list of ids"
            ) from exc
        if not isinstance(data, list) or not all(
            isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in data
        ):
            raise RepmatchError(
                f"indices file {where} must hold a JSON list of ids (strings or whole numbers)"
            )
        ids = [str(v) for v in data]
    else:
        ids = [line.strip() for line in text.split("\n") if line.strip()]
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise RepmatchError(
                f"indices file {where} lists id {value!r} more than once; list each id once"
            )
        seen.add(value)
    return ids


def _empty(name: str, step: str, hint: str) -> RepmatchError:
    """The error for a subset that some step left empty."""
    return RepmatchError(f"the subset of {name} is empty after {step}; {hint}")


def _subset(
    spec: DataSpec,
    table: _Table,
    task: str,
    labels: _Labels,
    ids: list[int] | list[str],
    id_column: str | None,
) -> np.ndarray:
    """Positions (into the full split) of the instances to keep, in order."""
    positions = np.arange(table.num_rows, dtype=np.int64)
    classification = task != "regression"
    if spec.labels is not None:
        if not classification:
            raise RepmatchError(
                f"--labels filters classes, but {table.name} is a regression task; "
                "leave --labels out"
            )
        values, inverse = np.unique(labels.raw, return_inverse=True)
        present: list[str] = []
        wanted = set(spec.labels)
        matched: set[str] = set()
        keep_value = np.zeros(len(values), dtype=bool)
        for i, value in enumerate(values.tolist()):
            keys = _names_for(labels, value)
            present.append(keys[-1] if len(keys) == 1 else f"{keys[0]} ({keys[1]})")
            hits = wanted.intersection(keys)
            if hits:
                keep_value[i] = True
                matched.update(hits)
        if not keep_value.any():
            raise _empty(
                table.name,
                f"the label filter --labels {' '.join(spec.labels)}",
                f"labels in this split: {_preview(present)}; fix --labels",
            )
        unmatched = [label for label in spec.labels if label not in matched]
        if unmatched:
            logger.warning(
                "--labels %s match no instance of %s (labels present: %s)",
                " ".join(unmatched),
                table.name,
                _preview(present),
            )
        positions = positions[keep_value[inverse]]
    if classification and labels.kind == "int":
        negative = positions[labels.raw[positions] < 0]
        if negative.size:
            valid = " ".join(str(v) for v in sorted({v for v in labels.raw.tolist() if v >= 0}))
            raise RepmatchError(
                f"label column {labels.column!r} in {table.name} holds negative label "
                f"{labels.raw[negative[0]]} in {negative.size} rows (first: row {negative[0]}); "
                f"negative labels usually mark unlabelled rows, keep real ones with "
                f"--labels {valid or '0'}"
            )
    if spec.indices_file is not None:
        wanted_ids = _read_indices_file(spec.indices_file)
        where = Path(spec.indices_file).name
        if not wanted_ids:
            raise _empty(table.name, f"the indices file {where}", "it lists no ids; add ids to it")
        lookup = {str(value): row for row, value in enumerate(ids)}
        missing = [value for value in wanted_ids if value not in lookup]
        if missing:
            kind = f"values of column {id_column!r}" if id_column else "row numbers (from 0)"
            raise RepmatchError(
                f"indices file {where} lists {len(missing)} ids not in {table.name} "
                f"(first: {missing[0]!r}); ids must be {kind} of this split"
            )
        kept = np.zeros(table.num_rows, dtype=bool)
        kept[positions] = True
        rows = [lookup[value] for value in wanted_ids]
        positions = np.asarray([row for row in rows if kept[row]], dtype=np.int64)
        if positions.size == 0:
            raise _empty(
                table.name,
                f"the indices file {where}",
                "none of its ids passed the label filter; check --labels and --indices-file",
            )
        if positions.size < len(rows):
            logger.info(
                "%d ids of %s were dropped by the label filter", len(rows) - positions.size, where
            )
    if spec.limit is not None:
        if spec.limit > positions.size:
            logger.info(
                "--limit %d is more than the %d instances available in %s; using all",
                spec.limit,
                positions.size,
                table.name,
            )
        positions = positions[: spec.limit]
    elif spec.sample is not None:
        if spec.sample > positions.size:
            raise RepmatchError(
                f"cannot sample {spec.sample} from {positions.size} instances of {table.name}; "
                "lower --sample"
            )
        chosen = np.random.default_rng(spec.seed).choice(
            positions.size, size=spec.sample, replace=False
        )
        positions = positions[np.sort(chosen)]
    return positions


def _names_for(labels: _Labels, value: Any) -> list[str]:
    """The strings that name one raw label value: its value, then its class name if known."""
    if labels.kind == "str":
        assert labels.names is not None
        return [labels.names[int(value)]]
    keys = [str(int(value))]
    if labels.names is not None and 0 <= int(value) < len(labels.names):
        keys.append(labels.names[int(value)])
    return keys


# --------------------------------------------------------------------------------------------
# Loading


def load_examples(spec: DataSpec) -> Examples:
    """Load the data and subset described by ``spec``.

    Task kind, columns and ``num_labels`` are worked out on the full split; the subset is then cut
    (label filter, indices file, limit or sample). Problems with the data or the spec are raised
    as :class:`~repmatch.errors.RepmatchError` with a one-line explanation.
    """
    table = _open_source(spec)
    if table.num_rows == 0:
        raise RepmatchError(f"{table.where} has no rows; check the file or pick another --split")
    columns = _choose_columns(spec, table)
    text_column = columns["text"]
    label_column = columns["label"]
    assert text_column is not None and label_column is not None
    texts = _texts(table, text_column)
    pairs = _texts(table, columns["text_pair"]) if columns["text_pair"] is not None else None
    labels = _labels(table, label_column)
    task = _detect_task(spec, labels, columns, table.where)
    ids = _ids(table, columns["id"])
    positions = _subset(spec, table, task, labels, ids, columns["id"])

    if task == "regression":
        label_array = labels.raw.astype(np.float32)
        num_labels, label_names = 1, None
    else:
        label_array = labels.raw.astype(np.int64)
        names = labels.names
        top = int(label_array.max()) + 1 if label_array.size else 0
        num_labels = max(top, len(names) if names is not None else 0, 1)
        label_names = list(names) if names is not None else None
    picks = positions.tolist()
    full = Examples(
        name=table.name,
        task=task,  # type: ignore[arg-type]
        texts=texts,
        text_pairs=pairs,
        labels=label_array,
        ids=ids,
        num_labels=num_labels,
        label_names=label_names,
        columns=columns,
    )
    examples = full if picks == list(range(table.num_rows)) else full.select(positions)
    examples.spec = spec
    logger.info(
        "loaded %d of %d instances from %s (task %s, columns %s)",
        len(examples),
        table.num_rows,
        table.where,
        task,
        columns,
    )
    return examples
