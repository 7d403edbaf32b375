"""Shared pytest fixtures.

Besides the real data folder, this provides tiny random models of five architectures (saved like
any local checkpoint, with the bundled model's tokenizer), tiny csv datasets, and a cache of
adapters trained on them, so tests that only read an adapter share one training run.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

ARCHITECTURES = ("bert", "roberta", "distilbert", "electra", "llama")
"""The tiny architectures every model test runs on (:func:`tiny_model` builds these and
:data:`DECODERS`)."""

DECODERS = ("llama", "qwen2", "mistral")
"""Tiny decoder-only architectures with grouped-query attention (4 query heads sharing 2 key and
value heads, so the value projection is narrower than the hidden size): tests/test_decoders.py."""

VALUE_LEAF = {
    "bert": "value",
    "roberta": "value",
    "distilbert": "v_lin",
    "electra": "value",
    "llama": "v_proj",
}
"""Leaf name of the value projection in each tiny architecture."""

HIDDEN = 32
"""Hidden size of every tiny model (so the largest possible LoRA rank is 32)."""

FAST_TRAIN = {"rank": 2, "batch_size": 8, "epochs": 1, "lr": 1e-2}
"""Training settings that take about a second on a tiny model."""

_POSITIVE = ["good", "great", "fine", "lovely", "nice", "superb", "bright", "warm"]
_NEGATIVE = ["bad", "awful", "poor", "dull", "grim", "weak", "cold", "sad"]
_FILLER = ["the", "a", "movie", "plot", "cast", "day", "food", "was", "really", "quite"]


def on_ci() -> bool:
    """Whether the tests run on CI (``CI=true``, as CI services and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing(what: str) -> NoReturn:
    """Skip a test whose prerequisite ``what`` ("chromium is not installed ...") is absent, with
    that reason; on CI fail it instead: CI provides every prerequisite, and a skip there would
    report a check that never ran as if the suite had passed."""
    if on_ci():
        pytest.fail(f"{what}; CI must provide it (CI=true)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder (``../shared/data``); skips the test when it is absent (fails
    it on CI, see :func:`missing`)."""
    if not SHARED_DATA.is_dir():
        missing(f"real data folder {SHARED_DATA} is absent (see shared/data/README.md)")
    return SHARED_DATA


def _tiny_config(arch: str, vocab_size: int, hidden: int):
    from transformers import (
        BertConfig,
        DistilBertConfig,
        ElectraConfig,
        LlamaConfig,
        MistralConfig,
        MPNetConfig,
        Qwen2Config,
        RobertaConfig,
    )

    common = {"vocab_size": vocab_size, "max_position_embeddings": 128}
    if arch == "bert":
        return BertConfig(
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            **common,
        )
    if arch == "roberta":
        # RoBERTa offsets positions by pad_token_id + 1, so leave room for that
        return RobertaConfig(
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            pad_token_id=0,
            vocab_size=vocab_size,
            max_position_embeddings=130,
        )
    if arch == "distilbert":
        return DistilBertConfig(dim=hidden, n_layers=2, n_heads=2, hidden_dim=2 * hidden, **common)
    if arch == "electra":
        return ElectraConfig(
            embedding_size=hidden,
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            **common,
        )
    if arch == "mpnet":  # relative position bias, eager attention only; positions from 2
        return MPNetConfig(
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            vocab_size=vocab_size,
            max_position_embeddings=130,
        )
    if arch in DECODERS:
        config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}
        return config_class[arch](
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=2 * hidden,
            pad_token_id=0,
            **common,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: tiny models run fastest on one, and on a busy CPU two
    threads slow them 10-50 fold."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Callable[..., str]:
    """Factory: ``tiny_model('bert')`` -> folder of a tiny random model; the one model factory.

    Two layers, hidden size 32 (or ``hidden``), the encoder or decoder body only (heads are drawn
    by :func:`repmatch.models.load_classifier` from their own seed), saved with
    ``save_pretrained`` next to the bundled model's tokenizer (vocabulary 30522). ``overrides``
    set config fields (e.g. ``num_attention_heads``); ``qk_scale`` multiplies the query and key
    weights (peaked attention); ``seed`` draws the weights. Built once per distinct argument set.
    """
    import torch
    import transformers
    from transformers import AutoModel

    from repmatch.models import BUNDLED_MODEL, load_tokenizer

    # no "Loading weights" / "Writing model shards" bars in captured output (the CLI does the same)
    transformers.logging.disable_progress_bar()
    cache: dict[tuple, str] = {}
    tokenizer = load_tokenizer(BUNDLED_MODEL)

    def build(
        arch: str = "bert",
        hidden: int = HIDDEN,
        *,
        seed: int = 1234,
        qk_scale: float = 1.0,
        **overrides: object,
    ) -> str:
        key = (arch, hidden, seed, qk_scale, tuple(sorted(overrides.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"tiny-{arch}-{hidden}")
            config = _tiny_config(arch, len(tokenizer), hidden)
            for name, value in overrides.items():
                setattr(config, name, value)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModel.from_config(config)
            with torch.no_grad():
                for name, weight in model.named_parameters():
                    if ".query." in name or ".key." in name:
                        weight.mul_(qk_scale)
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            cache[key] = str(folder)
        return cache[key]

    return build


def _sentence(rng: random.Random, words: list[str], n: int = 6) -> str:
    picks = [rng.choice(words if i % 2 else _FILLER) for i in range(n)]
    return " ".join(picks)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """Tiny csv datasets (read-only; copy before changing one).

    - ``single``: 40 rows of ``text``, ``label`` (0/1), 20 per class;
    - ``pair``: 40 rows of ``premise``, ``hypothesis``, ``label`` (0/1/2);
    - ``regression``: 40 rows of ``sentence1``, ``sentence2``, ``score`` (floats in [0, 5]);
    - ``topics``: 40 rows of ``text``, ``label`` (0/1) about two topics (another task).
    """
    folder = tmp_path_factory.mktemp("tiny-data")
    rng = random.Random(0)
    single = pd.DataFrame(
        {
            "text": [_sentence(rng, _POSITIVE if i % 2 else _NEGATIVE) for i in range(40)],
            "label": [i % 2 for i in range(40)],
        }
    )
    pair = pd.DataFrame(
        {
            "premise": [_sentence(rng, _POSITIVE + _NEGATIVE) for _ in range(40)],
            "hypothesis": [_sentence(rng, _FILLER, 4) for _ in range(40)],
            "label": [i % 3 for i in range(40)],
        }
    )
    regression = pd.DataFrame(
        {
            "sentence1": [_sentence(rng, _POSITIVE) for _ in range(40)],
            "sentence2": [_sentence(rng, _NEGATIVE) for _ in range(40)],
            "score": [round(rng.uniform(0, 5), 2) + 0.01 for _ in range(40)],
        }
    )
    sport = ["match", "goal", "coach", "league", "striker", "team"]
    politics = ["vote", "senate", "budget", "law", "minister", "party"]
    topics = pd.DataFrame(
        {
            "text": [_sentence(rng, politics if i % 2 else sport) for i in range(40)],
            "label": [i % 2 for i in range(40)],
        }
    )
    paths = {}
    for name, frame in {
        "single": single,
        "pair": pair,
        "regression": regression,
        "topics": topics,
    }.items():
        paths[name] = folder / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return paths


@pytest.fixture(scope="session")
def trained_adapter(tmp_path_factory, tiny_model, tiny_data) -> Callable[..., str]:
    """Factory: ``trained_adapter(arch='bert', data='single', seed=0, **train)`` -> adapter folder.

    Trained once per distinct argument set with :data:`FAST_TRAIN` settings (overridable) and
    cached for the session; tests must copy a folder before changing it.
    """
    from repmatch.data import DataSpec
    from repmatch.training import TrainConfig, train_adapter

    cache: dict[tuple, str] = {}

    def train(arch: str = "bert", data: str = "single", seed: int = 0, **overrides) -> str:
        settings = FAST_TRAIN | overrides
        key = (arch, data, seed, tuple(sorted((k, str(v)) for k, v in settings.items())))
        if key not in cache:
            config = TrainConfig(model=tiny_model(arch), seed=seed, **settings)
            out = tmp_path_factory.mktemp(f"adapter-{arch}-{data}-{seed}") / "adapter"
            train_adapter(DataSpec(str(tiny_data[data])), config, out, progress=False)
            cache[key] = str(out)
        return cache[key]

    return train


def hold_output_lock(path) -> subprocess.Popen:
    """Another process holding the output lock of ``path`` until it is killed."""
    code = (
        "import sys, time; from repmatch.artifacts import exclusive_output\n"
        "with exclusive_output(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


@pytest.fixture(scope="session")
def scoring_reference(tiny_model, tiny_data, tmp_path_factory) -> str:
    """A rank-4 adapter on ``tiny_data['single']`` of a random BERT (hidden 64, 16 heads, a wide
    init) whose instances' one-step scores differ clearly (see tests/test_scoring.py's
    ``scoring_model``); for tests that compare whole score tables."""
    from repmatch.data import DataSpec
    from repmatch.training import TrainConfig, train_adapter

    shape = {"num_attention_heads": 16, "intermediate_size": 128, "initializer_range": 0.2}
    model = tiny_model("bert", hidden=64, seed=0, **shape)
    config = TrainConfig(model=model, rank=4, epochs=2, batch_size=8, lr=1e-2)
    out = tmp_path_factory.mktemp("scoring-reference") / "adapter"
    return str(train_adapter(DataSpec(str(tiny_data["single"])), config, out, progress=False))


def fail_at_rename(monkeypatch, n: int, error: BaseException | None = None) -> list[str]:
    """Make the ``n``-th ``os.replace`` (from 0) of a commit raise ``error`` (an OSError by
    default); returns the names of its renames, in order. Renames of single files written whole
    (:func:`atomic_path`'s temporaries, the record staged, the journal) and renames of other
    libraries are not counted."""
    real, calls = os.replace, []

    def replace(src, dst):
        if ".tmp" in Path(src).name or ".repmatch-" not in f"{src} {dst}":
            return real(src, dst)
        if len(calls) == n:
            calls.append("failed")
            raise error or OSError(errno.EIO, "Input/output error")
        calls.append(f"{Path(src).name} -> {Path(dst).name}")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls
