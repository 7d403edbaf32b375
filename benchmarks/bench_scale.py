"""Scale and speed: precision, processes, the training cut, FLOP/s against the matmul peak.

    python benchmarks/bench_scale.py cpu   # this machine: every CPU measurement below
    python benchmarks/bench_scale.py engine  # only the matmul peak and the scoring passes
    python benchmarks/bench_scale.py engine --reference ADAPTER  # ... against ADAPTER's model
    python benchmarks/bench_scale.py gpu   # a CUDA machine: one-step BERT-base throughput

``cpu`` measures, on ``--instances`` SST-2 training instances and the bundled model, each in a
fresh process of its own:

- the matmul peak of this CPU (a plain 2048 x 2048 matmul, float32 and bfloat16);
- one-step scoring (rank 1, the paper's settings) in float32 and in bfloat16: throughput, the
  Spearman correlation and largest difference of the scores, and the engine's achieved FLOP/s
  (matmul FLOPs of the forward and backward passes counted by torch's FlopCounterMode);
- adapter training (the default TrainConfig) with and without the last-layer cut: time of the
  training loop, the largest difference of the adapters and their RepMatch;
- ``repmatch score`` and ``repmatch train`` in one process against two under torchrun (Gloo).

``gpu`` times one-step scoring of a random BERT-base (the reference script's architecture; its
weights cannot be downloaded here and the timing does not depend on them) in bfloat16 and float32
on the first CUDA GPU (goal: 10,000 instances/s in bfloat16); give it ``--instances 20000`` or
more so that a run lasts long enough to time.

The machine's load average is recorded before and after: other work on the same cores slows
every figure (wall-clock ones most; process CPU time is printed beside them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers

from repmatch.data import DataSpec, load_examples
from repmatch.training import TrainConfig, train_or_reuse

transformers.logging.set_verbosity_error()  # here and in every spawned worker (they import this)
transformers.logging.disable_progress_bar()


def fresh(function, *args):
    """``function(*args)`` in a new process (nothing cached or allocated by earlier steps)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def matmul_peak(threads: int, size: int = 2048, seconds: float = 3.0) -> dict[str, dict]:
    """GFLOP per second of wall time and per second of process CPU time of a plain size x size
    matmul, float32 and bfloat16, on ``threads`` threads."""
    torch.set_num_threads(threads)
    peak = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        for _ in range(3):
            a @ b
        count, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            a @ b
            count += 1
        gflop = 2 * size**3 * count / 1e9
        peak[str(dtype).removeprefix("torch.")] = {
            "gflops": gflop / (time.perf_counter() - started),
            "gflop_per_cpu_second": gflop / (time.process_time() - cpu),
        }
    return peak


def score_once(
    reference: str, data: str, instances: int, dtype: str, device: str, threads: int
) -> dict:
    """One-step scores of the instances in ``dtype``: the best of two timed passes, then an
    untimed pass counting matmul FLOPs."""
    torch.set_num_threads(threads)
    from torch.utils.flop_counter import FlopCounterMode

    from repmatch.adapters import load_adapter
    from repmatch.grassmann import repmatch_score
    from repmatch.scoring import InstanceScorer, ScoreConfig

    examples = load_examples(DataSpec(data, sample=instances, seed=1))
    scorer = InstanceScorer(load_adapter(reference), ScoreConfig(dtype=dtype), device=device)
    timings = []
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        scores = scorer.score(examples)
        timings.append((time.perf_counter() - wall, time.process_time() - cpu))
    counter = FlopCounterMode(display=False)
    with counter:
        scorer.score(examples)
    wall, cpu = min(timings)
    return {
        "scores": repmatch_score(scores)[0].double().numpy(),
        "seconds": wall,
        "cpu_seconds": cpu,
        "instances_per_second": len(examples) / wall,
        "flops": counter.get_total_flops(),
        "threads": torch.get_num_threads(),
    }


