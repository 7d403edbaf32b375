"""Issue 19, third adversarial pass: inputs that once ended in a traceback, a wrong result with exit
0 or a vague error, run through the CLI (the wrong argument types through the Python API). Each test
names its case and failed before its fix."""

from __future__ import annotations

import html
import json
import shutil

import pandas as pd
import pytest

from repmatch.cli import main
from test_cli import FAST_FLAGS
from test_cli_results import (  # noqa: F401 (_one_thread: autouse fixture)
    _edited_adapter,
    _error,
    _one_thread,
)


def test_ids_beyond_64_bits_are_refused(tiny_data, trained_adapter, tmp_path, capsys):
    """JSON ids of 2**70 were trained on, then ``score`` ended in pyarrow's OverflowError."""
    rows = pd.read_csv(tiny_data["single"]).assign(id=[2**70 + i for i in range(40)])
    data = tmp_path / "huge-ids.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows.to_dict("records")))
    out = tmp_path / "s.parquet"
    assert main(["score", str(data), "--reference", trained_adapter(), "--out", str(out)]) == 2
    assert "64-bit" in _error(capsys) and not out.exists()


def test_regression_labels_beyond_float32(tiny_data, tiny_model, tmp_path, capsys):
    """A regression label of 1e308 printed numpy's overflow warning, then said the score was
    ``inf``."""
    data = tmp_path / "big.csv"
    rows = pd.read_csv(tiny_data["single"])
    rows.assign(label=[1e308] + [i / 10 for i in range(1, 40)]).to_csv(data, index=False)
    argv = ["train", str(data), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "holds 1e+308 in row 0, beyond the float32 range" in _error(capsys)


def test_indices_file_that_is_a_folder(tiny_data, tiny_model, tmp_path, capsys):
    """``--indices-file FOLDER`` said the file was not found."""
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--indices-file", str(tmp_path), "--out", str(tmp_path / "a")]) == 2
    assert "is a folder" in _error(capsys)


def _training_argv(command, method, tiny_data, tiny_model, tmp_path) -> list[str]:
    """``train`` to tmp_path/a, or ``evaluate --method METHOD``, on the single-text data."""
    data, model = str(tiny_data["single"]), tiny_model("bert")
    if command == "train":
        return ["train", data, "--model", model, *FAST_FLAGS, "--out", str(tmp_path / "a")]
    argv = ["evaluate", "--train", data, "--eval", data, "--model", model, "--seeds", "1"]
    return [*argv, "--epochs", "1", "--quiet", "--method", method]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_training_that_changed_no_weight_is_refused(
    command, tiny_data, tiny_model, tmp_path, capsys
):
    """``--lr 1e-320`` (below float32's smallest step) saved an adapter whose B factors were all
    still zero, and ``evaluate`` reported the accuracy of the untrained model, both exit 0."""
    argv = _training_argv(command, "full", tiny_data, tiny_model, tmp_path)
    assert main([*argv, "--lr", "1e-320"]) == 2
    assert "changed no weight" in _error(capsys) and not (tmp_path / "a").exists()


@pytest.mark.parametrize("measure", ["grassmann", "cosine"])
def test_score_refuses_non_finite_updates(measure, trained_adapter, tiny_data, tmp_path, capsys):
    """``score --lr 1e308`` wrote a NaN score for every instance, exit 0."""
    out = tmp_path / "s.parquet"
    argv = ["score", str(tiny_data["single"]), "--reference", trained_adapter(), "--quiet"]
    assert main([*argv, "--lr", "1e308", "--measure", measure, "--out", str(out)]) == 2
    assert "NaN or infinite" in _error(capsys) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--seed", "--head-seed"])
def test_train_refuses_seeds_of_64_bits(flag, tiny_data, tiny_model, tmp_path, capsys):
    """``train --seed 2**64`` and ``--head-seed 10**23`` ended in torch's ValueError traceback
    (Overflow when unpacking long long)."""
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, flag, str(2**64), "--out", str(tmp_path / "a")]) == 2
    assert "below 2**63" in _error(capsys) and not (tmp_path / "a").exists()


