"""Extractive QA (SQuAD v1.1) as a task kind: reading the question/context/answers columns,
character spans to tokens, the truncation policy, training and scoring a span head (the engine
against the literal loop), predictions and the SQuAD metrics on hand-checked examples, and
splitting a dataset by article."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import missing
from repmatch.adapters import load_adapter
from repmatch.batching import EncodedExamples
from repmatch.data import DataSpec, as_examples, load_examples
from repmatch.data.qa import split_by_article
from repmatch.errors import RepmatchError
from repmatch.literal_loop import LiteralLoop
from repmatch.models import BUNDLED_MODEL, load_tokenizer
from repmatch.scoring import ScoreConfig, score_instances
from repmatch.tasks import Classification, ExtractiveQA, token_span
from repmatch.training import TrainConfig, train_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QA = ExtractiveQA()
WORDS = "river city king stone bridge market north winter castle harbor forest valley tower".split()


def _rows(n: int, seed: int = 0) -> list[dict]:
    """SQuAD-style rows: a context of 8-30 random words, the answer one or two of them."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 30))]
        i, size = rng.randrange(1, len(words) - 2), rng.randint(1, 2)
        context, answer = " ".join(words), " ".join(words[i : i + size])
        start = len(" ".join(words[:i])) + 1
        rows.append(
            {
                "id": f"q{k}",
                "question": f"what follows {words[i - 1]}?",
                "context": context,
                "answers": {"text": [answer, words[i]], "answer_start": [start, start]},
            }
        )
    return rows


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl.gz"
    pd.DataFrame(_rows(24)).to_json(path, orient="records", lines=True, compression="gzip")
    return str(path)


@pytest.fixture(scope="module")
def qa_model(tiny_model) -> str:
    """A random 2-layer BERT, hidden 64 with 4 heads and a wide init (instances differ)."""
    return tiny_model("bert", hidden=64, seed=0, num_attention_heads=4, initializer_range=0.2)


@pytest.fixture(scope="module")
def qa_reference(qa_model, qa_file, tmp_path_factory) -> str:
    config = TrainConfig(model=qa_model, rank=4, epochs=2, batch_size=8, lr=1e-2)
    folder = tmp_path_factory.mktemp("qa-ref") / "adapter"
    return str(train_adapter(DataSpec(qa_file), config, folder, progress=False))


# --------------------------------------------------------------------------------------------
# Reading


def test_reads_squad_rows_from_jsonl_and_dataframe(qa_file):
    examples = load_examples(DataSpec(qa_file))
    assert examples.task == "extractive-qa"
    assert examples.columns == {
        "text": "question",
        "text_pair": "context",
        "label": "answers",
        "id": "id",
    }
    rows = _rows(24)
    assert examples.ids == [row["id"] for row in rows]
    assert examples.texts[0] == rows[0]["question"]  # question first, context second
    assert examples.text_pairs[0] == rows[0]["context"]
    assert examples.answers[3] == rows[3]["answers"]
    assert examples.labels.shape == (24, 2) and examples.labels.dtype == np.int64
    for n, (start, end) in enumerate(examples.labels.tolist()):  # the first answer's span
        assert examples.text_pairs[n][start:end] == rows[n]["answers"]["text"][0]
    assert examples.num_labels == 2 and examples.label_names is None
    in_memory = as_examples(pd.DataFrame(rows), name="qa")
    assert in_memory.answers == examples.answers
    assert np.array_equal(in_memory.labels, examples.labels)
    assert in_memory.fingerprint() == examples.fingerprint()
    import datasets

    dataset = datasets.Dataset.from_list(rows)  # answers as an Arrow struct of lists
    assert as_examples(dataset).fingerprint() == examples.fingerprint()
    subset = examples.select([5, 2])
    assert subset.answers == [examples.answers[5], examples.answers[2]]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_answers_round_trip_through_files(qa_file, tmp_path, fmt):
    """Subsets written back (an answers column of dicts; JSON text in csv) read back the same."""
    examples = load_examples(DataSpec(qa_file))
    frame = pd.DataFrame(
        {
            "id": examples.ids,
            "question": examples.texts,
            "context": examples.text_pairs,
            "answers": examples.answers,
        }
    )
    path = tmp_path / f"subset.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.assign(answers=[json.dumps(a) for a in examples.answers]).to_csv(path, index=False)
    back = load_examples(DataSpec(str(path)))
    assert back.answers == examples.answers
    assert back.fingerprint() == examples.fingerprint()


