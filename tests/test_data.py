"""Tests for repmatch.data: reading files, folders and the Hub, column/task detection, subsets."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repmatch.data import FLAGS, DataSpec, Examples, as_examples, list_splits, load_examples
from repmatch.errors import RepmatchError

# --------------------------------------------------------------------------------------------
# Helpers


def _write(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` in the format named by ``path``'s extension (``.gz`` compresses)."""
    gzipped = path.name.endswith(".gz")
    ext = path.name.removesuffix(".gz").rsplit(".", 1)[1]
    if ext == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        data = buffer.getvalue()
    elif ext == "csv":
        data = frame.to_csv(index=False).encode()
    elif ext == "tsv":
        data = frame.to_csv(index=False, sep="\t", quoting=csv.QUOTE_NONE).encode()
    elif ext == "json":  # a JSON array of records
        data = frame.to_json(orient="records", force_ascii=False).encode()
    else:  # JSON Lines
        data = frame.to_json(orient="records", lines=True, force_ascii=False).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
    return path


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def _load(source: Path | str, **kwargs: object) -> Examples:
    return load_examples(DataSpec(str(source), **kwargs))  # type: ignore[arg-type]


SMALL = pd.DataFrame(
    {
        "text": ['a "quoted" word, and a comma', "NA", "null", "nan", "crème brûlée ☃", "last one"],
        "label": [0, 2, 1, 0, 2, 1],
    }
)
SMALL_EXPECTED = Examples(
    name="data",
    task="classification",
    texts=list(SMALL["text"]),
    text_pairs=None,
    labels=np.array([0, 2, 1, 0, 2, 1], dtype=np.int64),
    ids=[0, 1, 2, 3, 4, 5],
    num_labels=3,
    label_names=None,
    columns={"text": "text", "text_pair": None, "label": "label", "id": None},
)
PAIRS = pd.DataFrame(
    {
        "uid": ["007", "a1", "b2", "c3"],
        "sentence1": ["one", "two", "three", "four"],
        "sentence2": ["uno", "dos", "tres", "cuatro"],
        "label": ["neutral", "entailment", "neutral", "contradiction"],
    }
)
FORMATS = [
    "data.csv",
    "data.tsv",
    "data.json",
    "data.jsonl",
    "data.parquet",
    "data.csv.gz",
    "data.tsv.gz",
    "data.json.gz",
    "data.jsonl.gz",
    "data.parquet.gz",
]


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    """SMALL as JSON Lines, with 100 more rows so that subsets have room."""
    more = pd.DataFrame(
        {"text": [f"row {i}" for i in range(100)], "label": [i % 3 for i in range(100)]}
    )
    return _write(pd.concat([SMALL, more], ignore_index=True), tmp_path / "data.jsonl")


# --------------------------------------------------------------------------------------------
# Real data


REAL = [
    # dataset, split, task, text, text_pair, label, num_labels, rows
    ("sst2", "validation", "classification", "text", None, "label", 2, 872),
    ("sst5", "validation", "classification", "text", None, "label", 5, 1101),
    ("snli", "validation", "pair-classification", "premise", "hypothesis", "label", 3, 9842),
    ("mnli", "validation", "pair-classification", "premise", "hypothesis", "label", 3, 9815),
    ("hans", "train", "pair-classification", "premise", "hypothesis", "label", 2, 30000),
    ("stsb", "validation", "regression", "sentence1", "sentence2", "score", 1, 1500),
]


@pytest.mark.parametrize(
    ("dataset", "split", "task", "text", "pair", "label", "num_labels", "rows"), REAL
)
def test_real_dataset_loads_with_task_and_columns(
    shared_data: Path,
    dataset: str,
    split: str,
    task: str,
    text: str,
    pair: str | None,
    label: str,
    num_labels: int,
    rows: int,
) -> None:
    full = _load(shared_data / dataset, split=split)
    assert len(full) == rows
    examples = _load(shared_data / dataset, split=split, limit=20)
    assert examples.name == f"{dataset}/{split}"
    assert examples.task == task
    assert examples.columns == {"text": text, "text_pair": pair, "label": label, "id": None}
    assert examples.num_labels == num_labels
    assert len(examples) == 20
    assert examples.ids == list(range(20))
    assert examples.texts == full.texts[:20]
    assert all(isinstance(t, str) for t in examples.texts)
    assert (examples.text_pairs is None) == (pair is None)
    expected_dtype = np.float32 if task == "regression" else np.int64
    assert examples.labels.dtype == expected_dtype


@pytest.fixture(scope="module")
def imdb_sample(shared_data: Path) -> Examples:
    """One read of an IMDB split (25,000 long reviews), shared by the IMDB tests."""
    return _load(shared_data / "imdb", split="test", sample=200, seed=0)


def test_imdb_loads_as_binary_classification(imdb_sample: Examples) -> None:
    assert imdb_sample.name == "imdb/test"
    assert imdb_sample.task == "classification"
    assert imdb_sample.num_labels == 2
    assert len(imdb_sample) == 200
    assert set(imdb_sample.labels.tolist()) == {0, 1}
    assert imdb_sample.ids == sorted(imdb_sample.ids)
    assert max(imdb_sample.ids) < 25000
    # Rows are ordered negative first, then positive (README), so labels follow the ids.
    assert all(
        (i >= 12500) == bool(y) for i, y in zip(imdb_sample.ids, imdb_sample.labels, strict=True)
    )


def test_folder_defaults_to_train_split(shared_data: Path) -> None:
    examples = _load(shared_data / "sst2", limit=3)
    assert examples.name == "sst2/train"
    assert examples.texts[0] == "hide new secretions from the parental units "
    assert examples.labels.tolist() == [0, 0, 1]


