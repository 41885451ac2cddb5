"""Batched, seeded data augmentation for in-memory image tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["augment_batch"]


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch (N, C, H, W): "none", "flip", or "crop-flip" (pad 4, random crop, flip).

    Draws come from ``generator`` (on the CPU) so that a seeded run is reproducible.
    """
    if kind == "none":
        return x
    n, _, h, w = x.shape
    if kind == "crop-flip":
        pad = 4
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        idx_n = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        x = padded.permute(0, 2, 3, 1)[idx_n, rows, cols].squeeze(1).permute(0, 3, 1, 2)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)
