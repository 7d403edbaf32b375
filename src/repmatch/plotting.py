"""Heat maps: per-layer Grassmann grids (paper Fig. 1 style) and dataset similarity matrices.

Figures are :class:`matplotlib.figure.Figure` objects drawn on their own canvas, never through
``pyplot``: importing or calling this module leaves matplotlib's backend and pyplot's figures as
the caller set them (a notebook keeps its inline backend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from repmatch.artifacts import atomic_path, exclusive_output, output_set
from repmatch.errors import RepmatchError
from repmatch.lora import short_layer_name

if TYPE_CHECKING:
    from repmatch.compare import Comparison

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_layer_grids(comparison: Comparison, path: str | Path, *, title: str | None = None) -> None:
    """One panel per layer: the phi(i, j) grid, titled with the layer's score."""
    names = list(comparison.grids)
    columns = min(len(names), 6)
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(2.2 * columns + 1.2, 2.3 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    vmax = max(float(grid.max()) for grid in comparison.grids.values()) or 1.0
    image = None
    for ax, name in zip(axes.flat, names, strict=False):
        grid = comparison.grids[name]
        image = ax.imshow(grid, vmin=0.0, vmax=vmax, cmap="viridis", origin="lower")
        ax.set_title(f"{short_layer_name(name)}\n{comparison.layers[name]:.3f}", fontsize=8)
        ax.set_xticks(range(grid.shape[1]), [str(j + 1) for j in range(grid.shape[1])])
        ax.set_yticks(range(grid.shape[0]), [str(i + 1) for i in range(grid.shape[0])])
        ax.set_xlabel("j", fontsize=8)
        ax.set_ylabel("i", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    figure.suptitle(title or f"RepMatch = {comparison.score:.3f} ({comparison.side} side)")
    if image is not None:  # one panel at least: a comparison has a layer
        figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
    _save(figure, path)


def plot_comparison(
    comparison: Comparison, path: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """:func:`plot_layer_grids` of ``comparison`` to ``path`` and, with a shuffled baseline, of
    the baseline to ``<stem>-shuffled<suffix>`` beside it: both written or neither, an existing
    image replaced only with ``overwrite``."""
    path = Path(path)
    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise RepmatchError(
            f"cannot tell the image format of {path}; name it .png, .pdf or .svg "
            f"(or any of {', '.join(sorted(formats))})"
        )
    shuffled = path.with_name(f"{path.stem}-shuffled{path.suffix}")
    written = [path, shuffled] if comparison.baseline else [path]
    with exclusive_output(path), output_set(path) as outputs:
        for image in written:
            if image.exists() and not overwrite:
                raise RepmatchError(
                    f"{image} already exists; set overwrite to replace it", "overwrite"
                )
        plot_layer_grids(comparison, outputs.path(path))
        if comparison.baseline:
            title = f"shuffled baseline = {comparison.baseline.score:.3f} ({comparison.side} side)"
            plot_layer_grids(comparison.baseline, outputs.path(shuffled), title=title)
    return written


def plot_similarity_matrix(
    matrix: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    std: np.ndarray | None = None,
    title: str = "RepMatch between datasets",
) -> None:
    """Annotated heat map of a square similarity matrix (mean ± std when ``std`` is given)."""
    size = len(names)
    figure = Figure(figsize=(1.1 * size + 2.5, 1.0 * size + 1.5), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(size), names, rotation=45, ha="right")
    ax.set_yticks(range(size), names)
    for i in range(size):
        for j in range(size):
            text = f"{matrix[i, j]:.2f}"
            if std is not None:
                text += f"\n±{std[i, j]:.2f}"
            color = "black" if matrix[i, j] > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_title(title)
    figure.colorbar(image, ax=ax, shrink=0.8)
    _save(figure, path)


def _save(figure: Figure, path: str | Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
