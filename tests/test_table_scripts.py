"""Every table script runs on the committed JSON in results/ alone (no run folders) and states each
comparison with its CI, p, Holm p and a verdict from repmatch.statistics.VERDICTS."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from repmatch.statistics import VERDICTS

ROOT = Path(__file__).resolve().parents[1]
MNLI = "MNLI=every subset at chance"


def run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "nan" not in done.stdout.lower()
    return done.stdout


def comparison_rows(text: str) -> list[list[str]]:
    """Table rows that carry a 95 % CI cell ("x to y")."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return [r for r in rows if any(re.fullmatch(r"-?[\d.]+ to -?[\d.]+", c.strip()) for c in r)]


def verdicts(rows: list[list[str]]) -> list[str]:
    found = []
    for row in rows:
        cell = row[-1].strip()
        found += [v for v in VERDICTS if cell.startswith(v)]
    return found


def test_selection_tables():
    out = run("selection_tables.py", "--not-decidable", MNLI)
    rows = comparison_rows(out)
    # 6 comparisons: 6 + 5 + 5 + 6 + 5 + 6 dataset rows
    assert len(rows) == 33
    # the three comparisons with a paper claim carry a verdict on every row
    assert len(verdicts(rows)) == 6 + 5 + 6
    mnli = [r for r in rows if r[0].strip() == "MNLI" and "not decidable here" in r[-1]]
    assert len(mnli) == 3
    assert "Class counts" not in out  # they need --runs


def test_subset_size_figure(tmp_path):
    out = run("subset_size_figure.py", "--out", str(tmp_path / "figure.png"))
    assert (tmp_path / "figure.png").is_file()
    rows = comparison_rows(out)
    assert len(rows) == 3 * 5
    assert len(verdicts(rows)) == 4  # K = 25 ... 200; the paper claims nothing at 400


def test_noisy_tables():
    out = run("noisy_tables.py")
    rows = comparison_rows(out)
    assert len(rows) == 3 * 5 + 3 * 4
    assert {r[-1].strip() for r in rows} <= {"above", "below", "at chance", "beats", "ties"}


def test_overlap_tables():
    out = run("overlap_tables.py")
    rows = comparison_rows(out)
    assert len(rows) == 6 + 3
    assert len(verdicts(rows)) == 4 + 2


def test_overlap_tables_not_decidable_when_hans_did_not_learn():
    out = run("overlap_tables.py", "--summaries", "results/table5-aligned-1epoch.json")
    assert "the HANS adapter did not learn HANS: held-out accuracy 51.9 %" in out
    claims = [r[-1].strip() for r in comparison_rows(out) if r[-1].strip() != "no paper claim"]
    assert claims == ["not decidable here"] * 4


def test_overlap_tables_decide_when_hans_learned():
    summary = json.loads((ROOT / "results/table5-aligned.json").read_text())
    assert summary["hans_heldout"]["learned"] == "learned"
    out = run("overlap_tables.py", "--summaries", "results/table5-aligned.json")
    assert "did not learn" not in out
    claims = [r[-1].strip() for r in comparison_rows(out) if r[-1].strip() != "no paper claim"]
    assert len(claims) == 4 and all(c in VERDICTS and c != "not decidable here" for c in claims)


def copied_results(tmp_path: Path) -> Path:
    """A copy of the committed JSON files of ``results/``, for a test to doctor."""
    results = tmp_path / "results"
    results.mkdir()
    for path in (ROOT / "results").glob("*.json"):
        (results / path.name).write_bytes(path.read_bytes())
    return results


def summary_of(name: str) -> list[dict]:
    """The dataset entries of a committed summary in ``results/`` (none where it is absent)."""
    path = ROOT / "results" / name
    if not path.is_file():
        return []
    return [
        v for v in json.loads(path.read_text()).values() if isinstance(v, dict) and "results" in v
    ]


