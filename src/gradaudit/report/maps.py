"""Image-like figures: sample grids, attribution grids (Fig. 1 style) and coordinate heatmaps
(Fig. 5 style).

Images and maps are (N, C, H, W) or (N, H, W) lists, arrays or tensors. Channels of an
attribution map are summed for display (absolute values first for magnitudes). Each map is
normalised per image so that its largest magnitude is 1; NaN pixels are drawn light grey.
Axes carry gids (``image:<j>``, ``map:<label>:<j>``); block boundaries are lines with gid
``boundary`` and the relevant/noise divider has gid ``divider``.

Source: Shah, Jain & Netrapalli, NeurIPS 2021 (arXiv 2102.12781), Fig. 1 (BlockMNIST
gradients with the block boundary marked) and Fig. 5 (simplified BlockMNIST heatmaps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from .._validation import ParameterError, check_choice, check_int
from ._figure import as_array, check_labelled, check_text, colormap, finite_range, new_figure, style

__all__ = ["attribution_grid", "block_attribution_grid", "coordinate_heatmaps", "image_grid"]


def _images(images: Any, name: str, caller: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, 3) float array from (N, C, H, W) with C in {1, 3} or (N, H, W)."""
    arr = as_array(images, name, caller, ndim=(3, 4))
    if arr.ndim == 3:
        return arr
    if arr.shape[1] == 1:
        return arr[:, 0]
    if arr.shape[1] == 3:
        return arr.transpose(0, 2, 3, 1)
    raise ParameterError(
        f"The {name!r} argument of {caller} must have 1 or 3 channels (N, C, H, W). Got shape {arr.shape}."
    )


def _display_range(arr: np.ndarray, bounds: tuple[float, float] | None) -> tuple[float, float]:
    if bounds is not None:
        return float(bounds[0]), float(bounds[1])
    rng = finite_range(arr) or (0.0, 1.0)
    if rng[0] >= 0.0 and rng[1] <= 1.0:
        return 0.0, 1.0
    return rng if rng[1] > rng[0] else (rng[0] - 0.5, rng[0] + 0.5)


def _show_image(ax: Axes, img: np.ndarray, lo: float, hi: float, cmap: Colormap) -> None:
    if img.ndim == 3:  # RGB: scale into [0, 1] ourselves, imshow takes no vmin for RGB
        ax.imshow(np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0.0, 1.0))
    else:
        ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)


def _bare(ax: Axes) -> None:
    """No ticks, no spines, but keep the y label (row names)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _normalised(maps: np.ndarray, signed: bool) -> np.ndarray:
    """Channel-reduce (N, H, W[, C]) maps and scale each image's largest magnitude to 1."""
    if maps.ndim == 4:
        maps = maps.sum(axis=-1) if signed else np.abs(maps).sum(axis=-1)
    elif not signed:
        maps = np.abs(maps)
    out = np.full_like(maps, np.nan)
    for i, m in enumerate(maps):
        finite = np.isfinite(m)
        if finite.any():
            peak = float(np.abs(m[finite]).max())
            out[i] = m / peak if peak > 0 else np.where(finite, 0.0, np.nan)
    return out


