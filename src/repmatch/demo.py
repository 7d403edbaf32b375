"""``repmatch demo``: the whole pipeline on generated tasks whose relations are known in advance.

Four small text classification tasks are generated from templates:

- ``movies``: sentiment of short film reviews (positive / negative words decide the label);
- ``restaurants``: the same sentiment task, with different sentences and vocabulary;
- ``topics``: which of two topics a neutral sentence is about, a different task;
- ``shuffled``: the ``movies`` sentences with their labels shuffled, no task at all.

The planted ordering is RepMatch(movies, restaurants) > RepMatch(movies, topics) and
RepMatch(movies, shuffled). Then every instance of a ``movies`` set salted with ``topics``
sentences (a tenth of it) is scored against the ``movies`` adapter: the salted-in instances
should rank low.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd

from repmatch.artifacts import atomic_path, exclusive_output, output_set, run_record, write_json
from repmatch.data import DataSpec, load_examples
from repmatch.errors import RepmatchError
from repmatch.scoring import ScoreConfig, score_instances
from repmatch.similarity import dataset_similarity
from repmatch.training import TrainConfig

logger = logging.getLogger(__name__)

_POSITIVE = ["wonderful", "brilliant", "delightful", "excellent", "superb", "charming", "great"]
_NEGATIVE = ["terrible", "awful", "dreadful", "boring", "horrible", "dull", "poor"]
_MOVIE_TEMPLATES = [
    "the film was {w} from start to finish .",
    "a {w} movie with a {w} cast .",
    "i found the acting {w} and the plot {w} .",
    "{w} direction , {w} script .",
    "overall a {w} experience at the cinema .",
]
_RESTAURANT_TEMPLATES = [
    "our dinner here was {w} tonight",
    "The waiter was {w} and the soup was {w}",
    "{w} pasta, {w} service, we will remember it",
    "honestly the dessert tasted {w}",
    "A {w} place for lunch with friends",
]
_TOPICS = {
    0: ["the match", "the striker", "the coach", "the league", "the final whistle", "the goal"],
    1: ["the budget", "the senate", "the election", "the minister", "the new law", "the vote"],
}
_TOPIC_TEMPLATES = [
    "{s} was discussed on the radio this morning .",
    "people talked about {s} all week .",
    "a report on {s} came out yesterday .",
    "nobody expected {s} to be in the news again .",
]


def _sentiment(templates: list[str], n: int, rng: random.Random) -> pd.DataFrame:
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        words = _POSITIVE if label else _NEGATIVE
        template = rng.choice(templates)
        text = template.replace("{w}", "{}").format(
            *(rng.choice(words) for _ in range(template.count("{w}")))
        )
        rows.append({"text": text, "label": label})
    return pd.DataFrame(rows)


def _topics(n: int, rng: random.Random) -> pd.DataFrame:
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        text = rng.choice(_TOPIC_TEMPLATES).format(s=rng.choice(_TOPICS[label]))
        rows.append({"text": text, "label": label})
    return pd.DataFrame(rows)


def generate_tasks(folder: Path, *, size: int = 400, seed: int = 0) -> dict[str, Path]:
    """Write the four demo tasks (``size`` rows each) and ``movies_salted`` (``size // 2`` rows,
    a tenth of them ``topics`` sentences, marked in its ``outlier`` column) as CSV files; returns
    name -> path."""
    rng = random.Random(seed)
    movies = _sentiment(_MOVIE_TEMPLATES, size, rng)
    shuffled = movies.assign(label=movies["label"].sample(frac=1, random_state=seed).to_numpy())
    tasks = {
        "movies": movies,
        "restaurants": _sentiment(_RESTAURANT_TEMPLATES, size, rng),
        "topics": _topics(size, rng),
        "shuffled": shuffled,
    }
    outliers = size // 20
    inliers = size // 2 - outliers
    salted = pd.concat(
        [_sentiment(_MOVIE_TEMPLATES, inliers, rng), _topics(outliers, rng)], ignore_index=True
    )
    salted["outlier"] = [False] * inliers + [True] * outliers
    tasks["movies_salted"] = salted
    paths = {}
    for name, frame in tasks.items():
        paths[name] = folder / f"{name}.csv"
        with atomic_path(paths[name]) as temporary:
            frame.to_csv(temporary, index=False)
    return paths


RECORD_FILE = "demo.json"
"""The demo's record in its output folder: tells a demo folder from a folder of other files."""


def write_demo_record(out: Path, **fields: object) -> None:
    """Mark ``out`` as a demo folder (what :func:`run_demo` writes last, with its figures)."""
    write_json(out / RECORD_FILE, run_record("demo", **fields))


