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

import logging
import random
from pathlib import Path

import numpy as np
import pandas as pd

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
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in tasks.items():
        paths[name] = folder / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    outliers = size // 20
    inliers = size // 2 - outliers
    salted = pd.concat(
        [_sentiment(_MOVIE_TEMPLATES, inliers, rng), _topics(outliers, rng)], ignore_index=True
    )
    salted["outlier"] = [False] * inliers + [True] * outliers
    salted.to_csv(folder / "movies_salted.csv", index=False)
    paths["movies_salted"] = folder / "movies_salted.csv"
    return paths


def run_demo(
    out_dir: str | Path = "repmatch-demo",
    *,
    size: int = 400,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Generate the tasks (``size`` instances each, see :func:`generate_tasks`), build the
    similarity matrix, score the salted instances; print what was found.

    Returns ``similarity`` (task name -> RepMatch against ``movies``), ``sentiment_first``
    (whether ``restaurants`` scored highest), ``outliers`` (how many were salted in), ``caught``
    (how many of them are among that many lowest scores) and ``chance`` (the expected count for
    a random ranking).
    """
    if size < 40:
        raise RepmatchError(f"the demo needs size >= 40 (2 outliers to find), got {size}")
    out = Path(out_dir)
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
    table.assign(outlier=outlier).to_csv(out / "instance-scores.csv", index=False)
    print(f"outputs in {out}/ (similarity/matrix.png, instance-scores.csv)")
    return {
        "similarity": scores,
        "sentiment_first": bool(sentiment_first),
        "outliers": outliers,
        "caught": caught,
        "chance": chance,
    }