def test_split_selection_picks_the_named_file(shared_data: Path) -> None:
    test = _load(shared_data / "sst5", split="test", limit=2)
    assert test.name == "sst5/test"
    assert test.texts[0] == "no movement , no yuks , not much of anything ."
    assert test.labels.tolist() == [1, 0]
    train = _load(shared_data / "sst5", limit=1)
    assert train.texts[0].startswith("a stirring , funny and finally transporting")


def test_unknown_split_lists_available_splits(shared_data: Path) -> None:
    with pytest.raises(
        RepmatchError, match=r"split 'dev' not found in sst5.*test, train, validation"
    ):
        _load(shared_data / "sst5", split="dev")


def test_folder_without_train_needs_a_split(shared_data: Path) -> None:
    with pytest.raises(
        RepmatchError, match=r"validation, validation_mismatched; set split to one of them"
    ) as info:
        _load(shared_data / "mnli")
    assert info.value.field == "split"


def test_list_splits(shared_data: Path) -> None:
    assert list_splits(shared_data / "mnli") == ["validation", "validation_mismatched"]
    assert list_splits(shared_data / "stsb") == ["test", "train", "validation"]
    with pytest.raises(RepmatchError, match="no such folder"):
        list_splits(shared_data / "nope")


def test_single_file_source(shared_data: Path) -> None:
    by_file = _load(shared_data / "sst2" / "validation.jsonl.gz", limit=5)
    by_folder = _load(shared_data / "sst2", split="validation", limit=5)
    assert by_file.name == by_folder.name == "sst2/validation"
    assert by_file.spec is not None and by_file.spec.source.endswith("validation.jsonl.gz")
    assert by_file.fingerprint() == by_folder.fingerprint()


def test_stsb_is_regression_with_float_scores(shared_data: Path) -> None:
    examples = _load(shared_data / "stsb", split="validation", limit=3)
    assert examples.task == "regression"
    assert examples.labels.dtype == np.float32
    np.testing.assert_allclose(examples.labels, [5.0, 4.75, 5.0])
    assert examples.text_pairs is not None
    assert examples.text_pairs[0] == "A man wearing a hard hat is dancing."
    assert examples.label_names is None


def test_num_labels_counts_the_full_split(shared_data: Path) -> None:
    examples = _load(shared_data / "sst5", split="validation", labels=("0", "1"))
    assert set(examples.labels.tolist()) == {0, 1}
    assert len(examples) == 139 + 289  # README label distribution
    assert examples.num_labels == 5


def test_squad_is_extractive_qa_and_has_no_label_column(shared_data: Path) -> None:
    examples = _load(shared_data / "squad", split="validation", limit=3)
    assert examples.task == "extractive-qa"  # reading QA: tests/test_qa.py
    with pytest.raises(RepmatchError, match=r"no text column.*question.*set text_column"):
        _load(shared_data / "squad", split="validation", task="classification")
    with pytest.raises(RepmatchError, match=r"no label column.*set label_column"):
        _load(
            shared_data / "squad", split="validation", task="classification", text_column="question"
        )


# --------------------------------------------------------------------------------------------
# Formats


@pytest.mark.parametrize("filename", FORMATS)
def test_format_round_trips(tmp_path: Path, filename: str) -> None:
    path = _write(SMALL, tmp_path / filename)
    assert _load(path) == SMALL_EXPECTED


@pytest.mark.parametrize("filename", FORMATS)
def test_format_round_trips_pairs_string_labels_and_ids(tmp_path: Path, filename: str) -> None:
    path = _write(PAIRS, tmp_path / filename)
    examples = _load(path, id_column="uid")
    assert examples.task == "pair-classification"
    assert examples.texts == ["one", "two", "three", "four"]
    assert examples.text_pairs == ["uno", "dos", "tres", "cuatro"]
    assert examples.ids == ["007", "a1", "b2", "c3"]
    assert examples.label_names == ["contradiction", "entailment", "neutral"]
    assert examples.labels.tolist() == [2, 1, 2, 0]
    assert examples.num_labels == 3


