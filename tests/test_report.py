"""The HTML report: recognising runs by their records, the page's sections, escaping, refusals,
and the page rendered in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_TRAIN, missing
from repmatch.cli import main
from repmatch.compare import compare_adapters
from repmatch.config import BaselineConfig, EvalConfig, ScoreConfig, SelectConfig, TrainConfig
from repmatch.data import DataSpec, save_overlap_subsets
from repmatch.errors import RepmatchError
from repmatch.evaluation import evaluate_subsets
from repmatch.report import GENERATOR, TOP, build_report, recognise, write_report
from repmatch.scoring import score_instances
from repmatch.selection import select_to_file
from repmatch.similarity import dataset_similarity

MARKUP = "<script>alert('x')</script> & <b>bold</b> good movie"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, tiny_data, trained_adapter, one_torch_thread) -> dict:
    """One run of every kind, built on the tiny BERT and the tiny datasets."""
    folder = tmp_path_factory.mktemp("report-runs")
    first, second = trained_adapter(seed=0), trained_adapter(seed=1)
    comparison = folder / "comparison.json"
    comparison.write_text(json.dumps(compare_adapters(first, second).to_dict()))
    config = TrainConfig(model=tiny_model("bert"), **FAST_TRAIN)
    specs = [DataSpec(str(tiny_data[name])) for name in ("single", "topics")]
    dataset_similarity(specs, config, folder / "datasets", seeds=(0, 1), progress=False)
    # fewer than 2 * TOP instances, so every text (the markup too) is among the top and bottom
    data = pd.read_csv(tiny_data["single"]).head(TOP + 4)
    data.loc[len(data)] = [MARKUP, 1]
    data.to_csv(folder / "scored.csv", index=False)
    scores = folder / "scores.parquet"
    score_instances(
        DataSpec(str(folder / "scored.csv")),
        first,
        ScoreConfig(seeds=(0, 1)),
        out=scores,
        progress=False,
    )
    save_overlap_subsets(str(tiny_data["pair"]), folder / "overlap")
    select_to_file(scores, SelectConfig(k=5, balanced=True), folder / "top5.jsonl")
    evaluate_subsets(
        [folder / "top5.jsonl", folder / "scored.csv"],
        tiny_data["single"],
        EvalConfig(model=tiny_model("bert"), method="lora", seeds=(0, 1), epochs=1, rank=2),
        out=folder / "evaluation",
        progress=False,
    )
    return {
        "adapters": [Path(first), Path(second)],
        "comparison": comparison,
        "datasets": folder / "datasets",
        "scores": scores,
        "selection": folder / "top5.jsonl",
        "evaluation": folder / "evaluation",
        "overlap": folder / "overlap",
    }


def _all(runs: dict) -> list[Path]:
    """Every run: the adapters, then one of each other kind."""
    others = ("comparison", "datasets", "scores", "selection", "evaluation", "overlap")
    return [*runs["adapters"], *(runs[name] for name in others)]


def test_runs_are_recognised_by_their_records(runs):
    first = runs["adapters"][0]
    assert recognise(first).kind == "adapter"
    assert recognise(first / "repmatch.json").path == first
    assert recognise(runs["comparison"]).kind == "comparison"
    assert recognise(runs["datasets"]).kind == "matrix"
    assert recognise(runs["datasets"] / "matrix.json").path == runs["datasets"]
    assert recognise(runs["scores"]).kind == "scores"
    record = runs["scores"].with_name("scores.parquet.json")
    assert recognise(record).kind == "scores" and recognise(record).path == runs["scores"]
    assert recognise(runs["selection"]).kind == "selection"
    assert recognise(runs["selection"].with_name("top5.jsonl.json")).path == runs["selection"]
    assert recognise(runs["evaluation"]).kind == "evaluation"
    assert recognise(runs["evaluation"] / "results.json").path == runs["evaluation"]
    assert recognise(runs["overlap"]).kind == "overlap"
    assert recognise(runs["overlap"] / "overlap.json").path == runs["overlap"]


def test_a_peft_folder_without_record_is_an_adapter(runs, tmp_path):
    copy = shutil.copytree(runs["adapters"][0], tmp_path / "peft")
    (copy / "repmatch.json").unlink()
    run = recognise(copy)
    assert run.kind == "adapter" and run.record is None
    assert "made elsewhere" in build_report([copy, runs["adapters"][1]])


@pytest.mark.parametrize("make", ["empty folder", "csv", "other json", "missing", "broken json"])
def test_unknown_runs_are_refused_in_one_line(make, tmp_path, tiny_data):
    path = {
        "empty folder": tmp_path,
        "csv": Path(tiny_data["single"]),
        "other json": tmp_path / "other.json",
        "missing": tmp_path / "nothing-here",
        "broken json": tmp_path / "broken.json",
    }[make]
    (tmp_path / "other.json").write_text('{"format": "someone-else/1"}')
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(RepmatchError) as err:
        recognise(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    if make != "broken json":
        for accepted in ("adapter folders", "matrix.json", "FILE.parquet", "overlap.json"):
            assert accepted in message


def test_the_page_has_every_section(runs):
    page = build_report(_all(runs), title="Tiny <runs>")
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings[0] == "Adapters"
    assert sum(h.startswith("Adapter comparison:") for h in headings) == 2
    assert [h.split(":")[0] for h in headings[3:]] == [
        "Dataset matrix",
        "Instance scores",
        "Selection",
        "Evaluation",
        "Overlap subsets",
    ]
    assert "<title>Tiny &lt;runs&gt;</title>" in page
    # the matrix shows mean ± std (two seeds); the scores show seed stability
    record = json.loads((runs["datasets"] / "matrix.json").read_text())
    assert f"{record['mean'][0][1]:.3f} ± {record['std'][0][1]:.3f}" in page
    assert "Seed stability" in page and "Spearman" in page
    spearman = json.loads(runs["scores"].with_name("scores.parquet.json").read_text())
    assert f"{spearman['seed_spearman']['0-1']:.4f}" in page
    # images: grids of 2 comparisons, the matrix, histogram, per class, seed scatter, metric bars
    assert page.count('<img alt="') == 7


def test_the_matrix_shows_the_representation_baseline_beside_it(
    runs, tiny_model, tiny_data, tmp_path
):
    folder = shutil.copytree(runs["datasets"], tmp_path / "datasets")  # adapters reused
    specs = [DataSpec(str(tiny_data[name])) for name in ("single", "topics")]
    config = TrainConfig(model=tiny_model("bert"), **FAST_TRAIN)
    baseline = BaselineConfig(model=tiny_model("bert"), sample=20, threshold=0.5)
    result = dataset_similarity(
        specs, config, folder, seeds=(0, 1), baseline=baseline, progress=False
    )
    page = build_report([folder])
    assert "Representation baseline" in page and "cosine above 0.5" in page
    assert f"{result.baseline.percent[0, 1]:.2f} %" in page
    assert "Representation baseline" not in build_report([runs["datasets"]])


def test_the_page_is_self_contained(runs):
    page = build_report(_all(runs))
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert links and all(link.startswith(("data:image/png;base64,", "#")) for link in links)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "http://" not in page and "https://" not in page
    assert page.count("<script>") == 1  # the page's own, inline


def test_instance_text_is_escaped(runs):
    page = build_report([runs["scores"]])
    assert "alert(" in page
    assert MARKUP not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("<script>") == 1


def test_top_and_bottom_instances_come_with_their_text(runs):
    page = build_report([runs["scores"]])
    table = pd.read_parquet(runs["scores"]).set_index("id")
    data = pd.read_csv(runs["scores"].with_name("scored.csv"))
    rows = re.findall(
        r'<tr><td class="num">(\d+)</td><td class="num">(\d+)</td><td>\d</td>'
        r'<td class="num">([\d.]+)</td>.*?<td class="text">(.*?)</td></tr>',
        page,
    )
    assert len(rows) == 2 * TOP
    for _, id_, score, text in rows:
        assert html.unescape(text) == data.loc[int(id_), "text"]
        assert float(score) == pytest.approx(table.loc[int(id_), "score"], abs=5e-5)
    ranks = [int(rank) for rank, *_ in rows]
    assert ranks == [*range(1, TOP + 1), *range(len(table), len(table) - TOP, -1)]
    assert float(rows[0][2]) == pytest.approx(table["score"].max(), abs=5e-5)
    assert float(rows[TOP][2]) == pytest.approx(table["score"].min(), abs=5e-5)


def test_the_selection_section_lists_what_was_chosen(runs):
    page = build_report([runs["selection"]])
    record = json.loads(runs["selection"].with_name("top5.jsonl.json").read_text())
    chosen = pd.read_json(runs["selection"], lines=True)
    assert "top 5, class-balanced" in page
    assert f"5 of {record['num_scored']} scored" in page
    # the class table: scored and selected counts of each class
    for name, count in record["class_counts_scored"].items():
        selected = record["class_counts"].get(name, 0)
        assert re.search(
            rf"<td>{name}</td><td class=\"num\">{count}</td><td class=\"num\">[\d.]+</td>"
            rf"<td class=\"num\">{selected}</td>",
            page,
        )
    # the chosen rows, in the order chosen, with their (escaped) text
    ids = re.findall(r'<tr><td class="num">(\d+)</td><td class="num">[01]</td>', page)
    assert [int(i) for i in ids] == chosen["id"].tolist()
    assert all(html.escape(text) in page for text in chosen["text"])


def test_the_evaluation_section_has_every_subset_and_run(runs):
    page = build_report([runs["evaluation"]])
    record = json.loads((runs["evaluation"] / "results.json").read_text())
    for row in record["summary"]:
        mean, std = row["accuracy_mean"], row["accuracy_std"]
        assert f"<td>{row['subset']}</td>" in page
        assert f"{mean:.4f} ± {std:.4f}" in page
    for run in record["runs"]:
        accuracy, f1 = (f"{run['metrics'][m]:.4f}" for m in ("accuracy", "macro_f1"))
        row = f'<tr><td>{run["subset"]}</td><td class="num">{run["seed"]}</td>'
        assert f'{row}<td class="num">{accuracy}</td><td class="num">{f1}</td>' in page
    assert page.count("<tr>") >= 1 + len(record["summary"]) + 1 + len(record["runs"])
    assert "accuracy per subset" in page


def test_text_that_cannot_be_reloaded_is_said_so(runs, tmp_path):
    scores = tmp_path / "scores.parquet"
    shutil.copy(runs["scores"], scores)
    record = json.loads(runs["scores"].with_name("scores.parquet.json").read_text())
    record["data"]["source"] = str(tmp_path / "gone.csv")
    (tmp_path / "scores.parquet.json").write_text(json.dumps(record))
    page = build_report([scores])
    assert "Instance texts are not shown: they could not be verified" in page
    assert "cannot reload the data" in page
    assert "gone.csv" in page
    assert "Most representative" in page and "Seed stability" in page
    record["data"] = None
    (tmp_path / "scores.parquet.json").write_text(json.dumps(record))
    assert "the scored data were in memory" in build_report([scores])


def test_changed_data_is_flagged(runs, tmp_path):
    shutil.copy(runs["scores"], tmp_path / "scores.parquet")
    data = pd.read_csv(runs["scores"].with_name("scored.csv"))
    data.loc[0, "text"] = "an edited sentence"
    data.to_csv(tmp_path / "scored.csv", index=False)
    record = json.loads(runs["scores"].with_name("scores.parquet.json").read_text())
    record["data"]["source"] = str(tmp_path / "scored.csv")
    (tmp_path / "scores.parquet.json").write_text(json.dumps(record))
    page = build_report([tmp_path / "scores.parquet"])
    assert "could not be verified" in page and "fingerprint differs" in page
    assert "an edited sentence" not in page  # unverified texts are not shown


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0.5, 2.0, 4.5], "Score against the label"),  # regression
        ([["an answer", "another"], ["x"], ["y"]], "not classes or numbers"),  # QA answers
    ],
)
def test_scores_without_classes(labels, expected, tmp_path):
    scores = tmp_path / "scores.parquet"
    pd.DataFrame({"id": [0, 1, 2], "label": labels, "score": [0.1, 0.3, 0.2]}).to_parquet(scores)
    record = {"format": "repmatch-scores/1", "data": None, "score": {"seeds": [0]}}
    (tmp_path / "scores.parquet.json").write_text(json.dumps(record))
    page = build_report([scores])
    assert expected in page and "Most representative" in page


def test_incomparable_adapters_get_a_note(trained_adapter, runs):
    page = build_report([runs["adapters"][0], trained_adapter("distilbert")])
    assert "Not comparable:" in page


def test_a_corrupted_record_is_named(runs, tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    record = json.loads((runs["datasets"] / "matrix.json").read_text())
    del record["mean"]
    (folder / "matrix.json").write_text(json.dumps(record))
    with pytest.raises(RepmatchError, match=f"{folder}: the matrix record is incomplete"):
        build_report([folder])


def test_write_report_replaces_only_reports(runs, tmp_path):
    out = tmp_path / "report.html"
    write_report([runs["overlap"]], out)
    assert f'<meta name="generator" content="{GENERATOR}">' in out.read_text()
    record = json.loads((tmp_path / "report.html.json").read_text())
    assert record["format"] == "repmatch-report/1"
    assert record["runs"] == [{"kind": "overlap", "path": str(runs["overlap"])}]
    with pytest.raises(RepmatchError, match="already exists") as err:
        write_report([runs["overlap"]], out)
    assert err.value.field == "overwrite"
    write_report([runs["overlap"], runs["datasets"]], out, overwrite=True)
    assert "Dataset matrix" in out.read_text()
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    with pytest.raises(RepmatchError, match="not a page repmatch report wrote"):
        write_report([runs["overlap"]], mine, overwrite=True)
    assert mine.read_text() == "<p>my notes</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.html",
        "report.html",
        "report.html.json",
    ]


def test_cli(runs, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(runs["datasets"]), str(runs["overlap"]), "--out", str(out)]) == 0
    assert f"report written to {out}" in capsys.readouterr().out
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a folder the report does not recognise" in err
    assert not (tmp_path / "x.html").exists()


# --------------------------------------------------------------------------------------------
# In a real browser


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
    return found


def _browser(tmp_path: Path, *flags: str, page: Path) -> subprocess.CompletedProcess:
    command = [
        _chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        f"--user-data-dir={tmp_path / 'profile'}",
        *flags,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_the_page_renders_in_headless_chromium(runs, tmp_path):
    out = write_report(_all(runs), tmp_path / "report.html")
    dom = _browser(tmp_path, "--dump-dom", page=out).stdout
    # the page's script ran after load and found every image decoded
    images = len(re.findall(r"<img ", dom))
    assert images == 7
    assert f'data-rendered="{images}/{images}"' in dom
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(widths) == images and min(widths) > 100
    headings = re.findall(r"<h2>(.*?)</h2>", dom)
    kinds = ("Adapters", "Adapter comparison", "Dataset matrix", "Instance scores", "Selection")
    for kind in (*kinds, "Evaluation", "Overlap subsets"):
        assert any(h.startswith(kind) for h in headings), (kind, headings)
    # a screenshot of the laptop-sized window is a real PNG
    shot = tmp_path / "shot.png"
    _browser(tmp_path, f"--screenshot={shot}", "--window-size=1366,900", page=out)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
