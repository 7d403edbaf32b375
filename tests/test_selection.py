"""Tests for repmatch.selection and ``repmatch select``: ranking and ties, class-balanced shares,
seeded random draws, the written file read back by every reader (and by ``repmatch train``), the
record, and bad input (unknown ids, scores without their record, changed data) leaving nothing."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import FAST_TRAIN
from repmatch.cli import main
from repmatch.config import ScoreConfig, SelectConfig, TrainConfig
from repmatch.data import DataSpec, as_examples, load_examples
from repmatch.errors import RepmatchError
from repmatch.scoring import score_instances
from repmatch.selection import (
    class_quotas,
    load_scores,
    select_from_scores,
    select_instances,
    select_to_file,
)
from repmatch.training import train_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _table(ids, scores, labels=None) -> pd.DataFrame:
    labels = [0] * len(ids) if labels is None else labels
    return pd.DataFrame({"id": ids, "label": labels, "score": scores})


def _assert_user_error(rc: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("repmatch: error: "), err
    assert all(fragment in lines[0] for fragment in fragments), err


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# --------------------------------------------------------------------------------------------
# Ranking, ties, shares and draws on tables


def test_ties_are_broken_by_the_smaller_id_first():
    table = _table([7, 3, 5, 1, 9], [0.5, 0.5, 0.9, 0.5, 0.1])
    assert select_instances(table, 3) == [5, 1, 3]
    assert select_instances(table, 3, how="bottom") == [9, 1, 3]
    strings = _table(["b", "a", "c"], [0.2, 0.2, 0.2])
    assert select_instances(strings, 2) == ["a", "b"]
    assert select_instances(strings, 2, how="bottom") == ["a", "b"]


def test_ranking_does_not_depend_on_row_order():
    rng = np.random.default_rng(0)
    table = _table(list(range(50)), rng.integers(0, 5, 50) / 4, rng.integers(0, 3, 50).tolist())
    shuffled = table.sample(frac=1, random_state=1)
    for how in ("top", "bottom", "random"):
        for balanced in (False, True):
            options = {"how": how, "balanced": balanced, "seed": 3}
            assert select_instances(table, 12, **options) == select_instances(
                shuffled, 12, **options
            )


@pytest.mark.parametrize("k", [0, -3])
def test_k_must_be_positive(k):
    with pytest.raises(RepmatchError, match="k must be at least 1") as info:
        select_instances(_table([0, 1], [0.1, 0.2]), k)
    assert info.value.field == "k"


def test_k_larger_than_the_data():
    with pytest.raises(RepmatchError, match="k=3 is more than the 2 instances"):
        select_instances(_table([0, 1], [0.1, 0.2]), 3)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_table([0, 0], [0.1, 0.2]), "id 0 occurs more than once"),
        (_table([0, 1], [0.1, np.nan]), r"1 scores in column 'score' .* \(e.g. id 1\)"),
        (pd.DataFrame({"id": [0], "label": [0]}), "no column 'score'"),
        (_table([0, 1], [0.1, 0.2], [0.5, 1.5]), "labels .* are not classes"),
    ],
)
def test_bad_tables(table, message):
    with pytest.raises(RepmatchError, match=message):
        select_instances(table, 1, balanced=True)


def test_largest_remainder_by_hand():
    # exact shares 2.0, 1.2, 0.8: floors 2, 1, 0 and the one left goes to the largest remainder
    assert class_quotas({0: 5, 1: 3, 2: 2}, 4) == {0: 2, 1: 1, 2: 1}
    # 10 * (1/3) each: remainders equal, the smaller class label gets the one left
    assert class_quotas({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}


@pytest.mark.parametrize("k", [-2, 9])
def test_class_quotas_refuse_what_the_classes_cannot_hold(k):
    """Fifth pass: k=-2 gave quotas {0: -1, 1: -1}, k=9 of 8 instances {0: 6, 1: 3}."""
    with pytest.raises(RepmatchError, match="k must be between 0 and the 8 instances"):
        class_quotas({0: 5, 1: 3}, k)


@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    fraction=st.floats(0, 1),
)
def test_shares_sum_to_k_within_one_of_the_exact_share(counts, fraction):
    total = sum(counts)
    k = max(1, round(fraction * total))
    quotas = class_quotas(dict(enumerate(counts)), k)
    assert sum(quotas.values()) == k
    for c, n in enumerate(counts):
        assert abs(quotas[c] - k * n / total) < 1 and quotas[c] <= n


def test_balanced_keeps_proportions_and_ranks_within_classes():
    labels = [0] * 14 + [1] * 6
    table = _table(list(range(20)), [i / 20 for i in range(20)], labels)  # class 1 scores highest
    chosen = select_instances(table, 10, balanced=True)
    assert [labels[i] for i in chosen].count(0) == 7 and len(chosen) == 10
    assert chosen == [19, 18, 17, 13, 12, 11, 10, 9, 8, 7]  # top 3 of class 1, top 7 of class 0
    assert select_instances(table, 10) == list(range(19, 9, -1))  # unbalanced: mostly class 1


def test_random_is_seeded_and_leaves_the_global_rng_alone():
    table = _table(list(range(100)), [0.0] * 100, [i % 3 for i in range(100)])
    np_state, torch_state, py_state = (
        np.random.get_state(),
        torch.get_rng_state(),
        random.getstate(),
    )
    first = select_instances(table, 10, how="random", seed=1)
    assert first == select_instances(table, 10, how="random", seed=1)
    assert first != select_instances(table, 10, how="random", seed=2)
    assert len(set(first)) == 10
    stratified = select_instances(table, 10, how="random", balanced=True, seed=1)
    assert sorted(i % 3 for i in stratified) == [0] * 4 + [1] * 3 + [2] * 3  # 34/33/33 of 100
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state


# --------------------------------------------------------------------------------------------
# From a scores file to a data file


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model, tiny_data, trained_adapter) -> Path:
    """Scores of the tiny 40-row sentiment csv (ids 0..39) against a tiny BERT adapter."""
    out = tmp_path_factory.mktemp("scored") / "scores.parquet"
    score_instances(
        DataSpec(str(tiny_data["single"])), trained_adapter("bert"), ScoreConfig(), out=out
    )
    return out


@pytest.fixture(scope="module")
def named(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """String labels: an adapter trained on classes a/b/c, and scores of a file holding only b
    and c (the data calls them 0 and 1, scoring maps them to the adapter's classes 1 and 2)."""
    folder = tmp_path_factory.mktemp("named")
    rng = random.Random(1)
    words = {"a": ["sun", "sky"], "b": ["rain", "fog"], "c": ["snow", "ice"]}
    labels = [("a", "b", "c")[i % 3] for i in range(30)]
    frame = pd.DataFrame(
        {
            "sentence": [" ".join(rng.choices(words[y] + ["the", "day"], k=5)) for y in labels],
            "label": labels,
            "idx": [f"x{i:02d}" for i in range(30)],
        }
    )
    frame.to_json(folder / "abc.jsonl", orient="records", lines=True)
    frame[frame["label"] != "a"].to_json(folder / "bc.jsonl", orient="records", lines=True)
    config = TrainConfig(model=tiny_model("bert"), **FAST_TRAIN)
    train_adapter(DataSpec(str(folder / "abc.jsonl")), config, folder / "adapter")
    spec = DataSpec(str(folder / "bc.jsonl"))
    score_instances(spec, folder / "adapter", ScoreConfig(), out=folder / "scores.parquet")
    return {"data": folder / "bc.jsonl", "scores": folder / "scores.parquet"}


@pytest.mark.parametrize("name", ["top.jsonl", "top.csv", "top.tsv", "top.parquet", "t.json.gz"])
def test_written_rows_read_back_as_the_source_rows(scored, tiny_data, tmp_path, name):
    config = SelectConfig(k=8, balanced=True)
    selection = select_to_file(scored, config, tmp_path / name)
    source = load_examples(DataSpec(str(tiny_data["single"])))
    back = as_examples(tmp_path / name)
    assert back.ids == selection.ids and len(back) == 8
    rows = [source.ids.index(i) for i in back.ids]
    assert back.texts == [source.texts[r] for r in rows]
    assert back.labels.tolist() == [int(source.labels[r]) for r in rows]
    assert back.task == "classification" and back.columns["id"] == "id"
    scores = pd.read_parquet(scored).set_index("id")["score"]
    assert selection.scores.tolist() == scores.loc[selection.ids].tolist()
    assert selection.scores.tolist() == sorted(selection.scores.tolist(), reverse=True)
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["format"] == "repmatch-selection/1" and record["ids"] == selection.ids
    assert record["select"] == config.to_dict() and record["class_counts"] == {"0": 4, "1": 4}
    assert record["num_scored"] == 40 and record["scores"] == str(scored.resolve())
    assert (
        record["data_fingerprint"]
        == json.loads(Path(f"{scored}.json").read_text())["data_fingerprint"]
    )
    assert _leftovers(tmp_path, {name, f"{name}.json"}) == []


def test_string_labels_round_trip_through_scores_mapped_to_the_reference(named, tmp_path):
    frame, _ = load_scores(named["scores"])
    assert sorted(set(frame["label"])) == [1, 2]  # the adapter's classes of b and c
    assert load_examples(DataSpec(str(named["data"]))).labels.max() == 1  # the data's own
    selection = select_to_file(named["scores"], SelectConfig(k=6), tmp_path / "s.csv")
    back = as_examples(tmp_path / "s.csv")
    chosen = selection.examples
    assert back.label_names == sorted({chosen.label_names[v] for v in chosen.labels})
    assert set(back.label_names) <= {"b", "c"} and back.columns["id"] == "idx"
    source = {i: t for i, t in zip(*_ids_texts(named["data"]), strict=True)}
    assert back.texts == [source[i] for i in back.ids]
    assert [back.label_names[v] for v in back.labels] == [
        selection.examples.label_names[v] for v in selection.examples.labels
    ]


def test_labels_renamed_inconsistently_are_other_data(named, tmp_path):
    copy = _copy_scores(named["scores"], tmp_path)
    frame = pd.read_json(named["data"], lines=True)
    frame.loc[0, "label"] = "c" if frame.loc[0, "label"] == "b" else "b"
    frame.to_json(tmp_path / "flipped.jsonl", orient="records", lines=True)
    with pytest.raises(RepmatchError, match="is not the data scored in"):
        select_from_scores(copy, SelectConfig(k=2), data=tmp_path / "flipped.jsonl")


def _ids_texts(path: Path) -> tuple[list, list]:
    examples = load_examples(DataSpec(str(path)))
    return examples.ids, examples.texts


def test_regression_labels_named_score_keep_their_column(tiny_data, trained_adapter, tmp_path):
    out = tmp_path / "scores.parquet"
    spec = DataSpec(str(tiny_data["regression"]))
    score_instances(spec, trained_adapter("bert", data="regression"), ScoreConfig(), out=out)
    with pytest.raises(RepmatchError, match="not classes"):
        select_from_scores(out, SelectConfig(k=5, balanced=True))
    selection = select_to_file(out, SelectConfig(k=5, how="bottom"), tmp_path / "low.jsonl")
    back = as_examples(tmp_path / "low.jsonl")
    assert back.task == "regression" and back.columns["label"] == "score"
    assert selection.record["columns"]["score"] == "selection_score"
    source = load_examples(spec)
    assert back.labels.tolist() == [float(source.labels[source.ids.index(i)]) for i in back.ids]
    assert pd.read_json(tmp_path / "low.jsonl", lines=True)[
        "selection_score"
    ].is_monotonic_increasing


def test_scores_without_their_record(scored, tmp_path):
    lonely = tmp_path / "scores.parquet"
    shutil.copy(scored, lonely)
    with pytest.raises(RepmatchError, match="no run record scores.parquet.json beside it"):
        select_to_file(lonely, SelectConfig(k=2), tmp_path / "out.jsonl")
    (tmp_path / "scores.parquet.json").write_text('{"format": "something else"}')
    with pytest.raises(RepmatchError, match="not the run record of a scores file"):
        select_to_file(lonely, SelectConfig(k=2), tmp_path / "out.jsonl")
    assert _leftovers(tmp_path, {"scores.parquet", "scores.parquet.json"}) == []


def _copy_scores(scored: Path, folder: Path) -> Path:
    shutil.copy(scored, folder / "scores.parquet")
    shutil.copy(f"{scored}.json", folder / "scores.parquet.json")
    return folder / "scores.parquet"


def test_unknown_ids_are_named(scored, tmp_path):
    copy = _copy_scores(scored, tmp_path)
    frame = pd.read_parquet(copy)
    frame.loc[3, "id"] = 4000
    frame.to_parquet(copy)
    with pytest.raises(RepmatchError, match="id 4000 of scores scores.parquet is not in") as info:
        select_to_file(copy, SelectConfig(k=2), tmp_path / "out.jsonl")
    assert info.value.field == "data"
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.json").exists()


def test_data_changed_since_scoring(scored, tiny_data, tmp_path):
    copy = _copy_scores(scored, tmp_path)
    frame = pd.read_csv(tiny_data["single"])
    frame.loc[5, "text"] = "an edited text"
    frame.to_csv(tmp_path / "edited.csv", index=False)
    record = json.loads(Path(f"{copy}.json").read_text())
    record["data"]["source"] = str(tmp_path / "edited.csv")
    Path(f"{copy}.json").write_text(json.dumps(record))
    with pytest.raises(RepmatchError, match="is not the data scored in scores.parquet"):
        select_from_scores(copy, SelectConfig(k=2))
    with pytest.raises(RepmatchError, match="is not the data scored in"):  # same with data=
        select_from_scores(scored, SelectConfig(k=2), data=tmp_path / "edited.csv")


def test_in_memory_scores_need_the_data(tiny_data, trained_adapter, tmp_path):
    frame = pd.read_csv(tiny_data["single"])
    out = tmp_path / "scores.parquet"
    score_instances(frame, trained_adapter("bert"), ScoreConfig(), out=out)
    with pytest.raises(RepmatchError, match="in-memory data .* cannot be reloaded") as info:
        select_from_scores(out, SelectConfig(k=3))
    assert info.value.field == "data"
    from_frame = select_from_scores(out, SelectConfig(k=3), data=frame)
    from_file = select_from_scores(out, SelectConfig(k=3), data=str(tiny_data["single"]))
    assert from_frame.ids == from_file.ids and len(from_frame.ids) == 3


def test_existing_outputs(scored, tmp_path):
    out = tmp_path / "top.jsonl"
    select_to_file(scored, SelectConfig(k=3), out)
    with pytest.raises(RepmatchError, match="already exists") as info:
        select_to_file(scored, SelectConfig(k=4), out)
    assert info.value.field == "overwrite" and len(as_examples(out)) == 3
    select_to_file(scored, SelectConfig(k=4), out, overwrite=True)
    assert len(as_examples(out)) == 4
    foreign = tmp_path / "mine.csv"
    foreign.write_text("text,label\nhello,1\n")
    with pytest.raises(RepmatchError, match="not a selection"):
        select_to_file(scored, SelectConfig(k=4), foreign, overwrite=True)
    assert foreign.read_text() == "text,label\nhello,1\n"
    with pytest.raises(RepmatchError, match="cannot tell the format"):
        select_to_file(scored, SelectConfig(k=4), tmp_path / "top.txt")
    assert _leftovers(tmp_path, {"top.jsonl", "top.jsonl.json", "mine.csv"}) == []


def test_tsv_refuses_texts_with_tabs(tiny_model, trained_adapter, tmp_path):
    frame = pd.DataFrame({"text": ["good\tday", "bad day", "fine day"], "label": [1, 0, 1]})
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    score_instances(
        DataSpec(str(tmp_path / "d.jsonl")), trained_adapter("bert"), out=tmp_path / "s.parquet"
    )
    with pytest.raises(RepmatchError, match="tab or line break"):
        select_to_file(tmp_path / "s.parquet", SelectConfig(k=3), tmp_path / "top.tsv")
    assert not (tmp_path / "top.tsv").exists()


# --------------------------------------------------------------------------------------------
# Command line


def test_cli_select_then_train(scored, tiny_model, tmp_path, capsys):
    out, again = tmp_path / "random.csv", tmp_path / "again.csv"
    argv = ["select", str(scored), "--random", "10", "--balanced", "--seed", "4", "--out"]
    assert main([*argv, str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    summary = "selected 10 of 40 instances (random, balanced, seed 4); classes: 0 5, 1 5"
    assert printed == f"{summary}; written to {out}"
    assert main([*argv, str(again)]) == 0
    assert again.read_text() == out.read_text()
    flags = ["--rank", "2", "--epochs", "1", "--batch-size", "8", "--quiet"]
    argv = ["train", str(out), "--model", tiny_model("bert"), *flags, "--out", str(tmp_path / "a")]
    assert main(argv) == 0
    record = json.loads((tmp_path / "a" / "repmatch.json").read_text())
    assert record["num_examples"] == 10 and record["task"] == "classification"


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--top", "0"], ["k must be at least 1, got 0 [--top]"]),
        (["--bottom", "41"], ["k=41 is more than the 40 instances", "[--bottom]"]),
        (["--top", "2", "--limit", "3"], ["the data options apply to --data"]),
        (["--top", "2", "--score-column", "nope"], ["no column 'nope'", "[--score-column]"]),
    ],
)
def test_cli_errors_are_one_line(scored, tmp_path, capsys, argv, fragments):
    out = tmp_path / "x.jsonl"
    rc = main(["select", str(scored), *argv, "--out", str(out)])
    _assert_user_error(rc, capsys.readouterr().err, *fragments)
    assert list(tmp_path.iterdir()) == []
