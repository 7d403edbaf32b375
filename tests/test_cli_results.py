"""Issue 19: inputs that once gave a wrong or misleading result with exit 0, run through the CLI.

Each test names the case it covers; each failed before its fix (labels matched by position, merged
subset names, unverified report texts, duplicated chunks, a 5,001-class head, an ignored
``--max-length``, an unreadable ``.csv``, a demo over a user's folder, raw escape sequences, a
``@`` in a file name read as a split, layers in string order).
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repmatch.cli import main
from test_cli import FAST_FLAGS

EVALUATE = ["--seeds", "1", "--epochs", "1", "--batch-size", "8", "--lr", "1e-2", "--quiet"]
NLI = ["entailment", "neutral", "contradiction"]  # shared/data's order for 0, 1, 2


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


# 1. named training labels, integer evaluation labels -------------------------------------------


@pytest.fixture(scope="module")
def nli_files(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nli")
    pair = pd.read_csv(tiny_data["pair"])
    named = pair.assign(label=[NLI[v] for v in pair["label"]])
    named[:30].to_csv(folder / "named.csv", index=False)
    pair[30:].to_csv(folder / "eval-int.csv", index=False)
    named[30:].to_csv(folder / "eval-named.csv", index=False)
    return folder


def test_evaluate_refuses_integers_against_names(nli_files, tiny_model, capsys):
    argv = ["evaluate", "--train", str(nli_files / "named.csv"), "--model", tiny_model("bert")]
    rc = main([*argv, "--eval", str(nli_files / "eval-int.csv"), *EVALUATE, "--json"])
    assert rc == 2
    err = _error(capsys)
    assert "--label-names" in err and "contradiction" in err


def test_evaluate_matches_integers_through_given_names(nli_files, tiny_model, capsys):
    argv = ["evaluate", "--train", str(nli_files / "named.csv"), "--model", tiny_model("bert")]
    given = ["--eval", str(nli_files / "eval-int.csv"), "--label-names", *NLI]
    assert main([*argv, *given, *EVALUATE, "--json"]) == 0
    mapped = json.loads(capsys.readouterr().out)
    assert main([*argv, "--eval", str(nli_files / "eval-named.csv"), *EVALUATE, "--json"]) == 0
    named = json.loads(capsys.readouterr().out)
    assert mapped["summary"][0]["accuracy_mean"] == named["summary"][0]["accuracy_mean"]
    assert mapped["runs"][0]["metrics"] == named["runs"][0]["metrics"]


def test_label_names_must_cover_the_integers(nli_files, tiny_model, tmp_path, capsys):
    argv = ["train", str(nli_files / "eval-int.csv"), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--label-names", "yes", "no", "--out", str(tmp_path / "a")]) == 2
    assert "--label-names" in _error(capsys)
    assert not (tmp_path / "a").exists()


# 2. subsets with the same file name -------------------------------------------------------------


def test_evaluate_names_same_named_subsets_apart(tiny_data, tiny_model, tmp_path, capsys):
    single = pd.read_csv(tiny_data["single"])
    for where, rows in (("a/sub.jsonl", single[:20]), ("b/sub.jsonl", single[10:30])):
        (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
        rows.to_json(tmp_path / where, orient="records", lines=True)
    single[20:].to_json(tmp_path / "sub-2.jsonl", orient="records", lines=True)
    train = [str(tmp_path / name) for name in ("a/sub.jsonl", "b/sub.jsonl", "sub-2.jsonl")]
    out = tmp_path / "eval"
    argv = ["evaluate", *(arg for path in train for arg in ("--train", path))]
    argv += ["--eval", str(tiny_data["single"]), "--model", tiny_model("bert"), *EVALUATE]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "results.json").read_text())["summary"]
    names = [row["subset"] for row in summary]
    assert names == ["a/sub", "b/sub", "sub-2"]
    assert pd.read_csv(out / "results.csv")["subset"].tolist() == names
    assert all(row["num_train"] == 20 for row in summary)
    assert all(name in printed for name in names)


# 3. report on changed data, an edited selection, a tampered scores file ------------------------


@pytest.fixture(scope="module")
def scored(tiny_data, tiny_model, tmp_path_factory):
    """Data with ids and prototypicality scores of it (no adapter needed), in a fresh folder."""
    folder = tmp_path_factory.mktemp("scored")
    frame = pd.read_csv(tiny_data["single"])
    frame.to_csv(folder / "data.csv", index=False)
    out = folder / "scores.parquet"
    argv = ["score", str(folder / "data.csv"), "--method", "prototypicality", "--quiet"]
    assert main([*argv, "--model", tiny_model("bert"), "--out", str(out)]) == 0
    return folder


def _copy_scores(scored: Path, folder: Path) -> Path:
    for name in ("data.csv", "scores.parquet", "scores.parquet.json"):
        shutil.copy(scored / name, folder / name)
    record = json.loads((folder / "scores.parquet.json").read_text())
    record["data"]["source"] = str(folder / "data.csv")
    (folder / "scores.parquet.json").write_text(json.dumps(record))
    return folder / "scores.parquet"


def test_report_hides_texts_of_reordered_data(scored, tmp_path, capsys):
    scores = _copy_scores(scored, tmp_path)
    data = pd.read_csv(tmp_path / "data.csv")
    data[::-1].to_csv(tmp_path / "data.csv", index=False)  # row ids now name other rows
    assert main(["report", str(scores), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "could not be verified" in page
    assert not any(text in page for text in data["text"])


def test_report_shows_texts_of_unchanged_data(scored, tmp_path):
    scores = _copy_scores(scored, tmp_path)
    assert main(["report", str(scores), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "could not be verified" not in page
    assert sum(text in page for text in pd.read_csv(tmp_path / "data.csv")["text"]) >= 10


def test_report_flags_duplicate_ids(scored, tmp_path):
    scores = _copy_scores(scored, tmp_path)
    table = pq.read_table(scores).to_pandas()
    table.loc[1, "id"] = table.loc[0, "id"]
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), scores)
    assert main(["report", str(scores), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "repeats" in page and "could not be verified" in page


def test_report_flags_an_edited_selection(scored, tmp_path, capsys):
    scores = _copy_scores(scored, tmp_path)
    selection = tmp_path / "top.csv"
    assert main(["select", str(scores), "--top", "10", "--out", str(selection)]) == 0
    edited = pd.read_csv(selection)[:8]
    edited.loc[0, "label"] = 7
    edited.to_csv(selection, index=False)
    assert main(["report", str(selection), "--out", str(tmp_path / "page.html")]) == 0
    page = html.unescape((tmp_path / "page.html").read_text())
    assert "differs from its record" in page
    assert "8 rows" in page and "'7'" in page


# 4. score --resume with a damaged .partial -------------------------------------------------------


def test_resume_refuses_a_chunk_copied_over_another(scored, trained_adapter, tiny_data, tmp_path):
    reference = trained_adapter("bert")
    out = tmp_path / "scores.parquet"
    argv = ["score", str(tiny_data["single"]), "--reference", reference, "--chunk-size", "10"]
    argv += ["--quiet", "--out", str(out)]
    assert main(argv) == 0
    partial = tmp_path / "scores.parquet.partial"
    partial.mkdir()
    shutil.move(str(out) + ".json", partial / "run.json")
    table = pq.read_table(out)
    for index in range(4):
        pq.write_table(table.slice(10 * index, 10), partial / f"chunk-{index:05d}.parquet")
    out.unlink()
    shutil.copy(partial / "chunk-00000.parquet", partial / "chunk-00001.parquet")
    rc = main([*argv, "--resume"])
    if rc == 0:  # recomputed: every id once, in data order
        assert pq.read_table(out)["id"].to_pylist() == list(range(40))
    else:
        assert rc == 2 and not out.exists()


# 5. labels that are not 0..K-1 ------------------------------------------------------------------


def test_sparse_integer_labels_are_classes(tiny_data, tiny_model, tmp_path, capsys):
    frame = pd.read_csv(tiny_data["single"])
    sparse = tmp_path / "sparse.csv"
    frame.assign(label=frame["label"].map({0: 1, 1: 5000})).to_csv(sparse, index=False)
    model = tiny_model("bert")
    adapter = tmp_path / "adapter"
    assert main(["train", str(sparse), "--model", model, *FAST_FLAGS, "--out", str(adapter)]) == 0
    record = json.loads((adapter / "repmatch.json").read_text())
    assert record["num_labels"] == 2 and record["label_names"] == ["1", "5000"]

    scores = tmp_path / "scores.parquet"
    argv = ["score", str(sparse), "--reference", str(adapter), "--quiet"]
    assert main([*argv, "--out", str(scores)]) == 0
    labels = pq.read_table(scores)["label"].to_pylist()
    assert sorted(set(labels)) == [0, 1] and labels == (frame["label"]).tolist()
    capsys.readouterr()
    # the same classes numbered 0/1 are other classes: refused, not matched by position
    plain = ["score", str(tiny_data["single"]), "--reference", str(adapter), "--quiet"]
    assert main([*plain, "--out", str(tmp_path / "other.parquet")]) == 2
    assert "label 0 " in _error(capsys)

    out = tmp_path / "eval"
    argv = ["evaluate", "--train", str(sparse), "--eval", str(sparse), "--model", model]
    assert main([*argv, *EVALUATE, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_labels"] == 2 and results["label_names"] == ["1", "5000"]


# 6. --max-length below the special tokens -------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "score", "baseline", "evaluate"])
def test_max_length_below_the_special_tokens(command, tiny_data, tiny_model, tmp_path, capsys):
    data, model = str(tiny_data["single"]), tiny_model("bert")
    argv = {
        "train": ["train", data, "--model", model, *FAST_FLAGS, "--out", str(tmp_path / "a")],
        "score": ["score", data, "--method", "prototypicality", "--model", model, "--quiet"]
        + ["--out", str(tmp_path / "s.parquet")],
        "baseline": ["baseline", data, data, "--model", model, "--quiet"],
        "evaluate": ["evaluate", "--train", data, "--eval", data, "--model", model, *EVALUATE],
    }[command]
    assert main([*argv, "--max-length", "1"]) == 2
    err = _error(capsys)
    assert "max_length 1" in err and "special tokens" in err and "--max-length" in err
    assert list(tmp_path.iterdir()) == []


# 7. every format select writes reads back every text --------------------------------------------

AWKWARD = [
    "bare\rreturn",
    'quote " inside',
    "comma, and 'single'",
    "tab\tinside",
    "new\nline",
    "crlf\r\nend",
    "unicode é ✓ 𝄞",
    "  leading and trailing  ",
    "NA",
    "null",
]


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "json", "parquet", "tsv", "csv.gz"])
def test_select_round_trips_awkward_texts(suffix, tiny_model, tmp_path, capsys):
    texts = [*AWKWARD, *(f"plain text {i}" for i in range(10))]
    data = tmp_path / "data.jsonl"
    frame = pd.DataFrame({"id": [f"i{i}" for i in range(len(texts))], "text": texts})
    frame.assign(label=[i % 2 for i in range(len(texts))]).to_json(
        data, orient="records", lines=True
    )
    scores = tmp_path / "scores.parquet"
    argv = ["score", str(data), "--method", "prototypicality", "--quiet", "--out", str(scores)]
    assert main([*argv, "--model", tiny_model("bert")]) == 0
    out = tmp_path / f"all.{suffix}"
    rc = main(["select", str(scores), "--top", str(len(texts)), "--out", str(out)])
    if suffix == "tsv":  # .tsv cannot hold tabs or line breaks: refused, nothing written
        assert rc == 2 and "tab or line break" in _error(capsys) and not out.exists()
        return
    assert rc == 0
    from repmatch.evaluation import load_subset

    back = load_subset(out)
    assert dict(zip(back.ids, back.texts, strict=True)) == dict(
        zip(frame["id"], frame["text"], strict=True)
    )


# 8. demo --out over an existing folder ----------------------------------------------------------


class _Stop(Exception):
    pass


def _stop_demo(monkeypatch):
    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr("repmatch.demo.dataset_similarity", stop)


def test_demo_refuses_a_folder_of_other_files(tmp_path, monkeypatch, capsys):
    _stop_demo(monkeypatch)
    mine = tmp_path / "mine" / "data" / "movies.csv"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own file\n")
    for extra in ([], ["--overwrite"]):
        assert main(["demo", "--out", str(tmp_path / "mine"), "--quiet", *extra]) == 2
        assert "holds no demo" in _error(capsys)
        assert mine.read_text() == "my own file\n"


def test_demo_overwrites_only_a_demo_folder(tmp_path, monkeypatch, capsys):
    _stop_demo(monkeypatch)
    out = tmp_path / "demo"
    out.mkdir()
    with pytest.raises(_Stop):  # an empty folder is fine
        main(["demo", "--out", str(out), "--quiet"])
    from repmatch.demo import write_demo_record

    write_demo_record(out)
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in _error(capsys)
    with pytest.raises(_Stop):
        main(["demo", "--out", str(out), "--quiet", "--overwrite"])


def test_demo_refuses_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "f"), "--quiet"]) == 2
    assert "file" in _error(capsys)


# 9. ids and labels with escape sequences are printed escaped ------------------------------------


def test_printed_ids_and_labels_are_escaped(tiny_model, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    rows = [
        {"id": "\x1b]0;title\x07", "text": "good day", "label": "pos\x1b[31m"},
        {"id": "\x1b[2Jclear", "text": "bad day", "label": "neg"},
        *({"id": f"x{i}", "text": f"some text {i}", "label": "pos"} for i in range(6)),
    ]
    pd.DataFrame(rows).to_json(data, orient="records", lines=True)
    scores = tmp_path / "scores.parquet"
    argv = ["score", str(data), "--method", "prototypicality", "--quiet", "--out", str(scores)]
    assert main([*argv, "--model", tiny_model("bert")]) == 0
    printed = capsys.readouterr().out
    assert main(["select", str(scores), "--top", "8", "--out", str(tmp_path / "s.jsonl")]) == 0
    printed += capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed
    assert "\\x1b]0;title\\x07" in printed and "pos\\x1b[31m" in printed


def test_error_lines_are_escaped(tmp_path, capsys):
    bad = tmp_path / "bad\x1b[31m.csv"
    bad.write_text("text,label\ngood,1\nbad,\n")  # a missing label: the error names the file
    assert main(["train", str(bad), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    err = _error(capsys)
    assert "\x1b" not in err and "\\x1b[31m" in err


# Clarity: a DATA path with @ that is a file; per-layer output in numeric order ------------------


def test_data_path_with_at_that_exists_is_a_file(tiny_data, tiny_model, tmp_path, capsys):
    data = tmp_path / "reviews@2024.csv"
    shutil.copy(tiny_data["single"], data)
    argv = ["train", str(data), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    record = json.loads((tmp_path / "a" / "repmatch.json").read_text())
    assert record["data"]["source"].endswith("reviews@2024.csv") and record["data"]["split"] is None


def test_layers_in_numeric_order(tiny_data, tiny_model, tmp_path, capsys):
    model = tiny_model("bert", num_hidden_layers=12)
    adapters = []
    for seed in (0, 1):
        adapters.append(str(tmp_path / f"a{seed}"))
        argv = ["train", str(tiny_data["single"]), "--model", model, *FAST_FLAGS]
        assert main([*argv, "--seed", str(seed), "--limit", "8", "--out", adapters[-1]]) == 0
    capsys.readouterr()
    assert main(["compare", *adapters]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    assert [int(line.split()[1]) for line in lines] == list(range(12))
    assert main(["compare", *adapters, "--json"]) == 0
    layers = list(json.loads(capsys.readouterr().out)["layers"])
    assert [int(name.split(".")[3]) for name in layers] == list(range(12))
    scores = tmp_path / "s.parquet"
    argv = ["score", str(tiny_data["single"]), "--reference", adapters[0], "--limit", "4"]
    assert main([*argv, "--quiet", "--out", str(scores)]) == 0
    columns = [c for c in pq.read_table(scores).column_names if c.startswith("layer_")]
    assert [int(c.split("_")[1]) for c in columns] == list(range(12))


def _written_back(texts: list[str], suffix: str, folder: Path) -> list[str] | None:
    """``texts`` written as a selection ``all.<suffix>`` and read back (None: refused)."""
    import numpy as np

    from repmatch.artifacts import run_record
    from repmatch.data import Examples
    from repmatch.errors import RepmatchError
    from repmatch.evaluation import load_subset
    from repmatch.selection import Selection, write_selection

    columns = {"text": "text", "text_pair": None, "label": "label", "id": "id"}
    examples = Examples(
        name="awkward",
        task="classification",
        texts=texts,
        text_pairs=None,
        labels=np.arange(len(texts), dtype=np.int64) % 2,
        ids=[f"i{i}" for i in range(len(texts))],
        num_labels=2,
        label_names=None,
        columns=columns,
    )
    record = run_record("selection", task="classification", columns=columns | {"score": "score"})
    out = folder / f"all.{suffix}"
    try:
        write_selection(Selection(examples, np.zeros(len(texts)), record), out, overwrite=True)
    except RepmatchError:
        return None
    back = load_subset(out)
    assert back.ids == examples.ids
    return back.texts


_TEXT = st.text(min_size=1, max_size=12).filter(lambda text: text.strip())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(_TEXT, min_size=1, max_size=5))
@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "json", "parquet", "csv.gz"])
def test_every_selection_format_round_trips_any_text(suffix, texts, tmp_path):
    back = _written_back(texts, suffix, tmp_path)
    if back is None:  # only .tsv refuses, and only texts it cannot hold
        assert suffix == "tsv" and any(c in "".join(texts) for c in "\t\n\r")
    else:
        assert back == texts


def test_logged_labels_are_escaped(tiny_model, tmp_path):
    import subprocess
    import sys

    data = tmp_path / "data.jsonl"
    labels = ["pos", "\x1b[31mneg"] * 4
    rows = [{"text": f"some text {i}", "label": label} for i, label in enumerate(labels)]
    pd.DataFrame(rows).to_json(data, orient="records", lines=True)
    argv = [sys.executable, "-m", "repmatch", "score", str(data), "--method", "prototypicality"]
    argv += ["--model", tiny_model("bert"), "--labels", "pos", "zzz", "--quiet"]
    done = subprocess.run(
        [*argv, "--out", str(tmp_path / "s.parquet")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "match no instance" in done.stderr
    assert "\x1b" not in done.stderr and "\\x1b[31mneg" in done.stderr


# second adversarial pass -----------------------------------------------------------------------


def _with_factor(adapter: str, folder: Path, change) -> Path:
    """A copy of ``adapter`` whose first lora_B weight is ``change(weight)``."""
    from safetensors.torch import load_file, save_file

    copy = folder / "changed"
    shutil.copytree(adapter, copy)
    weights = load_file(str(copy / "adapter_model.safetensors"))
    key = next(k for k in sorted(weights) if "lora_B" in k)
    weights[key] = change(weights[key])
    save_file(weights, str(copy / "adapter_model.safetensors"))
    return copy


@pytest.mark.parametrize(
    "flag, value", [("--lr", "inf"), ("--alpha", "inf"), ("--weight-decay", "inf"), ("--lr", "nan")]
)
def test_train_refuses_infinite_settings(flag, value, tiny_data, tiny_model, tmp_path, capsys):
    """``--lr inf`` once saved an adapter of NaN weights with exit 0."""
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, flag, value, "--out", str(tmp_path / "a")]) == 2
    assert f"[{flag}]" in _error(capsys) and not (tmp_path / "a").exists()


def test_compare_refuses_non_finite_weights(trained_adapter, tmp_path, capsys):
    """An adapter holding NaN weights once ended in a torch traceback from the SVD."""
    nan = _with_factor(trained_adapter(), tmp_path, lambda w: w * float("nan"))
    assert main(["compare", str(nan), trained_adapter(seed=1)]) == 2
    assert "NaN or infinite" in _error(capsys)


def test_compare_refuses_a_zero_update(trained_adapter, tmp_path, capsys):
    """A zero ΔW (an adapter that learned nothing) once scored 0.07 with exit 0: its singular
    vectors are arbitrary."""
    zero = _with_factor(trained_adapter(), tmp_path, lambda w: w * 0)
    assert main(["compare", str(zero), trained_adapter(seed=1)]) == 2
    assert "zero update" in _error(capsys)


def test_train_refuses_one_class(tiny_data, tiny_model, tmp_path, capsys):
    """Data of one class once trained a one-output head whose loss is always 0: a zero adapter,
    saved with exit 0."""
    data = tmp_path / "one-class.csv"
    pd.read_csv(tiny_data["single"]).assign(label=0).to_csv(data, index=False)
    argv = ["train", str(data), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "one class only" in _error(capsys) and not (tmp_path / "a").exists()
    assert main([*argv, "--num-labels", "2", "--out", str(tmp_path / "b")]) == 0


def test_diverged_training_is_refused(tiny_data, tiny_model, tmp_path, capsys):
    """``--lr 1e6`` once saved an adapter of NaN weights, and ``evaluate --method full`` reported
    the accuracy of a NaN model (one arbitrary class), both with exit 0."""
    data, model = str(tiny_data["single"]), tiny_model("bert")
    argv = ["train", data, "--model", model, *FAST_FLAGS, "--lr", "1e6"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "diverged" in _error(capsys) and not (tmp_path / "a").exists()
    argv = ["evaluate", "--train", data, "--eval", data, "--model", model, *EVALUATE]
    assert main([*argv, "--lr", "1e6", "--method", "full", "--out", str(tmp_path / "e")]) == 2
    assert "diverged" in _error(capsys)


def _edited_adapter(source: str, copy: Path, **fields: object) -> Path:
    """A copy of the adapter at ``source`` whose adapter_config.json has ``fields`` set."""
    shutil.copytree(source, copy)
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps(config | fields))
    return copy


@pytest.mark.parametrize("alpha", ["x", None, 0])
def test_compare_refuses_an_edited_alpha(alpha, trained_adapter, tmp_path, capsys):
    """``lora_alpha: "x"`` in an edited adapter_config.json once ended in a ValueError
    traceback."""
    copy = _edited_adapter(trained_adapter(), tmp_path / "edited", lora_alpha=alpha)
    assert main(["compare", str(copy), trained_adapter(seed=1)]) == 2
    assert "lora_alpha should be" in _error(capsys)


@pytest.mark.parametrize("name", ["scores.csv", "scores.json", "scores.jsonl.gz"])
def test_score_refuses_a_name_of_another_format(name, trained_adapter, tiny_data, tmp_path, capsys):
    """``score --out scores.csv`` once wrote Parquet bytes into a file named .csv, exit 0."""
    out = tmp_path / name
    argv = ["score", str(tiny_data["single"]), "--reference", trained_adapter(), "--quiet"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "written as Parquet" in _error(capsys) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix, big", [(".jsonl", 10**30), (".csv", "1e30"), (".csv", 2**63 - 1)])
def test_train_refuses_labels_too_large_for_a_class(suffix, big, tiny_model, tmp_path, capsys):
    """An integer label of 10**30 in JSON Lines once ended in an OverflowError traceback (and a
    1e30 in a csv wrapped round to a negative int64)."""
    data = tmp_path / f"huge{suffix}"
    frame = pd.DataFrame({"text": ["a good day", "a bad day"], "label": [big, 0]})
    if suffix == ".jsonl":
        data.write_text("".join(json.dumps(row) + "\n" for row in frame.to_dict("records")))
    else:
        frame.to_csv(data, index=False)
    argv = ["train", str(data), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "too large for a class label" in _error(capsys)


def test_train_refuses_a_negative_seed(tiny_data, tiny_model, tmp_path, capsys):
    """``train --seed -1`` once ended in numpy's ValueError traceback (the batch order)."""
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--seed", "-1", "--out", str(tmp_path / "a")]) == 2
    assert "seed must be >= 0" in _error(capsys) and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "edit", [{"score": 5.0}, {"score": 0.1}, {"layers": "first layer 0.2"}], ids=str
)
def test_report_flags_an_edited_comparison(edit, trained_adapter, tmp_path, capsys):
    """A ``compare --json`` file edited to RepMatch = 5 was once drawn as if it were right."""
    assert main(["compare", trained_adapter(), trained_adapter(seed=1), "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    page = tmp_path / "page.html"
    (tmp_path / "right.json").write_text(json.dumps(saved))
    assert main(["report", str(tmp_path / "right.json"), "--out", str(page)]) == 0
    assert "could not be verified" not in page.read_text()
    if edit.get("layers"):
        first = next(iter(saved["layers"]))
        edit = {"layers": saved["layers"] | {first: 0.2}}
    (tmp_path / "edited.json").write_text(json.dumps(saved | edit))
    argv = ["report", str(tmp_path / "edited.json"), "--out", str(page), "--overwrite"]
    assert main(argv) == 0
    assert "This comparison could not be verified" in page.read_text()


# 10. report on run records edited by hand (fourth pass) ------------------------------------------


@pytest.fixture(scope="module")
def recorded_runs(scored, tiny_data, tiny_model, trained_adapter, tmp_path_factory):
    """One run of each kind whose record the report draws from alone, in a fresh folder."""
    folder = tmp_path_factory.mktemp("recorded")
    model = ["--model", tiny_model("bert")]
    single, topics = str(tiny_data["single"]), str(tiny_data["topics"])
    argv = ["datasets", single, topics, *model, *FAST_FLAGS, "--out", str(folder / "matrix")]
    assert main(argv) == 0
    argv = ["evaluate", "--train", single, "--eval", topics, *model, *EVALUATE]
    assert main([*argv, "--out", str(folder / "evaluation")]) == 0
    scores = _copy_scores(scored, folder)
    assert main(["select", str(scores), "--top", "5", "--out", str(folder / "top.csv")]) == 0
    shutil.copytree(trained_adapter(), folder / "adapter")
    return folder


@pytest.mark.parametrize(
    ("run", "record", "edit", "named"),
    [
        ("matrix", "matrix.json", {"names": ["a"]}, "names"),
        ("evaluation", "results.json", {"metrics": "accuracy"}, "metrics"),
        ("evaluation", "results.json", {"summary": {}}, "summary"),
        ("evaluation", "results.json", {"runs": None}, "runs"),
        ("top.csv", "top.csv.json", {"class_counts": None}, "class_counts"),
        ("adapter", "repmatch.json", {"task": 5}, "task"),
    ],
    ids=["matrix-names", "metrics-text", "summary-dict", "runs-gone", "counts-gone", "task-int"],
)
def test_report_refuses_a_record_of_wrong_shape(
    run, record, edit, named, recorded_runs, tmp_path, capsys
):
    """Fourth pass: a matrix record with one name for a 3x3 matrix was drawn as a 1x1 matrix,
    metrics "accuracy" as one column per letter, an edited summary or run list as empty tables,
    a selection record without class counts as 0 chosen of each class, and an adapter record of
    task 5 as task 5 (compare and score refuse it), each with exit 0."""
    source = recorded_runs / run
    copy = tmp_path / run
    (shutil.copytree if source.is_dir() else shutil.copy)(source, copy)
    if not source.is_dir():
        shutil.copy(recorded_runs / record, tmp_path / record)
    file = tmp_path / record if not source.is_dir() else copy / record
    saved = json.loads(file.read_text())
    assert main(["report", str(copy), "--out", str(tmp_path / "right.html")]) == 0
    edited = {key: value for key, value in (saved | edit).items() if value is not None}
    file.write_text(json.dumps(edited))
    assert main(["report", str(copy), "--out", str(tmp_path / "page.html")]) == 2
    assert repr(named) in _error(capsys) and not (tmp_path / "page.html").exists()


@pytest.mark.parametrize(
    "edit", [{"num_train": None}, {"metrics": {"accuracy": "x", "macro_f1": 0.5}}], ids=str
)
def test_evaluate_recomputes_a_run_record_of_wrong_shape(
    edit, recorded_runs, tiny_data, tiny_model, tmp_path
):
    """Fourth pass: resuming over a run record without num_train, or with a metric "x", ended
    in a KeyError or pandas ValueError traceback; a damaged run is recomputed, as an unreadable
    one is."""
    out = tmp_path / "evaluation"
    shutil.copytree(recorded_runs / "evaluation", out)
    before = pd.read_csv(out / "runs.csv").drop(columns="seconds")
    run = next((out / "runs").glob("*.json"))
    saved = json.loads(run.read_text())
    run.write_text(json.dumps({k: v for k, v in (saved | edit).items() if v is not None}))
    argv = ["evaluate", "--train", str(tiny_data["single"]), "--eval", str(tiny_data["topics"])]
    assert main([*argv, "--model", tiny_model("bert"), *EVALUATE, "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv").drop(columns="seconds"), before)
    assert json.loads(run.read_text())["num_train"] == saved["num_train"]


def test_report_says_why_texts_of_unfingerprinted_scores_are_hidden(scored, tmp_path):
    """Fourth pass: scores whose record lost its data fingerprint were said to be of data held
    in memory, though their data spec was there."""
    scores = _copy_scores(scored, tmp_path)
    record = json.loads((tmp_path / "scores.parquet.json").read_text())
    del record["data_fingerprint"]
    (tmp_path / "scores.parquet.json").write_text(json.dumps(record))
    assert main(["report", str(scores), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "no fingerprint of the scored data" in page and "in memory" not in page