def _is_demo(out: Path) -> bool:
    try:
        record = json.loads((out / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == run_record("demo")["format"]


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse a file, a folder of other files, and an earlier demo unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise RepmatchError(f"output {out} is a file; name a folder for the demo", field="out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not _is_demo(out):
        raise RepmatchError(
            f"output folder {out} is not empty and holds no demo (no {RECORD_FILE}); refusing "
            "to write over its files even with overwrite: choose another folder",
            field="out",
        )
    if not overwrite:
        raise RepmatchError(
            f"{out} holds an earlier demo; set overwrite to replace it", field="overwrite"
        )


def run_demo(
    out_dir: str | Path = "repmatch-demo",
    *,
    size: int = 400,
    overwrite: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Generate the tasks (``size`` instances each, see :func:`generate_tasks`), build the
    similarity matrix, score the salted instances; print what was found.

    ``out_dir`` must be new, empty, or (with ``overwrite``) the folder of an earlier demo.
    Returns ``similarity`` (task name -> RepMatch against ``movies``), ``sentiment_first``
    (whether ``restaurants`` scored highest), ``outliers`` (how many were salted in), ``caught``
    (how many of them are among that many lowest scores) and ``chance`` (the expected count for
    a random ranking).

    The demo is written in a folder staged beside ``out_dir``, one writer at a time, and swapped
    into place once whole (:func:`~repmatch.artifacts.output_set`): a run that fails or is killed
    leaves the earlier demo or nothing, and the next run removes what a killed one left.
    """
    if size < 40:
        raise RepmatchError(f"the demo needs size >= 40 (2 outliers to find), got {size}")
    out = Path(out_dir)
    with exclusive_output(out):
        _check_output(out, overwrite)
        with output_set(out) as outputs:
            staged = outputs.path(out)
            result = _run_demo(staged, size=size, progress=progress, device=device)
            _relocate_records(staged, out)
    print(f"outputs in {out}/ (similarity/matrix.png, instance-scores.csv)")
    return result


def _relocate_records(staged: Path, out: Path) -> None:
    """Point the paths in the JSON records under ``staged`` (data files, adapter folders) to
    where they will be once ``staged`` is committed as ``out``."""
    moves = {str(staged): str(out), str(staged.resolve()): str(out.resolve())}

    def moved(value: object) -> object:
        if isinstance(value, str):
            for old, new in moves.items():
                if value == old or value.startswith(old + os.sep):
                    return new + value[len(old) :]
            return value
        if isinstance(value, list):
            return [moved(item) for item in value]
        if isinstance(value, dict):
            return {key: moved(item) for key, item in value.items()}
        return value

    for path in staged.rglob("*.json"):
        record = json.loads(path.read_text())
        if moved(record) != record:
            write_json(path, moved(record))


def _run_demo(out: Path, *, size: int, progress: bool, device: str | None) -> dict:
    paths = generate_tasks(out / "data", size=size)
    config = TrainConfig(epochs=2, rank=4, lr=1e-3, batch_size=16)
    names = ["movies", "restaurants", "topics", "shuffled"]
    matrix = dataset_similarity(
        [DataSpec(str(paths[name])) for name in names],
        config,
        out / "similarity",
        progress=progress,
        device=device,
    )
    scores = {name: float(value) for name, value in zip(matrix.names, matrix.mean[0], strict=True)}
    print("RepMatch of 'movies' (sentiment) against each task:")
    for name in names[1:]:
        print(f"  {name:<12} {scores[name]:.3f}")
    sentiment_first = scores["restaurants"] > max(scores["topics"], scores["shuffled"])
    print(
        "  expected: restaurants (same task, other sentences) highest -> "
        + ("found" if sentiment_first else "NOT found")
    )

    reference = matrix.adapters["movies"][config.seed]
    salted = load_examples(DataSpec(str(paths["movies_salted"])))
    table = score_instances(
        salted,
        reference,
        ScoreConfig(rank=4, seeds=(0, 1, 2)),
        progress=progress,
        device=device,
    )
    outlier = pd.read_csv(paths["movies_salted"])["outlier"].to_numpy()
    outliers = int(outlier.sum())
    order = np.argsort(table["score"].to_numpy())
    caught = int(outlier[order[:outliers]].sum())
    chance = outliers * outliers / len(outlier)
    print(
        f"Instance scores ({len(outlier)} 'movies' instances, {outliers} of them 'topics' "
        f"sentences): {caught} of the {outliers} lowest-scoring are the salted-in topic "
        f"sentences (chance: {chance:.1f})."
    )
    with atomic_path(out / "instance-scores.csv") as temporary:
        table.assign(outlier=outlier).to_csv(temporary, index=False)
    result = {
        "similarity": scores,
        "sentiment_first": bool(sentiment_first),
        "outliers": outliers,
        "caught": caught,
        "chance": chance,
    }
    write_demo_record(out, **result)
    return result