def test_task_set_explicitly_with_other_column_names():
    rows = _rows(3)
    frame = pd.DataFrame(
        {
            "query": [r["question"] for r in rows],
            "passage": [r["context"] for r in rows],
            "gold": [r["answers"] for r in rows],
        }
    )
    examples = as_examples(frame, task="extractive-qa", label_column="gold")
    assert examples.columns["label"] == "gold" and examples.ids == [0, 1, 2]
    with pytest.raises(RepmatchError, match="labels filter picks classes.*extractive-qa"):
        as_examples(frame, task="extractive-qa", label_column="gold", labels=("x",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(answers=None), "answers of id 'q1' .* are missing"),
        (
            lambda r: r.update(answers={"text": [], "answer_start": []}),
            "answers of id 'q1' .* hold 0 texts",
        ),
        (
            lambda r: r["answers"]["answer_start"].__setitem__(0, 0),
            r"id 'q1' .*is not at answer_start 0 of its context",
        ),
        (lambda r: r.update(context="  "), r"empty or only whitespace .*id 'q1'"),
        (lambda r: r.update(answers={"text": ["a"]}), r"id 'q1' .*must be a mapping"),
    ],
    ids=["missing", "empty", "misplaced", "blank-context", "no-starts"],
)
def test_bad_answers_name_the_id(change, message):
    rows = _rows(3)
    change(rows[1])
    with pytest.raises(RepmatchError, match=message) as caught:
        as_examples(pd.DataFrame(rows))
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Character spans to tokens, truncation


def test_token_span_by_hand():
    # [CLS] who ? [SEP] denver broncos won [SEP]: context "Denver Broncos won."
    offsets = [(0, 0), (0, 3), (3, 4), (0, 0), (0, 6), (7, 14), (15, 18), (0, 0)]
    sequence_ids = [None, 0, 0, None, 1, 1, 1, None]
    assert token_span(offsets, sequence_ids, 7, 14) == (5, 5)  # "Broncos"
    assert token_span(offsets, sequence_ids, 0, 14) == (4, 5)  # "Denver Broncos"
    assert token_span(offsets, sequence_ids, 2, 10) == (4, 5)  # inside tokens: widened
    assert token_span(offsets, sequence_ids, 15, 19) is None  # "won." reaches past the kept "won"


def test_spans_become_tokens_through_the_tokenizer():
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    context = "The Denver Broncos beat the Carolina Panthers 24-10 in Santa Clara."
    frame = pd.DataFrame(
        {
            "question": ["Who won?", "Where?"],
            "context": [context, context],
            "answers": [
                {"text": ["Denver Broncos"], "answer_start": [4]},
                {"text": ["Santa Clara"], "answer_start": [55]},
            ],
        }
    )
    examples = as_examples(frame)
    encoded = EncodedExamples(tokenizer, examples, max_length=64)
    spans = QA.loss_targets(examples, encoded)
    ids = encoded.features["input_ids"]
    words = [tokenizer.decode(ids[n][s : e + 1]) for n, (s, e) in enumerate(spans.tolist())]
    assert words == ["denver broncos", "santa clara"]


def test_answers_cut_away_are_labelled_at_position_0(qa_file, caplog):
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    examples = load_examples(DataSpec(qa_file))
    encoded = EncodedExamples(tokenizer, examples, max_length=14)
    assert encoded.lengths.max() == 14  # the context is cut, the question kept
    with caplog.at_level(logging.WARNING, logger="repmatch.tasks"):
        spans = QA.loss_targets(examples, encoded).numpy()
    full = QA.loss_targets(examples, EncodedExamples(tokenizer, examples, max_length=128)).numpy()
    cut = full[:, 1] >= encoded.lengths - 1  # the answer's last token was not kept
    assert 0 < cut.sum() < len(examples)
    assert (spans[cut] == 0).all()
    assert np.array_equal(spans[~cut], full[~cut])
    assert f"{cut.sum()} of 24 answers" in caplog.text and "position 0" in caplog.text


def test_question_longer_than_max_length_is_refused(qa_file):
    examples = load_examples(DataSpec(qa_file))
    with pytest.raises(RepmatchError, match="max_length 5 leaves no room for the context"):
        EncodedExamples(load_tokenizer(BUNDLED_MODEL), examples, max_length=5)


# --------------------------------------------------------------------------------------------
# Loss, predictions, metrics


