"""Recipe: validation with one-line messages, derived values, JSON round trip."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from gradaudit._validation import format_validation_error
from gradaudit.training import Recipe


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "rmsprop"}, r"optimizer: Input should be 'sgd' or 'adam'"),
        ({"schedule": "linear"}, r"schedule: Input should be 'constant', 'onecycle', 'multistep', 'step' or 'cosine'"),
        ({"augment": "crop"}, r"augment: Input should be 'none', 'flip' or 'crop-flip'"),
        ({"attack": "l1", "eps": 0.1}, r"attack: Input should be 'linf' or 'l2'"),
        ({"attack": "linf"}, r"attack='linf' needs eps > 0"),
        ({"optimizer": "adam", "nesterov": True}, r"nesterov=True needs optimizer='sgd'"),
        ({"schedule": "multistep"}, r"schedule='multistep' needs milestones"),
        ({"milestones": (3,)}, r"milestones=\(3,\) need schedule='multistep'"),
        ({"schedule": "multistep", "milestones": (5, 3)}, r"strictly increasing"),
        ({"lr": 0.0}, r"lr: Input should be greater than 0"),
        ({"epochs": 0}, r"epochs: Input should be greater than or equal to 1"),
        ({"val_fraction": 1.0}, r"val_fraction: Input should be less than 1"),
        ({"momentum": 1.0}, r"momentum: Input should be less than 1"),
        ({"epoch": 3}, r"epoch: Extra inputs are not permitted"),
    ],
)
def test_invalid_recipes_raise_one_line_errors(kwargs, match) -> None:
    with pytest.raises(ValidationError) as err:
        Recipe(**kwargs)
    line = format_validation_error(err.value)
    assert "\n" not in line
    assert re.search(match, line), line


def test_frozen_and_json_round_trip() -> None:
    r = Recipe(epochs=3, schedule="multistep", milestones=(1, 2), attack="l2", eps=0.5, seed=4)
    with pytest.raises(ValidationError):
        r.epochs = 4
    assert Recipe.model_validate_json(r.model_dump_json()) == r


def test_step_size_and_standard() -> None:
    r = Recipe(attack="linf", eps=0.1, attack_steps=5)
    assert r.step_size == pytest.approx(2.5 * 0.1 / 5)
    assert Recipe(attack="linf", eps=0.1, attack_step_size=0.03).step_size == 0.03
    std = r.standard()
    assert (std.attack, std.eps, std.regularizer, std.reg_weight) == (None, 0.0, None, 0.0)
    assert std.model_dump(exclude={"attack", "eps"}) == r.model_dump(exclude={"attack", "eps"})
