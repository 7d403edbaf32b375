"""NLI word overlap: the word definition, the Full / Mid / No subsets, their files and the CLI."""

from __future__ import annotations

import gzip
import json
import math

import pandas as pd
import pytest

from repmatch.cli import main
from repmatch.data import as_examples, overlap_subsets, save_overlap_subsets, word_overlap
from repmatch.data.overlap import words
from repmatch.errors import RepmatchError


@pytest.mark.parametrize(
    ("premise", "hypothesis", "expected"),
    [
        ("A man plays a guitar on stage.", "A man plays a guitar.", 1.0),
        ("A man plays a guitar.", "Two dogs run outside", 0.0),
        ("A man sleeps.", "A woman sleeps.", 2 / 3),
        # case and punctuation do not matter
        ("THE CAT, sat!", "the cat sat", 1.0),
        ("The cat sat.", "...the... CAT?!", 1.0),
        # a repeated hypothesis word counts once (the hypothesis is a set of words)
        ("the cat", "the the the dog", 1 / 2),
        # punctuation splits words: "don't" is "don" + "t"
        ("I do not know", "don't", 0.0),
        ("I don't know", "Don't.", 1.0),
        # digits are words; underscores separate them
        ("in 1999 a_b", "1999 b", 1.0),
        # letters beyond ASCII
        ("Ein Mädchen läuft", "mädchen", 1.0),
    ],
)
def test_word_overlap(premise, hypothesis, expected):
    assert word_overlap(premise, hypothesis) == pytest.approx(expected, abs=1e-12)


def test_words_are_lowercased_alphanumeric_runs():
    assert words("Hello, World! It's 3pm_now.") == {"hello", "world", "it", "s", "3pm", "now"}


def test_a_hypothesis_without_words_has_no_overlap():
    assert math.isnan(word_overlap("A man sleeps.", " ... !?"))


def _frame(pairs, labels, **extra) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "premise": [p for p, _ in pairs],
            "hypothesis": [h for _, h in pairs],
            "label": labels,
            **extra,
        }
    )


# premise of five distinct words: hypotheses with k of them and 5 - k new words have overlap k/5
PREMISE = "alpha beta gamma delta epsilon"
NEW = ["one", "two", "three", "four", "five"]


def _share(k: int, n: int = 5) -> str:
    return " ".join(PREMISE.split()[:k] + NEW[: n - k])


def test_subsets_and_the_edges_of_mid():
    pairs = [
        (PREMISE, _share(5)),  # 1.0 full
        (PREMISE, _share(4)),  # 0.8 mid (upper edge included)
        (PREMISE, _share(3)),  # 0.6 mid (lower edge included)
        (PREMISE, _share(2)),  # 0.4 none
        (PREMISE, _share(0)),  # 0.0 no
        (PREMISE, " ".join(PREMISE.split()[:7] + NEW[:2])),  # 5/7 = 0.714 mid
        (PREMISE, " ".join(PREMISE.split()[:5] + NEW[:1])),  # 5/6 = 0.833 none
        (PREMISE, " ".join(PREMISE.split()[:4] + NEW[:3])),  # 4/7 = 0.571 none
        (PREMISE, _share(5)),  # full, but entailment: left out
        (PREMISE, "?!"),  # no words: left out
    ]
    labels = [1, 2, 1, 2, 1, 2, 1, 2, 0, 1]
    frame = _frame(pairs, labels)
    result = overlap_subsets(frame)
    assert result.entailment == 0 and result.entailment_name is None
    assert result.non_entailment == 9 and result.without_words == 1
    assert {band: subset.ids for band, subset in result.subsets.items()} == {
        "full": [0],
        "mid": [1, 2, 5],
        "no": [4],
    }
    assert result.sizes == {"full": 1, "mid": 3, "no": 1}
    mid = result.subsets["mid"]
    assert mid.texts == [PREMISE] * 3
    assert mid.text_pairs == [pairs[1][1], pairs[2][1], pairs[5][1]]
    assert mid.labels.tolist() == [2, 1, 2]


def test_named_labels_find_the_entailment_class():
    pairs = [(PREMISE, _share(5))] * 3
    frame = _frame(pairs, ["entailment", "neutral", "contradiction"])
    result = overlap_subsets(frame)
    assert result.entailment_name == "entailment"
    assert result.subsets["full"].ids == [1, 2]
    # another class named explicitly, by name (any case) or by index
    assert overlap_subsets(frame, entailment_label="Neutral").subsets["full"].ids == [0, 2]
    neutral = frame["label"].map({"entailment": "yes", "neutral": "maybe", "contradiction": "no"})
    with pytest.raises(RepmatchError, match="none is 'entailment'.*entailment_label") as err:
        overlap_subsets(frame.assign(label=neutral))
    assert err.value.field == "entailment_label"
    assert overlap_subsets(frame.assign(label=neutral), entailment_label="yes").sizes["full"] == 2
    with pytest.raises(RepmatchError, match="'maybe!' is not a class"):
        overlap_subsets(frame.assign(label=neutral), entailment_label="maybe!")


def test_integer_labels_take_the_given_entailment_label():
    frame = _frame([(PREMISE, _share(5))] * 2, [0, 1])
    assert overlap_subsets(frame, entailment_label=1).subsets["full"].ids == [0]
    assert overlap_subsets(frame, entailment_label="1").subsets["full"].ids == [0]
    with pytest.raises(RepmatchError, match="entailment label 7 is not a class.*0 to 1"):
        overlap_subsets(frame, entailment_label=7)
    with pytest.raises(RepmatchError, match="must be one of them"):
        overlap_subsets(frame, entailment_label="entailment")


