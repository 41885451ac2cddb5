"""Study ``blockmnist``: feature leakage of input gradients on BlockMNIST (paper §4, Fig. 1).

Every BlockMNIST image holds a digit (0 or 1, the label) in one 28×28 block and a fixed,
label-independent null patch in the other. A gradient that highlights "discriminative
features" should stay off the null block. Standard models' gradients leak digit-like
features into it; ℓ2-robust models' do not; on BlockMNIST-Top (digit always on top) even
standard models stop leaking. Measured here by the null block's share of each image's
top-k% |gradient| and of the gradient mass, and checked by DiffROAR and ROAD.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field, model_validator

from ..evaluation import leakage
from ..report import Report, plots
from ..training import Recipe
from . import narrative
from ._parallel import local_workers
from .base import Context, Study, register
from .config import DatasetName, Fractions, LeakageKs, MethodName, StudyConfig
from .measures import (
    DiffROARRequest,
    DiffROARSettings,
    MetricRequests,
    diffroar_results,
    metric_results,
    road_result,
)
from .reporting import add_diffroar, add_footer, add_leakage_tables, add_road, open_report
from .steps import (
    DataRef,
    ModelConfig,
    attribution_maps,
    load_arrays,
    save_arrays,
    study_data,
    trained_models,
)

__all__ = ["BlockMNISTConfig"]

_MLP_RECIPE = Recipe(epochs=3, batch_size=128, lr=0.05, momentum=0.9)


def default_models() -> list[ModelConfig]:
    """Standard and ℓ2-robust MLP (1568-256-256-2) and a CPU-sized standard ResNet."""
    return [
        ModelConfig(label="MLP", model="mlp", recipe=_MLP_RECIPE),
        ModelConfig(label="MLP ℓ2 ε=2", model="mlp",
                    recipe=_MLP_RECIPE.model_copy(update={"attack": "l2", "eps": 2.0})),
        ModelConfig(label="ResNet9", model="resnet9", model_options={"width": 8, "stem_pool": 2},
                    recipe=Recipe(epochs=2, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4)),
    ]


class BlockMNISTConfig(StudyConfig):
    """Config of the ``blockmnist`` study."""

    datasets: list[DatasetName] = Field(default_factory=lambda: ["blockmnist", "blockmnist-top"])
    models: list[ModelConfig] = Field(default_factory=default_models)
    method: MethodName = "grad"
    target: str = Field("label", pattern="^(label|predicted)$")
    leakage_ks: LeakageKs = Field(default_factory=lambda: [2.5, 5, 10, 15, 20, 25, 30])
    diffroar_models: list[str] = Field(default_factory=lambda: ["MLP", "MLP ℓ2 ε=2"],
                                       description="Labels of the models audited by DiffROAR on BlockMNIST.")
    diffroar: DiffROARSettings = Field(default_factory=lambda: DiffROARSettings(levels=[0.05, 0.1, 0.2, 0.5, 1.0]))
    road_percentages: Fractions = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    n_train: int | None = Field(None, ge=100, description="Use the first n training images (None: all).")
    n_test: int | None = Field(None, ge=100, description="Use the first n test images (None: all).")
    metrics: MetricRequests = Field(default_factory=dict, description=(
        "More registered metrics (gradaudit metrics) on each model's test maps, name: options, "
        "e.g. {pixel-perturbation: {}}; results under 'metrics'."))

    @model_validator(mode="after")
    def _known_models(self) -> BlockMNISTConfig:
        unknown = sorted(set(self.diffroar_models) - {m.label for m in self.models})
        if unknown:
            raise ValueError(f"diffroar_models names models not in 'models': {unknown}")
        return self


_QUICK_RECIPE = Recipe(epochs=3, batch_size=64, lr=0.05, momentum=0.9)
QUICK: dict[str, Any] = {
    "n_train": 2000, "n_test": 500,
    "models": [ModelConfig(label="MLP", model="mlp", recipe=_QUICK_RECIPE).model_dump(mode="json"),
               ModelConfig(label="MLP ℓ2 ε=2", model="mlp", recipe=_QUICK_RECIPE.model_copy(
                   update={"attack": "l2", "eps": 2.0, "attack_steps": 5})).model_dump(mode="json"),
               ModelConfig(label="ResNet9", model="resnet9", model_options={"width": 4, "stem_pool": 2},
                           recipe=_QUICK_RECIPE.model_copy(update={"epochs": 1})).model_dump(mode="json")],
    "diffroar": {"levels": [0.05, 1.0], "seeds": 2},
    "road_percentages": [0.1, 0.5, 0.9],
}


def _figure_indices(test: Any) -> torch.Tensor:
    """Two images of each (class, signal position): the layout of the paper's Fig. 1."""
    top = test.per_image["signal_top"].bool()
    picks = []
    for cls in (0, 1):
        for on_top in (True, False):
            idx = torch.nonzero((test.y == cls) & (top == on_top)).flatten()[:2]
            picks.append(idx)
    return torch.cat(picks)


