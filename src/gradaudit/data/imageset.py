"""The in-memory image set every layer of gradaudit passes around."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .._validation import ParameterError

__all__ = ["ImageSet"]


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