def test_ids_of_the_source_are_kept():
    frame = _frame([(PREMISE, _share(5)), (PREMISE, _share(0))], [1, 2], id=["p7", "p9"])
    assert overlap_subsets(frame).subsets["no"].ids == ["p9"]


@pytest.mark.parametrize(("name", "kind"), [("single", "single-text"), ("regression", "regr")])
def test_non_nli_data_is_refused(tiny_data, name, kind):
    with pytest.raises(RepmatchError, match=f"overlap needs NLI data.*{kind}"):
        overlap_subsets(str(tiny_data[name]))


def test_saved_subsets_are_readable_data(tmp_path):
    pairs = [(PREMISE, _share(5)), (PREMISE, _share(3)), (PREMISE, _share(0)), (PREMISE, "x")]
    frame = _frame(pairs, ["neutral", "contradiction", "neutral", "entailment"])
    result, record = save_overlap_subsets(frame, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "full.jsonl.gz",
        "mid.jsonl.gz",
        "no.jsonl.gz",
        "overlap.json",
    ]
    with gzip.open(out / "mid.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    assert rows == [
        {"id": 1, "premise": PREMISE, "hypothesis": _share(3), "label": "contradiction"}
    ]
    back = as_examples(out / "full.jsonl.gz")
    assert back.task == "pair-classification"
    assert back.ids == [0] and back.texts == [PREMISE] and back.text_pairs == [_share(5)]
    assert back.label_names == ["neutral"]
    assert as_examples(str(out), split="no").ids == [2]
    saved = json.loads((out / "overlap.json").read_text())
    assert saved == record
    assert saved["format"] == "repmatch-overlap/1"
    assert saved["sizes"] == {"full": 1, "mid": 1, "no": 1} == result.sizes
    assert saved["entailment_name"] == "entailment"
    assert saved["non_entailment"] == 3
    assert saved["source"]["num_examples"] == 4
    assert saved["source"]["data_fingerprint"] == as_examples(frame).fingerprint()
    assert "lowercased" in saved["definition"]
    # equal contents, equal bytes (gzip header time 0)
    first = (out / "mid.jsonl.gz").read_bytes()
    save_overlap_subsets(frame, out, overwrite=True)
    assert (out / "mid.jsonl.gz").read_bytes() == first


def test_an_empty_subset_has_no_file(tmp_path):
    frame = _frame([(PREMISE, _share(5)), (PREMISE, _share(5))], [1, 2])
    _, record = save_overlap_subsets(frame, tmp_path)
    assert record["sizes"] == {"full": 2, "mid": 0, "no": 0}
    assert record["files"] == {"full": "full.jsonl.gz", "mid": None, "no": None}
    assert not (tmp_path / "mid.jsonl.gz").exists()


def test_existing_outputs_are_replaced_only_when_asked(tmp_path):
    frame = _frame([(PREMISE, _share(5)), (PREMISE, _share(0))], [1, 2])
    save_overlap_subsets(frame, tmp_path / "a")
    with pytest.raises(RepmatchError, match="already holds .*overwrite") as err:
        save_overlap_subsets(frame, tmp_path / "a")
    assert err.value.field == "overwrite"
    # a subset that became empty is removed on overwrite
    save_overlap_subsets(frame.assign(label=[1, 0]), tmp_path / "a", overwrite=True)
    assert not (tmp_path / "a" / "no.jsonl.gz").exists()
    # files that repmatch did not write are never replaced
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mid.jsonl.gz").write_text("mine")
    with pytest.raises(RepmatchError, match="holds no overlap subsets"):
        save_overlap_subsets(frame, tmp_path / "b", overwrite=True)
    assert (tmp_path / "b" / "mid.jsonl.gz").read_text() == "mine"


def test_refused_input_writes_nothing(tiny_data, tmp_path):
    with pytest.raises(RepmatchError):
        save_overlap_subsets(str(tiny_data["single"]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_writes_subsets_that_train_reads(tiny_data, tiny_model, tmp_path, capsys):
    out = tmp_path / "overlap"
    assert main(["overlap", str(tiny_data["pair"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "overlap.json").read_text())
    assert "are non-entailment (entailment = label 0)" in printed
    for band, size in record["sizes"].items():
        assert f"{band:>4}: {size:>7}" in printed
    band = next(band for band, size in record["sizes"].items() if size)
    # a band of the tiny data may hold one class only: the head keeps NLI's three outputs
    argv = ["train", f"{out}@{band}", "--model", tiny_model("bert"), "--rank", "2", "--quiet"]
    argv += ["--num-labels", "3"]
    assert main([*argv, "--out", str(tmp_path / "adapter")]) == 0
    adapter = json.loads((tmp_path / "adapter" / "repmatch.json").read_text())
    assert adapter["num_examples"] == record["sizes"][band]


def test_cli_refuses_non_nli_data_in_one_line(tiny_data, tmp_path, capsys):
    rc = main(["overlap", str(tiny_data["regression"]), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "overlap needs NLI data" in err and "regression" in err


def test_cli_names_the_entailment_flag(tiny_data, tmp_path, capsys):
    argv = ["overlap", str(tiny_data["pair"]), "--entailment-label", "9"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith("[--entailment-label]")


def test_real_mnli_sizes(shared_data, tmp_path):
    result, _ = save_overlap_subsets(
        as_examples(str(shared_data / "mnli"), split="validation"), tmp_path
    )
    # every instance of every subset has the overlap its band says
    for band, subset in result.subsets.items():
        assert subset.labels.min() > 0
        shares = [word_overlap(p, h) for p, h in zip(subset.texts, subset.text_pairs, strict=True)]
        low, high = {"full": (1, 1), "mid": (0.6, 0.8), "no": (0, 0)}[band]
        assert all(low <= share <= high for share in shares)
    assert result.non_entailment == 9815 - 3479  # shared/data/README.md: 3,479 entailment