def train_once(data: str, instances: int, cut: bool, out: str, threads: int) -> dict:
    """Train the default adapter on the instances; time the training loop (``fit``) only."""
    torch.set_num_threads(threads)
    import repmatch.training as training
    from repmatch.models import ReadoutCut

    examples = load_examples(DataSpec(data, sample=instances, seed=1))
    timed = {}
    fit = training.fit

    def timed_fit(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        losses = fit(*args, **kwargs)
        timed.update(seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu)
        return losses

    training.fit = timed_fit
    if not cut:
        training._readout_cut = lambda model, task, config: ReadoutCut()
    training.train_adapter(
        examples, TrainConfig(), out, overwrite=True, progress=False, device="cpu"
    )
    return timed


def command(argv: list[str], threads: int) -> float:
    """Run ``argv`` (offline, quiet, ``threads`` threads a process); its wall-clock seconds."""
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
    }
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - started


def launched(processes: int, *argv: str) -> list[str]:
    """``repmatch argv`` in one process, or under torchrun with ``processes`` on a free port."""
    if processes == 1:
        return [sys.executable, "-m", "repmatch", *argv]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "repmatch", *argv,
    ]  # fmt: skip


def engine(args: argparse.Namespace) -> dict:
    """The matmul peak and one-step scoring in float32 and bfloat16 against it."""
    from scipy.stats import spearmanr

    from repmatch.adapters import load_adapter

    work = Path(args.work)
    torch.set_num_threads(args.threads)
    result: dict = {"load_average_before": load_average(), "instances": args.instances}
    reference = args.reference or str(
        train_or_reuse(
            load_examples(DataSpec(args.data, sample=args.instances)),
            TrainConfig(model=args.model) if args.model else TrainConfig(),
            work / "reference",
            progress=False,
            device="cpu",
        )
    )
    result["reference"] = reference
    result["model"] = load_adapter(reference).base_model
    result["threads"] = args.threads
    result["matmul_peak_gflops"] = {n: fresh(matmul_peak, n) for n in (1, 2)}
    print("matmul peak GFLOP/s (1 and 2 threads):", result["matmul_peak_gflops"])

    runs = {
        d: fresh(score_once, reference, args.data, args.instances, d, "cpu", args.threads)
        for d in ("float32", "bfloat16")
    }
    exact, low = runs["float32"], runs["bfloat16"]
    result["scoring"] = {
        dtype: {key: value for key, value in run.items() if key != "scores"}
        | {
            "achieved_gflops": run["flops"] / run["seconds"] / 1e9,
            "achieved_gflop_per_cpu_second": run["flops"] / run["cpu_seconds"] / 1e9,
        }
        for dtype, run in runs.items()
    }
    result["scoring"]["bfloat16_speedup"] = exact["seconds"] / low["seconds"]
    result["scoring"]["bfloat16_cpu_time_speedup"] = exact["cpu_seconds"] / low["cpu_seconds"]
    result["scoring"]["spearman_bfloat16_float32"] = float(
        spearmanr(exact["scores"], low["scores"])[0]
    )
    result["scoring"]["max_abs_difference"] = float(np.abs(exact["scores"] - low["scores"]).max())
    for dtype in ("float32", "bfloat16"):
        run = result["scoring"][dtype]
        print(
            f"score {dtype:8s}: {run['instances_per_second']:7.1f} instances/s "
            f"({run['seconds']:.1f} s wall, {run['cpu_seconds']:.1f} s CPU), "
            f"{run['achieved_gflops']:.1f} GFLOP/s achieved, "
            f"{run['achieved_gflop_per_cpu_second']:.1f} GFLOP per CPU second"
        )
    print(
        f"bfloat16: {result['scoring']['bfloat16_speedup']:.2f}x float32 (wall), "
        f"{result['scoring']['bfloat16_cpu_time_speedup']:.2f}x (CPU time); Spearman "
        f"{result['scoring']['spearman_bfloat16_float32']:.4f}, max |difference| "
        f"{result['scoring']['max_abs_difference']:.3f}"
    )

    return result


