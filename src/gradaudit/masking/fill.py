"""Fills for removed coordinates: zero (the paper), dataset mean (ROAR).

Noisy linear imputation (ROAD) is added in this module by the ROAD work.
"""

from __future__ import annotations

import torch

from .._validation import ParameterError, check_choice

__all__ = ["FILLS", "fill_masked"]

FILLS = ("zero", "mean")


def fill_masked(
    x: torch.Tensor,
    keep: torch.Tensor,
    fill: str = "zero",
    *,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` where ``keep`` is True, the fill elsewhere.

    Args:
        x: Inputs (N, C, H, W).
        keep: Bool mask broadcastable to ``x`` (e.g. (N, 1, H, W) for channel-sum ranks).
        fill: "zero" (0 in the model's input space) or "mean" (per-channel dataset mean).
        mean: Per-channel mean, shape (C,), required for "mean".
    """
    check_choice(fill, "fill", "fill_masked", FILLS)
    if fill == "zero":
        return x * keep
    if mean is None:
        raise ParameterError("fill='mean' needs the per-channel dataset mean (argument 'mean').")
    return torch.where(keep, x, mean.view(1, -1, 1, 1).to(x))
