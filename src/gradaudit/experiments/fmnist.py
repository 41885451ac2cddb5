"""Study ``fmnist``: DiffROAR of input gradients of MLPs on Fashion-MNIST (paper Fig. 2).

Standard, ℓ∞ (4/255, 16/255) and ℓ2 (0.5, 1.0) PGD-trained two-layer MLPs and a linear
model, 11 levels, 3 retraining seeds; the random attribution computed; the mask-only
control for targets "label" (the paper) and "predicted"; ROAD beside DiffROAR.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from ..report import Report
from ..training import Recipe
from .base import Context, Study, register
from .diffroar_study import DiffROARStudyConfig, report_diffroar_study, run_diffroar_study
from .steps import ModelConfig

__all__ = ["FmnistConfig"]

# DESIGN defaults: 784-256-256-10, SGD momentum 0.9 + OneCycle (max lr 0.1), batch 128, 8 epochs.
RECIPE = Recipe(epochs=8, batch_size=128, lr=0.1, momentum=0.9, schedule="onecycle")
THREAT_MODELS = (("MLP ℓ∞ 4/255", "linf", 4 / 255), ("MLP ℓ∞ 16/255", "linf", 16 / 255),
                 ("MLP ℓ2 0.5", "l2", 0.5), ("MLP ℓ2 1.0", "l2", 1.0))


def default_models(recipe: Recipe = RECIPE) -> list[ModelConfig]:
    """Standard and four PGD-trained MLPs (10 steps of 2.5ε/10, random start) and a linear model."""
    robust = [ModelConfig(label=label, model="mlp", recipe=recipe.model_copy(update={"attack": norm, "eps": eps}))
              for label, norm, eps in THREAT_MODELS]
    return [ModelConfig(label="MLP", model="mlp", recipe=recipe), *robust,
            ModelConfig(label="linear", model="linear", recipe=recipe)]


class FmnistConfig(DiffROARStudyConfig):
    """Config of the ``fmnist`` study."""

    dataset: str = "fmnist"
    models: list[ModelConfig] = Field(default_factory=default_models)
    predicted_models: list[str] | None = Field(default_factory=lambda: ["MLP", "MLP ℓ∞ 16/255"])


_QUICK_RECIPE = Recipe(epochs=3, batch_size=128, lr=0.1, momentum=0.9, schedule="onecycle")
QUICK: dict[str, Any] = {
    "n_train": 6000, "n_test": 1000,
    "models": [ModelConfig(label="MLP", model="mlp", recipe=_QUICK_RECIPE).model_dump(mode="json"),
               ModelConfig(label="MLP ℓ∞ 16/255", model="mlp", recipe=_QUICK_RECIPE.model_copy(
                   update={"attack": "linf", "eps": 16 / 255, "attack_steps": 5})).model_dump(mode="json"),
               ModelConfig(label="linear", model="linear", recipe=_QUICK_RECIPE).model_dump(mode="json")],
    "predicted_models": ["MLP"],
    "diffroar": {"levels": [0.05, 0.2, 1.0], "seeds": 2},
    "road_percentages": [0.1, 0.5, 0.9],
}


def report(record: Mapping[str, Any], ctx: Context) -> Report:
    return report_diffroar_study(record, ctx, "Fashion-MNIST: DiffROAR of input gradients, standard vs robust MLPs")


register(Study(name="fmnist", summary="DiffROAR of input gradients of standard/robust MLPs on Fashion-MNIST",
               config=FmnistConfig, run=run_diffroar_study, report=report, quick=QUICK))