def test_json_lines_in_a_json_file(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.json", SMALL.to_dict(orient="records"))
    assert _load(path) == SMALL_EXPECTED


def test_json_columns_object(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(SMALL.to_dict(orient="list")))
    assert _load(path) == SMALL_EXPECTED


def test_json_line_separator_inside_text_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a\u2028b", "label": 0}\n{"text": "c", "label": 1}\n')
    assert _load(path).texts == ["a\u2028b", "c"]


def test_tsv_keeps_quotes_literally(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text('sentence\tlabel\n"a quote that never closes\t1\nplain\t0\n')
    examples = _load(path)
    assert examples.texts == ['"a quote that never closes', "plain"]
    assert examples.columns["text"] == "sentence"


def test_csv_numeric_ids_become_ints_but_padded_ids_stay_strings(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["10", "20"], "text": ["a", "b"], "label": [0, 1]})
    assert _load(_write(frame, tmp_path / "a.csv")).ids == [10, 20]
    frame["id"] = ["010", "20"]
    assert _load(_write(frame, tmp_path / "b.csv")).ids == ["010", "20"]


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("text\n")
    with pytest.raises(RepmatchError, match=r"unsupported file type: 'data.txt'.*\.jsonl"):
        _load(path)


def test_bad_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": \n')
    with pytest.raises(RepmatchError, match=r"line 2 of .*data.jsonl is not valid JSON"):
        _load(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("")
    with pytest.raises(RepmatchError, match=r"data.csv has no rows"):
        _load(path)


def test_folder_of_split_files(tmp_path: Path) -> None:
    _write(SMALL, tmp_path / "train.csv")
    _write(SMALL.iloc[:2], tmp_path / "dev.parquet.gz")
    assert list_splits(tmp_path) == ["dev", "train"]
    assert len(_load(tmp_path)) == len(SMALL)
    assert _load(tmp_path, split="dev").name == f"{tmp_path.name}/dev"
    _write(SMALL, tmp_path / "train.jsonl")
    with pytest.raises(RepmatchError, match=r"split 'train' .* several files"):
        _load(tmp_path)


def test_only_file_in_folder_is_the_default(tmp_path: Path) -> None:
    _write(SMALL, tmp_path / "test.jsonl")
    assert _load(tmp_path).name == f"{tmp_path.name}/test"


def test_split_with_a_single_file_is_an_error(tmp_path: Path) -> None:
    path = _write(SMALL, tmp_path / "train.csv")
    assert len(_load(path, split="train")) == len(SMALL)
    with pytest.raises(RepmatchError, match=r"split 'validation' .* single file; leave split"):
        _load(path, split="validation")


# --------------------------------------------------------------------------------------------
# Columns, labels and tasks


def test_explicit_columns_override_detection(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "premise": ["p1", "p2"],
            "hypothesis": ["h1", "h2"],
            "body": ["b1", "b2"],
            "other": ["o1", "o2"],
            "stars": [1, 0],
            "label": [0, 0],
            "uid": [7, 9],
        }
    )
    path = _write(frame, tmp_path / "data.jsonl")
    auto = _load(path)
    assert auto.columns == {
        "text": "premise",
        "text_pair": "hypothesis",
        "label": "label",
        "id": None,
    }
    explicit = _load(path, text_column="body", label_column="stars", id_column="uid")
    assert explicit.task == "classification"
    assert explicit.texts == ["b1", "b2"]
    assert explicit.text_pairs is None
    assert explicit.labels.tolist() == [1, 0]
    assert explicit.ids == [7, 9]
    assert explicit.columns == {"text": "body", "text_pair": None, "label": "stars", "id": "uid"}
    paired = _load(path, text_column="body", text_pair_column="other")
    assert paired.task == "pair-classification"
    assert paired.text_pairs == ["o1", "o2"]


@pytest.mark.parametrize("field", ["text_column", "text_pair_column", "label_column", "id_column"])
def test_unknown_explicit_column(small_file: Path, field: str) -> None:
    with pytest.raises(
        RepmatchError,
        match=rf"column 'txt' not found in .*data.jsonl; available columns: text, label; "
        rf"fix {field}$",
    ) as info:
        _load(small_file, **{field: "txt"})
    assert info.value.field == field


def test_no_text_column(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.jsonl", [{"body": "x", "label": 0}])
    with pytest.raises(
        RepmatchError, match=r"no text column .*columns: body, label.*set text_column"
    ):
        _load(path)


def test_no_label_column(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "x", "stars": 0}])
    with pytest.raises(RepmatchError, match=r"no label column .*text, stars.*set label_column"):
        _load(path)


def test_string_labels_are_mapped_in_sorted_order(tmp_path: Path) -> None:
    labels = ["pos", "neg", "neutral", "pos"]
    path = _jsonl(
        tmp_path / "data.jsonl", [{"text": str(i), "label": y} for i, y in enumerate(labels)]
    )
    examples = _load(path)
    assert examples.label_names == ["neg", "neutral", "pos"]
    assert examples.labels.tolist() == [2, 0, 1, 2]
    assert examples.num_labels == 3
    only_pos = _load(path, labels=("pos",))
    assert only_pos.ids == [0, 3]
    assert only_pos.labels.tolist() == [2, 2]
    assert only_pos.label_names == ["neg", "neutral", "pos"]


@pytest.mark.parametrize(
    ("column", "values", "task", "dtype"),
    [
        ("label", [0.5, 1.0, 2.25], "regression", np.float32),
        ("label", [0.0, 1.0, 2.0], "classification", np.int64),
        ("score", [0.0, 1.0, 5.0], "regression", np.float32),
        ("score", [0, 1, 5], "regression", np.float32),
    ],
)
def test_task_detection_from_labels(
    tmp_path: Path, column: str, values: list[float], task: str, dtype: type
) -> None:
    records = [{"text": str(v), column: v} for v in values]
    examples = _load(_jsonl(tmp_path / "data.jsonl", records))
    assert examples.task == task
    assert examples.labels.dtype == dtype
    np.testing.assert_allclose(examples.labels, values)
    assert examples.num_labels == (1 if task == "regression" else 3)


def test_explicit_task_wins(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 3}])
    examples = _load(path, task="regression")
    assert examples.task == "regression"
    assert examples.labels.tolist() == [0.0, 3.0]
    assert examples.num_labels == 1


def test_regression_needs_numeric_labels(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": "pos"}])
    with pytest.raises(RepmatchError, match=r"'regression' needs numeric labels.*'label'"):
        _load(path, task="regression")


def test_classification_rejects_fractional_labels(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 0.5}])
    with pytest.raises(RepmatchError, match=r"holds 0.5; set task to 'regression'"):
        _load(path, task="classification")


def test_task_and_text_columns_must_agree(tmp_path: Path) -> None:
    path = _write(PAIRS, tmp_path / "data.jsonl")
    with pytest.raises(RepmatchError, match=r"'classification' takes one text column.*sentence1"):
        _load(path, task="classification")
    with pytest.raises(RepmatchError, match=r"needs a second text column.*set text_pair_column"):
        _load(path, task="pair-classification", text_column="sentence1")


