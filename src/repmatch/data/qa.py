"""Extractive question answering data (SQuAD v1.1 style): the question, context and answers
columns, the gold answers checked against their contexts, and splitting a dataset by article.

A table is read as extractive QA when the task is set to ``extractive-qa``, or when it has a
question, a context and an ``answers`` column (SQuAD's names; ``text_column``,
``text_pair_column`` and ``label_column`` override them). ``answers`` holds, per row, a mapping
``{"text": [str, ...], "answer_start": [int, ...]}``: a dict in JSON Lines and in-memory tables,
a struct in Parquet and Hugging Face datasets, a JSON string in csv/tsv cells. Every gold answer
must be found in its context at its ``answer_start``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from repmatch.data.columns import ID_COLUMNS, _auto, _explicit, is_missing, preview, read_texts
from repmatch.data.examples import Examples
from repmatch.data.labels import read_ids
from repmatch.data.readers import Table
from repmatch.data.spec import DataSpec, is_int
from repmatch.errors import RepmatchError

TASK: Final = "extractive-qa"
QUESTION_COLUMNS: tuple[str, ...] = ("question", "query")
CONTEXT_COLUMNS: tuple[str, ...] = ("context", "paragraph", "passage")
ANSWERS_COLUMNS: tuple[str, ...] = ("answers",)


def is_qa_table(spec: DataSpec, table: Table) -> bool:
    """Whether ``table`` is read as extractive QA: so set, or question, context and answers
    columns present (with the task left to detection)."""
    if spec.task is not None:
        return spec.task == TASK
    candidates = (QUESTION_COLUMNS, CONTEXT_COLUMNS, ANSWERS_COLUMNS)
    return all(_auto(table, names) is not None for names in candidates)


def choose_qa_columns(spec: DataSpec, table: Table) -> dict[str, str | None]:
    """Question (``text``), context (``text_pair``), answers (``label``) and id columns."""
    chosen: dict[str, str | None] = {}
    for key, field, names in (
        ("text", "text_column", QUESTION_COLUMNS),
        ("text_pair", "text_pair_column", CONTEXT_COLUMNS),
        ("label", "label_column", ANSWERS_COLUMNS),
    ):
        given = getattr(spec, field)
        column = _explicit(table, given, field) if given is not None else _auto(table, names)
        if column is None:
            what = {"text": "question", "text_pair": "context", "label": "answers"}[key]
            raise RepmatchError(
                f"no {what} column found in {table.where} for extractive QA (looked for "
                f"{', '.join(names)}; columns: {preview(table.columns)}); set {field}",
                field=field,
            )
        chosen[key] = column
    if spec.id_column is not None:
        chosen["id"] = _explicit(table, spec.id_column, "id_column")
    else:
        chosen["id"] = _auto(table, ID_COLUMNS, list(chosen.values()))
    used = [c for c in chosen.values() if c is not None]
    if len(set(used)) != len(used):
        raise RepmatchError(
            f"the same column is used twice in {table.where} (question={chosen['text']!r}, "
            f"context={chosen['text_pair']!r}, answers={chosen['label']!r}, id={chosen['id']!r}); "
            "pass distinct columns"
        )
    return chosen


def read_qa(table: Table, spec: DataSpec) -> Examples:
    """The full split as extractive QA :class:`Examples` (see :class:`Examples` for the fields).

    Raises a one-line :class:`RepmatchError` naming the instance id for a missing or blank
    question or context, missing answers, or an answer not at its ``answer_start``.
    """
    columns = choose_qa_columns(spec, table)
    ids = read_ids(table, columns["id"])
    questions = read_texts(table, str(columns["text"]), "text_column", ids)
    contexts = read_texts(table, str(columns["text_pair"]), "text_pair_column", ids)
    answers = read_answers(table, str(columns["label"]), contexts, ids)
    return Examples(
        name=table.name,
        task=TASK,
        texts=questions,
        text_pairs=contexts,
        labels=first_answer_spans(answers),
        ids=ids,
        num_labels=2,
        label_names=None,
        columns=columns,
        answers=answers,
    )


def first_answer_spans(answers: list[dict[str, list]]) -> np.ndarray:
    """Character span [start, end) of every instance's first gold answer: (N, 2) int64."""
    spans = np.zeros((len(answers), 2), dtype=np.int64)
    for n, answer in enumerate(answers):
        start = answer["answer_start"][0]
        spans[n] = start, start + len(answer["text"][0])
    return spans


