"""Is SST-2 vs SST-5 low because of the label space rather than the texts? (issue 10)

SST-5 with its neutral class dropped and the rest mapped to SST-2's two classes (very negative
and negative -> 0, positive and very positive -> 1) is trained exactly as the SST-2 and SST-5
adapters of ``experiments/dataset_similarity_settings.py`` (default setting, same sample size and
seeds) and compared with them, seed s against seed t != s as in ``repmatch datasets``.

    python experiments/sst5_binarised.py --settings ../runs/dss/default \
        --summary results/sst5-binarised.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from options import ExperimentOptions, add_arguments, size

from repmatch.compare import compare_adapters
from repmatch.config import TrainConfig
from repmatch.data import DataSpec, as_examples
from repmatch.training import train_or_reuse

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="../runs/dss/default", help="a datasets run")
    parser.add_argument("--sample", type=size, default=1000, help="instances (or all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--summary", default="results/sst5-binarised.json")
    add_arguments(parser)
    args = parser.parse_args()
    options = ExperimentOptions.from_args(args)
    matrix = json.loads((Path(args.settings) / "matrix.json").read_text())
    adapters = matrix["adapters"]
    sst5 = as_examples(DataSpec(str(SHARED / "sst5"), split="train"))
    keep = np.flatnonzero(sst5.labels != 2)
    frame = pd.DataFrame(
        {
            "id": np.asarray(sst5.ids)[keep],
            "text": np.asarray(sst5.texts, dtype=object)[keep],
            "label": (sst5.labels[keep] > 2).astype(int),
        }
    )
    binarised = as_examples(frame, name="sst5-binarised")
    if args.sample is not None:
        rng = np.random.default_rng(0)
        chosen = np.sort(rng.choice(len(binarised), size=args.sample, replace=False))
        binarised = binarised.select(chosen.tolist())
    folder = Path(args.settings) / "adapters" / "sst5-binarised"
    ours = {
        seed: train_or_reuse(
            binarised,
            options.apply(TrainConfig(seed=seed)),
            folder / f"seed{seed}",
            progress=False,
            device=options.device,
        )
        for seed in args.seeds
    }
    result = {
        "sample": args.sample,
        "seeds": args.seeds,
        "options": options.record(),
        "pairs": {},
    }
    for other in ("sst2/train", "sst5/train"):
        scores = [
            compare_adapters(ours[s], adapters[other][str(t)]).score
            for s, t in itertools.permutations(args.seeds, 2)
        ]
        result["pairs"][other] = {"mean": float(np.mean(scores)), "each": scores}
        print(f"sst5-binarised vs {other}: {np.mean(scores):.4f}")
    Path(args.summary).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
