"""The paper's reset-and-train loop for instance-level RepMatch: slow, and obviously correct.

This is the authors' procedure written as plainly as possible, for the tests (the batched engine of
:mod:`repmatch.scoring` must give the same scores) and for the benchmark that times the engine
against it (``benchmarks/bench_instance_scoring.py``). It is not meant for scoring real data.

For every instance: a fresh copy of the base model with the reference adapter's head, the LoRA
init drawn from the same seed, ``steps`` AdamW steps with batch size 1 on that instance alone
(truncated at ``max_length`` tokens if given, then padded to a fixed ``pad_to``), the dense
ΔW = s·B·A, a full SVD, and the Grassmann grid of eq. 1 filled by a Python double loop, in float64
(or, with ``dtype=torch.float32``, in the authors' script's precision). Nothing is batched and no
closed form is used; dropout is off (eval mode), as in the engine.

Extractive QA instances are the pair (question, context), cut in the context only; the answer's
character span becomes its first and last token by the tokenizer's offsets (position 0 when the
answer was cut away), and the loss is the mean of the start and end cross-entropy over the
instance's own tokens (the padding up to ``pad_to`` is left out, as the engine leaves it out).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from repmatch.adapters import load_adapter
from repmatch.data import Examples
from repmatch.errors import RepmatchError
from repmatch.models import align_pad_token, load_classifier, load_tokenizer
from repmatch.tasks import token_span

__all__ = ["LiteralLoop", "literal_layer_scores", "literal_scores"]


def _singular_vectors(
    delta_w: torch.Tensor, rank: int, side: str, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """First ``rank`` left (columns of U) or right (columns of V) singular vectors, full SVD."""
    u, _, vh = torch.linalg.svd(delta_w.to(dtype))
    return u[:, :rank] if side == "left" else vh[:rank, :].T


def _best_phi(u1: torch.Tensor, u2: torch.Tensor) -> float:
    """max over i, j of ||u1[:, :i]^T u2[:, :j]||_F^2 / min(i, j), by a double loop."""
    best = 0.0
    for i in range(1, u1.shape[1] + 1):
        for j in range(1, u2.shape[1] + 1):
            overlap = u1[:, :i].T @ u2[:, :j]
            phi = float(torch.linalg.norm(overlap) ** 2) / min(i, j)
            best = max(best, phi)
    return best


class LiteralLoop:
    """The reset-and-train loop, set up once for a reference adapter and scoring settings.

    ``targets``: full names of the reference layers to score (default: all of them). With
    ``checkpoint_dir`` it resets the way the authors' script does: the LoRA model and its
    optimizer are saved once and reloaded from disk before every instance (dropout is off, so
    nothing after the reload draws random numbers and the authors' seed reset is left out);
    without it, every instance gets a deep copy of the base model and a fresh PEFT wrapper.
    """

    def __init__(
        self,
        reference: str | Path,
        *,
        rank: int,
        alpha: float = 4.0,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.01,
        eps: float = 1e-8,
        steps: int = 1,
        seed: int = 0,
        side: str = "left",
        targets: list[str] | None = None,
        max_length: int | None = None,
        pad_to: int = 64,
        checkpoint_dir: Path | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        adapter = load_adapter(reference)
        record = adapter.record
        if record is None:
            raise RepmatchError(f"{reference} has no repmatch.json; train it with repmatch train")
        self.regression = record["task"] == "regression"
        self.qa = record["task"] == "extractive-qa"
        self.base = load_classifier(
            record["model"],
            num_labels=record["num_labels"],
            head_seed=0,
            task=record["task"],
        )
        self.base.load_state_dict(adapter.head, strict=False)
        self.device = torch.device(device)
        self.base.to(self.device)  # type: ignore[arg-type]  # PEFT draws LoRA inits on the CPU
        self.tokenizer = load_tokenizer(record["model"])
        align_pad_token(self.tokenizer, self.base)
        self.names = targets or list(adapter.layers)
        self.dtype = dtype
        self.reference_vectors = {
            name: _singular_vectors(
                adapter.layers[name].delta_weight(), adapter.layers[name].rank, side, dtype
            ).to(self.device)
            for name in self.names
        }
        self.rank, self.alpha, self.steps, self.seed = rank, alpha, steps, seed
        self.side, self.max_length, self.pad_to = side, max_length, pad_to
        self.optimizer_settings: dict[str, Any] = {
            "lr": lr,
            "betas": tuple(betas),
            "weight_decay": weight_decay,
            "eps": eps,
        }
        self.checkpoint = None
        if checkpoint_dir is not None:
            model, optimizer = self._fresh(copy.deepcopy(self.base))
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            self.checkpoint = (checkpoint_dir / "model.pt", checkpoint_dir / "optimizer.pt")
            torch.save(model.state_dict(), self.checkpoint[0])
            torch.save(optimizer.state_dict(), self.checkpoint[1])
            self._model, self._optimizer = model, optimizer

    def _fresh(self, model: nn.Module) -> tuple[Any, torch.optim.Optimizer]:
        """A PEFT wrapper of ``model`` whose LoRA init is drawn from ``seed`` (on a forked RNG:
        the caller's global RNG state is left as it was) and its AdamW optimizer."""
        config = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # PEFT annotates int; floats work
            lora_dropout=0.0,
            target_modules=self.names,
        )
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            peft_model = get_peft_model(model, config)
        peft_model.eval()
        optimizer = torch.optim.AdamW(
            [p for p in peft_model.parameters() if p.requires_grad], **self.optimizer_settings
        )
        return peft_model, optimizer

    def _reset(self) -> tuple[Any, torch.optim.Optimizer]:
        if self.checkpoint is None:
            return self._fresh(copy.deepcopy(self.base))
        self._model.load_state_dict(torch.load(self.checkpoint[0], map_location=self.device))
        self._optimizer.load_state_dict(torch.load(self.checkpoint[1], map_location=self.device))
        return self._model, self._optimizer

    def _inputs(self, examples: Examples, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Instance ``n`` alone, truncated at ``max_length`` and right-padded to ``pad_to``, and
        its label: (1,), or for QA (1, 2) the answer's first and last token."""
        pair = examples.text_pairs[n] if examples.text_pairs is not None else None
        truncation = "only_second" if self.qa else True
        encoded = self.tokenizer(
            examples.texts[n],
            pair,
            truncation=truncation if self.max_length is not None else False,
            max_length=self.max_length,
            return_offsets_mapping=self.qa,
        )
        label = torch.as_tensor(examples.labels[n : n + 1])
        if self.qa:  # the answer's first and last token, or (0, 0) when it was cut away
            start, end = examples.labels[n].tolist()
            span = token_span(encoded["offset_mapping"], encoded.sequence_ids(), start, end)
            label = torch.tensor([span or (0, 0)])
        length = len(encoded["input_ids"])
        if length > self.pad_to:
            raise ValueError(f"instance {n} has {length} tokens, more than pad_to={self.pad_to}")
        inputs = {"attention_mask": torch.zeros(1, self.pad_to, dtype=torch.long)}
        inputs["attention_mask"][0, :length] = 1
        for key in ("input_ids", "token_type_ids"):
            if key in encoded:
                fill = self.tokenizer.pad_token_id if key == "input_ids" else 0
                inputs[key] = torch.full((1, self.pad_to), fill, dtype=torch.long)
                inputs[key][0, :length] = torch.as_tensor(encoded[key])
        return {key: tensor.to(self.device) for key, tensor in inputs.items()}, label.to(
            self.device
        )

    def delta_weights(self, examples: Examples, n: int) -> dict[str, torch.Tensor]:
        """ΔW = s·B·A of every scored layer after training on instance ``n`` alone, in ``dtype``."""
        peft_model, optimizer = self._reset()
        inputs, label = self._inputs(examples, n)
        for _ in range(self.steps):
            optimizer.zero_grad()
            if self.qa:
                output = peft_model(**inputs)
                length = int(inputs["attention_mask"].sum())
                start = output.start_logits[:, :length]
                end = output.end_logits[:, :length]
                loss = (
                    torch.nn.functional.cross_entropy(start, label[:, 0])
                    + torch.nn.functional.cross_entropy(end, label[:, 1])
                ) / 2
            elif self.regression:
                logits = peft_model(**inputs).logits
                loss = torch.nn.functional.mse_loss(logits.squeeze(-1), label.float())
            else:
                logits = peft_model(**inputs).logits
                loss = torch.nn.functional.cross_entropy(logits, label)
            loss.backward()
            optimizer.step()
        updates = {}
        for name in self.names:
            layer = peft_model.base_model.model.get_submodule(name)
            B = layer.lora_B["default"].weight.detach().to(self.dtype)
            A = layer.lora_A["default"].weight.detach().to(self.dtype)
            updates[name] = (B @ A) * (self.alpha / self.rank)
        return updates

    def layer_scores(self, examples: Examples) -> np.ndarray:
        """Per-instance, per-layer scores, (N, L) in the order of ``self.names``."""
        scores = np.zeros((len(examples), len(self.names)))
        for n in range(len(examples)):
            for k, (name, delta_w) in enumerate(self.delta_weights(examples, n).items()):
                vectors = _singular_vectors(delta_w, self.rank, self.side, self.dtype)
                scores[n, k] = _best_phi(vectors, self.reference_vectors[name])
        return scores

    def scores(self, examples: Examples) -> np.ndarray:
        """RepMatch per instance: the mean of its layer scores, (N,)."""
        return self.layer_scores(examples).mean(axis=1)


def literal_layer_scores(
    reference: str | Path, examples: Examples, **settings: Any
) -> tuple[np.ndarray, list[str]]:
    """Per-instance, per-layer scores (N, L) and the layer names, by the reset-and-train loop."""
    loop = LiteralLoop(reference, **settings)
    return loop.layer_scores(examples), loop.names


def literal_scores(reference: str | Path, examples: Examples, **settings: Any) -> np.ndarray:
    """RepMatch per instance (mean of the layer scores), by the reset-and-train loop."""
    return LiteralLoop(reference, **settings).scores(examples)
