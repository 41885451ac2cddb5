"""Study ``imagenet10``: DiffROAR of input gradients of ResNet18 on ImageNet-10 (paper §3, §6).

ImageNet-10 is the ``mixed_10`` superclass grouping of ImageNet (``robustness`` library),
112×112 inputs in [0, 1] without normalisation, a torchvision-layout ResNet18; the paper's
robust models are ℓ∞ 2/255, ℓ∞ 4/255 and ℓ2 1.0. The default is the full study for a GPU
(``--device cuda``; it needs a local ImageNet train/val tree and the WordNet files under the
data root). ``--quick`` caps the images per class and runs a tiny ResNet on the CPU.
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

__all__ = ["ImageNet10Config"]

RECIPE = Recipe(epochs=30, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                augment="crop-flip", attack_steps=7)
THREAT_MODELS = (("ResNet18 ℓ∞ 2/255", "linf", 2 / 255), ("ResNet18 ℓ∞ 4/255", "linf", 4 / 255),
                 ("ResNet18 ℓ2 1.0", "l2", 1.0))


def default_models() -> list[ModelConfig]:
    robust = [ModelConfig(label=label, model="resnet18-imagenet",
                          recipe=RECIPE.model_copy(update={"attack": norm, "eps": eps}))
              for label, norm, eps in THREAT_MODELS]
    return [ModelConfig(label="ResNet18", model="resnet18-imagenet", recipe=RECIPE), *robust]


class ImageNet10Config(DiffROARStudyConfig):
    """Config of the ``imagenet10`` study."""

    dataset: str = "imagenet10"
    models: list[ModelConfig] = Field(default_factory=default_models)
    predicted_models: list[str] | None = Field(default_factory=lambda: ["ResNet18"])


_QUICK_RECIPE = Recipe(epochs=1, batch_size=16, lr=0.05, momentum=0.9)
QUICK: dict[str, Any] = {
    "data_options": {"max_per_class": 4},
    "models": [ModelConfig(label="ResNet18", model="resnet18-imagenet", model_options={"width": 4},
                           recipe=_QUICK_RECIPE).model_dump(mode="json")],
    "predicted_models": [],
    "diffroar": {"levels": [0.1, 1.0], "seeds": 1},
    "road_percentages": [0.2, 0.8],
}


def report(record: Mapping[str, Any], ctx: Context) -> Report:
    return report_diffroar_study(record, ctx, "ImageNet-10: DiffROAR of input gradients of ResNet18")


register(Study(name="imagenet10", summary="DiffROAR of input gradients of ResNet18 on ImageNet-10 (GPU; --quick on CPU)",
               config=ImageNet10Config, run=run_diffroar_study, report=report, quick=QUICK))
