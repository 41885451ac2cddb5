"""The in-memory image set every layer of gradaudit passes around."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._validation import ParameterError, ParameterTypeError

__all__ = ["ImageSet", "as_imageset", "check_bounds"]


def check_bounds(bounds: Any, caller: str, name: str = "bounds") -> tuple[float, float]:
    """``(lo, hi)`` as floats, finite with lo < hi, or the one clear error."""
    try:
        lo, hi = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise ParameterError(f"The {name!r} of {caller} must be a pair (lo, hi) of numbers. Got {bounds!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError(f"The {name!r} of {caller} must be finite with lo < hi. Got {bounds!r}.")
    return lo, hi


@dataclass(frozen=True)
class ImageSet:
    """Images, labels and metadata, held as tensors.

    Attributes:
        x: Inputs, float32, shape (N, C, H, W), in the model's input space, inside ``bounds``.
        y: Labels, int64, shape (N,).
        meta: Facts about the whole set (JSON-able): ``name``, ``split``, ``classes``,
            ``bounds`` (lo, hi), and dataset-specific entries.
        per_image: Tensors with one row per image (first dimension N), e.g. BlockMNIST's
            ``signal_mask`` and ``null_mask``. They follow ``x`` through :meth:`subset`.
    """

    x: torch.Tensor
    y: torch.Tensor
    meta: Mapping[str, Any] = field(default_factory=dict)
    per_image: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.dim() != 4:
            raise ParameterError(
                f"ImageSet.x must have shape (N, C, H, W). Got {tuple(self.x.shape)}."
            )
        if self.y.shape != (self.x.shape[0],):
            raise ParameterError(
                f"ImageSet.y must have shape ({self.x.shape[0]},) to match x. "
                f"Got {tuple(self.y.shape)}."
            )
        for key, value in self.per_image.items():
            if value.shape[0] != self.x.shape[0]:
                raise ParameterError(
                    f"ImageSet.per_image[{key!r}] must have {self.x.shape[0]} rows. "
                    f"Got shape {tuple(value.shape)}."
                )
        if "bounds" in self.meta:
            check_bounds(self.meta["bounds"], "ImageSet", "meta['bounds']")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "unnamed"))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        classes = self.meta.get("classes")
        if classes is not None:
            return len(classes)
        return int(self.y.max().item()) + 1 if len(self) else 0

    @property
    def bounds(self) -> tuple[float, float]:
        """The box the inputs live in, used by attacks and clamps."""
        lo, hi = self.meta.get("bounds", (0.0, 1.0))
        return float(lo), float(hi)

    def check_inside(self, caller: str = "ImageSet") -> ImageSet:
        """``self`` if every input lies inside ``bounds``; else the one clear error naming
        the measured range (one min/max pass over ``x``)."""
        if len(self) == 0:
            return self
        lo, hi = self.bounds
        x_lo, x_hi = float(self.x.min()), float(self.x.max())
        if not (math.isfinite(x_lo) and math.isfinite(x_hi)):
            raise ParameterError(f"The images given to {caller} contain NaN or inf values.")
        if x_lo < lo or x_hi > hi:
            raise ParameterError(
                f"The images given to {caller} range over [{x_lo:.4g}, {x_hi:.4g}], outside their declared "
                f"bounds [{lo:g}, {hi:g}]. Declare the true range with data.as_imageset((x, y), "
                "bounds=(lo, hi)) (or meta['bounds']), or pass (x, y) without bounds to have it measured."
            )
        return self

    def subset(self, index: torch.Tensor | slice) -> ImageSet:
        """The images at ``index`` (a slice, an index tensor or a bool mask)."""
        return ImageSet(
            self.x[index],
            self.y[index],
            dict(self.meta),
            {k: v[index] for k, v in self.per_image.items()},
        )

    def split(self, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
        """A seeded random split into (rest, held_out) with ``round(fraction·N)`` held out."""
        n_held = round(fraction * len(self))
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(perm[n_held:].sort().values), self.subset(perm[:n_held].sort().values)

    def with_x(self, x: torch.Tensor) -> ImageSet:
        """The same set with new inputs of the same shape (e.g. masked images)."""
        if x.shape != self.x.shape:
            raise ParameterError(
                f"with_x needs inputs of shape {tuple(self.x.shape)}. Got {tuple(x.shape)}."
            )
        return ImageSet(x, self.y, dict(self.meta), dict(self.per_image))

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set on ``device``."""
        return ImageSet(
            self.x.to(device),
            self.y.to(device),
            dict(self.meta),
            {k: v.to(device) for k, v in self.per_image.items()},
        )


