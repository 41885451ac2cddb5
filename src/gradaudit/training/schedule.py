"""Learning-rate schedules as pure functions of the step, shared by every trainer."""

from __future__ import annotations

import math

from .recipe import Recipe

__all__ = ["lr_at"]

_ONECYCLE_WARMUP = 0.3
_ONECYCLE_DIV = 25.0
_ONECYCLE_FINAL_DIV = 1e4


def lr_at(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate for optimisation step ``step`` of epoch ``epoch`` (both from 0).

    Being a pure function of the position, the schedule needs no state in checkpoints and
    is identical for a model trained alone and for the same model in a stacked ensemble.
    """
    total = recipe.epochs * steps_per_epoch
    t = epoch * steps_per_epoch + step
    base = recipe.lr
    if recipe.schedule == "constant":
        return base
    if recipe.schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * t / total))
    if recipe.schedule == "multistep":
        return base * recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.schedule == "step":
        return base * recipe.gamma ** (epoch // recipe.step_every)
    # onecycle: cosine warm-up from base/25 to base, then cosine decay to base/(25·1e4)
    warm = max(1, int(_ONECYCLE_WARMUP * total))
    start, end = base / _ONECYCLE_DIV, base / (_ONECYCLE_DIV * _ONECYCLE_FINAL_DIV)
    if t < warm:
        return start + (base - start) * 0.5 * (1 - math.cos(math.pi * t / warm))
    frac = (t - warm) / max(1, total - warm)
    return end + (base - end) * 0.5 * (1 + math.cos(math.pi * frac))
