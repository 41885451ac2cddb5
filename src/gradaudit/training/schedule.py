"""Learning-rate schedules as pure functions of the step, shared by every trainer.

Each schedule is a function ``(recipe, epoch, step, steps_per_epoch) -> lr`` in the registry
:data:`SCHEDULES`; :func:`lr_at` looks the recipe's schedule up. Being pure functions of the
position, the schedules need no state in checkpoints (a resumed run gets the same rates) and
are identical for a model trained alone and for the same model in a stacked ensemble.

Each one equals a PyTorch scheduler stepped once per optimisation step (``onecycle``,
``cosine``) or once per epoch (``multistep``, ``step``); ``tests/training/test_fit_schedule.py``
checks them against ``torch.optim.lr_scheduler``.

Deviations:
    * ``onecycle`` is ``OneCycleLR(max_lr=lr, pct_start=0.3, anneal_strategy="cos",
      div_factor=25, final_div_factor=1e4, cycle_momentum=False)``: the momentum is not
      cycled (PyTorch's default cycles it between 0.85 and 0.95).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .recipe import Recipe

__all__ = ["SCHEDULES", "lr_at"]

_ONECYCLE_WARMUP = 0.3  # pct_start
_ONECYCLE_DIV = 25.0  # initial lr = lr / div
_ONECYCLE_FINAL_DIV = 1e4  # final lr = initial lr / final div


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _constant(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    return recipe.lr


def _cosine(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    """CosineAnnealingLR(T_max = all steps, eta_min = 0), per step."""
    total = recipe.epochs * steps_per_epoch
    t = epoch * steps_per_epoch + step
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * t / total))


def _multistep(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    """MultiStepLR: × gamma at each epoch in ``milestones``."""
    return recipe.lr * recipe.gamma ** sum(epoch >= m for m in recipe.milestones)


def _step(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    """StepLR: × gamma every ``step_every`` epochs."""
    return recipe.lr * recipe.gamma ** (epoch // recipe.step_every)


def _onecycle(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    """OneCycleLR (cosine): lr/25 up to lr over the first 30% of steps, then down to lr/2.5e5."""
    total = recipe.epochs * steps_per_epoch
    t = epoch * steps_per_epoch + step
    peak = recipe.lr
    start = peak / _ONECYCLE_DIV
    end = start / _ONECYCLE_FINAL_DIV
    warm_end = _ONECYCLE_WARMUP * total - 1  # the step at which the peak is reached
    if t <= warm_end:
        return _anneal_cos(start, peak, t / warm_end)
    return _anneal_cos(peak, end, (t - warm_end) / (total - 1 - warm_end))


SCHEDULES: dict[str, Callable[[Recipe, int, int, int], float]] = {
    "constant": _constant,
    "onecycle": _onecycle,
    "multistep": _multistep,
    "step": _step,
    "cosine": _cosine,
}


def lr_at(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate for optimisation step ``step`` of epoch ``epoch`` (both from 0).

    Args:
        recipe: The training recipe (``schedule``, ``lr``, ``epochs``, ``milestones``,
            ``step_every``, ``gamma``).
        epoch: The epoch, from 0.
        step: The step within the epoch, from 0.
        steps_per_epoch: Optimisation steps per epoch.

    Returns:
        The learning rate to use for that step.
    """
    return SCHEDULES[recipe.schedule](recipe, epoch, step, steps_per_epoch)
