"""Instance scoring: the authors' literal loop vs repmatch's batched engine, in one run.

Both score the same SST-2 instances against the same reference adapter (LoRA on query and value
like the reference script, rank 1, alpha 4, one AdamW step at lr 1e-3). The literal loop uses the
reference script's own settings: model and optimizer reloaded from a checkpoint on disk and the
seed reset before every instance, batch size 1, inputs padded to 512 tokens, a full SVD of every
ΔW and the Grassmann grid filled by a Python double loop, all in float32 like the script. Dropout
is off in both, so the scores can be compared (the reference script leaves it on, which makes its
scores irreproducible).

Each side runs in a fresh process of its own. Throughput counts the per-instance work only;
one-time set-up (loading the model, drawing the LoRA init) is timed and printed separately. Prints
both throughputs, their ratio and the largest score difference, and saves them as JSON.

    python benchmarks/bench_instance_scoring.py                      # bundled model
    python benchmarks/bench_instance_scoring.py --random-bert-base \
        --out benchmarks/results/instance-scoring-bert-base.json     # the reference's architecture
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

from repmatch.adapters import load_adapter
from repmatch.config import BUNDLED_MODEL
from repmatch.data import DataSpec, load_examples
from repmatch.literal_loop import LiteralLoop
from repmatch.models import load_tokenizer, resolve_device
from repmatch.scoring import InstanceScorer, ScoreConfig
from repmatch.training import TrainConfig, train_or_reuse


def random_bert_base(folder: Path) -> str:
    """A BERT-base-sized encoder with random weights and the bundled (uncased BERT) tokenizer."""
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        BertModel(BertConfig()).save_pretrained(folder)  # BertConfig() is bert-base-uncased's
        load_tokenizer(BUNDLED_MODEL).save_pretrained(folder)
    return str(folder.resolve())


def time_literal(reference, instances, config: ScoreConfig, args, device: str) -> dict:
    """The reset-and-train loop over every instance, once."""
    started = time.perf_counter()
    loop = LiteralLoop(
        reference,
        rank=config.rank,
        alpha=config.alpha,
        lr=config.lr,
        pad_to=512,
        checkpoint_dir=Path(args.work) / "literal-checkpoint",
        device=device,
        dtype=torch.float32,  # the reference script's: float32 LoRA weights, float32 SVD
    )
    setup = time.perf_counter() - started
    started = time.perf_counter()
    scores = loop.scores(instances)
    return {"scores": scores, "seconds": time.perf_counter() - started, "setup_seconds": setup}


def time_engine(reference, instances, config: ScoreConfig, args, device: str) -> dict:
    """The batched engine over every instance, ``args.engine_repeats`` times; median time."""
    started = time.perf_counter()
    scorer = InstanceScorer(load_adapter(reference), config, device=device)
    setup = time.perf_counter() - started
    timings = []
    for _ in range(args.engine_repeats):
        started = time.perf_counter()
        scores = scorer.score(instances).mean(dim=2)[0].double().numpy()
        timings.append(time.perf_counter() - started)
    return {
        "scores": scores,
        "seconds": sorted(timings)[len(timings) // 2],
        "all_seconds": timings,
        "setup_seconds": setup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--instances", type=int, default=64)
    parser.add_argument("--reference-size", type=int, default=2000)
    parser.add_argument("--work", default="runs/bench")
    parser.add_argument("--engine-repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="engine batch size (most)")
    parser.add_argument(
        "--targets",
        nargs="+",
        default=["query", "value"],
        help="LoRA targets of the reference adapter and of the scoring (the reference script's: "
        "query value)",
    )
    parser.add_argument(
        "--random-bert-base",
        action="store_true",
        help="time the reference script's architecture (bert-base-uncased: 12 layers, hidden "
        "768, its vocabulary) with random weights instead of the bundled model; its weights "
        "cannot be downloaded here, and the timings do not depend on their values",
    )
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if any), cpu, cuda")
    parser.add_argument("--out", default="benchmarks/results/instance-scoring.json")
    args = parser.parse_args()

    reference_data = load_examples(DataSpec(args.data, sample=args.reference_size))
    device = resolve_device(args.device)
    model = (
        random_bert_base(Path(args.work) / "bert-base-random") if args.random_bert_base else None
    )
    train = TrainConfig(targets=tuple(args.targets), **({"model": model} if model else {}))
    reference = train_or_reuse(
        reference_data,
        train,
        Path(args.work)
        / ("reference-" + ("bert-base-random-" if model else "") + "-".join(args.targets)),
        progress=False,
        device=device,
    )
    instances = load_examples(DataSpec(args.data, sample=args.instances, seed=1))
    config = ScoreConfig(rank=1, lr=1e-3, steps=1, batch_size=args.batch_size)

    # Each side runs in a fresh process: in one process the engine ran ~20 % slower after the
    # literal loop (its 512-token activations leave the allocator in a worse state), and a user's
    # scoring run has a process of its own too.
    sides = {}
    for side, timer in (("literal", time_literal), ("engine", time_engine)):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            sides[side] = pool.submit(
                timer, reference, instances, config, args, str(device)
            ).result()
    literal, engine = sides["literal"], sides["engine"]
    literal_seconds, engine_seconds = literal["seconds"], engine["seconds"]

    result = {
        "instances": len(instances),
        "literal_instances_per_second": len(instances) / literal_seconds,
        "engine_instances_per_second": len(instances) / engine_seconds,
        "speedup": literal_seconds / engine_seconds,
        "max_abs_score_difference": float(abs(literal["scores"] - engine["scores"]).max()),
        "literal_seconds": literal_seconds,
        "engine_seconds_median": engine_seconds,
        "engine_seconds_all": engine["all_seconds"],
        "literal_setup_seconds": literal["setup_seconds"],
        "engine_setup_seconds": engine["setup_seconds"],
        "settings": {
            "rank": 1,
            "lr": 1e-3,
            "steps": 1,
            "literal_pad_to": 512,
            "literal_dtype": "float32",
            "model": "random BERT-base" if model else "bundled",
            "targets": args.targets,
            "engine_batch_size": args.batch_size,
        },
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    print(f"device        : {result['device']}, {result['torch_threads']} CPU threads")
    print(f"literal loop : {result['literal_instances_per_second']:8.2f} instances/s")
    print(f"batched engine: {result['engine_instances_per_second']:8.2f} instances/s")
    print(f"speed-up      : {result['speedup']:8.1f}x")
    print(f"max |score difference|: {result['max_abs_score_difference']:.2e}")
    print(
        f"set-up (once): literal {result['literal_setup_seconds']:.1f} s, "
        f"engine {result['engine_setup_seconds']:.1f} s"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
