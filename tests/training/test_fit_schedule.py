"""Learning-rate schedules against torch.optim.lr_scheduler, and the optimizer choices."""

from __future__ import annotations

import pytest
import torch

from gradaudit.training import Recipe, lr_at, make_optimizer
from gradaudit.training.schedule import SCHEDULES


def _torch_lrs(scheduler_factory, steps: int, per_epoch_steps: int | None = None, lr: float = 0.1) -> list[float]:
    """The lr PyTorch's scheduler gives at each of ``steps`` optimisation steps."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = scheduler_factory(opt)
    out = []
    for t in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if per_epoch_steps is None or (t + 1) % per_epoch_steps == 0:
            sched.step()
    return out


def _ours(recipe: Recipe, steps_per_epoch: int) -> list[float]:
    return [lr_at(recipe, e, s, steps_per_epoch) for e in range(recipe.epochs) for s in range(steps_per_epoch)]


def test_every_recipe_schedule_is_registered() -> None:
    assert set(SCHEDULES) == set(Recipe.model_fields["schedule"].annotation.__args__)


@pytest.mark.parametrize(("epochs", "steps"), [(3, 7), (8, 469), (1, 5)])
def test_onecycle_equals_torch_onecycle(epochs, steps) -> None:
    recipe = Recipe(epochs=epochs, lr=0.1, schedule="onecycle")
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.1, total_steps=epochs * steps, pct_start=0.3, anneal_strategy="cos",
        div_factor=25.0, final_div_factor=1e4, cycle_momentum=False), epochs * steps)
    ours = _ours(recipe, steps)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    # the shape: from lr/25 up to lr at 30% of the steps, down to lr/2.5e5 at the end
    assert ours[0] == pytest.approx(0.1 / 25)
    assert ours[-1] == pytest.approx(0.1 / 25 / 1e4)
    peak = max(range(len(ours)), key=ours.__getitem__)
    assert abs(peak - (0.3 * epochs * steps - 1)) <= 1
    assert 0.09 < ours[peak] <= 0.1


def test_cosine_equals_torch_cosine() -> None:
    recipe = Recipe(epochs=4, lr=0.2, schedule="cosine")
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4 * 11), 4 * 11, lr=0.2)
    ours = _ours(recipe, 11)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert ours[0] == 0.2 and ours[22] == pytest.approx(0.1)


def test_multistep_equals_torch_multistep() -> None:
    recipe = Recipe(epochs=10, lr=0.1, schedule="multistep", milestones=(3, 7), gamma=0.2)
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 7], gamma=0.2),
                        10 * 5, per_epoch_steps=5)
    ours = _ours(recipe, 5)
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert sorted(set(round(v, 12) for v in ours)) == [0.004, 0.02, 0.1]


def test_step_equals_torch_step() -> None:
    recipe = Recipe(epochs=9, lr=0.1, schedule="step", step_every=4, gamma=0.5)
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5), 9 * 3, per_epoch_steps=3)
    assert _ours(recipe, 3) == pytest.approx(theirs, rel=1e-12)


def test_constant() -> None:
    assert set(_ours(Recipe(epochs=3, lr=0.03), 4)) == {0.03}


def test_make_optimizer_choices() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(params, Recipe(lr=0.1, momentum=0.8, weight_decay=1e-3, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD)
    g = sgd.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (0.1, 0.8, 1e-3, True)
    adam = make_optimizer(params, Recipe(optimizer="adam", lr=1e-3, weight_decay=1e-4))
    assert isinstance(adam, torch.optim.Adam)
    g = adam.param_groups[0]
    assert (g["lr"], g["weight_decay"], g["betas"]) == (1e-3, 1e-4, (0.9, 0.999))
