"""Shared machinery of the attribution methods: objectives, the batched input gradient,
memory chunks and seeded draws.

Every gradient method is built on a *gradient function* ``grad_fn(z, t)`` (the plain one is
:class:`~._paths.ModelGradient`): for a batch of
rows ``z`` (R, ...) and their classes ``t`` (R,), it returns d objective(f(z)_t) / dz, one row
per input row. Because the model is in eval mode, rows do not interact, so the gradient of
the summed objective is the per-row gradient. Methods only decide *where* to evaluate it
(path points, noisy copies, reference mixtures) and *how to combine* the rows; the chunking
below keeps each forward/backward at most ``max_batch`` rows.

The method functions (:mod:`.gradients`, :mod:`.integrated`, :mod:`.smoothing`,
:mod:`.pattern_methods`, :mod:`.random_map`) do the maths on clean arguments; call them through
:func:`gradaudit.attribution.attribute`, which validates the arguments, puts the model in eval
mode and restores it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .._seeding import derive_seed  # re-exported: the one seed derivation

__all__ = [
    "DEFAULT_MEMORY_MB",
    "MAX_ROWS",
    "OBJECTIVES",
    "GradFn",

    "derive_seed",
    "draw_generator",
    "fast_layout",
    "grid_chunks",
    "rows_for_budget",
]

GradFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Activation memory per forward/backward chunk when the caller gives no ``max_batch``: the
# chunk's rows are this budget over the measured bytes of one row's layer outputs. On a 2-core
# CPU, 256 MB gives ~750-row chunks for the MNIST CNN and the 8192-row cap for
# the MLP (large GEMMs); see bench/attribution_vs_captum.py.
DEFAULT_MEMORY_MB = {"cpu": 256.0, "cuda": 1024.0}
MAX_ROWS = 8192


def _logit(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return out.gather(1, t.unsqueeze(1)).squeeze(1)


def _prob(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return out.softmax(1).gather(1, t.unsqueeze(1)).squeeze(1)


def _loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, t, reduction="none")


# What is differentiated, per row: the raw logit of the target class (Shah et al.'s default),
# the softmax probability (PGIG's convention), or the cross-entropy loss (LossGrad).
OBJECTIVES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "logit": _logit,
    "prob": _prob,
    "loss": _loss,
}


def rows_for_budget(row_bytes: int, memory_mb: float | None, device: torch.device) -> int:
    """Rows per chunk so that one chunk's layer outputs take about ``memory_mb`` megabytes
    (default per device: 256 MB on CPU, 1 GB on CUDA), between 1 and 8192."""
    budget = DEFAULT_MEMORY_MB.get(device.type, DEFAULT_MEMORY_MB["cpu"]) if memory_mb is None else memory_mb
    return int(min(MAX_ROWS, max(1, budget * 2**20 // max(row_bytes, 1))))


def grid_chunks(n_items: int, per_item: int, max_batch: int) -> Iterator[tuple[slice, slice]]:
    """(items, samples) slices covering an n_items × per_item grid, ≤ max_batch cells each.

    Whole items are grouped while all of an item's samples fit in one chunk; otherwise each
    item is split into runs of at most ``max_batch`` samples.
    """
    if per_item <= max_batch:
        step = max_batch // per_item
        for i in range(0, n_items, step):
            yield slice(i, min(i + step, n_items)), slice(0, per_item)
        return
    for i in range(n_items):
        for k in range(0, per_item, max_batch):
            yield slice(i, i + 1), slice(k, min(k + max_batch, per_item))


def draw_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``; draws are moved to the data's device afterwards,
    so CPU and CUDA runs see the same numbers."""
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def fast_layout(model: nn.Module, *, channels_last: bool = True, freeze: bool = True) -> Iterator[None]:
    """Inside the block, with ``channels_last``, the model's 4-D (convolution) weights on the
    CPU are stored channels-last, the layout oneDNN's CPU convolutions are fastest in (the
    MNIST CNN's forward ~2× faster); with ``freeze``, no parameter requires a gradient, so
    backward passes compute input gradients only (no weight-gradient work). Each parameter's
    storage and flag are restored on exit, also on error.

    ``freeze`` leaves every value bit for bit as it was; ``channels_last`` changes float
    rounding (~1e-9 relative), which is harmless for forward-only metrics but can move a
    ReLU or max-pool input that sits within rounding of a kink to its other side, so the
    attribution methods (whose maps must match the unbatched gradient) only ``freeze``.
    """
    saved: list[tuple[nn.Parameter, torch.Tensor | None, bool]] = []
    try:
        for p in model.parameters():
            data = None
            if channels_last and p.dim() == 4 and p.device.type == "cpu":
                # a fresh channels-last copy: with one input channel, a contiguous weight also
                # passes is_contiguous(channels_last), but oneDNN reads the strides
                data = p.data
                p.data = torch.empty_like(data, memory_format=torch.channels_last).copy_(data)
            saved.append((p, data, p.requires_grad))
            if freeze:
                p.requires_grad_(False)
        yield
    finally:
        for p, data, flag in saved:
            if data is not None:
                p.data = data
            p.requires_grad_(flag)