def image_grid(
    images: Any,
    labels: Sequence[Any] | None = None,
    ncols: int = 8,
    *,
    title: str | None = None,
    bounds: tuple[float, float] | None = None,
    cmap: str = "gray",
    cell_size: float = 1.0,
) -> Figure:
    """A grid of images (e.g. data samples or activation-maximization results).

    Args:
        images: (N, C, H, W) with C in {1, 3}, or (N, H, W).
        labels: one title per image (e.g. the class), or None.
        ncols: images per row.
        title: figure title.
        bounds: value range shown as black..white; default [0, 1] if the data fit in it, else
            the data's min..max.
        cmap: colormap for one-channel images.
        cell_size: inches per image column.

    Returns:
        The Figure, with exactly N axes.

    Raises:
        ParameterError: wrong shape, or ``labels`` not one per image.
    """
    caller = "image_grid()"
    imgs = _images(images, "images", caller)
    ncols = check_int(ncols, "ncols", caller, low=1)
    check_text(title, "title", caller)
    if labels is not None and len(labels) != len(imgs):
        raise ParameterError(
            f"The 'labels' argument of {caller} must give one label per image: {len(imgs)}. Got {len(labels)}."
        )
    lo, hi = _display_range(imgs, bounds)
    cm = colormap(cmap, caller)
    ncols = min(ncols, len(imgs))
    nrows = math.ceil(len(imgs) / ncols)
    aspect = imgs.shape[1] / imgs.shape[2]
    with style():
        fig = new_figure(
            (cell_size * ncols, cell_size * aspect * nrows + (0.3 if title else 0.1)), tight=True
        )
        grid = fig.subplots(nrows, ncols, squeeze=False)
        for j, ax in enumerate(grid.flat):
            if j >= len(imgs):
                ax.remove()
                continue
            _show_image(ax, imgs[j], lo, hi, cm)
            _bare(ax)
            ax.set_gid(f"image:{j}")
            if labels is not None:
                ax.set_title(str(labels[j]), fontsize=7)
        if title:
            fig.suptitle(title)
    return fig


def attribution_grid(
    images: Any,
    maps: Mapping[str, Any],
    *,
    col_labels: Sequence[str] | None = None,
    signed: bool | str = "auto",
    magnitude_cmap: str = "gray",
    signed_cmap: str = "bwr",
    boundary: int | None = None,
    image_bounds: tuple[float, float] | None = None,
    title: str | None = None,
    cell_size: float = 1.0,
    transpose: bool = False,
) -> Figure:
    """Images in the first row, then one row of attribution maps per method (or model).

    With ``transpose=True`` the layout turns: one row per image, the image in the first
    column and one column per method (compact when there are many methods).

    Signed maps are drawn in ``signed_cmap`` on [-1, 1] (white = 0), magnitudes in
    ``magnitude_cmap`` on [0, 1] (black = 0 for "gray"), each image normalised by its own
    largest magnitude.

    Args:
        images: (N, C, H, W) or (N, H, W).
        maps: row label -> maps of the same N, H and W (any number of channels).
        col_labels: one title per image column (e.g. "class 0, signal top").
        signed: True (all rows signed), False (all rows |map|) or "auto" (a row is signed
            if it has a negative value).
        magnitude_cmap: colormap for magnitudes ("gray", "viridis", ...).
        signed_cmap: diverging colormap for signed maps.
        boundary: draw a red dotted horizontal line between rows ``boundary - 1`` and
            ``boundary`` of every panel (BlockMNIST: 28), or None.
        image_bounds: value range of the images (see :func:`image_grid`).
        title: figure title.
        cell_size: inches per image column.
        transpose: one row per image and one column per method instead.

    Returns:
        The Figure, with (1 + len(maps)) × N axes (N × (1 + len(maps)) when transposed).

    Raises:
        ParameterError: maps whose N, H or W differ from the images', bad ``col_labels``.
    """
    caller = "attribution_grid()"
    imgs = _images(images, "images", caller)
    rows = _map_rows(maps, imgs, signed, caller)
    if col_labels is not None and len(col_labels) != len(imgs):
        raise ParameterError(
            f"The 'col_labels' argument of {caller} must give one label per image: {len(imgs)}. "
            f"Got {len(col_labels)}."
        )
    if boundary is not None:
        check_int(boundary, "boundary", caller, low=1, high=imgs.shape[1] - 1)
    check_text(title, "title", caller)
    lo, hi = _display_range(imgs, image_bounds)
    cms = {True: colormap(signed_cmap, caller), False: colormap(magnitude_cmap, caller)}
    n, aspect = len(imgs), imgs.shape[1] / imgs.shape[2]
    n_rows, n_cols = 1 + len(rows), n
    size = (cell_size * n_cols + 0.35, cell_size * aspect * n_rows + (0.3 if title else 0.1))
    if transpose:
        n_rows, n_cols = n_cols, n_rows
        size = (cell_size * n_cols + 0.35, cell_size * aspect * n_rows + (0.5 if title else 0.3))
    with style():
        fig = new_figure(size, tight=True)
        axes = fig.subplots(n_rows, n_cols, squeeze=False)

        def cell(r: int, j: int) -> Any:  # r: 0 = image, then one per method; j: image index
            return axes[j, r] if transpose else axes[r, j]

        for j in range(n):
            _show_image(cell(0, j), imgs[j], lo, hi, cms[False])
            cell(0, j).set_gid(f"image:{j}")
            if col_labels is not None:
                label_ax = cell(0, j)
                (label_ax.set_ylabel if transpose else label_ax.set_title)(str(col_labels[j]), fontsize=7)
            for r, (label, (vals, is_signed)) in enumerate(rows.items(), start=1):
                cell(r, j).imshow(
                    vals[j], cmap=cms[is_signed], vmin=-1.0 if is_signed else 0.0, vmax=1.0
                )
                cell(r, j).set_gid(f"map:{label}:{j}")
        for r, label in enumerate(["image", *rows]):
            if transpose:
                cell(r, 0).set_title(label, fontsize=7, rotation=30 if len(label) > 8 else 0)
            else:
                cell(r, 0).set_ylabel(label, fontsize=7)
        for ax in axes.flat:
            _bare(ax)
            if boundary is not None:
                ax.axhline(
                    boundary - 0.5, color="red", linestyle=":", linewidth=1.2, gid="boundary"
                )
        if title:
            fig.suptitle(title)
    return fig