def test_loss_is_the_mean_of_start_and_end_cross_entropy_over_unpadded_tokens():
    start = torch.tensor([[1.0, 2.0, 0.5, 9.0]])
    end = torch.tensor([[0.0, 1.0, 3.0, 9.0]])
    output = type("Output", (), {"start_logits": start, "end_logits": end})()
    batch = {"attention_mask": torch.tensor([[1, 1, 1, 0]])}  # the 9s are padding
    logits = QA.logits(output, batch)
    loss = QA.loss(logits, torch.tensor([[1, 2]]))
    expected = -(torch.log_softmax(start[0, :3], 0)[1] + torch.log_softmax(end[0, :3], 0)[2]) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_predictions_pick_the_best_valid_span():
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    context = "alpha beta gamma delta epsilon"
    frame = pd.DataFrame(
        {
            "question": ["which?"],
            "context": [context],
            "answers": [{"text": ["beta"], "answer_start": [6]}],
        }
    )
    examples = as_examples(frame)
    encoded = EncodedExamples(tokenizer, examples, max_length=32)
    assert encoded.sequence_ids[0] == [None, 0, 0, None, 1, 1, 1, 1, 1, None]
    # tokens 4..8: alpha beta gamma delta epsilon
    start, end = torch.zeros(1, 10), torch.zeros(1, 10)
    start[0, 1], end[0, 1] = 50.0, 50.0  # best overall, but in the question
    start[0, 8], end[0, 4] = 20.0, 20.0  # best in the context, but ends before it starts
    start[0, 4], end[0, 8] = -30.0, -30.0  # so (4, 4) and (8, 8) score -10
    start[0, 5], end[0, 6], end[0, 7] = 8.0, 7.0, 7.5  # (5, 6): 15; (5, 7): 15.5
    logits = torch.stack([start, end], dim=-1)
    assert QA.predictions(logits, encoded, [0]).tolist() == ["beta gamma delta"]
    short = ExtractiveQA()
    short.max_answer_tokens = 2  # (5, 7) spans 3 tokens
    assert short.predictions(logits, encoded, [0]).tolist() == ["beta gamma"]
    with pytest.raises(TypeError, match="need the encoded examples"):
        QA.predictions(logits)
    # classification accepts the same call
    classes = Classification().predictions(torch.tensor([[0.1, 0.9]]), encoded, [0])
    assert classes.tolist() == [1]


def test_squad_metrics_by_hand():
    predictions = np.array(["the Denver Broncos", "Carolina", "Santa Clara, California", "1976"])
    references = [
        ["Denver Broncos"],  # EM 1 (articles dropped), F1 1
        ["Carolina Panthers", "Panthers"],  # EM 0; F1: p 1, r 1/2 -> 2/3 (vs 0 for "Panthers")
        ["Santa Clara"],  # EM 0; F1: p 2/3, r 1 -> 0.8 (punctuation dropped)
        ["in 1975"],  # EM 0, F1 0
    ]
    metrics = QA.metrics(predictions, references)
    assert metrics["exact_match"] == pytest.approx(100 * 1 / 4)
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0.8 + 0) / 4, rel=1e-6)
    assert QA.metrics(np.array(["PANTHERS!"]), [["Carolina Panthers", "the panthers"]]) == {
        "exact_match": 100.0,
        "f1": 100.0,
    }


# --------------------------------------------------------------------------------------------
# Train, score, engine against the literal loop


def test_train_saves_a_span_head_and_score_reads_it(qa_reference, qa_file):
    adapter = load_adapter(qa_reference)
    assert adapter.task == "extractive-qa" and adapter.num_labels == 2
    assert set(adapter.head) == {"qa_outputs.weight", "qa_outputs.bias"}
    assert adapter.head["qa_outputs.weight"].shape == (2, 64)
    assert np.isfinite(adapter.record["epoch_losses"]).all()
    examples = load_examples(DataSpec(qa_file))
    scores = score_instances(examples, qa_reference, ScoreConfig(batch_size=8), progress=False)
    assert scores["id"].tolist() == examples.ids
    assert [list(v) for v in scores["label"]] == QA.references(examples)
    assert scores["score"].between(0, 1).all() and scores["score"].std() > 0


def test_head_frozen_at_its_seed_unless_trained_and_compare(qa_model, qa_file, tmp_path):
    from repmatch.compare import compare_adapters
    from repmatch.models import load_classifier

    seeded = load_classifier(qa_model, num_labels=2, head_seed=42, task=QA).qa_outputs.weight
    heads = {}
    for train_head in (False, True):
        config = TrainConfig(model=qa_model, rank=2, batch_size=8, lr=1e-2, train_head=train_head)
        out = tmp_path / f"head-{train_head}"
        train_adapter(DataSpec(qa_file), config, out, progress=False)
        heads[train_head] = load_adapter(out).head["qa_outputs.weight"]
    assert torch.equal(heads[False], seeded)
    assert not torch.allclose(heads[True], seeded)
    score = compare_adapters(tmp_path / "head-False", tmp_path / "head-True").score
    assert 0 < score <= 1


