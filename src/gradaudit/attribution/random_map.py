"""The seeded random attribution: the control every ranking is compared with."""

from __future__ import annotations

import torch
from torch import nn

from ._core import draw_generator

__all__ = ["random_attribution"]


def random_attribution(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, seed: int = 0, max_batch: int = 256
) -> torch.Tensor:
    """Independent standard-normal values per coordinate; ranking by |a| gives a uniformly
    random permutation of each image's coordinates.

    Formula: a(x)_i ~ N(0, 1), i.i.d. over images and coordinates.

    Source: Shah, Jain & Netrapalli, NeurIPS 2021, arXiv:2102.12781 (random baseline);
    Hooker et al., NeurIPS 2019, arXiv:1806.10758 (random ranking in ROAR).

    Reference code: harshays/inputgradients ``scripts/saliency_utils.py``
    (``RandomAttribution``: ``torch.randn_like``); DFKI-NLP/pgig ``explainer/random.py``
    (U(0, 1)).

    Deviations: drawn from ``seed`` (the references use the global RNG). Unlike every other
    method, the draws are independent per image (so every image gets its own random
    ranking): the map of image i depends on its row index in the call, and a batch does not
    equal per-image calls. ``model`` and ``target`` are not used.

    Args:
        model: Unused.
        x: Inputs (N, ...) (only the shape, dtype and device are used).
        target: Unused.
        seed: Seeds the draws.
        max_batch: Unused.

    Returns:
        Random values shaped like ``x``.
    """
    return torch.randn(x.shape, generator=draw_generator(seed), dtype=x.dtype).to(x.device)
