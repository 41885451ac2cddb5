"""Annotated metric heatmap: rows × columns of numbers (e.g. method × model per metric)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure

from .._validation import ParameterError
from ._figure import as_array, check_text, colormap, finite_range, new_figure, style
from ._markup import formatter

__all__ = ["metric_heatmap"]


def _check_labels(labels: Sequence[Any], n: int, name: str, caller: str) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) != n:
        got = (
            len(labels)
            if isinstance(labels, Sequence) and not isinstance(labels, str)
            else repr(labels)
        )
        raise ParameterError(
            f"The {name!r} argument of {caller} must be a list of {n} labels. Got {got}."
        )
    return [str(v) for v in labels]


def _luminance(rgb: tuple[float, float, float]) -> float:
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]


def metric_heatmap(
    values: Any,
    row_labels: Sequence[Any],
    col_labels: Sequence[Any],
    title: str | None = None,
    fmt: str | Callable[[float], str] = "{:.2f}",
    cmap: str = "viridis",
    higher_is_better: bool = True,
    *,
    nan_text: str = "n/a",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    xlabel: str | None = None,
    ylabel: str | None = None,
    cell_size: tuple[float, float] = (0.8, 0.3),
) -> Figure:
    """A heatmap with each cell's number written in it; NaN cells are grey and read "n/a".

    The colormap is reversed when ``higher_is_better`` is False, so the better end of every
    metric has the same colour (the bright end of viridis); the colorbar says which way is
    better.

    Args:
        values: (rows, cols) numbers; NaN = not applicable / missing.
        row_labels: one label per row (e.g. methods).
        col_labels: one label per column (e.g. models).
        title: axes title (e.g. the metric's name).
        fmt: format string ("{:.2f}") or callable for the cell text.
        cmap: colormap name.
        higher_is_better: the metric's direction.
        nan_text: text of NaN cells.
        vmin: lower colour limit (default: the finite minimum).
        vmax: upper colour limit (default: the finite maximum).
        colorbar: draw a colorbar.
        xlabel: x-axis label.
        ylabel: y-axis label.
        cell_size: inches per cell (width, height).

    Returns:
        The Figure: one heatmap axes (plus its colorbar) with rows × cols cell texts
        (gid ``cell:<i>:<j>``).

    Raises:
        ParameterError: ``values`` not 2-D or labels not matching its shape.
    """
    caller = "metric_heatmap()"
    vals = as_array(values, "values", caller, ndim=2)
    rows = _check_labels(row_labels, vals.shape[0], "row_labels", caller)
    cols = _check_labels(col_labels, vals.shape[1], "col_labels", caller)
    fmt_fn = formatter(fmt, "fmt", caller, example="{:.2f}")
    for name, text in (
        ("title", title),
        ("nan_text", nan_text),
        ("xlabel", xlabel),
        ("ylabel", ylabel),
    ):
        check_text(text, name, caller)
    cm = colormap(cmap, caller)
    cm = cm if higher_is_better else cm.reversed()
    lo, hi = finite_range(vals) or (0.0, 1.0)
    lo, hi = (lo if vmin is None else float(vmin)), (hi if vmax is None else float(vmax))
    if hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    norm = Normalize(lo, hi)
    long = max(len(c) for c in cols) > 7
    width = cell_size[0] * len(cols) + 0.12 * max(len(r) for r in rows) + (0.9 if colorbar else 0.3)
    height = cell_size[1] * len(rows) + (0.9 if long else 0.6) + (0.25 if title else 0)
    with style():
        fig = new_figure((width, height))
        ax = fig.add_subplot()
        im = ax.imshow(
            np.ma.masked_invalid(vals), cmap=cm.with_extremes(bad="0.92"), norm=norm, aspect="auto"
        )
        for (i, j), v in np.ndenumerate(vals):
            if np.isfinite(v):
                dark = _luminance(to_rgb(cm(norm(v)))) < 0.5
                ax.text(
                    j,
                    i,
                    fmt_fn(float(v)),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                    gid=f"cell:{i}:{j}",
                )
            else:
                ax.text(
                    j,
                    i,
                    nan_text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="0.45",
                    style="italic",
                    gid=f"cell:{i}:{j}",
                )
        ax.set_xticks(
            range(len(cols)), cols, rotation=30 if long else 0, ha="right" if long else "center"
        )
        ax.set_yticks(range(len(rows)), rows)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if title:
            ax.set_title(title)
        ax.set_xlabel(xlabel or "")
        ax.set_ylabel(ylabel or "")
        if colorbar:
            cb = fig.colorbar(im, ax=ax, shrink=0.9, pad=0.02)
            cb.set_label("higher is better" if higher_is_better else "lower is better", fontsize=7)
            cb.outline.set_visible(False)
    return fig