def _map_rows(
    maps: Mapping[str, Any], imgs: np.ndarray, signed: bool | str, caller: str
) -> dict[str, tuple[np.ndarray, bool]]:
    if not isinstance(signed, bool):
        check_choice(signed, "signed", caller, ("auto",))
    out = {}
    for label, value in check_labelled(maps, "maps", caller).items():
        arr = as_array(value, f"maps[{label!r}]", caller, ndim=(3, 4))
        if arr.ndim == 4:
            arr = arr.transpose(0, 2, 3, 1)
        if arr.shape[:3] != imgs.shape[:3]:
            raise ParameterError(
                f"The 'maps' argument of {caller} must match the images' (N, H, W) = "
                f"{imgs.shape[:3]} for {label!r}. Got {arr.shape[:3]}."
            )
        is_signed = (
            bool(np.nanmin(arr) < 0)
            if signed == "auto" and np.isfinite(arr).any()
            else signed is True
        )
        out[label] = (_normalised(arr, is_signed), is_signed)
    return out


def block_attribution_grid(
    images: Any,
    maps: Mapping[str, Any],
    boundary: int = 28,
    *,
    col_labels: Sequence[str] | None = None,
    cmap: str = "gray",
    title: str | None = None,
    cell_size: float = 0.8,
) -> Figure:
    """BlockMNIST gradients in the style of the paper's Fig. 1.

    First row: the images (1×56×28: top and bottom block). Then one row per model of
    |attribution| maps in grey (black = 0), each image normalised, with a red dotted line at
    the block boundary on every panel.

    Args:
        images: (N, 1, 56, 28) or (N, 56, 28) BlockMNIST images.
        maps: model label -> attributions shaped like the images.
        boundary: the row where the bottom block starts (28 for BlockMNIST).
        col_labels: one title per image column.
        cmap: magnitude colormap.
        title: figure title.
        cell_size: inches per image column.

    Returns:
        The Figure, with (1 + len(maps)) × N axes and one boundary line on each.
    """
    return attribution_grid(
        images,
        maps,
        col_labels=col_labels,
        signed=False,
        magnitude_cmap=cmap,
        boundary=boundary,
        title=title,
        cell_size=cell_size,
    )


