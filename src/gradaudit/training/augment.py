"""Batched, seeded data augmentation for in-memory image tensors.

Each augmentation is a function ``(x, generator) -> x`` in the registry :data:`AUGMENTATIONS`.
Random draws come from a CPU ``torch.Generator`` (then move to ``x``'s device), so a seeded
run makes the same draws on any device, and a resumed run continues the same sequence.

Reference: the "basic" CIFAR transform of the reference code (``data_utils.get_cifar``,
paper-protocol §3.4): RandomCrop(32, padding=4) + RandomHorizontalFlip; zero padding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._validation import check_choice

__all__ = ["AUGMENTATIONS", "augment_batch", "crop_flip", "flip"]

_PAD = 4


def _none(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x


def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability ½ (one uniform draw per image)."""
    n = x.shape[0]
    mask = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
    return torch.where(mask, x.flip(-1), x)


def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by 4 px, crop a random H×W window per image, then :func:`flip`.

    Draws, in order: the N row offsets, the N column offsets (each uniform in 0..8), then
    the N flip draws.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (_PAD, _PAD, _PAD, _PAD))
    dy = torch.randint(0, 2 * _PAD + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * _PAD + 1, (n,), generator=generator).to(x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    # (N, H+8, W+8, C)[n, rows, cols] -> (N, 1, H, W, C) -> (N, C, H, W)
    cropped = padded.permute(0, 2, 3, 1)[idx_n, rows, cols].squeeze(1).permute(0, 3, 1, 2)
    return flip(cropped.contiguous(), generator)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": _none,
    "flip": flip,
    "crop-flip": crop_flip,
}


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch (N, C, H, W) with the augmentation named ``kind``.

    Args:
        x: The batch, on any device; not modified.
        kind: "none", "flip" (random horizontal flip) or "crop-flip" (4-px zero-padded
            random crop, then random horizontal flip).
        generator: A CPU ``torch.Generator``; every draw comes from it.

    Returns:
        The augmented batch, shaped like ``x`` (``x`` itself for "none").

    Raises:
        ParameterError: Unknown ``kind``.
    """
    check_choice(kind, "kind", "augment_batch", tuple(AUGMENTATIONS))
    return AUGMENTATIONS[kind](x, generator)
