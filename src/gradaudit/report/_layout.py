"""Axes helpers shared by the line and bar figures: axes creation, legends, colours,
dashed reference lines."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._validation import ParameterError, ParameterTypeError, check_choice, unknown_name
from ._figure import GREY, check_labelled, color_for, new_figure, style

__all__ = ["LEGENDS", "axes_for", "colors_for", "decorate", "draw_hlines", "framed"]

LEGENDS = ("auto", "inside", "outside", "none")


def axes_for(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """A new figure with one Axes, or the given Axes and its figure."""
    if ax is None:
        fig = new_figure(figsize)
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        raise ParameterTypeError(
            f"The 'ax' parameter must be a matplotlib Axes or None. Got {ax!r}."
        )
    return ax.get_figure(root=True), ax


def draw_hlines(ax: Axes, hlines: Mapping[str, float] | None, caller: str) -> None:
    """Dashed horizontal reference lines (the first black, the others grey), in the legend."""
    for i, (label, value) in enumerate(
        check_labelled(hlines, "hlines", caller).items() if hlines else []
    ):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParameterTypeError(
                f"The 'hlines' argument of {caller} must map labels to numbers. Got {value!r} for {label!r}."
            )
        ax.axhline(
            float(value),
            color=GREY if i else "black",
            linestyle="--",
            linewidth=1,
            label=label,
            gid=f"reference:{label}",
            zorder=1.5,
        )


def decorate(
    fig: Figure,
    ax: Axes,
    *,
    title: str | None,
    xlabel: str | None,
    ylabel: str | None,
    legend: str,
    own_figure: bool,
    caller: str,
) -> None:
    """Title, axis labels and the legend ("auto": outside when more than 4 entries)."""
    check_choice(legend, "legend", caller, LEGENDS)
    if title:
        ax.set_title(title)
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel or "")
    n = len(ax.get_legend_handles_labels()[1])
    if legend == "none" or n == 0:
        return
    if legend == "outside" or (legend == "auto" and n > 4 and own_figure):
        fig.legend(loc="outside right upper")
    else:
        ax.legend(loc="best")


@contextlib.contextmanager
def framed(
    ax: Axes | None,
    figsize: tuple[float, float],
    legend: str,
    caller: str,
    texts: tuple[str | None, str | None, str | None],
) -> Iterator[tuple[Figure, Axes]]:
    """Draw in the house style into ``ax`` (or a new figure's Axes, :func:`axes_for`); on
    leaving, :func:`decorate` with ``texts`` = (title, xlabel, ylabel) and ``legend``."""
    title, xlabel, ylabel = texts
    with style():
        fig, axes = axes_for(ax, figsize)
        yield fig, axes
        decorate(fig, axes, title=title, xlabel=xlabel, ylabel=ylabel, legend=legend,
                 own_figure=ax is None, caller=caller)


def colors_for(
    labels: Sequence[str], colors: Mapping[str, int | str] | None, caller: str
) -> dict[str, str]:
    """Label -> colour: the palette in label order, overridden by ``colors``."""
    colors = dict(colors or {})
    unknown = [k for k in colors if k not in labels]
    if unknown:
        raise ParameterError(unknown_name("label in 'colors'", unknown[0], labels, caller=caller))
    return {lab: color_for(colors.get(lab, i)) for i, lab in enumerate(labels)}