def coordinate_heatmaps(
    x: Any,
    maps: Mapping[str, Any],
    *,
    n_relevant: int | None = None,
    normalize: str = "row-max",
    x_title: str = "input x",
    title: str | None = None,
    cmap: str = "bwr",
    grad_range: tuple[float, float] = (-1.0, 1.0),
    panel_size: tuple[float, float] = (1.6, 1.9),
) -> Figure:
    """Inputs and |gradients| of points × coordinates, in the style of the paper's Fig. 5.

    Panel 1 is the inputs on [-1, 1] (``cmap``, white = 0); then one panel per model of
    |gradient|, each row (point) divided by its largest entry, on ``grad_range`` (the
    default (-1, 1) puts 0 at white and 1 at full red, on the same scale as the inputs; the
    v1 synthetic figure used (0.8, 1)). A vertical divider separates the first
    ``n_relevant`` (task-relevant) coordinates from the noise coordinates.

    Args:
        x: (n_points, d) inputs.
        maps: model label -> (n_points, d) gradients.
        n_relevant: number of task-relevant coordinates (divider after them), or None.
        normalize: "row-max" (each point's largest |g| is 1) or "none".
        x_title: title of the input panel.
        title: figure title.
        cmap: colormap of every panel.
        grad_range: (vmin, vmax) of the gradient panels.
        panel_size: inches per panel.

    Returns:
        The Figure: 1 + len(maps) heatmap axes plus one colorbar axes (two when
        ``grad_range`` differs from (-1, 1)).

    Raises:
        ParameterError: maps whose shape differs from ``x``, ``n_relevant`` outside [1, d-1].
    """
    caller = "coordinate_heatmaps()"
    xs = as_array(x, "x", caller, ndim=2)
    grads = {}
    for label, value in check_labelled(maps, "maps", caller).items():
        g = np.abs(as_array(value, f"maps[{label!r}]", caller, ndim=2))
        if g.shape != xs.shape:
            raise ParameterError(
                f"The 'maps' argument of {caller} must have the shape of x {xs.shape} for {label!r}. Got {g.shape}."
            )
        grads[label] = g
    check_choice(normalize, "normalize", caller, ("row-max", "none"))
    if n_relevant is not None:
        check_int(n_relevant, "n_relevant", caller, low=1, high=xs.shape[1] - 1)
    for name, text in (("x_title", x_title), ("title", title)):
        check_text(text, name, caller)
    if normalize == "row-max":
        grads = {k: _row_max(g) for k, g in grads.items()}
    cm = colormap(cmap, caller)
    d = xs.shape[1]
    with style():
        fig = new_figure((panel_size[0] * (1 + len(grads)) + 0.6, panel_size[1]))
        axes = fig.subplots(1, 1 + len(grads), squeeze=False)[0]
        im_x = axes[0].imshow(xs, cmap=cm, vmin=-1.0, vmax=1.0, aspect="auto")
        axes[0].set_title(x_title)
        axes[0].set_ylabel("point")
        for ax, (label, g) in zip(axes[1:], grads.items(), strict=True):
            im_g = ax.imshow(g, cmap=cm, vmin=grad_range[0], vmax=grad_range[1], aspect="auto")
            ax.set_title(label)
        for ax in axes:
            ax.set_xticks(range(d), [str(j + 1) for j in range(d)], fontsize=6)
            ax.set_yticks([])
            ax.set_xlabel("coordinate")
            if n_relevant is not None:
                ax.axvline(n_relevant - 0.5, color="black", linewidth=1.5, gid="divider")
        if tuple(grad_range) == (-1.0, 1.0) or not grads:
            fig.colorbar(im_x, ax=list(axes), shrink=0.9, pad=0.02)
        else:
            fig.colorbar(im_x, ax=axes[0], shrink=0.9, pad=0.02)
            fig.colorbar(im_g, ax=list(axes[1:]), shrink=0.9, pad=0.02)
        if title:
            fig.suptitle(title)
    return fig


def _row_max(g: np.ndarray) -> np.ndarray:
    peak = np.where(np.isfinite(g), g, -np.inf).max(axis=1, keepdims=True)
    safe = np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
    return g / safe