def test_compare_refuses_a_baseline_seed_of_64_bits(trained_adapter, capsys):
    """``compare --shuffled-baseline --baseline-seed 2**64`` ended in torch's traceback."""
    argv = ["compare", trained_adapter(), trained_adapter(seed=1), "--shuffled-baseline"]
    assert main([*argv, "--baseline-seed", str(2**64)]) == 2
    assert "below 2**63" in _error(capsys)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_overlap_refuses_another_commands_folder(
    overwrite, trained_adapter, tiny_data, tmp_path, capsys
):
    """``overlap NLI --out ADAPTER --overwrite`` wrote its subsets and overlap.json into the
    adapter's folder, exit 0."""
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_adapter(), adapter)
    before = sorted(path.name for path in adapter.iterdir())
    assert main(["overlap", str(tiny_data["pair"]), "--out", str(adapter), *overwrite]) == 2
    assert "holds no overlap subsets" in _error(capsys)
    assert sorted(path.name for path in adapter.iterdir()) == before


@pytest.mark.parametrize(
    "name, advice",
    [("s.parquet.gz", "s.parquet"), ("s.jsonl.gz", "s.parquet"), ("s.csv", "s.parquet")],
)
def test_score_names_the_right_parquet_file(
    name, advice, trained_adapter, tiny_data, tmp_path, capsys
):
    """``score --out s.parquet.gz`` advised naming it ``s.parquet.parquet``."""
    argv = ["score", str(tiny_data["single"]), "--reference", trained_adapter(), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / name)]) == 2
    assert _error(capsys).split("name it ")[1].startswith(advice + " ")


@pytest.mark.parametrize(
    "data, flags, message",
    [
        ("regression", ["--num-labels", "5"], "leave num_labels unset"),
        ("single", ["--eval-sample", "5"], "--eval-sample draws from --eval"),
    ],
)
def test_train_refuses_settings_without_effect(
    data, flags, message, tiny_data, tiny_model, tmp_path, capsys
):
    """``--num-labels 5`` on regression data (a one-output head) and ``--eval-sample`` without
    ``--eval`` were ignored, exit 0; the record said ``num_labels: 5``."""
    argv = ["train", str(tiny_data[data]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, *flags, "--out", str(tmp_path / "a")]) == 2
    assert message in _error(capsys) and not (tmp_path / "a").exists()


def test_compare_refuses_a_dora_adapter(trained_adapter, tmp_path, capsys):
    """A DoRA adapter saved by PEFT (``use_dora``) was compared by its B·A alone, exit 0, though
    its update rescales the columns of W + BA."""
    dora = _edited_adapter(trained_adapter(), tmp_path / "dora", use_dora=True)
    assert main(["compare", str(dora), trained_adapter(seed=1)]) == 2
    assert "DoRA" in _error(capsys)


def test_reference_that_is_a_file(trained_adapter, tiny_data, tmp_path, capsys):
    """``score --reference SCORES.parquet`` said the adapter folder was not found."""
    weights = f"{trained_adapter()}/adapter_model.safetensors"
    argv = ["score", str(tiny_data["single"]), "--reference", weights]
    assert main([*argv, "--out", str(tmp_path / "s.parquet")]) == 2
    assert "is a file, not an adapter folder" in _error(capsys)


def test_labels_filter_takes_the_names_of_label_names(tiny_data, tiny_model, tmp_path, capsys):
    """``--label-names e n c --labels n`` on integer labels said the subset was empty (labels in
    the split: 0, 1, 2), though label_names had just named class 1 ``n``."""
    out = tmp_path / "a"
    argv = ["train", str(tiny_data["pair"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    argv += ["--label-names", "e", "n", "c", "--labels", "n", "c", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "repmatch.json").read_text())
    expected = (pd.read_csv(tiny_data["pair"])["label"] > 0).sum()
    assert record["num_examples"] == expected and record["label_names"] == ["e", "n", "c"]


def test_api_wrong_argument_types_are_named(trained_adapter, tiny_data):
    """Python API: a list where a tensor goes, a dict or another job's config where a config goes,
    and one path where a list goes ended in AttributeErrors or a misleading message (a
    TrainConfig given to ``score_instances`` was read as a scoring config, ``evaluate_subsets``
    read each letter of ``'tr1.csv'`` as a Hub dataset)."""
    import torch

    from repmatch.config import EvalConfig, TrainConfig
    from repmatch.evaluation import evaluate_subsets
    from repmatch.grassmann import grassmann_grid, repmatch_score
    from repmatch.report import build_report
    from repmatch.scoring import score_instances
    from repmatch.selection import select_to_file
    from repmatch.training import train_adapter

    data = str(tiny_data["single"])
    calls = [
        (lambda: grassmann_grid([[1.0]], torch.ones(1, 1)), "U1 must be a torch.Tensor"),
        (lambda: repmatch_score([0.5, 0.7]), "layer_scores must be a torch.Tensor"),
        (lambda: train_adapter(data, {"rank": 2}, "x"), "config must be a TrainConfig"),
        (lambda: score_instances(data, trained_adapter(), TrainConfig()), "a ScoreConfig"),
        (lambda: select_to_file("s.parquet", None, "x.csv"), "config must be a SelectConfig"),
        (lambda: evaluate_subsets(data, data, EvalConfig()), "train must be a list"),
        (lambda: build_report(data), "runs must be a list"),
    ]
    for call, message in calls:
        with pytest.raises(TypeError, match=message):
            call()


def test_datasets_refuses_another_commands_folder(
    trained_adapter, tiny_data, tiny_model, tmp_path, capsys
):
    """``datasets A B --out ADAPTER`` wrote its adapters/ and matrix files into the adapter's
    folder, exit 0."""
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_adapter(), adapter)
    before = sorted(path.name for path in adapter.iterdir())
    data = [str(tiny_data["single"]), str(tiny_data["topics"])]
    argv = ["datasets", *data, "--model", tiny_model("bert"), *FAST_FLAGS, "--out", str(adapter)]
    assert main(argv) == 2
    assert "holds no matrix" in _error(capsys)
    assert sorted(path.name for path in adapter.iterdir()) == before


@pytest.mark.parametrize("flag", ["--alpha", "--weight-decay"])
def test_divergence_names_every_cause(flag, tiny_data, tiny_model, tmp_path, capsys):
    """``--alpha 1e308`` and ``--weight-decay 1e308`` diverged with advice about the learning rate
    alone."""
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, flag, "1e308", "--out", str(tmp_path / "a")]) == 2
    assert "alpha or weight decay" in _error(capsys)