def run(cfg: BlockMNISTConfig, ctx: Context) -> dict[str, Any]:
    results: dict[str, Any] = {"models": [], "leakage": [], "diffroar": {}, "road": {}}
    arrays: dict[str, torch.Tensor] = {}
    requests: list[DiffROARRequest] = []
    refs = {name: DataRef(name=name, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test) for name in cfg.datasets}
    wanted = [(f"{name}-{i}", m, ref) for name, ref in refs.items() for i, m in enumerate(cfg.models)]
    # every model of every dataset at once, side by side on one-thread workers (small nets: one
    # process keeps about one core busy)
    every_model = trained_models(local_workers(ctx, len(wanted)), wanted)
    for d, (name, ref) in enumerate(refs.items()):
        train, test = study_data(ctx, ref)
        split = ref.model_dump(mode="json")
        show = _figure_indices(test)
        arrays[f"{name}/x"] = test.x[show]
        models = every_model[d * len(cfg.models):(d + 1) * len(cfg.models)]
        for i, tm in enumerate(models):
            g_test = attribution_maps(ctx, tm, cfg.method, test, {**split, "split": "test"}, target=cfg.target,
                                      seed=cfg.seed)
            leak = leakage(g_test.values, test.per_image["null_mask"], test.per_image["signal_mask"],
                           ks=cfg.leakage_ks, seed=cfg.seed)
            results["models"].append({"dataset": name, "model": tm.label, **tm.summary,
                                      "attribution_seconds": g_test.seconds})
            results["leakage"].append({"dataset": name, "model": tm.label,
                                       **{k: v for k, v in leak.to_dict().items() if k != "provenance"}})
            if cfg.metrics:
                results.setdefault("metrics", []).append(
                    {"dataset": name, "model": tm.label,
                     **metric_results(ctx, tm, test, g_test.values, cfg.metrics, label=cfg.method, seed=cfg.seed)})
            arrays[f"{name}/g{i}"] = g_test.values[show]
            if name == "blockmnist" and tm.label in cfg.diffroar_models:
                g_train = attribution_maps(ctx, tm, cfg.method, train, {**split, "split": "train"},
                                           target=cfg.target, seed=cfg.seed)
                requests.append(DiffROARRequest(tm, ref, (g_train.key, g_test.key), cfg.diffroar, cfg.method,
                                                random=not requests, seed=cfg.seed, target=cfg.target))
                results["road"][tm.label] = road_result(ctx, tm, test, g_test.values, label=cfg.method,
                                                        percentages=cfg.road_percentages, seed=cfg.seed)
    for request, res in zip(requests, diffroar_results(ctx, requests), strict=True):
        results["diffroar"][request.trained.label] = res
    save_arrays(ctx, arrays)
    results["findings"] = narrative.blockmnist_findings(results)
    return results


def report(record: Mapping[str, Any], ctx: Context) -> Report:
    res, cfg = record["results"], record["config"]
    arrays = load_arrays(ctx)
    r = open_report(record, "BlockMNIST: do input gradients leak features onto the null block?")
    r.key_values({"attribution": f"{cfg['method']} (|∂ logit / ∂x|)", "target class": cfg["target"],
                  "ranking": "per element, seeded tie-break", "DiffROAR fill": cfg["diffroar"]["fill"],
                  "retraining": "fresh model, the audited model's recipe without attack; final-epoch "
                                "accuracy on the masked test set",
                  "seeds": cfg["diffroar"]["seeds"], "leakage k (%)": cfg["leakage_ks"]},
                 caption="Protocol choices.")
    r.table(res["models"], columns=["dataset", "model", "test_accuracy", "train_seconds", "attribution_seconds"],
            headers={"test_accuracy": "test accuracy (%)", "train_seconds": "training (s)",
                     "attribution_seconds": "gradients of the test set (s)"},
            caption="Test accuracy of every audited model (trained on the full training split; never selected "
                    "on the test set) and the time its training and its test-set gradients took.",
            formats={"test_accuracy": lambda v: f"{100 * v:.2f}",
                     "train_seconds": "{:.1f}", "attribution_seconds": "{:.1f}"})
    labels = [m["label"] for m in cfg["models"]]
    for name in cfg["datasets"]:
        maps = {lab: arrays[f"{name}/g{i}"].abs() for i, lab in enumerate(labels) if f"{name}/g{i}" in arrays}
        r.figure(plots.block_attribution_grid(arrays[f"{name}/x"], maps, boundary=28),
                 f"{name}: test images (top row) and each model's |input gradient| (one row per model); the "
                 "red dotted line is the block boundary, so any gradient in the digit-free block is leakage.")
    r.section("Leakage", "Share of each image's top-k% |gradient| coordinates that fall on the null block "
              "(0 is ideal; the null block's area share is what a random map gets).")
    bars = add_leakage_tables(r, res["leakage"], cfg["leakage_ks"])
    r.figure(plots.bar_with_errors([f"{k:g}%" for k in cfg["leakage_ks"]], bars["series"],
                                   xlabel="top-k% of |gradient|", ylabel="null-block share",
                                   hlines={"chance": bars["chance"]}),
             "Null-block share of the top-k% gradient coordinates per model and dataset; the dashed line is "
             "the chance level.")
    if res["diffroar"]:
        add_diffroar(r, res["diffroar"], "BlockMNIST")
    if res["road"]:
        add_road(r, res["road"])
    add_footer(r, record)
    return r


register(Study(name="blockmnist", summary="BlockMNIST feature leakage, DiffROAR and ROAD of input gradients",
               config=BlockMNISTConfig, run=run, report=report, quick=QUICK))
