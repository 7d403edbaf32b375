"""Reading raw tables: local files (csv, tsv, json, jsonl, parquet, each optionally gzipped),
folders of split files, Hugging Face Hub datasets, and in-memory pandas DataFrames and
``datasets.Dataset`` objects.

``.tsv`` files are read without quote handling (GLUE style: a ``"`` is an ordinary character, so
fields cannot hold tabs or newlines); ``.csv`` files use standard quoting. In csv/tsv files every
cell is text, so "NA" or "null" stay text; label and id columns are turned into numbers later
(:mod:`repmatch.data.labels`) when every value is one.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import logging
import os
import re
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd

from repmatch.data.spec import DataSpec
from repmatch.errors import RepmatchError, first_line

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "tsv", "json", "jsonl", "parquet")
"""File formats understood, by extension; each may also carry a trailing ``.gz``."""

_FORMATS_HINT = "use .csv, .tsv, .json, .jsonl or .parquet, optionally with .gz"
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_SPLIT_STEM = re.compile(r"(train|valid|validation|dev|test)(_\w+)?$")


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
class Table:
    """Raw columns of one split, before any column is interpreted."""

    name: str
    where: str
    columns: list[str]
    num_rows: int
    get: Callable[[str], list[Any]]
    untyped: bool = False
    class_names: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def read_bytes(path: Path, gzipped: bool) -> bytes:
    """The file's bytes, gunzipped when ``gzipped``."""
    where = _display(path)
    try:
        if gzipped:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise RepmatchError(
            f"could not read {where}: its gzip stream is corrupted or cut short "
            f"({first_line(exc)}); download or compress it again"
        ) from None
    except OSError as exc:
        raise RepmatchError(f"could not read {where}: {first_line(exc)}; check the file") from exc


def decode(data: bytes, where: str) -> str:
    """UTF-8 text (a leading byte-order mark is dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RepmatchError(
            f"{where} is not UTF-8 text (bad byte at offset {exc.start}); re-save it as UTF-8"
        ) from exc


def _records_table(records: list[Any], name: str, where: str) -> Table:
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
    return Table(
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


def _read_json(text: str, name: str, where: str, lines: bool) -> Table:
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
        return Table(name, where, list(data), sizes.pop(), lambda column: list(data[column]))
    if isinstance(data, dict):
        return _records_table([data], name, where)
    raise RepmatchError(
        f"{where} holds a JSON {type(data).__name__}; it must be an array of records or JSON Lines"
    )


def _frame_table(frame: pd.DataFrame, name: str, where: str, untyped: bool = False) -> Table:
    """A table over a pandas DataFrame; columns are named by ``str`` of their labels."""
    names = [str(c) for c in frame.columns]
    repeated = next((n for n in names if names.count(n) > 1), None)
    if repeated is not None:
        raise RepmatchError(
            f"{where} has more than one column named {repeated!r}; give every column its own name"
        )
    by_name = dict(zip(names, frame.columns, strict=True))
    return Table(
        name=name,
        where=where,
        columns=names,
        num_rows=len(frame),
        get=lambda column: frame[by_name[column]].tolist(),
        untyped=untyped,
    )


def _dataset_table(dataset: Any, name: str, where: str) -> Table:
    """A table over a ``datasets.Dataset``; class names come from its ClassLabel features."""
    import datasets

    table = _frame_table(dataset.to_pandas(), name, where)
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel) and feature.names:
            table.class_names[str(column)] = [str(n) for n in feature.names]
    return table


def _is_instance(data: object, module: str, kind: str) -> TypeGuard[Any]:
    """``isinstance(data, module.kind)`` without importing ``module`` (unused when not loaded)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(data, getattr(loaded, kind))


def in_memory_table(data: object, name: str | None = None) -> Table:
    """A table over a pandas DataFrame or a ``datasets.Dataset`` (one split).

    ``name`` labels the data in messages and records; by default a Dataset is named
    ``<dataset>/<split>`` when it knows both, else the data is called ``dataframe``/``dataset``.
    """
    if isinstance(data, pd.DataFrame):
        name = name or "dataframe"
        return _frame_table(data, name, f"DataFrame {name!r}")
    if _is_instance(data, "datasets", "Dataset"):
        if name is None:
            parts = [data.info.dataset_name, str(data.split) if data.split else None]
            name = "/".join(p for p in parts if p) or "dataset"
        return _dataset_table(data, name, f"Dataset {name!r}")
    if _is_instance(data, "datasets", "DatasetDict"):
        raise RepmatchError(
            f"got a DatasetDict with splits {', '.join(data)}; pass one split, "
            f"e.g. data[{next(iter(data), 'train')!r}]"
        )
    raise RepmatchError(
        f"cannot read data from a {type(data).__name__}; pass a DataSpec, a file or folder path, "
        "a pandas DataFrame, a datasets.Dataset or Examples"
    )