def test_train_refuses_a_head_of_absurd_size(tiny_data, tiny_model, tmp_path, capsys):
    """``--num-labels 100000000000`` ran out of memory building transformers' 10**11 class names
    (killed, exit 137; a MemoryError traceback under a memory limit)."""
    argv = ["train", str(tiny_data["single"]), "--model", tiny_model("bert"), *FAST_FLAGS]
    assert main([*argv, "--num-labels", str(10**11), "--out", str(tmp_path / "a")]) == 2
    assert "num_labels must be in [1, 65,536]" in _error(capsys)


def test_evaluate_refuses_unseen_classes_without_classes(tiny_data, tiny_model, capsys):
    """Fourth pass: ``--unseen-classes include`` on regression data was recorded though it can
    change nothing (no classes); the labels filter already refused such data."""
    data = str(tiny_data["regression"])
    argv = ["evaluate", "--train", data, "--eval", data, "--model", tiny_model("bert")]
    argv += ["--seeds", "1", "--epochs", "1", "--quiet", "--unseen-classes", "include"]
    assert main(argv) == 2
    assert "without classes" in _error(capsys)


@pytest.mark.parametrize("command", ["score", "select", "report"])
def test_outputs_keep_a_users_json_where_their_record_goes(
    command, trained_adapter, tiny_data, tmp_path, capsys
):
    """Fourth pass: ``--out notes.csv`` replaced a user's notes.csv.json with the run record,
    without --overwrite and with exit 0."""
    scores = tmp_path / "s.parquet"
    argv = ["score", str(tiny_data["single"]), "--reference", trained_adapter(), "--quiet"]
    assert main([*argv, "--out", str(scores)]) == 0
    out = (
        tmp_path
        / {"score": "notes.parquet", "select": "notes.csv", "report": "notes.html"}[command]
    )
    mine = tmp_path / f"{out.name}.json"
    mine.write_text('{"my": "notes"}')
    runs = {
        "score": [*argv, "--out", str(out)],
        "select": ["select", str(scores), "--top", "3", "--out", str(out)],
        "report": ["report", str(scores), "--out", str(out)],
    }
    capsys.readouterr()
    assert main(runs[command]) == 2
    assert "not a repmatch record" in _error(capsys)
    assert mine.read_text() == '{"my": "notes"}' and not out.exists()