def test_claims_table(tmp_path):
    out = tmp_path / "claims.md"
    run("claims_table.py", "--not-decidable", MNLI, "--out", str(out))
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    # paper protocol: Table 1 plain, balanced and ensemble-balanced per committed summary
    protocol = [r for r in rows if r.startswith("| Table 1") and "paper protocol" in r]
    arms = ("repmatch-100", "repmatch-balanced-100", "repmatch-ensemble-balanced-100")
    expected = 0
    for name in ("sst2", "snli", "sst5", "imdb", "mnli", "sst2-p16000", "sst2-whole", "imdb-whole"):
        expected += sum(
            arm in entry["results"]
            for entry in summary_of(f"table1-protocol-{name}.json")
            for arm in arms
        )
    assert len(protocol) == expected
    # Table 4, Fig. 4 and label noise under the paper's protocol, where committed
    later = [
        r for r in rows if r not in protocol and ("paper protocol" in r or "paper's settings" in r)
    ]
    expected = sum("repmatch-r4-100" in e["results"] for e in summary_of("table4-protocol.json"))
    expected += sum(
        k.startswith("repmatch-")
        and int(k.rpartition("-")[2]) < 400
        and f"random-{k.rpartition('-')[2]}" in e["results"]
        for e in summary_of("subset-size-protocol.json")
        for k in e["results"]
    )
    noisy = ROOT / "results" / "noisy-labels-protocol.json"
    expected += len(json.loads(noisy.read_text())["settings"]["datasets"]) if noisy.is_file() else 0
    assert len(later) == expected
    # earlier protocol: Table 1 (6 + 5), Table 4 (6); Fig. 4 (4), Fig. 1 (1), Fig. 2 (2),
    # Fig. 3 (1), Table 2 (3), Table 5 (4), label noise (3)
    assert len(rows) - len(protocol) - len(later) == 17 + 4 + 3 + 4 + 4 + 3
    table5 = [r for r in rows if r.startswith("| Table 5")]
    assert len(table5) == 4 and not any("not decidable" in r for r in table5)  # HANS learned
    mpnet = [
        f"table1-protocol-{name}.json"
        for name in ("sst2", "snli")
        if (ROOT / "results" / f"table1-protocol-mpnet-{name}.json").is_file()
    ]
    for line in rows:
        assert any(f"| {v}" in line for v in VERDICTS), line
        # MPNet column: Fig. 3 and the Table 1 protocol rows with an MPNet summary
        run_on_mpnet = line.startswith("| Fig. 3") or any(f"`results/{m}`" in line for m in mpnet)
        assert ("not run yet" in line) != run_on_mpnet, line


def test_claims_table_mpnet_column(tmp_path):
    """An MPNet summary of the same protocol fills that column of its rows, with its own
    comparison and verdict; one whose reference did not learn is not decidable."""
    results = copied_results(tmp_path)
    summary = json.loads((results / "table1-protocol-sst2.json").read_text())
    heldout = summary["SST-2"]["references"]["reference"]["heldout"]
    (results / "table1-protocol-mpnet-sst2.json").write_text(json.dumps(summary))
    heldout["metrics"]["accuracy"] = heldout["majority_rate"] + 0.01  # did not learn
    (results / "table1-protocol-mpnet-snli.json").unlink(missing_ok=True)
    out = tmp_path / "claims.md"
    run("claims_table.py", "--results", str(results), "--not-decidable", MNLI, "--out", str(out))
    rows = [r for r in out.read_text().splitlines() if "`results/table1-protocol-sst2.json`" in r]
    assert len(rows) == 3
    for line in rows:
        cells = line.strip("|").split(" | ")
        ours, mpnet = cells[2], cells[4]
        assert mpnet.startswith(ours)  # the same figures: the same summary
        assert "table1-protocol-mpnet-sst2.json" in mpnet and cells[-1].strip() in mpnet

    (results / "table1-protocol-mpnet-sst2.json").write_text(json.dumps(summary))
    run("claims_table.py", "--results", str(results), "--not-decidable", MNLI, "--out", str(out))
    rows = [r for r in out.read_text().splitlines() if "`results/table1-protocol-sst2.json`" in r]
    for line in rows:
        mpnet = line.strip("|").split(" | ")[4]
        assert "not decidable here (the reference did not learn" in mpnet, mpnet


@pytest.mark.parametrize("script", ["selection_tables.py", "claims_table.py"])
def test_bad_not_decidable_flag_is_a_clear_error(script):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), "--not-decidable", "MNLI"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "NAME=REASON" in done.stderr


REDUCED = "results/table1-protocol-sst2-reduced.json"


def test_selection_tables_on_the_protocol_summary():
    out = run("selection_tables.py", "--summary", REDUCED)
    rows = comparison_rows(out)
    # 7 comparisons against random / prototypicality (no rank 4 in this run) + 4 against controls
    assert len(rows) == 11
    # the two Table 1 comparisons carry a verdict; the reference learned, so it is decided
    assert len(verdicts(rows)) == 2
    assert not any("not decidable" in r[-1] for r in rows)
    assert all(r[1].strip() == "81.1 (majority 50.9)" for r in rows)
    assert "| SST-2 | reference | sst2/train (2000) | sst2/validation (872) | 81.1 | 50.9 |" in out
    assert "RepMatch-100 (rank 1), n = 9: 3 subsets (scoring seeds) × 3 fine-tuning seeds" in out
    assert "| SST-2 | 100 | repmatch, scoring seeds pairwise | 3 | 18–26 | 0.10–0.15 |" in out
    controls = [r for r in rows if "typical-text" in r[-1] or "control selects" in r[-1]]
    assert len(controls) == 4


