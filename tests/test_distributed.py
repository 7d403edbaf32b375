"""repmatch.distributed: no-ops in one process; two CPU processes under torchrun (Gloo) score and
train exactly what one process does.

The launched tests start ``python -m torch.distributed.run --nproc_per_node 2`` on a free port,
with one thread per process, on the tiny models of ``conftest``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from repmatch import distributed
from repmatch.artifacts import ChunkStore
from repmatch.data import DataSpec
from repmatch.errors import RepmatchError
from repmatch.scoring import ScoreConfig, score_instances
from repmatch.similarity import dataset_similarity
from repmatch.training import TrainConfig, train_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCORE_FLAGS = ["--rank", "2", "--chunk-size", "8", "--batch-size", "5", "--quiet"]
SCORE_CONFIG = ScoreConfig(rank=2, chunk_size=8, batch_size=5)
TRAIN = {"rank": 2, "lr": 1e-2, "batch_size": 13, "epochs": 2}
"""40 instances in batches of 13: two processes split 13 as 7 + 6, and the last batch of one
instance leaves the second process a stand-in of weight 0."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(*argv: str, module: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m repmatch argv...`` (or a script) on this machine's CPU."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *(["-m", "repmatch"] if module else []),
        *argv,
    ]
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(scoring_reference) -> str:
    return scoring_reference


# --------------------------------------------------------------------------------------------
# One process: everything is a no-op