def test_id_column_vs_row_index(tmp_path: Path) -> None:
    records = [{"idx": 10 + i, "text": f"t{i}", "label": i % 2} for i in range(5)]
    path = _jsonl(tmp_path / "data.jsonl", records)
    with_ids = _load(path, limit=3)
    assert with_ids.ids == [10, 11, 12]
    assert with_ids.columns["id"] == "idx"
    plain = _jsonl(
        tmp_path / "plain.jsonl", [{k: r[k] for k in ("text", "label")} for r in records]
    )
    without = _load(plain, sample=2, seed=3)
    assert without.columns["id"] is None
    assert without.texts == [f"t{i}" for i in without.ids]


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    records = [{"id": "x", "text": "a", "label": 0}, {"id": "x", "text": "b", "label": 1}]
    with pytest.raises(RepmatchError, match=r"repeats id 'x' \(rows 0 and 1\)"):
        _load(_jsonl(tmp_path / "data.jsonl", records))


@pytest.mark.parametrize("bad", [None, float("nan")])
def test_missing_text_names_the_row(tmp_path: Path, bad: object) -> None:
    frame = pd.DataFrame({"text": ["a", "b", bad, None], "label": [0, 1, 0, 1]})
    path = _write(frame, tmp_path / "data.parquet")
    with pytest.raises(
        RepmatchError, match=r"text column 'text' .* missing in 2 rows \(first: row 2"
    ):
        _load(path)


def test_non_string_text_is_an_error(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 0}, {"text": 5, "label": 1}])
    with pytest.raises(RepmatchError, match=r"holds 5 \(int\) in row 1, not a string"):
        _load(path)


def test_missing_labels_name_count_and_row(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["1", "", ""]})
    with pytest.raises(RepmatchError, match=r"label column 'label' .* 2 rows \(first: row 1"):
        _load(_write(frame, tmp_path / "data.csv"))


def test_negative_labels_unless_filtered_out(tmp_path: Path) -> None:
    labels = [0, -1, 1, 2, -1]
    path = _jsonl(
        tmp_path / "data.jsonl", [{"text": str(i), "label": y} for i, y in enumerate(labels)]
    )
    with pytest.raises(
        RepmatchError,
        match=r"negative label -1 in 2 rows \(first: row 1\).*labels=\['0', '1', '2'\]",
    ):
        _load(path)
    kept = _load(path, labels=("0", "1", "2"))
    assert kept.ids == [0, 2, 3]
    assert kept.num_labels == 3


# --------------------------------------------------------------------------------------------
# Subsets


def test_limit_takes_the_first_rows(small_file: Path) -> None:
    examples = _load(small_file, limit=4)
    assert examples.ids == [0, 1, 2, 3]
    assert examples.texts == SMALL_EXPECTED.texts[:4]
    assert len(_load(small_file, limit=10_000)) == 106


def test_sample_is_deterministic_and_seeded(small_file: Path) -> None:
    first = _load(small_file, sample=10, seed=1)
    again = _load(small_file, sample=10, seed=1)
    other = _load(small_file, sample=10, seed=2)
    assert first.ids == again.ids
    assert first.ids != other.ids
    assert first.ids == sorted(first.ids)
    assert len(set(first.ids)) == 10
    expected = sorted(np.random.default_rng(1).choice(106, size=10, replace=False).tolist())
    assert first.ids == expected
    assert len(_load(small_file, sample=106)) == 106


def test_sample_too_big(small_file: Path) -> None:
    with pytest.raises(RepmatchError, match=r"cannot sample 500 from 106 instances of data"):
        _load(small_file, sample=500)


def test_label_filter_then_limit(small_file: Path) -> None:
    examples = _load(small_file, labels=("2",), limit=3)
    assert examples.ids == [1, 4, 8]
    assert examples.labels.tolist() == [2, 2, 2]
    assert examples.num_labels == 3


def test_label_filter_matching_nothing(small_file: Path) -> None:
    with pytest.raises(
        RepmatchError,
        match=r"subset of data is empty after the label filter labels=\['7'\].*0, 1, 2; fix labels",
    ):
        _load(small_file, labels=("7",))


def test_label_filter_on_regression_is_an_error(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "a", "score": 0.5}])
    with pytest.raises(RepmatchError, match=r"labels filter picks classes.*regression"):
        _load(path, labels=("1",))


def test_indices_file_keeps_file_order(small_file: Path, tmp_path: Path) -> None:
    indices = tmp_path / "keep.txt"
    indices.write_text("5\n2\n\n40\n9\n")
    examples = _load(small_file, indices_file=str(indices))
    assert examples.ids == [5, 2, 40, 9]
    assert examples.texts[1] == "null"
    as_json = tmp_path / "keep.json"
    as_json.write_text("[5, 2, 40, 9]")
    assert _load(small_file, indices_file=str(as_json)) == examples


def test_indices_file_after_label_filter_before_limit(small_file: Path, tmp_path: Path) -> None:
    indices = tmp_path / "keep.txt"
    indices.write_text("5\n2\n40\n9\n8\n")  # labels 1, 1, 1, 0, 2
    examples = _load(small_file, indices_file=str(indices), labels=("1", "2"), limit=3)
    assert examples.ids == [5, 2, 40]
    examples = _load(small_file, indices_file=str(indices), labels=("0", "2"))
    assert examples.ids == [9, 8]


def test_indices_file_with_string_ids(tmp_path: Path) -> None:
    path = _write(PAIRS, tmp_path / "data.jsonl")
    indices = tmp_path / "keep.txt"
    indices.write_text("b2\n007\n")
    examples = _load(path, id_column="uid", indices_file=str(indices))
    assert examples.ids == ["b2", "007"]
    assert examples.texts == ["three", "one"]


def test_indices_file_with_unknown_ids(small_file: Path, tmp_path: Path) -> None:
    indices = tmp_path / "keep.txt"
    indices.write_text("3\n999\n1000\n")
    with pytest.raises(RepmatchError, match=r"keep.txt lists 2 ids not in data \(first: '999'\)"):
        _load(small_file, indices_file=str(indices))