def test_a_reference_that_did_not_learn_makes_every_claim_not_decidable(tmp_path):
    summary = json.loads((ROOT / REDUCED).read_text())
    summary["SST-2"]["references"]["reference"]["heldout"]["metrics"]["accuracy"] = 0.52
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    rows = comparison_rows(run("selection_tables.py", "--summary", str(path)))
    assert all(r[1].strip() == "52.0 (majority 50.9)" for r in rows)
    judged = [r for r in rows if len(r) == 10]  # Table 1 verdicts and control readings
    assert len(judged) == 2 + 4
    assert all(r[-1].strip().startswith("not decidable here") for r in judged)
    assert all("did not learn" in r[-1] for r in judged)


def test_claims_table_protocol_reasons_reach_only_the_protocol_rows(tmp_path):
    if not (ROOT / "results/table1-protocol-mnli.json").is_file():
        pytest.skip("no committed MNLI protocol summary")
    out = tmp_path / "claims.md"
    run("claims_table.py", "--not-decidable", "protocol/MNLI=no subset learned", "--out", str(out))
    rows = [r for r in out.read_text().splitlines() if r.startswith("| Table 1") and "MNLI" in r]
    protocol = [r for r in rows if "paper protocol" in r]
    assert protocol and all(
        r.endswith("| not decidable here (no subset learned) |") for r in protocol
    )
    assert not any("no subset learned" in r for r in rows if r not in protocol)


def test_claims_table_noisy_rows_follow_the_references(tmp_path):
    """Label-noise rows of a summary whose references were evaluated: decided where they learned
    (a bare NAME reason, meant for the old unevaluated summary, does not reach them), not
    decidable where they did not."""
    results = copied_results(tmp_path)
    summary = json.loads((results / "noisy-labels.json").read_text())
    for name, accuracy in (("SST-2", 0.8), ("SST-5", 0.2), ("MNLI", 0.6)):
        summary[name]["references"] = [
            {"data_name": "x", "num_examples": 10, "accuracy": accuracy, "majority_rate": 0.4}
        ] * summary[name]["seeds_done"]
    (results / "noisy-labels-protocol.json").write_text(json.dumps(summary))
    out = tmp_path / "claims.md"
    run("claims_table.py", "--results", str(results), "--not-decidable", MNLI, "--out", str(out))
    rows = {
        line.split(" | ")[0].split("mislabelled, ")[1].split(" ")[0]: line
        for line in out.read_text().splitlines()
        if line.startswith("| §1") and "`results/noisy-labels-protocol.json`" in line
    }
    assert set(rows) == {"SST-2", "SST-5", "MNLI"}
    assert "not decidable" not in rows["SST-2"] and "not decidable" not in rows["MNLI"]
    assert "not decidable here (the references did not learn" in rows["SST-5"]


def test_claims_table_fig2_is_decided_only_with_per_instance_figures(tmp_path):
    results = copied_results(tmp_path)
    out = tmp_path / "claims.md"

    def fig2_verdicts() -> list[str]:
        run(
            "claims_table.py", "--results", str(results), "--not-decidable", MNLI, "--out", str(out)
        )
        rows = [r for r in out.read_text().splitlines() if r.startswith("| Fig. 2")]
        return [r.strip("|").split(" | ")[-1].strip() for r in rows]

    assert fig2_verdicts() == ["reproduced", "reproduced"]  # the committed per-instance figures
    summary = json.loads((results / "instance-robustness.json").read_text())
    for rank in ("rank1", "rank4"):
        del summary[rank]["figure2"]["per_instance"]
    (results / "instance-robustness.json").write_text(json.dumps(summary))
    assert fig2_verdicts() == ["not decidable here (per-instance figures not saved)"] * 2


def test_claims_table_similarity_rows_follow_the_adapters_heldout_accuracy(tmp_path):
    """Fig. 3 and Table 2 are not decidable where the matrix's held-out check shows an adapter
    involved did not learn, and decided (a verdict on the figures) without that check."""
    results = copied_results(tmp_path)
    out = tmp_path / "claims.md"

    def verdicts() -> list[str]:
        run(
            "claims_table.py", "--results", str(results), "--not-decidable", MNLI, "--out", str(out)
        )
        rows = [r for r in out.read_text().splitlines() if r.startswith(("| Fig. 3", "| Table 2"))]
        return [r.strip("|").split(" | ")[-1].strip() for r in rows]

    heldout = json.loads((results / "dataset-similarity-heldout.json").read_text())
    sst5 = [v for k, v in heldout.items() if k.startswith("sst5-train/")]
    assert sst5 and all(v["verdict"] != "learned" for v in sst5)
    assert all(v.startswith("not decidable here (the default settings'") for v in verdicts())
    (results / "dataset-similarity-heldout.json").unlink()
    assert not any(v.startswith("not decidable") for v in verdicts())
