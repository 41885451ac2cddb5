"""Line and bar figures: DiffROAR curves (the paper's Fig. 2), generic accuracy curves, bars.

Every function takes plain numbers (lists, numpy arrays or tensors), returns a
:class:`matplotlib.figure.Figure` and tags its artists with a ``gid`` so that tests and
post-processing can find them: ``line:<label>``, ``band:<label>`` (±std), ``extra:<label>``,
``extra-band:<label>``, ``reference:<label>`` (horizontal reference lines),
``shade:negative`` and ``bars:<label>``.

A series is ``(x, y)``, ``(x, y, std)`` (std may be None) or a dict with keys
``x``/``levels``, ``y``/``mean`` and optionally ``std``. NaN values leave gaps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._validation import ParameterError, ParameterTypeError, unknown_name
from ._figure import (
    MARKERS,
    as_array,
    check_labelled,
    check_text,
)
from ._layout import colors_for, draw_hlines, framed

__all__ = ["accuracy_curves", "diffroar_curves"]

Series = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def _series(value: Any, label: str, name: str, caller: str) -> Series:
    """Parse one series into (x, y, std) float arrays of equal length, sorted by x."""
    if isinstance(value, Mapping):
        parts = (
            value.get("x", value.get("levels")),
            value.get("y", value.get("mean")),
            value.get("std"),
        )
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) in (2, 3):
        parts = (value[0], value[1], value[2] if len(value) == 3 else None)
    else:
        raise ParameterTypeError(
            f"The {name!r} argument of {caller} must map each label to (x, mean) or "
            f"(x, mean, std). Got {type(value).__name__} for {label!r}."
        )
    if parts[0] is None or parts[1] is None:
        raise ParameterError(
            f"The {name!r} argument of {caller} lacks x or mean values for {label!r}."
        )
    x = as_array(parts[0], f"{name}[{label!r}] x", caller, ndim=1)
    y = as_array(parts[1], f"{name}[{label!r}] mean", caller, ndim=1)
    std = None if parts[2] is None else as_array(parts[2], f"{name}[{label!r}] std", caller, ndim=1)
    sizes = [len(x), len(y)] + ([] if std is None else [len(std)])
    if len(set(sizes)) != 1:
        raise ParameterError(
            f"The {name!r} argument of {caller} must give x, mean and std of equal length for "
            f"{label!r}. Got lengths {', '.join(map(str, sizes))}."
        )
    order = np.argsort(x, kind="stable")
    return x[order], y[order], None if std is None else std[order]


def _parse_all(values: Any, name: str, caller: str) -> dict[str, Series]:
    return {k: _series(v, k, name, caller) for k, v in check_labelled(values, name, caller).items()}


def _plot_series(
    ax: Axes,
    label: str,
    s: Series,
    color: str,
    marker: str,
    *,
    kind: str = "line",
    linestyle: str = "-",
    legend_label: str | None = None,
    band_alpha: float = 0.2,
) -> None:
    x, y, std = s
    ax.plot(
        x,
        y,
        color=color,
        marker=marker,
        linestyle=linestyle,
        label=label if legend_label is None else legend_label,
        gid=f"{kind}:{label}",
        markerfacecolor=color if kind == "line" else "white",
    )
    if std is not None:
        band = "band" if kind == "line" else f"{kind}-band"
        ax.fill_between(
            x, y - std, y + std, color=color, alpha=band_alpha, linewidth=0, gid=f"{band}:{label}"
        )


def diffroar_curves(
    curves: Mapping[str, Any],
    title: str | None = None,
    ylabel: str = "DiffROAR",
    *,
    xlabel: str = "fraction of unmasked pixels k",
    extra: Mapping[str, Any] | None = None,
    extra_label: str = "mask-only",
    random_line: bool = True,
    shade_negative: bool = True,
    colors: Mapping[str, int | str] | None = None,
    ylim: tuple[float, float] | None = None,
    legend: str = "auto",
    figsize: tuple[float, float] = (4.6, 2.8),
    ax: Axes | None = None,
) -> Figure:
    """DiffROAR against the fraction k of unmasked pixels, in the style of the paper's Fig. 2.

    One solid line with markers per model and a ±std band; a dashed y = 0 line for a random
    attribution (expected DiffROAR 0); grey shading below 0, where assumption (A) is violated.
    A computed random-attribution curve can be passed in ``curves`` like any other.

    Source: Shah, Jain & Netrapalli, NeurIPS 2021 (arXiv 2102.12781), Fig. 2.

    Args:
        curves: label -> (levels, mean, std) or (levels, mean); levels are fractions in (0, 1].
        title: axes title.
        ylabel: y-axis label.
        xlabel: x-axis label.
        extra: label -> series drawn dotted in the colour of ``curves[label]`` (e.g. the
            mask-only DiffROAR of issue 9); every key must be a label of ``curves``.
        extra_label: appended to the legend entry of each extra series.
        random_line: draw the y = 0 random-attribution reference.
        shade_negative: shade y < 0 grey (the axis always shows 0 then).
        colors: label -> palette index or colour string (default: palette order).
        ylim: fixed y limits (default: fit the data and 0).
        legend: "auto" (outside when more than 4 entries), "inside", "outside" or "none".
        figsize: inches, used when ``ax`` is None.
        ax: draw into this Axes (for multi-panel figures) instead of a new figure.

    Returns:
        The Figure (``ax``'s figure when ``ax`` is given).

    Raises:
        ParameterError: empty ``curves``, unequal lengths, an ``extra`` key not in ``curves``.
    """
    caller = "diffroar_curves()"
    parsed = _parse_all(curves, "curves", caller)
    extras = _parse_all(extra, "extra", caller) if extra else {}
    for key in extras:
        if key not in parsed:
            raise ParameterError(unknown_name("label in 'extra'", key, parsed, caller=caller))
    for name, text in (
        ("title", title),
        ("ylabel", ylabel),
        ("xlabel", xlabel),
        ("extra_label", extra_label),
    ):
        check_text(text, name, caller)
    palette = colors_for(list(parsed), colors, caller)
    with framed(ax, figsize, legend, caller, (title, xlabel, ylabel)) as (fig, axes):
        for i, (label, s) in enumerate(parsed.items()):
            _plot_series(axes, label, s, palette[label], MARKERS[i % len(MARKERS)])
        for label, s in extras.items():
            marker = MARKERS[list(parsed).index(label) % len(MARKERS)]
            _plot_series(
                axes,
                label,
                s,
                palette[label],
                marker,
                kind="extra",
                linestyle=":",
                legend_label=f"{label}, {extra_label}",
                band_alpha=0.1,
            )
        if random_line:
            draw_hlines(axes, {"random attribution": 0.0}, caller)
        xmax = max(float(np.nanmax(s[0])) for s in parsed.values())
        axes.set_xlim(0.0, xmax * 1.03 if xmax > 0 else 1.0)
        _y_limits(axes, ylim, shade_negative)
    return fig


def _y_limits(ax: Axes, ylim: tuple[float, float] | None, shade_negative: bool) -> None:
    lo, hi = ax.get_ylim() if ylim is None else (float(ylim[0]), float(ylim[1]))
    if ylim is None and shade_negative:
        span = max(hi - lo, 1e-3)
        lo, hi = min(lo, -0.05 * span), max(hi, 0.05 * span)
    if shade_negative and lo < 0:
        ax.axhspan(lo, min(0.0, hi), color="0.9", linewidth=0, zorder=0, gid="shade:negative")
    ax.set_ylim(lo, hi)


def accuracy_curves(
    series: Mapping[str, Any],
    xlabel: str,
    ylabel: str = "accuracy",
    title: str | None = None,
    *,
    colors: Mapping[str, int | str] | None = None,
    linestyles: Mapping[str, str] | None = None,
    markers: bool = True,
    hlines: Mapping[str, float] | None = None,
    logx: bool = False,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    legend: str = "auto",
    figsize: tuple[float, float] = (4.6, 2.8),
    ax: Axes | None = None,
) -> Figure:
    """Generic y-against-x lines with optional ±std bands.

    For top-k vs bottom-k accuracies (give a model's two series the same ``colors`` index and
    different ``linestyles``), robust accuracy vs ε, pixel-perturbation, ROAD or degradation
    curves.

    Args:
        series: label -> (x, y) or (x, y, std).
        xlabel: x-axis label.
        ylabel: y-axis label.
        title: axes title.
        colors: label -> palette index or colour string (default: palette order).
        linestyles: label -> matplotlib line style ("-", "--", ":", "-.").
        markers: draw a marker at each point.
        hlines: label -> y of a dashed horizontal reference (e.g. {"chance": 0.1}).
        logx: logarithmic x axis.
        xlim: x limits.
        ylim: y limits.
        legend: "auto", "inside", "outside" or "none".
        figsize: inches, used when ``ax`` is None.
        ax: draw into this Axes instead of a new figure.

    Returns:
        The Figure.

    Raises:
        ParameterError: empty ``series``, unequal lengths, unknown labels in the style dicts.
    """
    caller = "accuracy_curves()"
    parsed = _parse_all(series, "series", caller)
    palette = colors_for(list(parsed), colors, caller)
    styles = dict(linestyles or {})
    for key in styles:
        if key not in parsed:
            raise ParameterError(unknown_name("label in 'linestyles'", key, parsed, caller=caller))
    for name, text in (("xlabel", xlabel), ("ylabel", ylabel), ("title", title)):
        check_text(text, name, caller)
    with framed(ax, figsize, legend, caller, (title, xlabel, ylabel)) as (fig, axes):
        for i, (label, s) in enumerate(parsed.items()):
            marker = MARKERS[i % len(MARKERS)] if markers else ""
            _plot_series(axes, label, s, palette[label], marker, linestyle=styles.get(label, "-"))
        draw_hlines(axes, hlines, caller)
        if logx:
            axes.set_xscale("log")
        if xlim is not None:
            axes.set_xlim(*xlim)
        if ylim is not None:
            axes.set_ylim(*ylim)
    return fig
