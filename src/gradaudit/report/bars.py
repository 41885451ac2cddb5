"""Grouped bar chart of mean ± std (e.g. BlockMNIST leakage per k and model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._validation import ParameterError
from ._figure import as_array, check_labelled
from ._layout import colors_for, draw_hlines, framed

__all__ = ["bar_with_errors"]


def bar_with_errors(
    groups: Sequence[Any],
    series: Mapping[str, Any],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    *,
    colors: Mapping[str, int | str] | None = None,
    hlines: Mapping[str, float] | None = None,
    ylim: tuple[float, float] | None = None,
    legend: str = "auto",
    figsize: tuple[float, float] = (4.6, 2.8),
    ax: Axes | None = None,
) -> Figure:
    """Grouped bars of mean ± std: one group per entry of ``groups``, one bar per series.

    For example the null-block share of the top-k attributions per k (groups) and model
    (series), with ``hlines={"chance (block area)": 0.5}``. A NaN mean draws no bar and
    writes "n/a" in its place.

    Args:
        groups: the group labels along x (e.g. ["5%", "10%"] or [0.05, 0.1]).
        series: label -> means (a list, array or tensor), a tuple (means, stds) or a dict
            {"mean": ..., "std": ...}, one value per group.
        xlabel: x-axis label.
        ylabel: y-axis label.
        title: axes title.
        colors: label -> palette index or colour string.
        hlines: label -> y of a dashed horizontal reference.
        ylim: y limits.
        legend: "auto", "inside", "outside" or "none".
        figsize: inches, used when ``ax`` is None.
        ax: draw into this Axes instead of a new figure.

    Returns:
        The Figure; its Axes holds one ``BarContainer`` per series (labelled with the series
        label; its rectangles have gid ``bars:<label>``).

    Raises:
        ParameterError: a series whose length differs from ``groups``.
    """
    caller = "bar_with_errors()"
    if isinstance(groups, str) or not isinstance(groups, Sequence) or not groups:
        raise ParameterError(
            f"The 'groups' argument of {caller} must be a non-empty list. Got {groups!r}."
        )
    bars = {
        label: _bar_values(v, label, len(groups), caller)
        for label, v in check_labelled(series, "series", caller).items()
    }
    palette = colors_for(list(bars), colors, caller)
    with framed(ax, figsize, legend, caller, (title, xlabel, ylabel)) as (fig, axes):
        n, width = len(bars), 0.8 / len(bars)
        centers = np.arange(len(groups), dtype=float)
        for i, (label, (mean, std)) in enumerate(bars.items()):
            pos = centers - 0.4 + width * (i + 0.5)
            cont = axes.bar(
                pos,
                np.nan_to_num(mean, nan=0.0),
                width * 0.92,
                color=palette[label],
                label=label,
                yerr=None if std is None else np.nan_to_num(std),
                error_kw={"elinewidth": 0.9, "capsize": 2, "ecolor": "black"},
            )
            for patch in cont.patches:
                patch.set_gid(f"bars:{label}")
            for p, m in zip(pos, mean, strict=True):
                if not np.isfinite(m):
                    axes.text(
                        p,
                        0,
                        "n/a",
                        ha="center",
                        va="bottom",
                        fontsize=6,
                        rotation=90 if n > 3 else 0,
                    )
        axes.set_xticks(centers, [str(g) for g in groups])
        draw_hlines(axes, hlines, caller)
        lo, hi = axes.get_ylim()
        axes.set_ylim(*(ylim if ylim is not None else (lo, hi + 0.2 * (hi - lo))))  # legend room
    return fig


def _bar_values(
    value: Any, label: str, n: int, caller: str
) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(value, Mapping):
        mean, std = value.get("mean"), value.get("std")
    elif isinstance(value, tuple) and len(value) == 2:
        mean, std = value
    else:
        mean, std = value, None
    mean = as_array(mean, f"series[{label!r}] mean", caller, ndim=1)
    std = None if std is None else as_array(std, f"series[{label!r}] std", caller, ndim=1)
    sizes = [len(mean)] + ([] if std is None else [len(std)])
    if any(s != n for s in sizes):
        raise ParameterError(
            f"The 'series' argument of {caller} must give one mean (and std) per group for "
            f"{label!r}: {n} groups. Got lengths {', '.join(map(str, sizes))}."
        )
    return mean, std
