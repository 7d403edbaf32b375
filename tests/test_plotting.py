"""repmatch.plotting: heat maps written as image files, leaving matplotlib's global state (the
backend a caller chose, pyplot's figures) alone."""

from __future__ import annotations

import subprocess
import sys

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

DRAW = """
import sys

import matplotlib

matplotlib.use("svg")  # the backend the caller chose
import numpy as np

from repmatch.compare import Comparison
from repmatch.plotting import plot_layer_grids, plot_similarity_matrix

imported = matplotlib.get_backend()
plot_similarity_matrix(np.eye(2), ["a", "b"], sys.argv[1], std=np.zeros((2, 2)))
grids = {f"bert.encoder.layer.{i}.attention.self.value": np.eye(2) for i in range(3)}
layers = dict.fromkeys(grids, 1.0)
plot_layer_grids(Comparison(1.0, layers, grids, "left", "a", "b"), sys.argv[2])
print(imported, matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_plots_leave_the_callers_backend_and_pyplot_alone(tmp_path):
    matrix, grids = tmp_path / "matrix.png", tmp_path / "grids.png"
    done = subprocess.run(
        [sys.executable, "-c", DRAW, str(matrix), str(grids)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["svg", "svg", "False"]
    for path in (matrix, grids):
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000