def test_indices_file_problems(small_file: Path, tmp_path: Path) -> None:
    with pytest.raises(RepmatchError, match=r"indices file not found: .*nope.txt"):
        _load(small_file, indices_file=str(tmp_path / "nope.txt"))
    repeated = tmp_path / "repeated.txt"
    repeated.write_text("3\n4\n3\n")
    with pytest.raises(RepmatchError, match=r"lists id '3' more than once"):
        _load(small_file, indices_file=str(repeated))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(RepmatchError, match=r"empty after the indices file empty.txt"):
        _load(small_file, indices_file=str(empty))
    filtered = tmp_path / "filtered.txt"
    filtered.write_text("0\n3\n")  # both label 0
    with pytest.raises(RepmatchError, match=r"empty after the indices file filtered.txt"):
        _load(small_file, indices_file=str(filtered), labels=("1",))


# --------------------------------------------------------------------------------------------
# Examples


def test_fingerprint_is_stable(small_file: Path) -> None:
    first = _load(small_file, sample=20, seed=4)
    second = _load(small_file, sample=20, seed=4)
    assert first.fingerprint() == second.fingerprint()
    assert len(first.fingerprint()) == 64
    assert first.fingerprint() != _load(small_file, sample=20, seed=5).fingerprint()


def test_fingerprint_is_pinned() -> None:
    # Outputs are keyed by this digest, so its encoding must not change silently. (The texts are
    # those SMALL had when it was pinned; empty texts are refused on loading since.)
    pinned = SMALL_EXPECTED.select(range(6))
    pinned.texts[3] = ""
    assert pinned.fingerprint() == (
        "76a6a9e06bfffeca499e3badf9109f81afc03c89f456f469d4ab5ecb7af2bfb4"
    )


def test_fingerprint_changes_with_any_text_label_or_id() -> None:
    base = SMALL_EXPECTED.fingerprint()
    variants = []
    for field, value in [
        ("texts", ["changed"] + SMALL_EXPECTED.texts[1:]),
        ("labels", np.array([1, 2, 1, 0, 2, 1], dtype=np.int64)),
        ("labels", SMALL_EXPECTED.labels.astype(np.float32)),
        ("ids", [0, 1, 2, 3, 4, 6]),
        ("ids", [str(i) for i in SMALL_EXPECTED.ids]),
        ("text_pairs", [""] * 6),
        ("task", "regression"),
    ]:
        changed = SMALL_EXPECTED.select(range(6))
        setattr(changed, field, value)
        variants.append(changed.fingerprint())
    assert base not in variants
    assert len(set(variants)) == len(variants)
    assert SMALL_EXPECTED.select([1, 0, 2, 3, 4, 5]).fingerprint() != base


def test_select(small_file: Path) -> None:
    examples = _load(small_file)
    picked = examples.select([4, 0, 4])
    assert picked.ids == [4, 0, 4]
    assert picked.texts == [examples.texts[4], examples.texts[0], examples.texts[4]]
    assert picked.labels.tolist() == [2, 0, 2]
    assert picked.num_labels == 3 and picked.name == "data"
    assert len(examples.select(np.array([], dtype=np.int64))) == 0
    with pytest.raises(IndexError, match="0..105"):
        examples.select([106])
    assert "n=106" in repr(examples)


# --------------------------------------------------------------------------------------------
# DataSpec and sources


def test_spec_round_trips_through_json() -> None:
    spec = DataSpec("data/sst2", split="validation", labels=("0", "1"), sample=5, seed=3)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["labels"] == ["0", "1"]
    assert DataSpec.from_dict(data) == spec
    with pytest.raises(RepmatchError, match=r"unknown data spec field 'colour'"):
        DataSpec.from_dict({"source": "x", "colour": "red"})


def test_spec_record_makes_local_paths_absolute(tmp_path: Path, monkeypatch) -> None:
    """Records name local data by absolute path, so a later stage reloads it from anywhere."""
    (tmp_path / "data.csv").write_text("text,label\na,0\n")
    (tmp_path / "keep.txt").write_text("0\n")
    monkeypatch.chdir(tmp_path)
    record = DataSpec("data.csv", indices_file="keep.txt").to_record()
    assert record["source"] == str(tmp_path / "data.csv")
    assert record["indices_file"] == str(tmp_path / "keep.txt")
    hub = DataSpec("glue", hub_config="sst2").to_record()  # not a local path: kept as given
    assert hub["source"] == "glue"
    assert DataSpec.from_dict(record).source == str(tmp_path / "data.csv")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, r"limit must be a positive whole number, got 0; set limit to N >= 1"),
        ({"sample": -3}, r"sample must be a positive whole number, got -3"),
        ({"limit": True}, r"limit must be a positive whole number, got True"),
        ({"limit": 10, "sample": 5}, r"limit=10 and sample=5 cannot be used together"),
        ({"task": "classify"}, r"task 'classify' is not one of classification"),
        ({"seed": -1}, r"seed must be >= 0 and below 2\*\*63 \(a whole number\), got -1$"),
        ({"labels": ()}, r"labels filter is empty"),
        ({"text_column": ""}, r"text_column must be a non-empty string, got ''"),
        ({"text_column": "a", "label_column": "a"}, r"text_column and label_column are both 'a'"),
    ],
)
def test_spec_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(RepmatchError, match=message):
        DataSpec("data.csv", **kwargs)


def test_spec_normalises_paths_and_labels(tmp_path: Path) -> None:
    spec = DataSpec(tmp_path, labels=["pos", 1], indices_file=tmp_path / "i.txt")  # type: ignore[arg-type]
    assert spec.source == str(tmp_path)
    assert spec.indices_file == str(tmp_path / "i.txt")
    assert spec.labels == ("pos", "1")


