"""LoRA adapter folders on disk: reading their factors, head and record; checking they match.

An adapter folder is a standard PEFT one (``adapter_config.json`` + ``adapter_model.safetensors``,
loadable with ``PeftModel.from_pretrained``). Folders written by repmatch also hold the
classification head (as PEFT ``modules_to_save``) and ``repmatch.json``, the full record of how it
was trained. Folders from elsewhere work too, as long as they hold LoRA factors; plain PEFT saves
the head of a ``task_type="SEQ_CLS"`` adapter as well (keys ``base_model.model.classifier.weight``
and the like, which fit the base model's state dict once the prefix is dropped).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from repmatch.errors import RepmatchError, first_line
from repmatch.models import portable_model_name

RECORD_FILE = "repmatch.json"
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraFactors:
    r"""One LoRA layer: :math:`\Delta W = s \, B A`. A: (r, d_in), B: (d_out, r)."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(d_out, d_in) of the adapted weight."""
        return self.B.shape[0], self.A.shape[1]

    def delta_weight(self) -> torch.Tensor:
        """Dense ΔW, (d_out, d_in): only for small checks and the shuffled baseline."""
        return self.scaling * self.B.double() @ self.A.double()


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter read from disk: its base model and factors per adapted module.

    ``head``: the saved classification head, keyed like the base model's state dict (empty when
    none was saved); ``record``: ``repmatch.json`` (``None`` for adapters made elsewhere).
    """

    path: Path
    base_model: str
    layers: dict[str, LoraFactors]
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    record: dict | None = None

    @property
    def ranks(self) -> dict[str, int]:
        return {name: f.rank for name, f in self.layers.items()}

    @property
    def num_labels(self) -> int | None:
        """Outputs of the head: rows of its output layer's weight (``None`` without a head).

        The output layer is the one whose outputs no other head layer reads; when that is
        ambiguous (an output as wide as the hidden size), the recorded ``num_labels``.
        """
        outputs = _head_outputs(self.head)
        if outputs is None and self.head and self.record is not None:
            recorded = self.record.get("num_labels")
            return int(recorded) if isinstance(recorded, int) else None
        return outputs

    @property
    def task(self) -> str | None:
        """The recorded task kind (``regression``, ``classification``, ...), else ``None``."""
        task = (self.record or {}).get("task")
        return task if isinstance(task, str) else None

    @property
    def label_names(self) -> list[str] | None:
        """The recorded class names of the training data (``None`` when unnamed or unrecorded)."""
        names = (self.record or {}).get("label_names")
        return [str(name) for name in names] if isinstance(names, list) else None

    @property
    def head_seed(self) -> int | None:
        """The recorded seed of the head's init (``None`` when unrecorded)."""
        train = (self.record or {}).get("train")
        seed = train.get("head_seed") if isinstance(train, dict) else None
        return seed if isinstance(seed, int) else None

    def fingerprint(self) -> str:
        """SHA-256 over the base model, every factor and head weight: changes with any of them."""
        digest = hashlib.sha256(self.base_model.encode())
        tensors = {f"{name}.A": f.A for name, f in self.layers.items()}
        tensors |= {f"{name}.B": f.B for name, f in self.layers.items()} | self.head
        for key in sorted(tensors):
            digest.update(key.encode())
            digest.update(tensors[key].detach().cpu().contiguous().float().numpy().tobytes())
        return digest.hexdigest()


def _head_outputs(head: dict[str, torch.Tensor]) -> int | None:
    """Rows of the head's output layer: the 2-d weight whose outputs no other one reads."""
    weights = [value for key, value in head.items() if key.endswith(".weight") and value.ndim == 2]
    if len(weights) == 1:
        return weights[0].shape[0]
    inputs = {weight.shape[1] for weight in weights}
    outputs = {weight.shape[0] for weight in weights if weight.shape[0] not in inputs}
    return outputs.pop() if len(outputs) == 1 else None