def _read_file(path: Path, name: str) -> Table:
    """Read one data file in the format named by its extension."""
    parsed = _parse_filename(path)
    where = _display(path)
    if parsed is None:
        raise RepmatchError(f"unsupported file type: {path.name!r}; {_FORMATS_HINT}")
    _, fmt, gzipped = parsed
    data = read_bytes(path, gzipped)
    if fmt in ("json", "jsonl"):
        return _read_json(decode(data, where), name, where, lines=fmt == "jsonl")
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except (OSError, ValueError) as exc:
            raise RepmatchError(
                f"could not read {where} as parquet ({first_line(exc)}); check the file"
            ) from exc
        return _frame_table(frame, name, where)
    text = decode(data, where)
    if not text.strip():
        return Table(name, where, [], 0, lambda column: [])
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
            f"could not read {where} as {fmt} ({first_line(exc)}); fix the file"
        ) from exc
    return _frame_table(frame, name, where, untyped=True)


def _read_hub(spec: DataSpec) -> Table:
    """Load a Hugging Face Hub dataset split; class names come from ClassLabel features."""
    split = spec.split or "train"
    base = spec.hub_config or spec.source.rstrip("/").rsplit("/", 1)[-1]
    name = f"{base}/{split}"
    label = spec.source + (f" ({spec.hub_config})" if spec.hub_config else "")
    logger.info("loading %s split %s from the Hugging Face Hub", label, split)
    try:
        import datasets

        dataset = datasets.load_dataset(spec.source, spec.hub_config, split=split)
    except Exception as exc:
        raise RepmatchError(
            f"could not load {spec.source!r} from the Hugging Face Hub ({first_line(exc)}); "
            "pass a local file or folder, or check the name and your connection",
            field="source",
        ) from exc
    return _dataset_table(dataset, name, f"{label} split {split}")


def open_source(spec: DataSpec) -> Table:
    """Read the split named by ``spec``: a file, a folder of split files or a Hub dataset."""
    path = Path(spec.source).expanduser()
    if path.exists():
        if spec.hub_config is not None:
            raise RepmatchError(
                f"hub_config {spec.hub_config!r} only applies to Hugging Face Hub names, "
                f"but {spec.source!r} is a local path; leave hub_config unset",
                field="hub_config",
            )
        if path.is_dir():
            return _read_folder(path, spec.split)
        parsed = _parse_filename(path)
        if parsed is None:
            raise RepmatchError(
                f"unsupported file type: {path.name!r}; {_FORMATS_HINT}", field="source"
            )
        if spec.split is not None and spec.split != parsed[0]:
            raise RepmatchError(
                f"split {spec.split!r} applies to folders and Hub names, but {spec.source!r} "
                "is a single file; leave split unset or pass the folder",
                field="split",
            )
        return _read_file(path, _file_name(path, parsed[0]))
    if _looks_like_path(spec.source):
        raise RepmatchError(
            f"no such file or folder: {spec.source!r}; check the path", field="source"
        )
    return _read_hub(spec)


def _file_name(path: Path, stem: str) -> str:
    """Display name of a single file: its stem, prefixed by its folder when the stem is a split
    name (``sst2/train.jsonl.gz`` -> ``sst2/train``, ``reviews.csv`` -> ``reviews``)."""
    if _SPLIT_STEM.match(stem) and path.resolve().parent.name:
        return f"{path.resolve().parent.name}/{stem}"
    return stem


def _read_folder(folder: Path, split: str | None) -> Table:
    """Read one split from a folder of ``<split>.<ext>`` files."""
    folder_name = folder.resolve().name
    splits = _split_files(folder)
    if not splits:
        raise RepmatchError(
            f"no data files in {str(folder)!r}; expected files named <split>.<ext>: "
            f"{_FORMATS_HINT}",
            field="source",
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
                "set split to one of them",
                field="split",
            )
    elif split not in splits:
        raise RepmatchError(
            f"split {split!r} not found in {folder_name}; available splits: {available}; "
            "set split to one of them",
            field="split",
        )
    files = splits[split]
    if len(files) > 1:
        raise RepmatchError(
            f"split {split!r} in {folder_name} has several files "
            f"({', '.join(f.name for f in files)}); keep only one"
        )
    return _read_file(files[0], f"{folder_name}/{split}")