def _labels(y: Any, n: int, caller: str, what: str) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dtype.is_complex:
        if y.dtype.is_floating_point and bool((y == y.round()).all()):
            y = y.long()
        else:
            raise ParameterTypeError(f"The labels of {what} given to {caller} must be integers 0 … C−1. Got {y.dtype}.")
    if y.dim() != 1 or len(y) != n:
        raise ParameterError(
            f"The labels of {what} given to {caller} must have shape ({n},), one per image. Got {tuple(y.shape)}.")
    return y.long()


def _images(x: Any, caller: str, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ParameterError(
            f"The images of {what} given to {caller} must have shape (N, C, H, W) (or (N, H, W) for one channel). "
            f"Got {tuple(x.shape)}.")
    if not x.dtype.is_floating_point:
        raise ParameterTypeError(
            f"The images of {what} given to {caller} must be floats in the model's input space. Got {x.dtype}; "
            "convert them first, e.g. x.float() / 255.")
    return x.float()


def _from_dataset(data: Any, caller: str, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        n = len(data)
    except TypeError:
        raise ParameterTypeError(
            f"The {what!r} argument of {caller} must be a data.ImageSet, an (x, y) pair or a map-style "
            f"torch.utils.data.Dataset of (image, label). Got {type(data).__name__} (no len()).") from None
    xs, ys = [], []
    for i in range(n):
        item = data[i]
        if not isinstance(item, Sequence) or len(item) < 2:
            raise ParameterError(
                f"Item {i} of the dataset ({what}) given to {caller} must be an (image, label) pair. "
                f"Got {type(item).__name__}.")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    if not xs:
        raise ParameterError(f"The dataset ({what}) given to {caller} is empty.")
    if len({tuple(t.shape) for t in xs}) != 1:
        raise ParameterError(f"The images of the dataset ({what}) given to {caller} must all have one shape.")
    return torch.stack(xs), torch.stack(ys).reshape(-1)


def as_imageset(
    data: Any,
    *,
    bounds: tuple[float, float] | None = None,
    num_classes: int | None = None,
    name: str | None = None,
    caller: str = "as_imageset()",
    what: str = "data",
) -> ImageSet:
    """``data`` as an :class:`ImageSet`, checked once.

    ``data`` may be an ImageSet (returned as is once checked), an ``(x, y)`` pair of tensors or
    arrays (x: (N, C, H, W) or (N, H, W) floats, y: N integer labels), or a map-style
    ``torch.utils.data.Dataset`` whose items are ``(image, label)`` (e.g. a ``TensorDataset``).

    Bounds: ``bounds`` if given, else the ImageSet's ``meta["bounds"]``; for a pair or a dataset
    without ``bounds`` the measured ``(x.min(), x.max())``, stated in ``meta["bounds_source"]
    = "measured"``. Inputs outside the bounds, labels outside 0 … C−1 (C = ``num_classes`` if
    given) raise :class:`ParameterError` before any work.
    """
    meta: dict[str, Any]
    if isinstance(data, ImageSet):
        images = data
        if bounds is not None:
            images = ImageSet(data.x, data.y, {**data.meta, "bounds": check_bounds(bounds, caller),
                                               "bounds_source": "given"}, dict(data.per_image))
        if "bounds" in images.meta:
            images.check_inside(caller)
    else:
        if isinstance(data, tuple | list) and len(data) == 2:
            x, y = _images(data[0], caller, what), data[1]
        elif isinstance(data, str | bytes | Mapping | torch.Tensor) or not hasattr(data, "__getitem__") or (
                type(data).__module__ == "numpy"):
            raise ParameterTypeError(
                f"The {what!r} argument of {caller} must be a data.ImageSet, an (x, y) pair of tensors or a map-style "
                f"torch.utils.data.Dataset of (image, label). Got {type(data).__name__}.")
        else:
            raw_x, y = _from_dataset(data, caller, what)
            x = _images(raw_x, caller, what)
        y = _labels(y, len(x), caller, what)
        meta = {"name": name or "user-data", "split": what}
        if bounds is not None:
            meta.update(bounds=check_bounds(bounds, caller), bounds_source="given")
        elif len(x):
            meta.update(bounds=(float(x.min()), float(x.max())), bounds_source="measured")
        images = ImageSet(x, y, meta).check_inside(caller)
    if len(images) and int(images.y.min()) < 0:
        raise ParameterError(f"The labels of {what} given to {caller} must be 0 … C−1. Got {int(images.y.min())}.")
    if num_classes is not None and len(images) and int(images.y.max()) >= num_classes:
        raise ParameterError(
            f"The labels of {what} given to {caller} must be 0 … {num_classes - 1} ({num_classes} classes). "
            f"Got {int(images.y.max())}.")
    return images
