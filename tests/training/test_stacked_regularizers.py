"""Stacked input-gradient regularizers: each member equals training.fit of that member alone."""

from __future__ import annotations

import pytest
import torch

from gradaudit.masking.fill import fill_masked
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, accuracy, fit
from gradaudit.training.ensemble import Member, apply_inputs, fit_stacked

from toydata import flat_weights, prototypes

SMOOTH = ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3, options={"hidden": [16, 8], "act": "softplus"})
RELU = ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3, options={"hidden": [16]})
BASE = {"epochs": 2, "batch_size": 40, "lr": 0.05, "momentum": 0.9}
CASES = {
    "gradnorm-relu": (RELU, {"regularizer": "gradnorm", "reg_weight": 0.5}),
    "gradnorm-softplus": (SMOOTH, {"regularizer": "gradnorm", "reg_weight": 0.5}),
    "score-matching": (SMOOTH, {"regularizer": "score-matching", "reg_weight": 1e-3,
                                "reg_options": {"samples": 2, "sigma": 0.1, "tau": 1e-3}}),
    "score-matching-antithetic": (SMOOTH, {"regularizer": "score-matching", "reg_weight": 1e-3,
                                           "reg_options": {"sigma": 0.1, "antithetic": True}}),
    "anti-score-matching": (SMOOTH, {"regularizer": "anti-score-matching", "reg_weight": 1e-4,
                                     "reg_options": {"sigma": 0.1, "threshold": 50.0}}),
}


def _masked(seed: int):
    keep = torch.rand(400, 1, 6, 6, generator=torch.Generator().manual_seed(seed)) < 0.6
    return lambda xb, rows: fill_masked(xb, keep[rows], "zero")


@pytest.mark.parametrize("case", list(CASES))
def test_stacked_regularized_members_equal_fit(case: str, one_thread: None) -> None:
    """Three members (own init, data order, noise; one on masked inputs, one also under PGD)
    in one stack = three separate fit calls, to float rounding."""
    spec, fields = CASES[case]
    recipe = Recipe(**BASE, **fields)
    train, test = prototypes(400, 0), prototypes(200, 1)
    members = [Member(10, 0), Member(11, 1, _masked(5)), Member(12, 2, attack={"attack": "linf", "eps": 8 / 255})]
    recipe = recipe.model_copy(update={"attack_steps": 2})
    stacked = fit_stacked(spec, train, recipe, members, quiet=True)
    assert stacked.engine == "bmm" and stacked.flops is None
    plain = fit_stacked(spec, train, recipe.model_copy(update={"regularizer": None, "reg_weight": 0.0,
                                                                "reg_options": {}}), members[:1], quiet=True)
    for i, (member, net) in enumerate(zip(members, stacked.models, strict=True)):
        alone = spec.build(member.init_seed)
        run = fit(alone, train.with_x(apply_inputs(member.inputs, train.x)), member.recipe(recipe), quiet=True)
        torch.testing.assert_close(flat_weights(net), flat_weights(alone), rtol=1e-4, atol=1e-5)
        assert abs(accuracy(net, test.x, test.y) - accuracy(alone, test.x, test.y)) <= 1e-4
        assert stacked.history[-1]["train_loss"][i] == pytest.approx(run.history[-1]["train_loss"], rel=1e-4, abs=1e-6)
    # the regularizer acted: the unregularized member 0 ends elsewhere
    assert (flat_weights(plain.models[0]) - flat_weights(stacked.models[0])).abs().max() > 1e-4