def load_adapter(path: str | Path) -> Adapter:
    """Read a PEFT LoRA adapter folder (any LoRA adapter, not only ours)."""
    folder = Path(path)
    config_file = folder / "adapter_config.json"
    if not folder.is_dir():
        if folder.exists():
            raise RepmatchError(f"{folder} is a file, not an adapter folder; pass the folder")
        raise RepmatchError(f"adapter folder not found: {folder}")
    if not config_file.is_file():
        raise RepmatchError(
            f"{folder} is not a PEFT adapter folder (no adapter_config.json); "
            "pass a folder written by `repmatch train` or `PeftModel.save_pretrained`"
        )
    config = _read_json(config_file)
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise RepmatchError(
            f"{folder} holds a PEFT adapter of type {peft_type!r} (adapter_config.json), not "
            "LoRA; RepMatch compares LoRA adapters only"
        )
    if config.get("use_dora"):
        raise RepmatchError(
            f"{folder} holds a DoRA adapter (use_dora in adapter_config.json): its update rescales "
            "each column of W + BA, so it does not lie in the subspace of B·A; RepMatch compares "
            "plain LoRA adapters only"
        )
    weights = _load_weights(folder)
    layers = _collect_factors(weights, config, folder)
    head = {
        key[len(_PEFT_PREFIX) :]: value
        for key, value in weights.items()
        if ".lora_" not in key and key.startswith(_PEFT_PREFIX)
    }
    record_file = folder / RECORD_FILE
    record = None
    if record_file.is_file():
        record = checked_record(_read_json(record_file), record_file)
    # the bundled model by its portable name, local folders absolute (as repmatch records them)
    base_model = str(config.get("base_model_name_or_path") or "")
    return Adapter(
        path=folder,
        base_model=portable_model_name(base_model) if base_model else "",
        layers=layers,
        head=head,
        record=record,
    )


def load_adapter_model(
    adapter: str | Path | Adapter, *, device: str | torch.device | None = None
) -> torch.nn.Module:
    """The model an adapter folder (or an :class:`Adapter` already read from one) describes, ready
    to predict: its base model with the recorded task and head seed, and the LoRA factors and
    saved head loaded by PEFT; eval mode, frozen, on ``device`` (default: a CUDA GPU if there is
    one, else the CPU)."""
    from peft import PeftModel

    from repmatch.config import DEFAULT_HEAD_SEED
    from repmatch.models import load_classifier, resolve_device

    if not isinstance(adapter, Adapter):
        adapter = load_adapter(adapter)
    recorded = (adapter.record or {}).get("num_labels")
    num_labels = recorded if isinstance(recorded, int) else adapter.num_labels
    if not adapter.base_model or num_labels is None:
        raise RepmatchError(
            f"{adapter.path} names no base model or holds no head to predict with; pass a folder "
            "written by `repmatch train` (or a PEFT SEQ_CLS adapter with its head)"
        )
    head_seed = adapter.head_seed if adapter.head_seed is not None else DEFAULT_HEAD_SEED
    base = load_classifier(
        adapter.base_model, num_labels=num_labels, head_seed=head_seed, task=adapter.task
    )
    model = PeftModel.from_pretrained(base, str(adapter.path))
    return model.to(resolve_device(device)).eval()


_RECORD_TYPES: dict[str, tuple[type, str]] = {
    "num_labels": (int, "a whole number"),
    "task": (str, "a string"),
    "label_names": (list, "a list"),
    "train": (dict, "a JSON object"),
    "model": (str, "a string"),
}
"""Fields of an adapter's run record that loading reads: their JSON type (else null)."""