def read_answers(
    table: Table, column: str, contexts: list[str], ids: list[int] | list[str]
) -> list[dict[str, list]]:
    """The answers column as ``{"text": [str, ...], "answer_start": [int, ...]}`` per row,
    every answer checked to stand at its ``answer_start`` in the row's context."""
    out: list[dict[str, list]] = []
    for row, value in enumerate(table.get(column)):
        where = f"answers of id {ids[row]!r} (column {column!r} in {table.where})"
        answer = _answer_mapping(value, where)
        texts, starts = _as_list(answer["text"]), _as_list(answer["answer_start"])
        if not texts or len(texts) != len(starts):
            raise RepmatchError(
                f"{where} hold {len(texts)} texts and {len(starts)} starts; give every question "
                "at least one answer, with one answer_start per text (unanswerable questions "
                "are not supported)"
            )
        context = contexts[row]
        for text, start in zip(texts, starts, strict=True):
            if not isinstance(text, str) or not text.strip():
                raise RepmatchError(f"{where} include an empty or non-text answer {text!r}")
            if isinstance(start, float) and math.isfinite(start) and start.is_integer():
                start = int(start)
            if not is_int(start) or start < 0:
                raise RepmatchError(
                    f"{where} give answer_start {start!r}; it must be a character offset >= 0"
                )
            found = context[int(start) : int(start) + len(text)]
            if found != text:
                raise RepmatchError(
                    f"{where}: answer {text!r} is not at answer_start {start} of its context "
                    f"(the context has {found!r} there); fix answer_start"
                )
        out.append({"text": [str(t) for t in texts], "answer_start": [int(s) for s in starts]})
    return out


def _answer_mapping(value: object, where: str) -> Mapping:
    """One answers cell as a mapping (JSON text in csv/tsv cells is parsed)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RepmatchError(
                f"{where} are text that is not JSON ({str(value)[:40]!r}); write them as "
                '{"text": [...], "answer_start": [...]}'
            ) from None
    if value is None or (not isinstance(value, Mapping) and is_missing(value)):
        raise RepmatchError(f"{where} are missing; give every question at least one answer")
    if not isinstance(value, Mapping) or not {"text", "answer_start"} <= set(value):
        raise RepmatchError(
            f"{where} must be a mapping {{'text': [...], 'answer_start': [...]}}, got "
            f"{str(value)[:60]!r}"
        )
    return value


def _as_list(value: object) -> list:
    """A list from a list, tuple or NumPy array (Parquet and Arrow give arrays); a scalar: [it]."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [] if value is None else [value]


# --------------------------------------------------------------------------------------------
# Splitting by article


def split_by_article(
    frame: pd.DataFrame,
    eval_fraction: float = 0.2,
    *,
    context_column: str = "context",
    title_column: str = "title",
    eval_from: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split QA rows into a pool and an evaluation part that share no article.

    Articles are the values of ``title_column`` when the table has it. Without it (the SQuAD
    copy in ``shared/data`` has no titles) they are approximated by paragraphs: runs of
    consecutive rows sharing one context. Either way the groups stay in data order and the
    evaluation part is the last groups, from the first group boundary where they hold at least
    ``eval_fraction`` of the rows; with paragraphs as groups the two parts then share at most the
    one article that the cut falls in (SQuAD keeps each article's paragraphs together).
    ``eval_from`` (a row position that starts a group, e.g. an article's first paragraph found by
    reading) puts the cut there instead. Rows keep their columns and order. Returns
    ``(pool, evaluation)``.
    """
    if not 0 < eval_fraction < 1:
        raise RepmatchError(f"eval_fraction must lie in (0, 1), got {eval_fraction!r}")
    key = title_column if title_column in frame.columns else context_column
    if key not in frame.columns:
        raise RepmatchError(
            f"no {title_column!r} or {context_column!r} column to group articles by; columns: "
            f"{preview([str(c) for c in frame.columns])}"
        )
    values = frame[key].tolist()
    starts = [0] + [row for row in range(1, len(values)) if values[row] != values[row - 1]]
    if len({values[start] for start in starts}) != len(starts):
        raise RepmatchError(
            f"rows of one {key} are not consecutive in the data; sort the rows by {key} first"
        )
    if len(starts) < 2:
        raise RepmatchError(f"the data holds one {key} only: nothing to split by article")
    if eval_from is not None:
        if eval_from not in starts[1:]:
            raise RepmatchError(
                f"eval_from {eval_from} does not start a {key} (or is the first row); "
                f"the evaluation part must start where a {key} does"
            )
        return frame.iloc[:eval_from].copy(), frame.iloc[eval_from:].copy()
    wanted = eval_fraction * len(values)
    cut = next((s for s in reversed(starts[1:]) if len(values) - s >= wanted), starts[1])
    return frame.iloc[:cut].copy(), frame.iloc[cut:].copy()
