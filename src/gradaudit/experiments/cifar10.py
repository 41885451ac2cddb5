"""Study ``cifar10``: DiffROAR of input gradients of ResNets on CIFAR-10 (paper §3, Fig. 2).

The paper audits a CIFAR ResNet50 (``robustness`` library variant), standard and robust at
ℓ2 0.25, ℓ2 0.5 and ℓ∞ 8/255. The default here is the paper-size study for a GPU
(``--device cuda``): a CIFAR ResNet18 (width 64) on all 50,000 training images with the
``robustness`` library's defaults (SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128,
150 epochs with the rate ×0.1 every 50 epochs, crop-and-flip augmentation; PGD 7 steps of
2.5ε/7 without random start for the robust models), 11 levels k, 3 retraining seeds.
Images stay in [0, 1] and the models normalise with the CIFAR mean/std as their first
layer; masked coordinates are filled with the dataset mean, which is the reference's 0 in
normalised space.

Sizes: ``--quick`` (about 5 minutes on 2 CPU cores: a narrow ResNet9 on the first 2,500
training images, standard and ℓ∞ 8/255, 2 levels, 2 seeds, the random and mask-only
controls and ROAD); ``configs/cifar10-cpu.yaml`` (under an hour on one CPU core: standard,
ℓ2 and ℓ∞ ResNet9s trained on all 50,000 images, DiffROAR on 6,000 at k ∈ {5, 10, 20,
50}%, 2 seeds); the default, for a GPU.
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

# robustness-library defaults (paper-protocol §3.1): 150 epochs, lr 0.1 ×0.1 every 50 epochs.
RECIPE = Recipe(epochs=150, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
                step_every=50, gamma=0.1, augment="crop-flip", attack_steps=7, attack_random_start=False)
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


# --quick: a narrow ResNet9 (stem average-pooled by 2) on 2,500 images.
_QUICK_OPTIONS = {"width": 16, "stem_pool": 2}
_QUICK_RECIPE = Recipe(epochs=4, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle")
QUICK: dict[str, Any] = {
    "n_train": 2500, "n_test": 2000,
    "models": [ModelConfig(label="ResNet9", model="resnet9", model_options=_QUICK_OPTIONS, normalize=True,
                           recipe=_QUICK_RECIPE).model_dump(mode="json"),
               ModelConfig(label="ResNet9 ℓ∞ 8/255", model="resnet9", model_options=_QUICK_OPTIONS, normalize=True,
                           recipe=_QUICK_RECIPE.model_copy(update={"attack": "linf", "eps": 8 / 255,
                                                                   "attack_steps": 2})).model_dump(mode="json")],
    "targets": ["label"],
    "predicted_models": [],
    "diffroar": {"levels": [0.1, 1.0], "seeds": 2, "fill": "mean"},
    "road_percentages": [0.2, 0.8],
}


def report(record: Mapping[str, Any], ctx: Context) -> Report:
    return report_diffroar_study(record, ctx, "CIFAR-10: DiffROAR of input gradients, standard vs robust ResNets")


register(Study(name="cifar10", summary="DiffROAR of input gradients of standard/robust ResNets on CIFAR-10 (GPU; CPU: --quick, configs/cifar10-cpu.yaml)",
               config=Cifar10Config, run=run_diffroar_study, report=report, quick=QUICK))