def test_cli_trains_and_scores_qa(qa_model, qa_file, tmp_path, capsys):
    from repmatch.cli import main

    adapter, scores = tmp_path / "adapter", tmp_path / "scores.parquet"
    common = ["--task", "extractive-qa", "--limit", "8", "--max-length", "64", "--quiet"]
    assert main(["train", qa_file, *common, "--model", qa_model, "--out", str(adapter)]) == 0
    assert main(["score", qa_file, *common, "--reference", str(adapter), "--out", str(scores)]) == 0
    frame = pd.read_parquet(scores)
    assert frame["id"].tolist() == [f"q{k}" for k in range(8)]
    assert "scored 8 instances" in capsys.readouterr().out


def test_classification_reference_refuses_qa_data(trained_adapter, qa_file):
    with pytest.raises(RepmatchError, match="is extractive-qa data but the reference"):
        score_instances(DataSpec(qa_file), trained_adapter(), progress=False)


@pytest.mark.parametrize(
    "settings",
    [{"rank": 1}, {"rank": 2, "steps": 2, "lr": 1e-2}, {"rank": 1, "max_length": 16}],
    ids=["rank1", "rank2-steps2", "rank1-answers-cut"],
)
def test_engine_matches_literal_loop(settings, qa_reference, qa_file):
    examples = load_examples(DataSpec(qa_file)).select(range(10))
    if "max_length" in settings:  # some answers are cut away, some kept
        encoded = EncodedExamples(
            load_tokenizer(BUNDLED_MODEL), examples, max_length=settings["max_length"]
        )
        cut = (QA.loss_targets(examples, encoded) == 0).all(dim=1)
        assert 0 < int(cut.sum()) < len(examples)
    frame = score_instances(
        examples, qa_reference, ScoreConfig(batch_size=4, **settings), progress=False, device="cpu"
    )
    loop = LiteralLoop(qa_reference, **settings)
    expected = loop.layer_scores(examples)
    layers = frame[[c for c in frame.columns if c.startswith("layer_")]].to_numpy()
    assert np.abs(layers - expected).max() <= 1e-4
    assert np.ptp(expected.mean(axis=1)) > 1e-2  # the instances are told apart at all


# --------------------------------------------------------------------------------------------
# Splitting by article


def test_split_by_paragraphs_keeps_contexts_apart():
    frame = pd.DataFrame({"context": list("aaabbcccdd"), "question": [f"q{k}" for k in range(10)]})
    # the evaluation part is the shortest tail of whole paragraphs holding the fraction of rows
    pool, evaluation = split_by_article(frame, 0.3)  # 3 rows wanted: "cccdd"
    assert pool["context"].tolist() == list("aaabb")
    assert evaluation["context"].tolist() == list("cccdd")
    assert evaluation["question"].tolist() == [f"q{k}" for k in range(5, 10)]
    pool, evaluation = split_by_article(frame, 0.2)  # 2 rows wanted: "dd"
    assert pool["context"].tolist() == list("aaabbccc")
    assert evaluation["context"].tolist() == list("dd")
    pool, evaluation = split_by_article(frame, 0.2, eval_from=3)  # a cut chosen by reading
    assert pool["context"].tolist() == list("aaa")
    with pytest.raises(RepmatchError, match="eval_from 4 does not start a context"):
        split_by_article(frame, 0.2, eval_from=4)
    with pytest.raises(RepmatchError, match="not consecutive"):
        split_by_article(pd.DataFrame({"context": list("aba")}), 0.3)
    with pytest.raises(RepmatchError, match="eval_fraction"):
        split_by_article(frame, 1.0)


def test_split_by_title_when_there_is_one():
    frame = pd.DataFrame({"title": list("xxxyyz"), "context": list("abcdef")})
    pool, evaluation = split_by_article(frame, 0.3)
    assert pool["title"].tolist() == list("xxx") and evaluation["title"].tolist() == list("yyz")


def test_squad_validation_reads_and_splits(shared_data):
    path = shared_data / "squad" / "validation.jsonl.gz"
    if not path.is_file():
        missing(f"SQuAD is absent from {shared_data}")
    examples = load_examples(DataSpec(str(path), limit=50))
    assert examples.task == "extractive-qa" and examples.answers[0]["text"][0] == "Denver Broncos"
    frame = pd.read_json(path, lines=True)
    pool, evaluation = split_by_article(frame, 0.2)
    assert len(pool) + len(evaluation) == len(frame) == 10570
    assert not set(pool["context"]) & set(evaluation["context"])


def test_balanced_selection_of_qa_scores_names_answers(qa_reference, qa_file, tmp_path, capsys):
    """Fourth pass: ``select --balanced`` of QA scores asked whether it was a regression task."""
    from repmatch.cli import main

    scores = tmp_path / "s.parquet"
    argv = ["score", qa_file, "--reference", qa_reference, "--quiet", "--out", str(scores)]
    assert main(argv) == 0
    argv = ["select", str(scores), "--top", "5", "--balanced", "--out", str(tmp_path / "b.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "answers" in err and "regression" not in err