def cpu(args: argparse.Namespace) -> dict:
    from repmatch.adapters import load_adapter
    from repmatch.compare import compare_adapters

    work = Path(args.work)
    result = engine(args)
    folders = {cut: str(work / f"train-{'cut' if cut else 'plain'}") for cut in (False, True)}
    trained = {
        cut: fresh(train_once, args.data, args.instances, cut, folders[cut], args.threads)
        for cut in (False, True)
    }
    a, b = load_adapter(folders[False]), load_adapter(folders[True])
    difference = max(float((a.layers[n].B - b.layers[n].B).abs().max().max()) for n in a.layers)
    result["training"] = {
        "without_cut": trained[False],
        "with_cut": trained[True],
        "speedup": trained[False]["seconds"] / trained[True]["seconds"],
        "cpu_time_speedup": trained[False]["cpu_seconds"] / trained[True]["cpu_seconds"],
        "max_abs_difference_of_B": difference,
        "repmatch_between_them": compare_adapters(folders[False], folders[True]).score,
    }
    print(
        f"training loop: {trained[False]['seconds']:.1f} s -> {trained[True]['seconds']:.1f} s "
        f"with the cut ({result['training']['speedup']:.2f}x wall, "
        f"{result['training']['cpu_time_speedup']:.2f}x CPU time); max |ΔB| {difference:.1e}, "
        f"RepMatch {result['training']['repmatch_between_them']:.6f}"
    )

    reference = result["reference"]
    data = [args.data, "--sample", str(args.instances), "--sample-seed", "1", "--quiet"]
    result["processes"] = {}
    for processes, threads in ((1, 1), (1, 2), (2, 1)):
        name = f"{processes}x{threads}"
        out = work / f"scores-{name}.parquet"
        score = ["score", *data, "--reference", reference, "--out", str(out), "--overwrite"]
        chunks = ["--chunk-size", str(args.instances // 4)]
        seconds = command(launched(processes, *score, *chunks), threads)
        record = json.loads(Path(f"{out}.json").read_text())
        train = ["train", *data, "--out", str(work / f"adapter-{name}"), "--overwrite"]
        train_seconds = command(launched(processes, *train), threads)
        result["processes"][name] = {
            "score_command_seconds": seconds,
            "score_seconds_in_record": record["seconds"],
            "train_command_seconds": train_seconds,
        }
        print(
            f"{processes} process(es) x {threads} thread(s): score {seconds:.1f} s "
            f"(record {record['seconds']:.1f} s), train {train_seconds:.1f} s"
        )
    one, two = (pd.read_parquet(work / f"scores-{n}.parquet") for n in ("1x1", "2x1"))
    result["processes"]["same_ids"] = bool((one["id"] == two["id"]).all())
    result["processes"]["max_abs_score_difference"] = float(
        (one["score"] - two["score"]).abs().max()
    )
    result["load_average_after"] = load_average()
    return result


def gpu(args: argparse.Namespace) -> dict:
    """One-step bf16 and float32 scoring throughput of a random BERT-base on a CUDA GPU."""
    from bench_instance_scoring import random_bert_base

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: the gpu benchmark needs one")
    work = Path(args.work)
    model = random_bert_base(work / "bert-base-random")
    reference = str(
        train_or_reuse(
            load_examples(DataSpec(args.data, sample=2000)),
            TrainConfig(model=model),
            work / "reference-bert-base-random",
            progress=False,
            device="cuda",
        )
    )
    result = {"device": torch.cuda.get_device_name(0), "instances": args.instances}
    for dtype in ("bfloat16", "float32"):
        run = fresh(score_once, reference, args.data, args.instances, dtype, "cuda", args.threads)
        result[dtype] = {key: value for key, value in run.items() if key != "scores"}
        print(f"BERT-base one-step, {dtype}: {run['instances_per_second']:.0f} instances/s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["cpu", "engine", "gpu"])
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--work", default="runs/bench-scale")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads a process (default 1: steadier than 2 when other work shares cores)",
    )
    parser.add_argument(
        "--reference",
        help="engine: score against this adapter instead of training one (its base model is used)",
    )
    parser.add_argument(
        "--model", help="engine, cpu: base model of the trained reference (default: the bundled)"
    )
    parser.add_argument("--out", help="JSON file (default benchmarks/results/scale-WHAT.json)")
    args = parser.parse_args()
    result = {"cpu": cpu, "engine": engine, "gpu": gpu}[args.what](args)
    result.setdefault("load_average_after", load_average())
    result |= {"torch": torch.__version__, "machine": platform.platform(), "cores": os.cpu_count()}
    out = Path(args.out or f"benchmarks/results/scale-{args.what}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