def test_baseline_cosines_stay_within_one(tiny_data, tiny_model, capsys):
    """Fifth pass: ``baseline D D --threshold 1`` counted pairs with "cosine > 1" (float32
    rounding of identical vectors) and printed a mean cosine of 1.0000001, exit 0."""
    data = str(tiny_data["single"])
    argv = ["baseline", data, data, "--model", tiny_model("bert"), "--quiet", "--json"]
    assert main([*argv, "--threshold", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs_above"] == 0 and printed["mean_cosine"] <= 1.0


def test_report_of_scores_keeps_their_note(tiny_data, trained_adapter, tmp_path, capsys):
    """Fifth pass: single texts scored against a pair-trained adapter (the unrelated-task control)
    carry a note in their record, but ``report`` drew them as ordinary scores without it, and a
    selection from them lost it."""
    scores, page = tmp_path / "s.parquet", tmp_path / "r.html"
    argv = ["score", str(tiny_data["single"]), "--reference", trained_adapter(data="pair")]
    assert main([*argv, "--quiet", "--out", str(scores)]) == 0
    (note,) = json.loads((tmp_path / "s.parquet.json").read_text())["notes"]
    assert main(["report", str(scores), "--out", str(page)]) == 0
    assert html.escape(note) in page.read_text()
    # a selection from them keeps the note in its record and on its page
    chosen = tmp_path / "top.csv"
    assert main(["select", str(scores), "--top", "4", "--out", str(chosen)]) == 0
    assert json.loads((tmp_path / "top.csv.json").read_text())["notes"] == [note]
    assert main(["report", str(chosen), "--out", str(page), "--overwrite"]) == 0
    assert html.escape(note) in page.read_text()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_training_that_left_the_lora_update_at_zero_is_refused(
    command, tiny_data, tiny_model, tmp_path, capsys
):
    """Fifth pass: ``--alpha 1e30`` overflowed AdamW's second moment, so every B factor stayed 0
    (weight decay still moved A): ``train`` saved a no-op adapter and ``evaluate --method lora``
    reported the untrained model's accuracy, both exit 0."""
    argv = _training_argv(command, "lora", tiny_data, tiny_model, tmp_path)
    assert main([*argv, "--alpha", "1e30"]) == 2
    assert "left the LoRA update at zero" in _error(capsys) and not (tmp_path / "a").exists()


@pytest.mark.parametrize("existing", ["grids.png", "grids-shuffled.png"])
def test_compare_heatmap_keeps_an_existing_image(existing, trained_adapter, tmp_path, capsys):
    """Fifth pass: ``compare --heatmap grids.png`` replaced a user's grids.png (or its
    grids-shuffled.png) without a word, exit 0; every other output needs --overwrite."""
    mine = tmp_path / existing
    mine.write_bytes(b"my picture")
    argv = ["compare", trained_adapter(), trained_adapter(seed=1), "--shuffled-baseline"]
    argv += ["--heatmap", str(tmp_path / "grids.png")]
    assert main(argv) == 2
    assert "already exists" in _error(capsys) and mine.read_bytes() == b"my picture"
    assert main([*argv, "--overwrite"]) == 0
    assert mine.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("flag", "value"), [("--baseline-sample", "0"), ("--baseline-threshold", "2")]
)
def test_datasets_names_its_own_baseline_flags(
    flag, value, tiny_data, tiny_model, tmp_path, capsys
):
    """Fifth pass: ``datasets --baseline --baseline-sample 0`` blamed ``[--sample]`` (a data option
    that was not given), ``--baseline-threshold 2`` blamed ``[--threshold]``."""
    data = str(tiny_data["single"])
    argv = ["datasets", data, data, "--model", tiny_model("bert"), *FAST_FLAGS, "--baseline"]
    assert main([*argv, flag, value, "--out", str(tmp_path / "d")]) == 2
    assert _error(capsys).endswith(f"[{flag}]")


@pytest.mark.parametrize("notes", ["a note edited by hand", ["a note edited by hand", 5, None]])
def test_edited_notes_of_scores_reach_their_selection_as_text(
    notes, tiny_data, trained_adapter, tmp_path, capsys
):
    """Fifth pass: a scores record whose notes were edited into a string had them dropped from
    its page but copied as a string into the selection record; ``[5, null]`` drew "5", "None"."""
    scores, page = tmp_path / "s.parquet", tmp_path / "r.html"
    argv = ["score", str(tiny_data["single"]), "--reference", trained_adapter(), "--quiet"]
    assert main([*argv, "--out", str(scores)]) == 0
    record = json.loads((tmp_path / "s.parquet.json").read_text())
    (tmp_path / "s.parquet.json").write_text(json.dumps(record | {"notes": notes}))
    chosen = tmp_path / "top.csv"
    assert main(["select", str(scores), "--top", "4", "--out", str(chosen)]) == 0
    assert json.loads((tmp_path / "top.csv.json").read_text())["notes"] == ["a note edited by hand"]
    for drawn in (scores, chosen):
        assert main(["report", str(drawn), "--out", str(page), "--overwrite"]) == 0
        assert page.read_text().count('class="note">') == 1
        assert "a note edited by hand" in page.read_text()
