"""Study ``cifar10``: DiffROAR of input gradients of ResNets on CIFAR-10 (paper §3, Fig. 2).

The paper audits a CIFAR ResNet50 (``robustness`` library variant), standard and robust at
ℓ2 0.25, ℓ2 0.5 and ℓ∞ 8/255. The default here is the full study for a GPU
(``--device cuda``): a CIFAR ResNet18, SGD with momentum, crop-and-flip augmentation, PGD
7 steps for the robust models. Images stay in [0, 1] and the models normalise with the
CIFAR mean/std as their first layer; masked coordinates are filled with the dataset mean,
which is the reference's 0 in normalised space. ``--quick`` runs a few hundred images with
a tiny ResNet on the CPU (the tests run it on small files in the real pickle format).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from ..report import Report
from ..training import Recipe
from .base import Context, Study, register
from .diffroar_study import DiffROARStudyConfig, report_diffroar_study, run_diffroar_study
from .measures import DiffROARSettings
from .steps import ModelConfig

__all__ = ["Cifar10Config"]

RECIPE = Recipe(epochs=30, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                augment="crop-flip", attack_steps=7)
THREAT_MODELS = (("ResNet18 ℓ2 0.25", "l2", 0.25), ("ResNet18 ℓ2 0.5", "l2", 0.5),
                 ("ResNet18 ℓ∞ 8/255", "linf", 8 / 255))


def default_models() -> list[ModelConfig]:
    base = {"model": "resnet18", "normalize": True}
    robust = [ModelConfig(label=label, recipe=RECIPE.model_copy(update={"attack": norm, "eps": eps}), **base)
              for label, norm, eps in THREAT_MODELS]
    return [ModelConfig(label="ResNet18", recipe=RECIPE, **base), *robust]


class Cifar10Config(DiffROARStudyConfig):
    """Config of the ``cifar10`` study."""

    dataset: str = "cifar10"
    models: list[ModelConfig] = Field(default_factory=default_models)
    predicted_models: list[str] | None = Field(default_factory=lambda: ["ResNet18"])
    diffroar: DiffROARSettings = Field(default_factory=lambda: DiffROARSettings(fill="mean"))


_QUICK_RECIPE = Recipe(epochs=1, batch_size=32, lr=0.05, momentum=0.9)
QUICK: dict[str, Any] = {
    "n_train": 256, "n_test": 64,
    "models": [ModelConfig(label="ResNet9", model="resnet9", model_options={"width": 4}, normalize=True,
                           recipe=_QUICK_RECIPE).model_dump(mode="json"),
               ModelConfig(label="ResNet9 ℓ∞ 8/255", model="resnet9", model_options={"width": 4}, normalize=True,
                           recipe=_QUICK_RECIPE.model_copy(update={"attack": "linf", "eps": 8 / 255,
                                                                   "attack_steps": 2})).model_dump(mode="json")],
    "predicted_models": [],
    "diffroar": {"levels": [0.1, 1.0], "seeds": 1, "fill": "mean"},
    "road_percentages": [0.2, 0.8],
}


def report(record: Mapping[str, Any], ctx: Context) -> Report:
    return report_diffroar_study(record, ctx, "CIFAR-10: DiffROAR of input gradients, standard vs robust ResNets")


register(Study(name="cifar10", summary="DiffROAR of input gradients of ResNets on CIFAR-10 (GPU; --quick on CPU)",
               config=Cifar10Config, run=run_diffroar_study, report=report, quick=QUICK))
