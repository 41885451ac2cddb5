"""The report figures, in one namespace.

Every function takes plain numbers (lists, numpy arrays or torch tensors; dicts from a
label to data), draws with matplotlib's Agg canvas (no display, no LaTeX, no pyplot state),
uses the colour-blind-safe Okabe–Ito palette, and returns a :class:`matplotlib.figure.Figure`
sized for a paper column. The same inputs give byte-identical PNG/PDF output
(:func:`figure_bytes`).

- :func:`diffroar_curves`: DiffROAR vs k, the paper's Fig. 2 (±std bands, y = 0 random line,
  grey y < 0, optional dotted mask-only series).
- :func:`accuracy_curves`: generic lines with bands (top-/bottom-k accuracy, robust accuracy
  vs ε, pixel perturbation, ROAD, degradation).
- :func:`bar_with_errors`: grouped mean ± std bars (leakage per k).
- :func:`block_attribution_grid`: BlockMNIST |gradients|, the paper's Fig. 1.
- :func:`attribution_grid`: method rows × image columns, signed or magnitude maps.
- :func:`coordinate_heatmaps`: points × coordinates heatmaps, the paper's Fig. 5.
- :func:`image_grid`: sample grids.
- :func:`metric_heatmap`: annotated rows × columns numbers with "n/a" cells.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from .._io import write_bytes
from ._figure import PALETTE, figure_bytes
from .bars import bar_with_errors
from .curves import accuracy_curves, diffroar_curves
from .heatmap import metric_heatmap
from .maps import attribution_grid, block_attribution_grid, coordinate_heatmaps, image_grid

__all__ = [
    "PALETTE",
    "accuracy_curves",
    "attribution_grid",
    "bar_with_errors",
    "block_attribution_grid",
    "coordinate_heatmaps",
    "diffroar_curves",
    "figure_bytes",
    "image_grid",
    "metric_heatmap",
    "save_figure",
]


def save_figure(
    fig: Figure,
    path: str | os.PathLike[str],
    formats: tuple[str, ...] = ("png", "pdf"),
    dpi: int = 300,
) -> list[Path]:
    """Write ``fig`` as ``<path>.<fmt>`` for each format, atomically; returns the paths.

    ``path`` is a stem: any suffix it has is replaced by each format's.
    """
    stem = Path(path)
    blobs = {fmt: figure_bytes(fig, fmt, dpi=dpi) for fmt in formats}  # render all before writing
    out = []
    for fmt, blob in blobs.items():
        target = stem.with_suffix(f".{fmt}")
        write_bytes(target, blob)
        out.append(target)
    return out