def test_one_process_is_rank_0_of_1():
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.launched_processes() == 1
    distributed.barrier()
    assert distributed.all_gather({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast([3]) == [3]
    total = torch.tensor([2.5])
    assert distributed.all_reduce_sum(total) is total and total.item() == 2.5
    assert list(distributed.shard(5)) == [0, 1, 2, 3, 4]
    assert distributed.rank_device("auto") == "auto"
    assert distributed.start("cpu") == torch.device("cpu")
    assert distributed.world_size() == 1  # start joined no process group


def test_checked_on_main_yields_its_result_and_keeps_its_contexts(tmp_path):
    entered = []

    class Lock:
        def __enter__(self):
            entered.append("in")

        def __exit__(self, *exc):
            entered.append("out")

    def enter(stack):
        stack.enter_context(Lock())
        return "store"

    with distributed.checked_on_main(enter) as result:
        assert result == "store" and entered == ["in"]
    assert entered == ["in", "out"]


def test_checked_on_main_raises_the_error_itself():
    def enter(stack):
        raise RepmatchError("output exists", field="overwrite")

    with pytest.raises(RepmatchError, match="output exists") as caught:
        with distributed.checked_on_main(enter):
            pytest.fail("the block must not run")
    assert caught.value.field == "overwrite"


def test_bad_world_size_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(RepmatchError, match="WORLD_SIZE is 'two'.*torchrun"):
        distributed.launched_processes()


def test_unchecked_chunk_store_checks_nothing(tmp_path):
    out = tmp_path / "scores.parquet"
    out.write_text("not ours")
    with pytest.raises(RepmatchError, match="already exists"):
        ChunkStore(out, {"format": "repmatch-scores/1"}, (), resume=False, overwrite=False)
    store = ChunkStore(
        out, {"format": "repmatch-scores/1"}, (), resume=False, overwrite=False, check=False
    )
    assert store.folder == tmp_path / "scores.parquet.partial" and not store.done(0)


# --------------------------------------------------------------------------------------------
# Two processes under torchrun


@pytest.mark.distributed
def test_two_processes_score_what_one_does_and_resume_its_chunks(
    reference, tiny_data, tmp_path, monkeypatch
):
    data = str(tiny_data["single"])
    one = tmp_path / "one.parquet"
    score_instances(DataSpec(data), reference, SCORE_CONFIG, out=one, progress=False)
    expected = pd.read_parquet(one)
    assert np.ptp(expected["score"]) > 1e-3  # the instances are told apart at all

    # an interrupted run: every chunk but 1 and 2 done (1 falls to rank 1, 2 to rank 0)
    two = tmp_path / "two.parquet"
    monkeypatch.setattr(ChunkStore, "finish", lambda self, table, run: None)
    score_instances(DataSpec(data), reference, SCORE_CONFIG, out=two, progress=False)
    monkeypatch.undo()
    for index in (1, 2):
        (tmp_path / "two.parquet.partial" / f"chunk-{index:05d}.parquet").unlink()

    done = _launch(
        "score", data, "--reference", reference, "--out", str(two), "--resume", *SCORE_FLAGS
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("scored 16 instances") == 1  # the main process reports, once
    assert "by 2 processes" in done.stdout and "read 24 back" in done.stdout
    result = pd.read_parquet(two)
    assert list(result.columns) == list(expected.columns)
    assert list(result["id"]) == list(expected["id"])
    assert list(result["label"]) == list(expected["label"])
    for column in [c for c in expected.columns if c not in ("id", "label")]:
        assert np.abs(result[column] - expected[column]).max() <= 1e-5, column
    record = json.loads(Path(f"{two}.json").read_text())
    assert record["processes"] == 2 and record["computed"] == 16 and record["read_back"] == 24
    assert not (tmp_path / "two.parquet.partial").exists()
    assert not list(tmp_path.glob(".*lock"))


@pytest.mark.distributed
@pytest.mark.parametrize(
    "flags, settings",
    [
        (["--seeds", "0", "1", "2"], {"seeds": (0, 1, 2)}),
        (["--measure", "gradient"], {"measure": "gradient"}),
    ],
    ids=["three-seeds", "gradient"],
)
def test_a_fresh_two_process_run_scores_every_row_as_one_process(
    flags, settings, reference, tiny_data, tmp_path
):
    """No chunk is read back: the two processes compute every row, and every row, column by
    column, is the one-process row (the seeds' columns, their std and the per-layer columns)."""
    data = str(tiny_data["single"])
    config = replace(SCORE_CONFIG, **settings)
    expected = score_instances(DataSpec(data), reference, config, progress=False)
    assert np.ptp(expected["score"]) > 1e-3  # the instances are told apart at all
    out = tmp_path / "two.parquet"
    done = _launch("score", data, "--reference", reference, "--out", str(out), *SCORE_FLAGS, *flags)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("scored 40 instances") == 1 and "by 2 processes" in done.stdout
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["processes"] == 2 and record["computed"] == 40 and record["read_back"] == 0
    result = pd.read_parquet(out)
    assert list(result.columns) == list(expected.columns)
    if "seeds" in settings:
        assert {"score_std", "score_seed0", "score_seed1", "score_seed2"} <= set(result.columns)
    assert list(result["id"]) == list(expected["id"])
    assert list(result["label"]) == list(expected["label"])
    values = [c for c in expected.columns if c not in ("id", "label")]
    np.testing.assert_allclose(
        result[values].to_numpy(), expected[values].to_numpy(), rtol=0, atol=1e-5
    )


REFUSING = """
import sys
from pathlib import Path

import torch
from repmatch import distributed
from repmatch.errors import RepmatchError

distributed.start("cpu")

def enter(stack):
    raise RepmatchError(f"refused by rank {distributed.rank()}", field="overwrite")

try:
    with distributed.checked_on_main(enter):
        outcome = "went on"
except RepmatchError as err:
    outcome = f"{err} [{err.field}]"
# one file per rank: two processes printing to one pipe may interleave their lines
Path(sys.argv[1], f"rank{distributed.rank()}.txt").write_text(outcome)
distributed.barrier()
"""


@pytest.mark.distributed
def test_a_refusal_on_the_main_process_reaches_every_process(tmp_path):
    script = tmp_path / "refusing.py"
    script.write_text(REFUSING)
    done = _launch(str(script), str(tmp_path), module=False)
    assert done.returncode == 0, done.stderr
    outcomes = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert outcomes == ["refused by rank 0 [overwrite]"] * 2


@pytest.mark.distributed
def test_two_processes_train_the_adapter_of_one(tiny_model, tiny_data, tmp_path):
    model, data = tiny_model("bert"), str(tiny_data["single"])
    one = train_adapter(
        DataSpec(data), TrainConfig(model=model, **TRAIN), tmp_path / "one", progress=False
    )
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in TRAIN.items()]
    two = tmp_path / "two"
    done = _launch("train", data, "--model", model, *flags, "--quiet", "--out", str(two))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("adapter saved to") == 1
    expected, result = (
        load_file(one / "adapter_model.safetensors"),
        load_file(two / "adapter_model.safetensors"),
    )
    assert sorted(result) == sorted(expected)
    trained = [key for key in expected if "lora_B" in key]
    assert trained and all(expected[key].abs().max() > 1e-3 for key in trained)
    for key in expected:
        torch.testing.assert_close(result[key], expected[key], rtol=1e-5, atol=1e-6)
    first, second = (json.loads((f / "repmatch.json").read_text()) for f in (one, two))
    assert (first["processes"], second["processes"]) == (1, 2)
    assert second["epoch_losses"] == pytest.approx(first["epoch_losses"], rel=1e-6)
    assert second["train"] == first["train"]
    assert not list(tmp_path.glob(".two*"))  # no lock, no partial folder left


def test_launched_training_shares_batches_by_weight(monkeypatch):
    """The share of each process and the loss weight that makes DDP's mean the batch mean."""
    import repmatch.training as training

    positions = np.arange(10, 15)
    shares = {}
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shares[rank] = training._share(positions, 3)
    assert [list(shares[r][0]) for r in range(3)] == [[10, 11], [12, 13], [14]]
    assert {shares[r][1] for r in range(3)} == {1.0}
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        mine, weight = training._share(np.array([7]), 3)
        assert (list(mine), weight) == ([7], 1.0 if rank == 0 else 0.0)


def test_device_per_rank(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    if torch.cuda.is_available():
        expected = torch.device("cuda", 1 % torch.cuda.device_count())
        assert distributed.rank_device("auto") == expected
    else:
        assert distributed.rank_device("auto") == "auto"  # the CPU: every rank on it
    assert distributed.rank_device("cpu") == "cpu"
    assert distributed.local_rank() == 1


@pytest.mark.distributed
def test_two_processes_write_the_matrix_of_one(tiny_model, tiny_data, tmp_path):
    model = tiny_model("bert")
    data = [str(tiny_data["single"]), str(tiny_data["topics"])]
    one = dataset_similarity(
        [DataSpec(d) for d in data],
        TrainConfig(model=model, **TRAIN),
        tmp_path / "one",
        seeds=(0, 1),
        progress=False,
    )
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in TRAIN.items()]
    two = tmp_path / "two"
    argv = ["datasets", *data, "--model", model, *flags, "--seeds", "0", "1", "--quiet"]
    done = _launch(*argv, "--out", str(two))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("written to") == 1  # the main process reports
    written = json.loads((two / "matrix.json").read_text())
    np.testing.assert_allclose(written["mean"], one.mean, rtol=1e-4, atol=1e-5)
    assert len(list((two / "adapters").glob("*/seed*"))) == 4
    assert not list(tmp_path.glob(".two*"))  # no lock left


WRITING = """
import sys
from pathlib import Path

from repmatch import distributed
from repmatch.cli import main

folder = Path(sys.argv[1])
scores = str(folder / "scores.parquet")
codes = [
    main(["select", scores, "--top", "5", "--out", str(folder / "top.jsonl")]),
    main(["overlap", sys.argv[2], "--out", str(folder / "overlap")]),
    main(["report", scores, "--out", str(folder / "report.html")]),
]
Path(folder, f"rank{distributed.rank()}.txt").write_text(" ".join(map(str, codes)))
"""


@pytest.mark.distributed
def test_two_processes_select_overlap_and_report_as_one(reference, tiny_data, tmp_path):
    """Commands that only write: the main process writes, the other waits; both exit 0."""
    scores = tmp_path / "scores.parquet"
    score_instances(
        DataSpec(str(tiny_data["single"])), reference, SCORE_CONFIG, out=scores, progress=False
    )
    script = tmp_path / "writing.py"
    script.write_text(WRITING)
    done = _launch(str(script), str(tmp_path), str(tiny_data["pair"]), module=False)
    assert done.returncode == 0, done.stderr
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == ["0 0 0"] * 2
    for line in ("selected 5 of 40", "non-entailment", "report written to"):
        assert done.stdout.count(line) == 1, done.stdout  # the main process reports, once
    assert "error" not in done.stderr
    assert len((tmp_path / "top.jsonl").read_text().splitlines()) == 5
    assert json.loads((tmp_path / "overlap" / "overlap.json").read_text())["format"]
    assert (tmp_path / "report.html").stat().st_size > 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock left