def checked_record(record: dict, file: Path) -> dict:
    """``record`` if every field that loading reads has its type; else a one-line error."""
    for key, (kind, words) in _RECORD_TYPES.items():
        value = record.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise RepmatchError(
                f"{file}: field {key!r} should be {words}, got {value!r}; the record was "
                "edited or damaged: train the adapter again or restore the record"
            )
    return record


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RepmatchError(
            f"cannot read {file}: not valid JSON ({err.msg} at line {err.lineno}); "
            "fix it or save the adapter again"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RepmatchError(f"cannot read {file}: {first_line(err)}") from None
    if not isinstance(data, dict):
        raise RepmatchError(f"cannot read {file}: expected a JSON object")
    return data


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_file = folder / "adapter_model.safetensors"
    bin_file = folder / "adapter_model.bin"
    try:
        if safetensors_file.is_file():
            return load_file(str(safetensors_file))
        if bin_file.is_file():
            return torch.load(bin_file, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one
        raise RepmatchError(
            f"cannot read adapter weights in {folder} ({first_line(err)}); the file is truncated "
            "or corrupted, save the adapter again"
        ) from None
    raise RepmatchError(f"{folder} has no adapter_model.safetensors or adapter_model.bin")


def _collect_factors(
    weights: dict[str, torch.Tensor], config: dict, folder: Path
) -> dict[str, LoraFactors]:
    pattern = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        match = pattern.match(key)
        if match:
            halves.setdefault(match.group(1), {})[match.group(2)] = value.float()
    if not halves:
        raise RepmatchError(f"{folder} holds no LoRA factors (no lora_A/lora_B weights)")
    layers = {}
    for name in sorted(halves, key=_numeric_order):  # layer 2 before layer 10
        pair = halves[name]
        if set(pair) != {"A", "B"}:
            have, lacking = ("A", "B") if "A" in pair else ("B", "A")
            raise RepmatchError(
                f"{folder}: module {name} has lora_{have} but no lora_{lacking} weight; the "
                "weights file is incomplete, save the adapter again"
            )
        A, B = pair["A"], pair["B"]
        if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
            raise RepmatchError(
                f"{folder}: module {name} has LoRA factors of shapes {tuple(B.shape)} and "
                f"{tuple(A.shape)} that do not multiply (only Linear LoRA layers are supported)"
            )
        if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
            raise RepmatchError(
                f"{folder}: module {name} has NaN or infinite LoRA weights; its training diverged "
                "(train it again with a lower learning rate) or the file was damaged"
            )
        layers[name] = LoraFactors(A=A, B=B, scaling=_scaling(name, A.shape[0], config, folder))
    return layers


def _numeric_order(name: str) -> list[int | str]:
    """Sort key of a module name with its numbers compared as numbers ('layer.2' < 'layer.10');
    text and numbers alternate in the key, so keys of two names compare part by part."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def _scaling(name: str, rank: int, config: dict, folder: Path) -> float:
    alpha = _alpha(config.get("lora_alpha", rank), "lora_alpha", folder)
    patterns = config.get("alpha_pattern") or {}
    if not isinstance(patterns, dict):
        raise RepmatchError(_bad_config(folder, "alpha_pattern", patterns, "an object"))
    for key, value in patterns.items():
        if name == key or name.endswith("." + key) or re.fullmatch(key, name):
            alpha = _alpha(value, f"alpha_pattern[{key!r}]", folder)
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _alpha(value: object, field: str, folder: Path) -> float:
    """A LoRA alpha of ``adapter_config.json``: a finite number other than 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RepmatchError(_bad_config(folder, field, value, "a finite number"))
    if value == 0:
        raise RepmatchError(_bad_config(folder, field, value, "a number other than 0"))
    return float(value)


def _bad_config(folder: Path, field: str, value: object, wanted: str) -> str:
    return (
        f"{folder / 'adapter_config.json'}: {field} should be {wanted}, got {value!r}; the "
        "config was edited or damaged: save the adapter again or restore it"
    )


def check_compatible(
    first: Adapter, second: Adapter, *, allow_different_base: bool = False
) -> list[str]:
    """The layers both adapters adapt (in ``first``'s order), checked to be comparable.

    Raises a clear error when the adapters come from different base models (unless allowed),
    share no adapted layer, or a shared layer has different shapes.
    """
    if not allow_different_base and first.base_model != second.base_model:
        raise RepmatchError(
            f"adapters come from different base models: {first.path} from "
            f"'{first.base_model}', {second.path} from '{second.base_model}'"
        )
    shared = [name for name in first.layers if name in second.layers]
    if not shared:
        raise RepmatchError(
            f"adapters share no adapted layer ({first.path} adapts e.g. {next(iter(first.layers))}"
            f", {second.path} e.g. {next(iter(second.layers))}); train both with targets in "
            "common"
        )
    for name in shared:
        factors = first.layers[name]
        if factors.shape != second.layers[name].shape:
            raise RepmatchError(
                f"layer {name} has shape {factors.shape} in {first.path} but "
                f"{second.layers[name].shape} in {second.path}: not the same base model"
            )
    return shared
