"""Task kinds as objects: each owns its model class, head size, loss, label checks, the positions
its head reads and its metrics.

The rest of the package asks the task instead of branching on its name, so a new kind (extractive
QA, with a span head reading every position) is one more class here. The names are the values of
:data:`repmatch.data.TASK_KINDS`, as recorded in data specs and adapter records.

Evaluating any task is the same calls (``positions``: the instances in the batch's rows)::

    batch = encoded.batch(positions)
    logits = task.logits(model(**batch), batch)
    predicted = task.predictions(logits, encoded, positions)  # (B,), concatenated over batches
    task.metrics(predicted_in_data_order, task.references(examples))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from repmatch.errors import RepmatchError

logger = logging.getLogger(__name__)


class LabelledExamples(Protocol):
    """What a task reads from examples (:class:`repmatch.data.Examples`): their ``name``, the
    ``ids`` and ``labels`` of the N instances, and for extractive QA every gold ``answers``."""

    name: str
    ids: list
    labels: np.ndarray
    answers: list[dict[str, list]] | None

    def __len__(self) -> int: ...


class Encoding(Protocol):
    """What a task reads from encoded examples (:class:`repmatch.batching.EncodedExamples`,
    which builds them with the task's ``truncation`` and ``keeps_offsets``): per example, every
    token's character ``offsets`` in its own text, its ``sequence_ids`` (0: first text, 1:
    second, None: special) and the ``contexts`` the offsets point into; None where the task
    keeps no offsets."""

    offsets: list[list[tuple[int, int]]] | None
    sequence_ids: list[list[int | None]] | None
    contexts: list[str] | None


class Task:
    """Sequence classification: one text, a class index per instance, cross-entropy."""

    name = "classification"
    problem_type: str | None = "single_label_classification"
    reads_one_position = True
    """The head reads one position per sequence ([CLS] or the last token), not every one."""
    truncation: bool | str = True
    """How the tokenizer cuts inputs longer than max_length (True: the longest text first)."""
    keeps_offsets = False
    """Whether encoding keeps every token's character offsets (to map character spans)."""
    has_classes = True
    """Labels are classes: the labels filter picks them, a class has its own centroid, and data
    is aligned to a head's classes (by name or index)."""

    def model_class(self) -> type[Any]:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def head_size(self, num_labels: int) -> int:
        """Outputs of the head for data with ``num_labels`` classes."""
        return num_labels

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """Cross-entropy on class indices. logits: (N, C); labels: (N,) int64."""
        return nn.functional.cross_entropy(logits, labels, reduction=reduction)

    def label_tensor(self, labels: np.ndarray) -> torch.Tensor:
        """Labels as the tensor the loss takes: (N,) int64."""
        return torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def logits(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the loss and the predictions read from a model's ``output`` on ``batch``: (N, C)."""
        return output.logits

    def loss_targets(self, examples: LabelledExamples, encoded: Encoding) -> torch.Tensor:
        """What the loss compares the logits with, for ``examples`` as ``encoded``: (N,)."""
        return self.label_tensor(examples.labels)

    def references(self, examples: LabelledExamples) -> np.ndarray | list:
        """What :meth:`metrics` compares predictions with, per instance: here the labels (N,)."""
        return examples.labels

    def check_labels(self, examples: LabelledExamples, num_outputs: int) -> None:
        """Raise unless every label of ``examples`` fits a head with ``num_outputs`` outputs."""
        labels, ids, name = examples.labels, examples.ids, examples.name
        bad = np.flatnonzero((labels < 0) | (labels >= num_outputs))
        if len(bad):
            raise RepmatchError(
                f"{len(bad)} labels of {name} are outside the head's {num_outputs} classes "
                f"(e.g. id {ids[bad[0]]} has label {labels[bad[0]]}); "
                "check the label column or the head size"
            )

    def predictions(
        self,
        logits: torch.Tensor,
        encoded: Encoding | None = None,
        positions: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """What the model predicts from its logits: (N,) class indices.

        ``encoded`` and ``positions`` (the instances of the logits' rows) are what extractive QA
        needs to turn spans into text; other tasks accept and ignore them.
        """
        return logits.argmax(dim=-1).cpu().numpy()

    def metrics(self, predictions: np.ndarray, labels: Any) -> dict[str, float]:
        """Accuracy and macro-F1 (scikit-learn)."""
        from sklearn.metrics import accuracy_score, f1_score

        return {
            "accuracy": float(accuracy_score(labels, predictions)),
            "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(self.name)


class Classification(Task):
    """One text per instance, a class per instance (SST-2, SST-5, IMDB)."""


class PairClassification(Task):
    """Two texts per instance (premise/hypothesis), a class per instance (SNLI, MNLI, HANS)."""

    name = "pair-classification"


class Regression(Task):
    """A score per instance (STS-B): one output, mean squared error."""

    name = "regression"
    problem_type = "regression"
    has_classes = False

    def head_size(self, num_labels: int) -> int:
        return 1

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """MSE. logits: (N, 1); labels: (N,) float."""
        return nn.functional.mse_loss(
            logits.squeeze(-1), labels.to(logits.dtype), reduction=reduction
        )

    def label_tensor(self, labels: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(labels), dtype=torch.float32)

    def check_labels(self, examples: LabelledExamples, num_outputs: int) -> None:
        labels, ids, name = examples.labels, examples.ids, examples.name
        if num_outputs != 1:
            raise RepmatchError(
                f"{name} is a regression task: the head needs 1 output, not {num_outputs}"
            )
        bad = np.flatnonzero(~np.isfinite(labels))
        if len(bad):
            raise RepmatchError(
                f"{len(bad)} scores of {name} are not finite (e.g. id {ids[bad[0]]}: "
                f"{labels[bad[0]]}); fix or drop those rows"
            )

    def predictions(
        self,
        logits: torch.Tensor,
        encoded: Encoding | None = None,
        positions: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        return logits.squeeze(-1).float().cpu().numpy()

    def metrics(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Pearson and Spearman correlation (SciPy)."""
        from scipy.stats import pearsonr, spearmanr

        return {
            "pearson": float(pearsonr(predictions, labels)[0]),
            "spearman": float(spearmanr(predictions, labels)[0]),
        }


class ExtractiveQA(Task):
    """A question and a context per instance, the answer a span of the context (SQuAD v1.1).

    The span head (``qa_outputs``) gives a start and an end logit at every token, so the head
    reads every position (no first-position cut, no packing). Inputs are the pair (question,
    context), cut in the context only (``only_second``). Labels are character spans, turned into
    token positions through the tokenizer's offsets (:meth:`loss_targets`); an answer that lies
    beyond ``max_length`` is labelled at position 0 ([CLS]), as the transformers examples do, and
    counted in a warning: every instance keeps its row (and its score), and a [CLS] answer is
    never predicted, since predictions are spans of the context.
    """

    name = "extractive-qa"
    problem_type = None  # transformers knows no QA problem type
    reads_one_position = False
    truncation = "only_second"
    keeps_offsets = True
    has_classes = False
    max_answer_tokens = 30
    """Longest span :meth:`predictions` considers, in tokens (the SQuAD examples' default)."""

    def model_class(self) -> type[Any]:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    def head_size(self, num_labels: int) -> int:
        """Two outputs per token: start and end."""
        return 2

    def logits(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Start and end logits (N, T, 2), padding positions set to the lowest float.

        The loss then reads the instance's own tokens only, whatever the padding of its batch
        (transformers' QA loss also reads padding, so it changes with the batch).
        """
        logits = torch.stack([output.start_logits, output.end_logits], dim=-1)
        padding = batch["attention_mask"] == 0  # (N, T)
        return logits.masked_fill(padding[..., None], torch.finfo(logits.dtype).min)

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """Mean of the start and end cross-entropy. logits: (N, T, 2); labels: (N, 2) token
        positions of the answer's first and last token."""
        start = nn.functional.cross_entropy(logits[..., 0], labels[:, 0], reduction=reduction)
        end = nn.functional.cross_entropy(logits[..., 1], labels[:, 1], reduction=reduction)
        return (start + end) / 2

    def label_tensor(self, labels: np.ndarray) -> torch.Tensor:
        raise TypeError(
            "extractive QA labels are character spans; their token positions need the "
            "encoding: use loss_targets(examples, encoded)"
        )

    def loss_targets(self, examples: LabelledExamples, encoded: Encoding) -> torch.Tensor:
        """Token positions (N, 2) of the first answer's first and last token; (0, 0) where the
        answer lies beyond the kept tokens (counted in a warning)."""
        if encoded.offsets is None or encoded.sequence_ids is None:
            raise ValueError("extractive QA loss targets need an encoding that kept token offsets")
        spans = np.zeros((len(examples), 2), dtype=np.int64)
        cut = []
        for n, (start, end) in enumerate(examples.labels.tolist()):
            span = token_span(encoded.offsets[n], encoded.sequence_ids[n], start, end)
            if span is None:
                cut.append(n)
            else:
                spans[n] = span
        if cut:
            logger.warning(
                "%d of %d answers of %s lie beyond the kept tokens (e.g. id %r); they are "
                "labelled at position 0, [CLS] (raise max_length to keep them)",
                len(cut),
                len(examples),
                examples.name,
                examples.ids[cut[0]],
            )
        return torch.as_tensor(spans)

    def check_labels(self, examples: LabelledExamples, num_outputs: int) -> None:
        if num_outputs != 2:
            raise RepmatchError(
                f"{examples.name} is an extractive QA task: the span head needs 2 outputs "
                f"(start, end), not {num_outputs}"
            )
        if examples.answers is None or examples.labels.shape != (len(examples), 2):
            raise RepmatchError(
                f"{examples.name} has no answer spans; load it as task 'extractive-qa' from "
                "question, context and answers columns",
                field="task",
            )

    def references(self, examples: LabelledExamples) -> list[list[str]]:
        """Every gold answer text of every instance."""
        if examples.answers is None:
            raise RepmatchError(f"{examples.name} has no gold answers (not extractive QA data)")
        return [list(answer["text"]) for answer in examples.answers]

    def predictions(
        self,
        logits: torch.Tensor,
        encoded: Encoding | None = None,
        positions: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """The answer text of the best span of each row: (B,) strings.

        ``logits``: (B, T, 2) from :meth:`logits`; row b holds instance ``positions[b]`` of
        ``encoded``. The best span maximises start + end logit over first <= last token, at most
        :attr:`max_answer_tokens` tokens, both in the context; its text is cut from the context by
        the tokens' character offsets. A row without context tokens predicts "".
        """
        if (
            encoded is None
            or positions is None
            or encoded.offsets is None
            or encoded.sequence_ids is None
            or encoded.contexts is None
        ):
            raise TypeError(
                "extractive QA predictions need the encoded examples (with offsets) and the "
                "positions of the logits' rows: predictions(logits, encoded, positions)"
            )
        start, end = logits[..., 0].detach().float().cpu(), logits[..., 1].detach().float().cpu()
        rows, width = start.shape
        context = torch.zeros(rows, width, dtype=torch.bool)
        for row, position in enumerate(positions):
            sequence = encoded.sequence_ids[position]
            context[row, : len(sequence)] = torch.tensor([s == 1 for s in sequence])
        index = torch.arange(width)
        length = index[None, :] - index[:, None]  # (T, T): last - first
        allowed = (length >= 0) & (length < self.max_answer_tokens)
        valid = allowed[None] & context[:, :, None] & context[:, None, :]  # (B, T, T)
        scores = (start[:, :, None] + end[:, None, :]).masked_fill(~valid, -torch.inf)
        best = scores.flatten(1).argmax(dim=1)
        texts = []
        for row, position in enumerate(positions):
            if not valid[row].any():
                texts.append("")
                continue
            first, last = divmod(int(best[row]), width)
            offsets = encoded.offsets[position]
            texts.append(encoded.contexts[position][offsets[first][0] : offsets[last][1]])
        return np.array(texts, dtype=object)

    def metrics(self, predictions: np.ndarray, labels: Sequence[Sequence[str]]) -> dict[str, float]:
        """Exact match and F1 in percent, each the max over an instance's gold answers, with the
        official SQuAD v1.1 normalisation (torchmetrics). ``labels``: :meth:`references`."""
        from torchmetrics.functional.text import squad

        if len(predictions) != len(labels):
            raise ValueError(f"{len(predictions)} predictions for {len(labels)} instances")
        preds = [{"prediction_text": str(p), "id": str(k)} for k, p in enumerate(predictions)]
        target: list[dict[str, Any]] = [
            {"answers": {"text": list(texts), "answer_start": [0] * len(texts)}, "id": str(k)}
            for k, texts in enumerate(labels)
        ]
        result = squad(preds, target)
        return {"exact_match": float(result["exact_match"]), "f1": float(result["f1"])}


def token_span(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    start: int,
    end: int,
) -> tuple[int, int] | None:
    """Positions of the first and last token covering characters [start, end) of the second
    sequence (the context), or None when those characters are not all among its kept tokens.

    ``offsets``: (start, end) characters of every token in its own text; ``sequence_ids``: which
    text each token comes from (0, 1, or None for special tokens). The first token is the last
    one starting at or before ``start``, the last token the first one ending at or after ``end``.
    """
    context = [t for t, s in enumerate(sequence_ids) if s == 1]
    if not context or start < offsets[context[0]][0] or end > offsets[context[-1]][1]:
        return None
    first = max(t for t in context if offsets[t][0] <= start)
    last = min(t for t in context if offsets[t][1] >= end)
    return first, last


TASKS: dict[str, Task] = {
    task.name: task
    for task in (Classification(), PairClassification(), Regression(), ExtractiveQA())
}


def get_task(kind: str | Task | None) -> Task:
    """The task object for a task kind name (``None``: classification, as old records imply)."""
    if isinstance(kind, Task):
        return kind
    if kind is None:
        return TASKS["classification"]
    try:
        return TASKS[kind]
    except KeyError:
        raise RepmatchError(
            f"unknown task kind {kind!r}; known kinds: {', '.join(TASKS)}", field="task"
        ) from None