@pytest.mark.parametrize(
    "source", ["./no/such/dir", "/no/such/file.csv", "missing.jsonl.gz", "a/b/c"]
)
def test_missing_path(source: str) -> None:
    with pytest.raises(RepmatchError, match=rf"no such file or folder: '{source}'"):
        _load(source)


def test_hub_config_with_local_path(small_file: Path) -> None:
    with pytest.raises(RepmatchError, match=r"hub_config 'sst2' only applies.*leave hub_config"):
        _load(small_file, hub_config="sst2")


def test_hub_name_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # The libraries read these variables when first imported; force them in case they already were.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(
        RepmatchError,
        match=r"could not load 'repmatch-no-such-org/no-such-dataset' from the Hugging Face Hub "
        r"\(.+\); pass a local file or folder",
    ) as info:
        _load("repmatch-no-such-org/no-such-dataset", hub_config="default")
    assert "\n" not in str(info.value)
    assert time.monotonic() - start < 30


# --------------------------------------------------------------------------------------------
# Bad inputs: one line that names the problem


def _one_line(error: pytest.ExceptionInfo[RepmatchError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("filename", ["data.csv", "data.tsv.gz", "data.jsonl", "data.json"])
def test_non_utf8_file(tmp_path: Path, filename: str) -> None:
    if filename.startswith("data.json"):
        body = '{"text": "caf\xe9", "label": 0}\n'
    else:
        body = "text,label\ncaf\xe9,0\n".replace(",", "\t" if ".tsv" in filename else ",")
    data = body.encode("latin-1")
    path = tmp_path / filename
    path.write_bytes(gzip.compress(data) if filename.endswith(".gz") else data)
    with pytest.raises(RepmatchError, match=r"is not UTF-8 text \(bad byte at offset \d+\)") as e:
        _load(path)
    assert filename in _one_line(e)


@pytest.mark.parametrize("blank", ["", " ", "\t \n"])
@pytest.mark.parametrize("filename", ["data.csv", "data.jsonl", "data.parquet"])
def test_empty_or_blank_text_names_row_and_column(
    tmp_path: Path, filename: str, blank: str
) -> None:
    frame = pd.DataFrame({"text": ["a", "b", blank, "d", blank], "label": [0, 1, 0, 1, 0]})
    path = _write(frame, tmp_path / filename)
    with pytest.raises(
        RepmatchError,
        match=r"text column 'text' in .* is empty or only whitespace in 2 rows "
        r"\(first: row 2, counting from 0\); fill or drop those rows",
    ) as e:
        _load(path)
    _one_line(e)


def test_blank_second_text_names_its_column(tmp_path: Path) -> None:
    frame = PAIRS.assign(sentence2=["uno", "dos", "  ", "cuatro"])
    with pytest.raises(RepmatchError, match=r"text column 'sentence2' .* \(first: row 2"):
        _load(_write(frame, tmp_path / "data.jsonl"))


def _json_text(labels: list[str]) -> str:
    """A JSON array of records whose labels are written as raw JSON tokens (NaN, Infinity)."""
    rows = [f'{{"text": "t{i}", "label": {label}}}' for i, label in enumerate(labels)]
    return "[" + ", ".join(rows) + "]"


NON_FINITE = [
    # file name, its text (or a frame for parquet), expected message
    ("data.json", _json_text(["0", "NaN", "1"]), r"missing or NaN in 1 rows \(first: row 1"),
    ("data.json", _json_text(["0", "Infinity", "1"]), r"holds inf in 1 rows \(first: row 1"),
    ("data.jsonl", '{"text": "a", "label": 0.5}\n{"text": "b", "label": -Infinity}\n', "-inf"),
    ("data.csv", "text,label\na,0\nb,nan\nc,1\n", r"missing or NaN in 1 rows \(first: row 1"),
    ("data.csv", "text,label\na,NaN\nb,nan\n", r"missing or NaN in 2 rows \(first: row 0"),
    ("data.csv", "text,label\na,0\nb,inf\nc,1\n", r"holds inf in 1 rows \(first: row 1"),
    ("data.tsv", "text\tlabel\na\t1.5\nb\t-inf\n", r"holds -inf in 1 rows \(first: row 1"),
    ("data.parquet", [0.0, float("nan"), 1.0], r"missing or NaN in 1 rows \(first: row 1"),
    ("data.parquet", [0.0, 1.0, float("inf")], r"holds inf in 1 rows \(first: row 2"),
]


@pytest.mark.parametrize(("filename", "content", "message"), NON_FINITE)
def test_nan_and_infinite_labels_are_refused(
    tmp_path: Path, filename: str, content: str | list[float], message: str
) -> None:
    path = tmp_path / filename
    if isinstance(content, list):
        _write(pd.DataFrame({"text": ["a", "b", "c"], "label": content}), path)
    else:
        path.write_text(content)
    with pytest.raises(RepmatchError, match=rf"label column 'label' in .*{message}") as e:
        _load(path)
    _one_line(e)


def test_nan_label_in_a_dataframe() -> None:
    frame = pd.DataFrame({"text": ["a", "b"], "label": [1.0, np.nan]})
    with pytest.raises(RepmatchError, match=r"DataFrame 'dataframe' is missing or NaN in 1 rows"):
        as_examples(frame)


def test_nan_word_among_string_labels_is_a_class(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,pos\nb,nan\n")
    assert _load(path).label_names == ["nan", "pos"]


# --------------------------------------------------------------------------------------------
# In-memory data (notebooks)


def test_dataframe_matches_its_csv_file(tiny_data: dict[str, Path]) -> None:
    path = tiny_data["pair"]
    from_file = _load(path, limit=30)
    frame = pd.read_csv(path)
    in_memory = as_examples(frame, name=from_file.name, limit=30)
    assert in_memory == from_file
    assert in_memory.fingerprint() == from_file.fingerprint()
    assert in_memory.spec is None
    assert from_file.spec is not None
    assert as_examples(frame).name == "dataframe"


def test_dataframe_string_labels_ids_and_subset() -> None:
    frame = PAIRS.rename(columns={"uid": "id"})
    examples = as_examples(frame, labels=["neutral"])
    assert examples.task == "pair-classification"
    assert examples.ids == ["007", "b2"]
    assert examples.label_names == ["contradiction", "entailment", "neutral"]
    assert examples.labels.tolist() == [2, 2]
    assert examples.columns == {
        "text": "sentence1",
        "text_pair": "sentence2",
        "label": "label",
        "id": "id",
    }


def test_dataframe_rows_are_numbered_by_position_not_index() -> None:
    frame = SMALL.iloc[[4, 1, 3]]
    examples = as_examples(frame)
    assert examples.ids == [0, 1, 2]
    assert examples.texts == [SMALL["text"][4], SMALL["text"][1], SMALL["text"][3]]


def test_dataframe_with_non_string_column_names() -> None:
    frame = pd.DataFrame({0: ["a", "b"], 1: [1, 0]})
    examples = as_examples(frame, text_column="0", label_column="1")
    assert examples.texts == ["a", "b"]
    assert examples.labels.tolist() == [1, 0]


def test_dataframe_with_repeated_column_names() -> None:
    frame = pd.DataFrame([["a", 0, 1]], columns=["text", "label", "label"])
    with pytest.raises(RepmatchError, match=r"more than one column named 'label'"):
        as_examples(frame)


def test_dataset_uses_class_label_names() -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "idx": datasets.Value("int64"),
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )
    rows = {"idx": [7, 8, 9], "sentence": ["bad", "good", "fine"], "label": [0, 1, 1]}
    dataset = datasets.Dataset.from_dict(rows, features=features)
    examples = as_examples(dataset)
    assert examples.name == "dataset"
    assert examples.ids == [7, 8, 9]
    assert examples.label_names == ["negative", "positive"]
    assert examples.labels.tolist() == [0, 1, 1]
    assert examples.num_labels == 2
    assert examples.spec is None
    # the label filter knows the class names
    assert as_examples(dataset, labels=["positive"], name="sst").ids == [8, 9]
    assert as_examples(dataset, name="sst").name == "sst"
    # the same rows in a file, without the class names, give the same fingerprint
    assert examples.fingerprint() == as_examples(pd.DataFrame(rows)).fingerprint()


def test_dataset_dict_asks_for_a_split() -> None:
    datasets = pytest.importorskip("datasets")
    split = datasets.Dataset.from_dict({"text": ["a"], "label": [0]})
    with pytest.raises(RepmatchError, match=r"DatasetDict with splits train, test; .*\['train'\]"):
        as_examples(datasets.DatasetDict({"train": split, "test": split}))


def test_as_examples_passes_examples_and_specs_through(small_file: Path) -> None:
    spec = DataSpec(str(small_file), limit=5)
    examples = as_examples(spec)
    assert examples == load_examples(spec)
    assert examples.spec == spec
    assert as_examples(examples) is examples
    by_path = as_examples(small_file, limit=5)
    assert by_path == examples and by_path.spec == spec


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        ("frame", {"split": "train"}, r"split says where to read data, but DataFrame 'dataframe'"),
        ("frame", {"colour": "red"}, r"unknown data option 'colour'; options are .*text_column"),
        ("frame", {"limit": 0}, r"limit must be a positive whole number"),
        ("spec", {"limit": 3}, r"options \(limit\) apply to paths and in-memory tables"),
        ("path", {"name": "x"}, r"name applies to in-memory tables"),
        ([("a", 0)], {}, r"cannot read data from a list; pass a DataSpec, .*a pandas DataFrame"),
    ],
)
def test_as_examples_problems(small_file: Path, data: object, options: dict, message: str) -> None:
    given = {"frame": SMALL, "spec": DataSpec(str(small_file)), "path": small_file}
    with pytest.raises(RepmatchError, match=message):
        as_examples(given.get(data, data) if isinstance(data, str) else data, **options)


