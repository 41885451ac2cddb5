"""Shared plumbing for the report figures: style, palette, input checks, PNG/PDF/SVG bytes.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``: no display is needed, no global figure registry grows, and nothing has to be
closed. The house style is applied with :func:`style` (a ``matplotlib.rc_context``), so the
caller's rcParams are left as found.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from .._validation import ParameterError, ParameterTypeError

__all__ = [
    "PALETTE",
    "as_array",
    "check_labelled",
    "check_text",
    "color_for",
    "colormap",
    "figure_bytes",
    "new_figure",
    "style",
]

#: Okabe & Ito (2008) colour-blind-safe palette, ordered for lines on white (yellow last:
#: it has the least contrast).
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
GREY = "#7f7f7f"

_RC: dict[str, Any] = {
    "text.usetex": False,
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "lines.linewidth": 1.5,
    "lines.markersize": 3.5,
    "axes.grid": False,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "image.interpolation": "nearest",
    "pdf.fonttype": 42,  # TrueType: text stays editable, as journals ask
    "svg.fonttype": "none",
    "svg.hashsalt": "gradaudit",  # deterministic SVG ids
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply the house style for the duration of the block; rcParams are restored after."""
    with matplotlib.rc_context(_RC):
        yield


def new_figure(figsize: tuple[float, float], *, tight: bool = False) -> Figure:
    """A white figure with an Agg canvas and constrained layout (call inside :func:`style`).

    ``tight`` packs panels closely (image grids).
    """
    fig = Figure(figsize=figsize, layout="constrained")
    if tight:
        fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.01, hspace=0.01)
    FigureCanvasAgg(fig)
    return fig


def colormap(name: str | Colormap, caller: str) -> Colormap:
    """The named (or given) colormap with NaN ("bad") values drawn light grey."""
    if isinstance(name, Colormap):
        return name.with_extremes(bad="0.85")
    if not isinstance(name, str) or name not in colormaps:
        raise ParameterError(
            f"The 'cmap' parameter of {caller} must name a matplotlib colormap. Got {name!r}."
        )
    return colormaps[name].with_extremes(bad="0.85")


def color_for(key: int | str) -> str:
    """Palette colour ``key`` (an index, cycled) or ``key`` itself if it is a colour string."""
    if isinstance(key, int) and not isinstance(key, bool):
        return PALETTE[key % len(PALETTE)]
    return str(key)


_SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "png": {"metadata": {"Software": None}},
    "pdf": {"metadata": {"CreationDate": None, "Producer": None, "Creator": None}},
    "svg": {"metadata": {"Date": None, "Creator": None}},
}


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 200) -> bytes:
    """Render ``fig`` to PNG, PDF or SVG bytes, deterministically (no dates in the file).

    Args:
        fig: a matplotlib Figure (any canvas; it is rendered with Agg / the vector backends).
        fmt: "png", "pdf" or "svg".
        dpi: resolution of raster output.

    Raises:
        ParameterError: unknown ``fmt`` or a ``dpi`` below 10.
    """
    if fmt not in _SAVE_OPTIONS:
        raise ParameterError(
            f"The 'fmt' parameter of figure_bytes() must be one of 'png', 'pdf', 'svg'. Got {fmt!r}."
        )
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 10:
        raise ParameterError(
            f"The 'dpi' parameter of figure_bytes() must be an int in [10, inf). Got {dpi!r}."
        )
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format=fmt, dpi=dpi, **_SAVE_OPTIONS[fmt])
    return buf.getvalue()


def check_text(value: Any, name: str, caller: str, *, optional: bool = True) -> str | None:
    """``value`` if it is a string (or None when optional), else a ParameterTypeError."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        allowed = "a string or None" if optional else "a string"
        raise ParameterTypeError(
            f"The {name!r} parameter of {caller} must be {allowed}. Got {value!r}."
        )
    return value


def as_array(
    value: Any, name: str, caller: str, ndim: int | Sequence[int] | None = None
) -> np.ndarray:
    """A float64 numpy copy of a tensor, array or nested list, with its dimension checked.

    Raises:
        ParameterTypeError: the value is not numeric.
        ParameterError: it has the wrong number of dimensions or is empty.
    """
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ParameterTypeError(
            f"The {name!r} argument of {caller} must be numeric (a list, numpy array or tensor). "
            f"Got {type(value).__name__}."
        ) from err
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and arr.ndim not in allowed:
        dims = " or ".join(str(d) for d in allowed)
        raise ParameterError(
            f"The {name!r} argument of {caller} must have {dims} dimension(s). Got shape {arr.shape}."
        )
    if arr.size == 0:
        raise ParameterError(
            f"The {name!r} argument of {caller} must not be empty. Got shape {arr.shape}."
        )
    return arr


def check_labelled(value: Any, name: str, caller: str) -> Mapping[str, Any]:
    """``value`` if it is a non-empty mapping with string keys, else raise."""
    if not isinstance(value, Mapping):
        raise ParameterTypeError(
            f"The {name!r} argument of {caller} must be a dict from label to data. "
            f"Got {type(value).__name__}."
        )
    if not value:
        raise ParameterError(
            f"The {name!r} argument of {caller} must hold at least one entry. Got {{}}."
        )
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ParameterTypeError(
            f"The {name!r} argument of {caller} must have string labels as keys. Got {bad[0]!r}."
        )
    return value


def finite_range(*arrays: np.ndarray) -> tuple[float, float] | None:
    """(min, max) over the finite entries of ``arrays``, or None if there are none."""
    vals = [a[np.isfinite(a)] for a in arrays]
    vals = [v for v in vals if v.size]
    if not vals:
        return None
    lo = min(float(v.min()) for v in vals)
    hi = max(float(v.max()) for v in vals)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None
