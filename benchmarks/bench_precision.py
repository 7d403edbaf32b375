"""bfloat16 against float32 for training and evaluation, measured side by side in one run.

    python benchmarks/bench_precision.py train      # adapters: speed, RepMatch, held-out accuracy
    python benchmarks/bench_precision.py evaluate   # `repmatch evaluate` runs: speed, accuracy
    python benchmarks/bench_precision.py profile    # where the time goes, by kind of operation

``train``: the default :class:`TrainConfig` on ``--instances`` SST-2 training instances, seeds
``--seeds``, once in float32 and once in bfloat16 each; the training loop's wall and CPU time
(each run in a fresh process, the two precisions alternating so that a change of the machine's load
hits both), the RepMatch of the bfloat16 adapter to the float32 adapter of the same seed (and of
the float32 adapters of different seeds, the seed-to-seed level), and each adapter's accuracy on
the SST-2 validation split (predicted in float32).

``evaluate``: one ``--instances``-instance random SST-2 training subset, fine-tuned and evaluated
on the SST-2 validation split by :func:`repmatch.evaluation.evaluate_subsets` for every seed, in
float32 and in bfloat16 (``EvalConfig.dtype``), each run in a fresh process; per run its wall and
CPU time and accuracy; per precision the mean and sample std of the accuracy over seeds.

``profile``: torch.profiler over the training loop (``--instances`` instances, default 400) and
one one-step scoring pass (the same instances, against the float32 adapter ``train`` wrote), in
both precisions: each operation's self time, summed by kind (matmuls, copies and casts, attention
softmax and masking, other element-wise work). The profiler adds a fixed cost to every operation,
so the shares of the many small ones are overstated; the totals are not the unprofiled times.

All print the load average before and after: other work on the same cores slows wall-clock
figures most; the process CPU time is printed beside them and is the steadier measure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from bench_scale import fresh, load_average

from repmatch.data import DataSpec, load_examples
from repmatch.training import TrainConfig

DTYPES = ("float32", "bfloat16")


def _timed(call):
    """``call()`` with its wall and process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = call()
    return value, {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


def train_once(data: str, instances: int, seed: int, dtype: str, out: str) -> dict:
    """Train the default adapter in ``dtype``; time the training loop (``fit``) only."""
    torch.set_num_threads(1)
    import repmatch.training as training

    examples = load_examples(DataSpec(data, sample=instances, seed=1))
    timed = {}
    fit = training.fit

    def timed_fit(*args, **kwargs):
        losses, timing = _timed(lambda: fit(*args, **kwargs))
        timed.update(timing)
        return losses

    training.fit = timed_fit
    config = TrainConfig(seed=seed, dtype=dtype)
    training.train_adapter(examples, config, out, overwrite=True, progress=False, device="cpu")
    return timed


def adapter_accuracy(adapter: str, data: str) -> float:
    """Accuracy of an adapter (its trained LoRA and seeded head) on ``data``, float32."""
    torch.set_num_threads(1)
    from repmatch.adapters import load_adapter, load_adapter_model
    from repmatch.evaluation import predict
    from repmatch.models import load_tokenizer
    from repmatch.tasks import get_task

    examples = load_examples(DataSpec(data, split="validation"))
    task = get_task(examples.task)
    model = load_adapter_model(adapter, device="cpu")
    tokenizer = load_tokenizer(load_adapter(adapter).base_model)
    cpu = torch.device("cpu")
    predictions = predict(
        model, tokenizer, examples, task, max_length=128, batch_size=64, device=cpu
    )
    return task.metrics(predictions, task.references(examples))["accuracy"]


def train(args: argparse.Namespace) -> dict:
    from repmatch.compare import compare_adapters

    work = Path(args.work)
    folder = {(s, d): str(work / f"adapter-{d}-seed{s}") for s in args.seeds for d in DTYPES}
    runs = {}
    for seed, dtype in itertools.product(args.seeds, DTYPES):
        runs[seed, dtype] = fresh(
            train_once, args.data, args.instances, seed, dtype, folder[seed, dtype]
        )
        runs[seed, dtype]["accuracy"] = fresh(adapter_accuracy, folder[seed, dtype], args.data)
        run = runs[seed, dtype]
        print(
            f"train seed {seed} {dtype:8s}: loop {run['seconds']:.1f} s wall, "
            f"{run['cpu_seconds']:.1f} s CPU; validation accuracy {run['accuracy']:.4f}"
        )
    per_seed = {}
    for seed in args.seeds:
        exact, low = runs[seed, "float32"], runs[seed, "bfloat16"]
        per_seed[seed] = {
            "float32": exact,
            "bfloat16": low,
            "cpu_time_speedup": exact["cpu_seconds"] / low["cpu_seconds"],
            "wall_speedup": exact["seconds"] / low["seconds"],
            "repmatch_bfloat16_float32": compare_adapters(
                folder[seed, "bfloat16"], folder[seed, "float32"]
            ).score,
        }
    seed_pairs = {
        f"{a}-{b}": compare_adapters(folder[a, "float32"], folder[b, "float32"]).score
        for a, b in itertools.combinations(args.seeds, 2)
    }
    result = {
        "per_seed": per_seed,
        "repmatch_between_float32_seeds": seed_pairs,
        "cpu_time_speedup": _total(runs, "float32") / _total(runs, "bfloat16"),
        "wall_speedup": _total(runs, "float32", "seconds") / _total(runs, "bfloat16", "seconds"),
    } | {f"accuracy_{d}": _mean_std([runs[s, d]["accuracy"] for s in args.seeds]) for d in DTYPES}
    for seed, row in per_seed.items():
        print(
            f"seed {seed}: bfloat16 {row['cpu_time_speedup']:.2f}x float32 (CPU time), "
            f"{row['wall_speedup']:.2f}x (wall); RepMatch to float32 "
            f"{row['repmatch_bfloat16_float32']:.4f}"
        )
    print(
        f"all seeds: {result['cpu_time_speedup']:.2f}x (CPU time), {result['wall_speedup']:.2f}x "
        f"(wall); RepMatch between float32 seeds: {seed_pairs}; accuracy float32 "
        f"{result['accuracy_float32']}, bfloat16 {result['accuracy_bfloat16']}"
    )
    return result


def evaluate_once(
    subset: DataSpec, data: str, method: str, seed: int, dtype: str, model: str | None
) -> dict:
    """One evaluation run (fine-tuning and prediction), timed."""
    torch.set_num_threads(1)
    from repmatch.config import EvalConfig
    from repmatch.evaluation import evaluate_subsets

    chosen = {} if model is None else {"model": model}
    config = EvalConfig(**chosen, method=method, seeds=(seed,), dtype=dtype)
    evaluation = DataSpec(data, split="validation")
    result, timing = _timed(
        lambda: evaluate_subsets([subset], evaluation, config, progress=False, device="cpu")
    )
    return timing | {"accuracy": float(result.runs["accuracy"][0])}


def evaluate(args: argparse.Namespace) -> dict:
    subset = DataSpec(args.data, sample=args.instances, seed=args.subset_seed)
    result = {"subset": subset.to_record(), "model": args.model, "methods": {}}
    for method in args.methods:
        runs = {}
        for seed, dtype in itertools.product(args.seeds, DTYPES):
            runs[seed, dtype] = run = fresh(
                evaluate_once, subset, args.data, method, seed, dtype, args.model
            )
            print(
                f"evaluate {method} seed {seed} {dtype:8s}: {run['seconds']:.1f} s wall, "
                f"{run['cpu_seconds']:.1f} s CPU; accuracy {run['accuracy']:.4f}"
            )
        summary = {
            "runs": {f"seed{s}-{d}": run for (s, d), run in runs.items()},
            "cpu_time_speedup": _total(runs, "float32") / _total(runs, "bfloat16"),
            "wall_speedup": _total(runs, "float32", "seconds")
            / _total(runs, "bfloat16", "seconds"),
        } | {d: _mean_std([runs[s, d]["accuracy"] for s in args.seeds]) for d in DTYPES}
        exact = summary["float32"]
        summary["bfloat16_within_one_float32_std"] = (
            abs(summary["bfloat16"]["mean"] - exact["mean"]) <= exact["std"]
        )
        result["methods"][method] = summary
        print(
            f"{method}: bfloat16 {summary['cpu_time_speedup']:.2f}x float32 (CPU time), "
            f"{summary['wall_speedup']:.2f}x (wall); accuracy float32 {exact}, bfloat16 "
            f"{summary['bfloat16']}"
        )
    return result


KINDS = {
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm"),
    "copy_or_cast": ("aten::copy_", "aten::_to_copy", "aten::clone"),
    "attention_softmax_and_masks": (
        "aten::_softmax", "aten::_softmax_backward_data", "aten::all", "aten::isneginf",
        "aten::where", "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    ),
}  # fmt: skip
"""Operations summed per kind in ``profile``; everything else is ``other``."""


def profile_once(data: str, instances: int, dtype: str, what: str, reference: str) -> dict:
    """Self CPU time per kind of operation (and the top operations) of one training loop
    (``fit``) or one scoring pass (after a warm-up pass) in ``dtype``."""
    torch.set_num_threads(1)
    from torch.profiler import ProfilerActivity, profile

    examples = load_examples(DataSpec(data, sample=instances, seed=1))
    profiled = []

    def under_profiler(call):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            value = call()
        profiled.append(profiler)
        return value

    if what == "train":
        import repmatch.training as training

        fit = training.fit
        training.fit = lambda *a, **k: under_profiler(lambda: fit(*a, **k))
        config = TrainConfig(dtype=dtype)
        out = f"{reference}-profiled-{dtype}"
        training.train_adapter(examples, config, out, overwrite=True, progress=False, device="cpu")
    else:
        from repmatch.adapters import load_adapter
        from repmatch.scoring import InstanceScorer, ScoreConfig

        scorer = InstanceScorer(load_adapter(reference), ScoreConfig(dtype=dtype), device="cpu")
        scorer.score(examples.select(range(min(64, instances))))  # warm-up
        under_profiler(lambda: scorer.score(examples))
    by_op = {e.key: e.self_cpu_time_total / 1e6 for e in profiled[0].key_averages()}
    kinds = {kind: sum(by_op.get(op, 0.0) for op in ops) for kind, ops in KINDS.items()}
    kinds["other"] = sum(by_op.values()) - sum(kinds.values())
    top = sorted(by_op.items(), key=lambda item: -item[1])[:15]
    return {"seconds_by_kind": kinds, "total": sum(by_op.values()), "top": dict(top)}


def profile_all(args: argparse.Namespace) -> dict:
    reference = str(Path(args.work) / "adapter-float32-seed0")
    if not Path(reference).is_dir():
        raise SystemExit(f"no adapter at {reference}: run `bench_precision.py train` first")
    result = {}
    for what, dtype in itertools.product(("train", "score"), DTYPES):
        run = fresh(profile_once, args.data, args.instances, dtype, what, reference)
        result[f"{what}-{dtype}"] = run
        shares = ", ".join(
            f"{kind} {seconds:.2f} s ({seconds / run['total']:.0%})"
            for kind, seconds in run["seconds_by_kind"].items()
        )
        print(f"profile {what} {dtype:8s}: {run['total']:.2f} s profiled: {shares}")
    return result


def _total(runs: dict, dtype: str, key: str = "cpu_seconds") -> float:
    return sum(run[key] for (_, d), run in runs.items() if d == dtype)


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1) of ``values``."""
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["train", "evaluate", "profile"])
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument(
        "--instances",
        type=int,
        help="training instances (default: train 2000, evaluate 100, profile 400)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="default: train 0 1 2, evaluate 0-4")
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], help="evaluate only")
    parser.add_argument("--model", help="evaluate only: base model (default: the bundled one)")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the evaluate subset")
    parser.add_argument("--work", default="runs/bench-precision")
    parser.add_argument("--out", help="JSON file (default benchmarks/results/precision-WHAT.json)")
    args = parser.parse_args()
    training = args.what == "train"
    args.instances = args.instances or {"train": 2000, "evaluate": 100, "profile": 400}[args.what]
    args.seeds = args.seeds or ([0, 1, 2] if training else [0, 1, 2, 3, 4])
    result = {"load_average_before": load_average(), "instances": args.instances}
    result |= {"train": train, "evaluate": evaluate, "profile": profile_all}[args.what](args)
    result |= {
        "load_average_after": load_average(),
        "threads": 1,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "cores": os.cpu_count(),
    }
    out = Path(args.out or f"benchmarks/results/precision-{args.what}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average before {result['load_average_before']}, after "
          f"{result['load_average_after']}; saved {out}")  # fmt: skip


if __name__ == "__main__":
    main()