def test_empty_dataframe() -> None:
    with pytest.raises(RepmatchError, match=r"DataFrame 'dataframe' has no rows"):
        as_examples(SMALL.iloc[:0])


# --------------------------------------------------------------------------------------------
# Label alignment to a reference's classes


MNLI_NAMES = ["contradiction", "entailment", "neutral"]


def _pairs_with_labels(labels: list[str], name: str = "mnli/validation") -> Examples:
    n = len(labels)
    frame = pd.DataFrame({"premise": ["p"] * n, "hypothesis": ["h"] * n, "label": labels})
    return as_examples(frame, name=name)


def test_subset_lacking_a_class_is_realigned() -> None:
    subset = _pairs_with_labels(["neutral", "entailment", "neutral"])
    # mapped per split in sorted order: entailment 0, neutral 1 (the defect)
    assert subset.label_names == ["entailment", "neutral"]
    assert subset.labels.tolist() == [1, 0, 1]
    aligned = subset.aligned_to(MNLI_NAMES, 3)
    assert aligned.labels.tolist() == [2, 1, 2]
    assert aligned.label_names == MNLI_NAMES
    assert aligned.num_labels == 3
    assert aligned.texts == subset.texts and aligned.ids == subset.ids
    assert subset.labels.tolist() == [1, 0, 1]  # the original is unchanged


def test_alignment_to_its_own_classes_changes_nothing() -> None:
    full = _pairs_with_labels(["neutral", "entailment", "contradiction"])
    aligned = full.aligned_to(full.label_names, full.num_labels)
    assert aligned == full
    assert aligned.fingerprint() == full.fingerprint()


