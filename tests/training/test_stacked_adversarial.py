"""Stacked PGD training: each member equals training.fit of that member alone."""

from __future__ import annotations

import pytest
import torch

from gradaudit.data import ImageSet
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, accuracy, fit
from gradaudit.training.attacks import pgd
from gradaudit.training.ensemble import Member, apply_inputs, fit_stacked

from toydata import flat_weights, prototypes

_toy, _weights = prototypes, flat_weights

SPEC = ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3, options={"hidden": [32, 16]})
RECIPE = Recipe(epochs=2, batch_size=40, lr=0.05, momentum=0.9, schedule="onecycle", attack_steps=4)
THREATS = [{"attack": "linf", "eps": 4 / 255}, {"attack": "linf", "eps": 16 / 255}, {"attack": "l2", "eps": 0.5}]


def _alone(member: Member, train: ImageSet, recipe: Recipe) -> torch.nn.Module:
    net = SPEC.build(member.init_seed)
    fit(net, train.with_x(apply_inputs(member.inputs, train.x)), member.recipe(recipe), quiet=True)
    return net


def test_three_threat_models_equal_three_fits(one_thread: None) -> None:
    """ℓ∞ 4/255, ℓ∞ 16/255 and ℓ2 0.5 in one stack = three separate fit calls (float rounding)."""
    train, test = _toy(400, 0), _toy(200, 1)
    members = [Member(init_seed=10 + i, data_seed=i, attack=t) for i, t in enumerate(THREATS)]
    stacked = fit_stacked(SPEC, train, RECIPE, members, quiet=True)
    assert stacked.engine == "bmm"
    robust = []
    for member, net in zip(members, stacked.models, strict=True):
        alone = _alone(member, train, RECIPE)
        torch.testing.assert_close(_weights(net), _weights(alone), rtol=1e-4, atol=1e-5)
        assert abs(accuracy(net, test.x, test.y) - accuracy(alone, test.x, test.y)) <= 1e-4
        r = member.recipe(RECIPE)
        adv = pgd(net, test.x, test.y, norm=r.attack, eps=r.eps, steps=10, seed=0)
        robust.append(accuracy(net, adv, test.y))
    # the attack is real: the larger l-inf radius costs the (own-radius) robust accuracy
    assert robust[1] < accuracy(stacked.models[1], test.x, test.y)


def test_mixed_stack_is_bitwise_with_one_thread(one_thread: None) -> None:
    """Attacked, standard and masked members together; no random start for one of them."""
    train = _toy(300, 2)
    keep = torch.rand(300, 1, 6, 6, generator=torch.Generator().manual_seed(4)) < 0.7
    members = [Member(1, 5, attack=THREATS[0]), Member(2, 6),
               Member(3, 7, lambda xb, rows: xb * keep[rows], attack=THREATS[2]),
               Member(4, 8, attack={**THREATS[1], "attack_random_start": False, "attack_step_size": 0.02})]
    recipe = RECIPE.model_copy(update={"epochs": 1, "optimizer": "adam", "lr": 1e-3, "val_fraction": 0.1})
    stacked = fit_stacked(SPEC, train, recipe, members, quiet=True)
    for member, net in zip(members, stacked.models, strict=True):
        assert torch.equal(_weights(net), _weights(_alone(member, train, recipe)))
    standard = fit_stacked(SPEC, train, recipe, [Member(1, 5)], quiet=True).models[0]
    assert not torch.equal(_weights(standard), _weights(stacked.models[0]))  # the attack changed member 0


def test_shared_recipe_attack_and_flops(one_thread: None) -> None:
    train = _toy(200, 3)
    recipe = RECIPE.model_copy(update={"epochs": 1, "attack": "l2", "eps": 0.3})
    members = [Member(0, 0), Member(1, 1)]
    stacked = fit_stacked(SPEC, train, recipe, members, quiet=True)
    for member, net in zip(members, stacked.models, strict=True):
        assert torch.equal(_weights(net), _weights(_alone(member, train, recipe)))
    train_flops = 2 * 200 * 2 * (2 * 36 * 32 + 3 * 32 * 16 + 3 * 16 * 3)
    attack_flops = 4 * 2 * 200 * 2 * 2 * (36 * 32 + 32 * 16 + 16 * 3)
    assert stacked.flops == pytest.approx(train_flops + attack_flops)
