"""The experiment scripts end to end on a tiny model and tiny data laid out like ``shared/data``
(``<dataset>/<split>.jsonl.gz``): every stage runs, the summary holds what the issue asks for,
and a second run reuses every stage's output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from repmatch.adapters import load_adapter
from repmatch.heldout import learning_verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import matrix_heldout  # noqa: E402
import noisy_labels  # noqa: E402
import overlap_vs_hans  # noqa: E402
import select_and_evaluate  # noqa: E402
import selection_tables  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_split(root: Path, dataset: str, split: str, frame: pd.DataFrame) -> None:
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_json(folder / f"{split}.jsonl.gz", orient="records", lines=True, compression="gzip")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, tiny_data) -> Path:
    """sst2 (train, validation), snli (validation, test), hans and stsb (train, validation) from
    the tiny csvs."""
    root = tmp_path_factory.mktemp("shared-data")
    single, pair = pd.read_csv(tiny_data["single"]), pd.read_csv(tiny_data["pair"])
    write_split(root, "sst2", "train", single)
    write_split(root, "sst2", "validation", single.iloc[:20])  # 10 per class
    write_split(root, "snli", "validation", pair)
    write_split(root, "snli", "test", pair.iloc[::2])
    hans = pair.assign(label=(pair["label"] != 0).astype(int))
    write_split(root, "hans", "train", hans)
    write_split(root, "hans", "validation", hans.iloc[:20])
    stsb = pd.read_csv(tiny_data["regression"])
    write_split(root, "stsb", "train", stsb)
    write_split(root, "stsb", "validation", stsb.iloc[:20])
    return root


def tiny_args(tiny_model, data_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--model", tiny_model("bert"), "--device", "cpu",
        "--data", str(data_root), "--out", str(tmp_path / "runs"),
        "--summary", str(tmp_path / "summary.json"),
        "--pool", "30", "--eval-size", "all", "--sizes", "6",
        "--seeds", "2", "--score-seeds", "2", "--ensemble", "3",
        "--ref-epochs", "1", "--ref-lr", "1e-2", "--ref-batch", "8",
        "--eval-epochs", "1", "--eval-batch", "8",
        *extra,
    ]  # fmt: skip


def top_ids(scores: pd.DataFrame, column: str, k: int) -> set:
    return set(scores.sort_values([column, "id"], ascending=[False, True])["id"][:k])


def test_table1_protocol_end_to_end(tiny_model, data_root, tmp_path):
    argv = tiny_args(tiny_model, data_root, tmp_path, "--datasets", "SST-2")
    entry = select_and_evaluate.main(argv)["SST-2"]
    folder = tmp_path / "runs" / "SST-2"

    assert entry["pool_size"] == 30 and entry["evaluation_size"] == 20
    assert entry["options"]["model"] == tiny_model("bert")
    assert set(entry["references"]) == {"reference", "shuffled", "unrelated"}
    reference = entry["references"]["reference"]["train"]
    assert (reference["rank"], reference["batch_size"], reference["epochs"]) == (1, 8, 1)
    assert entry["references"]["unrelated"]["data_name"].startswith("hans")
    # every reference says how it did on held-out data (the unrelated one on its own task's)
    for name, record in entry["references"].items():
        heldout = record["heldout"]
        assert 0 <= heldout["metrics"]["accuracy"] <= 1, name
        assert record["learned"] == learning_verdict(
            heldout["metrics"]["accuracy"], heldout["majority_rate"]
        )
    assert entry["references"]["reference"]["heldout"]["majority_rate"] == 0.5
    assert entry["references"]["reference"]["heldout"]["num_examples"] == 20
    assert entry["references"]["unrelated"]["heldout"]["data_name"].startswith("hans")
    learned = entry["references"]["reference"]["learned"] == "learned"
    assert entry["verdict"] == (None if learned else select_and_evaluate.NOT_DECIDABLE)
    assert entry["eval_config"]["batch_size"] == 8 and "unseen_classes" not in entry["eval_config"]
    assert entry["score_config"]["seeds"] == [0, 1, 2]
    for stage in ("reference", "shuffled", "unrelated", "prototypicality", "score-reference"):
        assert entry["seconds"][stage] >= 0, stage

    results = entry["results"]
    assert set(results) == {f"{arm}-6" for arm in select_and_evaluate.DEFAULT_ARMS}
    assert entry["seconds"]["evaluate-repmatch-6"] == results["repmatch-6"]["seconds"] > 0
    # a random arm: a new draw per fine-tuning seed; a scoring-seed arm: one top-6 per scoring
    # seed, each fine-tuned under both fine-tuning seeds; the ensemble: one top-6
    assert [(r["draw"], r["seed"]) for r in results["random-6"]["runs"]] == [("0", 0), ("1", 1)]
    assert [(r["draw"], r["seed"]) for r in results["repmatch-6"]["runs"]] == [
        ("0", 0), ("0", 1), ("1", 0), ("1", 1)
    ]  # fmt: skip
    assert [r["draw"] for r in results["repmatch-ensemble-6"]["runs"]] == ["mean", "mean"]
    for result in results.values():
        for run in result["runs"]:
            assert 0 <= run["accuracy"] <= 1
            assert run["unseen_classes"] == ("include" if result["missing_classes"] else "error")

    # each scoring seed's subset is the top-6 of that seed's column; the ensemble the mean's
    scores = pd.read_parquet(folder / "reference.parquet")
    for seed in (0, 1):
        chosen = set(results["repmatch-6"]["ids"][str(seed)])
        assert chosen == top_ids(scores, f"score_seed{seed}", 6)
    assert set(results["repmatch-ensemble-6"]["ids"]["mean"]) == top_ids(scores, "score", 6)
    controls = pd.read_parquet(folder / "shuffled.parquet")
    assert set(results["shuffled-6"]["ids"]["0"]) == top_ids(controls, "score_seed0", 6)

    overlap = entry["overlap"]["6"]
    shared = len(set(results["repmatch-6"]["ids"]["0"]) & set(results["repmatch-6"]["ids"]["1"]))
    assert overlap["repmatch"]["s0 vs s1"] == {
        "shared": shared,
        "jaccard": round(shared / (12 - shared), 4),
    }
    assert set(overlap["unrelated vs repmatch"]) == {"s0", "s1"}
    assert set(overlap["shuffled-balanced vs repmatch-balanced"]) == {"s0", "s1"}
    ensemble = set(results["repmatch-ensemble-6"]["ids"]["mean"])
    shared = len(ensemble & set(results["repmatch-6"]["ids"]["1"]))
    assert overlap["repmatch-ensemble vs repmatch"]["s1"]["shared"] == shared

    # a second run reuses every stage: same figures, no stage timed again
    saved = json.loads((tmp_path / "summary.json").read_text())["SST-2"]
    adapter = folder / "reference" / "adapter_model.safetensors"
    made = adapter.stat().st_mtime_ns
    again = select_and_evaluate.main(argv)["SST-2"]
    assert adapter.stat().st_mtime_ns == made
    assert again["results"]["repmatch-6"]["runs"] == saved["results"]["repmatch-6"]["runs"]
    for stage in ("reference", "shuffled", "unrelated", "prototypicality", "score-reference"):
        assert again["seconds"][stage] == saved["seconds"][stage]


def test_unrelated_control_with_another_head_size(tiny_model, data_root, tmp_path):
    """SNLI (3 classes) against a reference trained on SST-2 (2 classes): its head gets 3
    outputs so that every pool class indexes one; a stored scores file made otherwise is
    refused."""
    argv = tiny_args(
        tiny_model, data_root, tmp_path, "--datasets", "SNLI", "--subsets", "unrelated"
    )
    entry = select_and_evaluate.main(argv)["SNLI"]
    unrelated = entry["references"]["unrelated"]
    assert unrelated["data_name"].startswith("sst2") and unrelated["train"]["num_labels"] == 3
    assert len(entry["results"]["unrelated-6"]["runs"]) == 4
    assert set(entry["references"]) == {"reference", "unrelated"}

    with pytest.raises(select_and_evaluate.RepmatchError, match="other settings"):
        select_and_evaluate.main([*argv, "--ensemble", "2"])


@pytest.fixture(scope="module")
def nli_root(tmp_path_factory, data_root) -> Path:
    """An MNLI-like validation split with 5 non-entailment pairs in each overlap band (full,
    mid, no) and 5 entailment pairs, plus the tiny HANS of ``data_root``."""
    root = tmp_path_factory.mktemp("nli-data")
    premise = "the young cat sat on a warm mat"
    hypotheses = {
        "full": ["the cat sat", "a warm mat", "the young cat", "cat on a mat", "the mat"],
        "mid": ["the cat sat loudly", "a warm mat outside", "the young dog sat",
                "cat on a rug", "the mat was warm"],  # 3 of 4, 3 of 4, ..., 3 of 4 (75 %)
        "no": ["dogs run fast", "birds sing", "rain fell hard", "it is cold", "nobody came"],
    }  # fmt: skip
    rows = [
        {"premise": premise, "hypothesis": h, "label": 1 + i % 2}
        for band in hypotheses.values()
        for i, h in enumerate(band)
    ] + [{"premise": premise, "hypothesis": "a cat sat", "label": 0}] * 5
    write_split(root, "mnli", "validation", pd.DataFrame(rows))
    (root / "hans").symlink_to(data_root / "hans")
    return root


def test_table5_with_aligned_heads(tiny_model, nli_root, tmp_path):
    argv = [
        "--model", tiny_model("bert"), "--device", "cpu", "--data", str(nli_root),
        "--out", str(tmp_path / "runs"), "--summary", str(tmp_path / "table5.json"),
        "--splits", "MNLI validation", "--size", "4", "--repeats", "2", "--passes", "8",
        "--hans-sample", "all", "--hans-eval", "all", "--hans-epochs", "3",
    ]  # fmt: skip
    summary = overlap_vs_hans.main(argv)
    assert summary["hans_train"]["epochs"] == 3 and summary["train"]["epochs"] == 1
    heldout = summary["hans_heldout"]  # the reference says how well it learned HANS
    assert heldout["num_examples"] == 20 and heldout["majority_rate"] == 0.65
    assert heldout["learned"] == learning_verdict(heldout["metrics"]["accuracy"], 0.65)
    entry = summary["MNLI validation"]
    assert entry["sizes"] == {"full": 5, "mid": 5, "no": 5, "all non-entailment (control)": 15}
    assert entry["classes"]["full"] == {"1": 3, "2": 2}
    assert entry["most_similar_band"] in ("full", "mid", "no")
    for band, scores in entry["scores"].items():
        assert len(scores["each"]) == 2 and all(0 <= s <= 1 for s in scores["each"]), band
        assert scores["instances"] == 4 and scores["epochs"] == 2

    # every band adapter: HANS's two classes, all non-entailment, HANS's head to the last bit
    hans = load_adapter(tmp_path / "runs" / "hans")
    band = load_adapter(tmp_path / "runs" / "aligned" / "mnli" / "validation" / "full" / "r0")
    assert band.num_labels == hans.num_labels == 2
    assert hans.head and band.head.keys() == hans.head.keys()
    assert all(band.head[key].equal(hans.head[key]) for key in hans.head)
    record = json.loads((band.path / "repmatch.json").read_text())
    assert json.loads((hans.path / "repmatch.json").read_text())["train"]["epochs"] == 3
    assert (
        record["train"]["head_seed"]
        == json.loads((hans.path / "repmatch.json").read_text())["train"]["head_seed"]
    )

    native = overlap_vs_hans.main([*argv, "--heads", "native", "--repeats", "1"])
    assert load_adapter(tmp_path / "runs" / "mnli" / "validation" / "full" / "r0").num_labels == 3
    assert native["settings"]["heads"] == "native"


def test_matrix_heldout_records_every_adapter(tiny_model, data_root, tmp_path):
    from repmatch.config import TrainConfig
    from repmatch.data import DataSpec
    from repmatch.similarity import dataset_similarity

    train = TrainConfig(model=tiny_model("bert"), epochs=1, batch_size=8)
    data = [DataSpec(str(data_root / name), split="train") for name in ("sst2", "hans", "stsb")]
    dataset_similarity(data, train, tmp_path / "matrix", seeds=(0, 1), progress=False, device="cpu")
    summary = tmp_path / "heldout.json"
    heldout = [f"{name}-train={data_root / name}@validation" for name in ("sst2", "stsb")]
    matrix_heldout.main(
        [
            str(tmp_path / "matrix"),
            "--heldout",
            *heldout,
            "--device",
            "cpu",
            "--summary",
            str(summary),
        ]
    )

    rows = json.loads(summary.read_text())
    assert len(rows) == 4  # one per seed of the sst2 and stsb adapters (hans not asked for)
    for key, row in rows.items():
        assert row["num_examples"] == 20
        folder = tmp_path / "matrix" / "adapters" / key
        recorded = load_adapter(folder).record["heldout"]["metrics"]
        if key.startswith("sst2"):
            assert row["majority_rate"] == 0.5
            assert row["verdict"] == learning_verdict(row["accuracy"], 0.5)
            assert recorded["accuracy"] == row["accuracy"]
        else:  # regression: its correlations, no majority rate and no verdict
            assert row["verdict"] is None and "accuracy" not in row
            assert row["metrics"] == recorded and set(recorded) == {"pearson", "spearman"}


def test_noisy_labels_end_to_end(tiny_model, data_root, tmp_path):
    """Flipped labels, a reference with the paper's settings (here shortened) evaluated on clean
    held-out data, every detector judged; a second run reuses each seed's record."""
    argv = [
        "--datasets", "SST-2", "--seeds", "2", "--pool", "30", "--noise", "0.2",
        "--folds", "2", "--fold-epochs", "1", "--heldout-size", "1000",  # > 20: all 20
        "--ref-epochs", "1", "--ref-batch", "8", "--ref-lr", "1e-2",
        "--model", tiny_model("bert"), "--device", "cpu", "--data", str(data_root),
        "--dtype", "bfloat16",
        "--out", str(tmp_path / "runs"), "--summary", str(tmp_path / "noisy.json"),
    ]  # fmt: skip
    entry = noisy_labels.main(argv)["SST-2"]

    assert entry["seeds_done"] == 2
    detectors = {"repmatch-r1", "repmatch-r4", "gradient", "reference-loss", "cleanlab"}
    assert set(entry["mean"]) == detectors
    for results in entry["per_seed"]:
        for metrics in results.values():
            assert 0 <= metrics["auroc"] <= 1 and 0 <= metrics["precision_at_flipped"] <= 1
    for seed, reference in enumerate(entry["references"]):
        assert reference["data_name"].startswith("sst2") and reference["num_examples"] == 20
        assert reference["majority_rate"] == 0.5
        assert reference["learned"] == learning_verdict(reference["accuracy"], 0.5)
        adapter = load_adapter(tmp_path / "runs" / "SST-2" / f"seed{seed}" / "reference")
        assert adapter.record["train"]["rank"] == 1 and adapter.record["train"]["batch_size"] == 8
        assert adapter.record["train"]["seed"] == seed  # the flip seed trains the reference too
    assert json.loads((tmp_path / "noisy.json").read_text())["SST-2"] == entry

    record = tmp_path / "runs" / "SST-2" / "seed1" / "detectors.json"
    made = record.stat().st_mtime_ns
    assert noisy_labels.main(argv)["SST-2"]["per_seed"] == entry["per_seed"]
    assert record.stat().st_mtime_ns == made


def test_arm_cell_agrees_with_the_comparison_of_its_runs():
    """The summary's mean is rounded when saved (0.5755 here, runs' mean 0.57550): the arm's
    cell is computed from the runs, as its comparisons are, so one page prints one figure."""
    runs = [{"accuracy": a} for a in (0.546, 0.6385, 0.542)]
    result = {"mean": {"accuracy": 0.5755}, "std": {"accuracy": 0.0546}, "runs": runs}
    figures = [100 * r["accuracy"] for r in runs]
    mean = sum(figures) / len(figures)
    assert selection_tables.cell(result, "accuracy") == f"{mean:.1f} ± 5.5" == "57.5 ± 5.5"
    assert selection_tables.cell({**result, "runs": []}, "accuracy") == "57.6 ± 5.5"