def test_unseen_label_is_named() -> None:
    data = _pairs_with_labels(["entailment", "neutral", "neutral"], name="mnli/validation_matched")
    with pytest.raises(
        RepmatchError,
        match=r"^label 'neutral' of mnli/validation_matched \(2 instances, e.g. id 1\) is not "
        r"one of the reference's classes: entailment, contradiction; keep only those classes",
    ) as e:
        data.aligned_to(["entailment", "contradiction"], 2)
    assert e.value.field == "labels"
    _one_line(e)


def test_integer_labels_against_named_reference_only_through_label_names() -> None:
    frame = pd.DataFrame({"text": ["a", "b"], "label": [1, 0]})
    with pytest.raises(RepmatchError, match=r"integer labels .* never by position") as err:
        as_examples(frame).aligned_to(["neg", "pos"], 2)
    assert err.value.field == "label_names"
    data = as_examples(frame, label_names=["pos", "neg"])  # 0 = pos, 1 = neg
    aligned = data.aligned_to(["neg", "pos"], 2)
    assert aligned.labels.tolist() == [0, 1] and aligned.label_names == ["neg", "pos"]
    with pytest.raises(
        RepmatchError, match=r"label 'pos' of dataframe \(1 instance, e.g. id 1\) .* classes: neg;"
    ):
        data.aligned_to(["neg"], 1)


def test_unnamed_reference_needs_labels_in_range() -> None:
    data = as_examples(pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 3, 1]}))
    assert data.aligned_to(None, 4).labels.tolist() == [0, 3, 1]
    with pytest.raises(
        RepmatchError, match=r"label 3 of dataframe \(1 instance, e.g. id 1\).*classes: 0, 1, 2;"
    ):
        data.aligned_to(None, 3)
    named = _pairs_with_labels(["neutral", "entailment"])
    with pytest.raises(RepmatchError, match=r"the reference has integer labels but .* names"):
        named.aligned_to(None, 2)  # names are not class indices


def test_regression_alignment_is_a_no_op(tiny_data: dict[str, Path]) -> None:
    examples = _load(tiny_data["regression"])
    assert examples.aligned_to(None, 1) is examples


def test_reference_with_more_names_than_outputs() -> None:
    data = _pairs_with_labels(["neutral"])
    with pytest.raises(RepmatchError, match=r"names 3 classes but has 2 outputs"):
        data.aligned_to(MNLI_NAMES, 2)


# --------------------------------------------------------------------------------------------
# Library messages name the DataSpec field at fault, never a command-line flag


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"seed": -1}, "seed"),
        ({"sample": 0}, "sample"),
        ({"text_column": "nope"}, "text_column"),
        ({"label_column": "nope"}, "label_column"),
        ({"labels": ["9"]}, "labels"),
        ({"sample": 1000}, "sample"),
        ({"split": "dev"}, "split"),
        ({"hub_config": "x"}, "hub_config"),
        ({"task": "regression", "labels": ["1"]}, "labels"),
        ({"indices_file": "/no/such/ids.txt"}, "indices_file"),
    ],
)
def test_errors_name_the_field(small_file: Path, kwargs: dict, field: str) -> None:
    with pytest.raises(RepmatchError) as e:
        _load(small_file, **kwargs)
    assert e.value.field == field
    assert field in str(e.value)
    assert "--" not in _one_line(e)
    assert field in FLAGS


def test_data_errors_without_a_single_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 0}, {"text": "", "label": 1}])
    with pytest.raises(RepmatchError) as e:
        _load(path)
    assert e.value.field is None
    with pytest.raises(RepmatchError) as e:
        DataSpec("x.csv", limit=1, sample=1)
    assert e.value.field is None and "--" not in str(e.value)


@pytest.mark.parametrize(
    ("values", "num_labels", "names"),
    [
        ([0, 1000000], 2, ["0", "1000000"]),  # sparse: classes numbered by value
        ([1, 5000], 2, ["1", "5000"]),
        ([1, 2, 3, 4, 5], 6, None),  # offset by one: dense enough to be indices
        ([0, 2, 3], 4, None),  # 0..K-1 with a class missing
        ([3, 4], 2, ["3", "4"]),
    ],
)
def test_integer_labels_that_are_not_indices(values, num_labels, names) -> None:
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(len(values))], "label": values})
    examples = as_examples(frame)
    assert examples.num_labels == num_labels and examples.label_names == names
    expected = values if names is None else [names.index(str(v)) for v in values]
    assert examples.labels.tolist() == expected
    assert examples.aligned_to(names, num_labels).labels.tolist() == expected
    assert as_examples(frame, labels=[str(values[-1])]).labels.tolist() == [expected[-1]]


def test_label_names_name_integer_classes() -> None:
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [2, 0, 1]})
    named = as_examples(frame, label_names=("entailment", "neutral", "contradiction"))
    assert named.label_names == ["entailment", "neutral", "contradiction"]
    assert named.labels.tolist() == [2, 0, 1] and named.num_labels == 3
    strings = as_examples(frame.assign(label=["x", "y", "x"]), label_names=["y", "x"])
    assert strings.labels.tolist() == [1, 0, 1] and strings.label_names == ["y", "x"]
    with pytest.raises(RepmatchError, match="holds the integer 2, but label_names names 2"):
        as_examples(frame, label_names=["a", "b"])
    with pytest.raises(RepmatchError, match="'x', which label_names"):
        as_examples(frame.assign(label=["x", "y", "x"]), label_names=["y"])
    for bad in ("abc", [], ["a", "a"], ["a", ""]):
        with pytest.raises(RepmatchError) as err:
            DataSpec("x.csv", label_names=bad)
        assert err.value.field == "label_names"
    assert DataSpec("x.csv", label_names=["a"]).to_dict()["label_names"] == ["a"]
