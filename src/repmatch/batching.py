"""Tokenising examples once and cutting them into dynamically padded, length-grouped batches.

Shared by training and instance scoring: inputs are padded only to the longest sequence of their
batch (never to a fixed 512), and batches group sequences of similar length so little is padded.
Scoring can also pack several sequences into one row (:class:`PackedBatch`), each attending only
to itself, so that almost nothing is padded at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repmatch.data import Examples
from repmatch.errors import RepmatchError, first_line
from repmatch.tasks import get_task

_MEGABATCH_FACTOR = 32

PACK_WIDTH = 32
"""Tokens per row when short sequences are packed (rows widen to fit the longest sequence)."""


@dataclass(frozen=True)
class PackedBatch:
    """Sequences packed into rows; R rows of W tokens, N sequences.

    ``inputs``: model inputs (R, W) with ``position_ids`` restarting at every sequence and a
    block-diagonal boolean ``attention_mask`` (R, 1, W, W): a token sees only its own sequence (a
    padding token only itself). ``order``: the packed examples' positions, (N,), in sequence-index
    order. ``segments``: (R, W) sequence index of every token, -1 for padding. ``starts``: row and
    column of every sequence's first token, two (N,) tensors.
    """

    inputs: dict[str, torch.Tensor]
    order: np.ndarray
    segments: torch.Tensor
    starts: tuple[torch.Tensor, torch.Tensor]


def _check_room(tokenizer: Any, max_length: int, *, pairs: bool) -> None:
    """Raise unless ``max_length`` leaves a token of every text beside the special tokens (the
    tokenizer would otherwise not truncate at all, and inputs would outgrow ``max_length``)."""
    special = tokenizer.num_special_tokens_to_add(pair=pairs)
    needed = special + (2 if pairs else 1)
    if max_length < needed:
        raise RepmatchError(
            f"max_length {max_length} leaves no room for the text: the model's tokenizer adds "
            f"{special} special tokens to each input{' pair' if pairs else ''}; set max_length "
            f">= {needed}",
            field="max_length",
        )


class EncodedExamples:
    """Token ids of every example, unpadded, ready to be cut into batches.

    Inputs are cut as the examples' task says (extractive QA: in the context only). Tasks that
    map character spans (extractive QA) also keep, per example, every token's character
    ``offsets`` in its own text, its ``sequence_ids`` (0: first text, 1: second, None: special)
    and the ``contexts`` the offsets point into; otherwise these are None.
    """

    def __init__(self, tokenizer: Any, examples: Examples, *, max_length: int) -> None:
        task = get_task(examples.task)
        if task.keeps_offsets and not getattr(tokenizer, "is_fast", False):
            raise RepmatchError(
                f"{task.name} needs a fast tokenizer (character offsets), but the model's "
                f"tokenizer {type(tokenizer).__name__} is not one; use a model with a fast one"
            )
        _check_room(tokenizer, max_length, pairs=examples.text_pairs is not None)
        try:
            encoded = tokenizer(
                examples.texts,
                examples.text_pairs,
                truncation=task.truncation,
                max_length=max_length,
                padding=False,
                return_offsets_mapping=task.keeps_offsets,
            )
        except Exception as err:  # only_second cannot cut when the first text alone is too long
            if task.truncation != "only_second":
                raise
            lengths = [len(ids) for ids in tokenizer(examples.texts)["input_ids"]]
            longest = int(np.argmax(lengths))
            raise RepmatchError(
                f"max_length {max_length} leaves no room for the context of instance "
                f"{examples.ids[longest]!r} ({first_line(err)}); raise max_length",
                field="max_length",
            ) from None
        self.features = {
            key: encoded[key] for key in ("input_ids", "token_type_ids") if key in encoded
        }
        self.offsets = encoded["offset_mapping"] if task.keeps_offsets else None
        self.sequence_ids = (
            [encoded.sequence_ids(n) for n in range(len(examples))] if task.keeps_offsets else None
        )
        self.contexts = examples.text_pairs if task.keeps_offsets else None
        self.lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64)
        pad_id = tokenizer.pad_token_id
        self.pad_id = 0 if pad_id is None else int(pad_id)

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(
        self, positions: Sequence[int] | np.ndarray, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Right-padded tensors (B, T) for the given positions, T = longest in the batch."""
        width = int(self.lengths[list(positions)].max())
        out = {"attention_mask": torch.zeros(len(positions), width, dtype=torch.long)}
        for key, rows in self.features.items():
            fill = self.pad_id if key == "input_ids" else 0
            tensor = torch.full((len(positions), width), fill, dtype=torch.long)
            for row, position in enumerate(positions):
                ids = rows[position]
                tensor[row, : len(ids)] = torch.as_tensor(ids)
            out[key] = tensor
        for row, position in enumerate(positions):
            out["attention_mask"][row, : self.lengths[position]] = 1
        return {key: tensor.to(device) for key, tensor in out.items()}

    def packed(
        self,
        positions: Sequence[int] | np.ndarray,
        width: int,
        *,
        position_offset: int = 0,
        device: torch.device | str = "cpu",
    ) -> PackedBatch:
        """The given examples packed into rows of at most ``width`` tokens (first fit, longest
        first). ``position_offset``: the model's first position id (RoBERTa counts from
        ``pad_token_id + 1``)."""
        rows: list[list[int]] = []
        used: list[int] = []
        for position in sorted(positions, key=lambda p: (-self.lengths[p], p)):
            length = int(self.lengths[position])
            if length > width:
                raise ValueError(f"a sequence of {length} tokens does not fit rows of {width}")
            row = next((k for k, total in enumerate(used) if total + length <= width), None)
            if row is None:
                rows.append([])
                used.append(0)
                row = len(rows) - 1
            rows[row].append(position)
            used[row] += length
        shape = (len(rows), max(used))
        segments = torch.full(shape, -1, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        features = {
            key: torch.full(shape, self.pad_id if key == "input_ids" else 0, dtype=torch.long)
            for key in self.features
        }
        order: list[int] = []
        start_rows: list[int] = []
        start_columns: list[int] = []
        for row, members in enumerate(rows):
            column = 0
            for position in members:
                end = column + int(self.lengths[position])
                for key, values in self.features.items():
                    features[key][row, column:end] = torch.as_tensor(values[position])
                position_ids[row, column:end] = torch.arange(end - column) + position_offset
                segments[row, column:end] = len(order)
                order.append(position)
                start_rows.append(row)
                start_columns.append(column)
                column = end
        same = segments[:, :, None] == segments[:, None, :]
        mask = (same & (segments[:, :, None] >= 0)) | torch.eye(shape[1], dtype=torch.bool)
        inputs = features | {"position_ids": position_ids, "attention_mask": mask[:, None]}
        return PackedBatch(
            inputs={key: tensor.to(device) for key, tensor in inputs.items()},
            order=np.asarray(order, dtype=np.int64),
            segments=segments.to(device),
            starts=(
                torch.tensor(start_rows, device=device),
                torch.tensor(start_columns, device=device),
            ),
        )


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Split positions 0..n-1 into batches of similar length.

    Without ``rng``: sorted by length (ties by position), the deterministic order used for scoring.
    With ``rng``: a random permutation cut into megabatches of ``32 * batch_size``, each sorted by
    length and cut into batches, then the batch order shuffled (training).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    permutation = rng.permutation(len(lengths))
    mega = batch_size * _MEGABATCH_FACTOR
    batches: list[np.ndarray] = []
    for start in range(0, len(permutation), mega):
        chunk = permutation[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_aware_batches(
    lengths: np.ndarray, max_batch_size: int, overhead_tokens: int = 32
) -> list[np.ndarray]:
    """Cut positions, sorted by length, into the batches that cost the least compute.

    A batch of n sequences padded to length T costs ``n * T`` tokens of compute plus a fixed
    ``overhead_tokens`` (launching its operations); the cheapest cuts of the sorted order come
    from dynamic programming, O(n * max_batch_size). Sorting first loses nothing: some cheapest
    partition is always contiguous in length order. Used for scoring on the CPU, where compute
    is the cost: with few instances, fixed-size batches pad a long tail to its longest member.
    """
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    n = len(order)
    best = np.zeros(n + 1)  # best[j]: least cost of the first j sorted positions
    start = np.zeros(n + 1, dtype=np.int64)  # start[j]: first position of the batch ending at j
    for end in range(1, n + 1):
        starts = np.arange(max(0, end - max_batch_size), end)
        costs = best[starts] + overhead_tokens + (end - starts) * sorted_lengths[end - 1]
        k = int(np.argmin(costs))
        best[end], start[end] = costs[k], starts[k]
    batches = []
    end = n
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    return batches[::-1]


@dataclass(frozen=True)
class Batch:
    """One batch of a plan: model ``inputs`` holding the examples at ``positions`` (N,), in that
    order; ``packed`` describes the rows when sequences are packed (else None: a row each)."""

    positions: np.ndarray
    inputs: dict[str, torch.Tensor]
    packed: PackedBatch | None = None


def plan_batches(
    encoded: EncodedExamples,
    batch_size: int,
    device: torch.device,
    *,
    position_offset: int | None = None,
) -> Iterator[Batch]:
    """Every example once, in the cheapest batches for ``device``, deterministically.

    - ``position_offset`` given (a model where packing is exact, see
      :func:`repmatch.models.packed_position_offset`): groups of similar length packed into rows;
    - on the CPU, where compute is the cost: :func:`padding_aware_batches`;
    - on an accelerator, where a batch's fixed cost dominates: full length-grouped batches.
    """
    if position_offset is not None:
        for positions in length_grouped_batches(encoded.lengths, batch_size):
            width = max(PACK_WIDTH, int(encoded.lengths[positions].max()))
            packed = encoded.packed(
                positions, width, position_offset=position_offset, device=device
            )
            yield Batch(packed.order, packed.inputs, packed)
        return
    if device.type == "cpu":
        batches = padding_aware_batches(encoded.lengths, batch_size)
    else:
        batches = length_grouped_batches(encoded.lengths, batch_size)
    for positions in batches:
        yield Batch(positions, encoded.batch(positions, device))
