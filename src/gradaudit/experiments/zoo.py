"""Study ``zoo``: which attribution methods highlight discriminative features?

The paper tested plain input gradients only and named other attribution methods as its
first open question. This study audits every method of the registry on standard and
adversarially trained models, by the paper's own criteria (DiffROAR; BlockMNIST null-block
leakage) and by the retraining-free tests (ROAD, pixel perturbation), and records the wall
time of each method. Methods that do not apply to a model (PatternAttribution on a ResNet)
are marked "n/a" with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import attribution
from .._io import to_jsonable
from ..evaluation import leakage, pixel_perturbation
from ..runs import Job
from ..training import Recipe
from .base import Context, Study, register
from .config import StudyConfig
from .steps import (
    DiffROARSettings,
    ModelConfig,
    TrainedModel,
    attribution_maps,
    dataset,
    diffroar_result,
    road_result,
    save_arrays,
    trained_model,
)
from .zoo_report import report, zoo_findings

__all__ = ["ZooConfig", "ZooDataset"]

ZOO_DATASETS = ("blockmnist", "fmnist")


class ZooDataset(BaseModel):
    """The models audited on one dataset and the image subsets the metrics use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: list[ModelConfig]
    n_train: int = Field(ge=10, description="Training images whose attributions feed DiffROAR retraining.")
    n_test: int = Field(ge=10, description="Test images for DiffROAR, leakage, ROAD and pixel perturbation.")
    n_perturb: int = Field(500, ge=10, description="Test images for ROAD and pixel perturbation.")
    n_model_train: int | None = Field(None, ge=100, description="Train the audited models on the first n "
                                                                "training images (None: all).")
    diffroar_n_train: dict[str, int] = Field(
        default_factory=dict, description="Per model label: fewer retraining images (e.g. for a CPU ResNet).")


def _blockmnist(n_train: int, n_test: int, resnet_train: int, epochs: int = 3) -> ZooDataset:
    recipe = Recipe(epochs=epochs, batch_size=128, lr=0.05, momentum=0.9)
    return ZooDataset(
        models=[ModelConfig(label="MLP", model="mlp", recipe=recipe),
                ModelConfig(label="MLP ℓ2 ε=2", model="mlp", recipe=recipe.model_copy(update={"attack": "l2", "eps": 2.0})),
                ModelConfig(label="ResNet9", model="resnet9", model_options={"width": 8, "stem_pool": 2},
                            recipe=recipe.model_copy(update={"epochs": 2, "weight_decay": 5e-4}))],
        n_train=n_train, n_test=n_test, diffroar_n_train={"ResNet9": resnet_train})


def _fmnist(n_train: int, n_test: int, epochs: int = 5) -> ZooDataset:
    recipe = Recipe(epochs=epochs, batch_size=128, lr=0.1, momentum=0.9, schedule="onecycle")
    return ZooDataset(
        models=[ModelConfig(label="MLP", model="mlp", recipe=recipe),
                ModelConfig(label="MLP ℓ∞ 16/255", model="mlp",
                            recipe=recipe.model_copy(update={"attack": "linf", "eps": 16 / 255}))],
        n_train=n_train, n_test=n_test)


def _default_options() -> dict[str, dict[str, Any]]:
    """Budget-friendly options of the expensive methods (all still exact to ~1%)."""
    return {"ig": {"n_steps": 32}, "pattern-ig": {"n_steps": 32}, "expected-grad": {"n_samples": 32},
            "sg-ig": {"n_samples": 10, "n_steps": 16}}


class ZooConfig(StudyConfig):
    """Config of the ``zoo`` study."""

    datasets: list[str] = Field(default_factory=lambda: list(ZOO_DATASETS))
    methods: list[str] | None = Field(None, description="Attribution methods (None: every registered method).")
    method_options: dict[str, dict[str, Any]] = Field(default_factory=_default_options)
    target: str = Field("label", pattern="^(label|predicted)$")
    blockmnist: ZooDataset = Field(default_factory=lambda: _blockmnist(4000, 1000, 1500))
    fmnist: ZooDataset = Field(default_factory=lambda: _fmnist(10_000, 2000))
    diffroar: DiffROARSettings = Field(default_factory=lambda: DiffROARSettings(levels=[0.05, 0.1, 0.2, 0.5],
                                                                                mask_only=False))
    road_percentages: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    leakage_ks: list[float] = Field(default_factory=lambda: [5, 10])
    n_grid: int = Field(4, ge=1, le=16)

    @model_validator(mode="after")
    def _check(self) -> ZooConfig:
        bad = [d for d in self.datasets if d not in ZOO_DATASETS]
        if bad or not self.datasets:
            raise ValueError(f"datasets must be a non-empty subset of {list(ZOO_DATASETS)}, got {self.datasets}")
        unknown = [m for m in (self.methods or []) + list(self.method_options) if m not in attribution.METHODS]
        if unknown:
            raise ValueError(f"unknown attribution methods {unknown}; valid: {sorted(attribution.METHODS)}")
        return self

    def method_list(self) -> list[str]:
        return list(self.methods) if self.methods is not None else list(attribution.METHODS)


QUICK: dict[str, Any] = {
    "blockmnist": _blockmnist(600, 200, 300, epochs=2).model_dump(mode="json")
    | {"n_perturb": 100, "n_model_train": 3000},
    "fmnist": _fmnist(1500, 300, epochs=2).model_dump(mode="json") | {"n_perturb": 100, "n_model_train": 6000},
    "method_options": {"ig": {"n_steps": 8}, "pattern-ig": {"n_steps": 8}, "expected-grad": {"n_samples": 8},
                       "smoothgrad": {"n_samples": 5}, "smoothgrad-sq": {"n_samples": 5},
                       "vargrad": {"n_samples": 5}, "sg-ig": {"n_samples": 3, "n_steps": 4}},
    "diffroar": {"levels": [0.1], "seeds": 2, "mask_only": False},
    "road_percentages": [0.2, 0.5, 0.8],
}


def _cell(ctx: Context, cfg: ZooConfig, name: str, ds: ZooDataset, tm: TrainedModel, method: str,
          train: Any, test: Any, data_cfg: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Every metric of one (dataset, model, method) cell, and the test maps (None if n/a)."""
    ok, reason = attribution.applicable(method, tm.model)
    row: dict[str, Any] = {"dataset": name, "model": tm.label, "method": method, "applicable": ok}
    if not ok:
        return row | {"reason": reason}, None
    opts = cfg.method_options.get(method, {})
    maps, seconds = {}, 0.0
    for split, images in (("train", train), ("test", test)):
        # data-dependent options (patterns, reference sets, data mean) are fitted on the train subset
        maps[split], sec = attribution_maps(ctx, tm, method, images, {**data_cfg, "split": split}, target=cfg.target,
                                            seed=cfg.seed, fit_on=train, options=opts)
        seconds += sec
    row["seconds_per_1000"] = 1000 * seconds / (len(train) + len(test))
    if name == "blockmnist":
        leak = leakage(maps["test"], test.per_image["null_mask"], test.per_image["signal_mask"], ks=cfg.leakage_ks,
                       seed=cfg.seed)
        for k, v in zip(leak.ks, leak.topk_null_mean, strict=True):
            row[f"null top-{k:g}%"] = v
        row["null mass"] = leak.mass_null_mean
    n_dr = ds.diffroar_n_train.get(tm.label, len(train))
    d = diffroar_result(ctx, tm, train.subset(slice(0, n_dr)), test, (maps["train"][:n_dr], maps["test"]),
                        cfg.diffroar, label=method, random=False, seed=cfg.seed, target=cfg.target)
    means = d["curves"]["attribution"]["diffroar"]["mean"]
    for k, v in zip(d["levels"], means, strict=True):
        row[f"DiffROAR@{k:g}"] = v
    row["DiffROAR mean"] = sum(means) / len(means)
    few = test.subset(slice(0, ds.n_perturb))
    rd = road_result(ctx, tm, few, maps["test"][: ds.n_perturb], label=method, percentages=cfg.road_percentages,
                     seed=cfg.seed)
    row |= {"ROAD MoRF": rd["morf"]["accuracy_area"], "ROAD LeRF": rd["lerf"]["accuracy_area"],
            "ROAD gap": rd["score"]}
    row["pixel perturbation"] = _pixel_area(ctx, tm, few, maps["test"][: ds.n_perturb], method, cfg.seed)
    return row, maps["test"]


def _pixel_area(ctx: Context, tm: TrainedModel, test: Any, maps: torch.Tensor, method: str, seed: int) -> float:
    """Area under the LeRF pixel-perturbation accuracy curve (Srinivas & Fleuret), cached."""
    job_config = {"model": tm.key, "attribution": method, "n_test": len(test), "seed": seed, "test": test.name}

    def compute(job: Job) -> dict[str, Any]:
        res = pixel_perturbation(tm.model, test.x, test.y, maps, fill="constant", seed=seed, device=ctx.device)
        return {"area": res.score, "curve": to_jsonable(res.curve.to_dict())}

    return float(ctx.store.run("perturb", job_config, compute, name=f"perturb-{method}")["area"])


def run(cfg: ZooConfig, ctx: Context) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    arrays: dict[str, torch.Tensor] = {}
    models: list[dict[str, Any]] = []
    for name in cfg.datasets:
        ds: ZooDataset = getattr(cfg, name)
        full_train = dataset(ctx, name, "train", cfg.seed)
        full_test = dataset(ctx, name, "test", cfg.seed)
        train, test = full_train.subset(slice(0, ds.n_train)), full_test.subset(slice(0, ds.n_test))
        data_cfg = {"name": name, "seed": cfg.seed, "n_train": len(train), "n_test": len(test)}
        model_train = full_train if ds.n_model_train is None else full_train.subset(slice(0, ds.n_model_train))
        model_data = {"name": name, "seed": cfg.seed} | ({} if ds.n_model_train is None else
                                                          {"n_train": ds.n_model_train})
        for i, m in enumerate(ds.models):
            tm = trained_model(ctx, m, f"zoo-{name}-{i}", model_train, full_test, model_data)
            models.append({"dataset": name, "model": m.label, **tm.summary})
            for method in cfg.method_list():
                row, maps = _cell(ctx, cfg, name, ds, tm, method, train, test, data_cfg)
                rows.append(row)
                if name == "blockmnist" and maps is not None:
                    arrays[f"grid/{i}/{method}"] = maps[: cfg.n_grid]
            if name == "blockmnist":
                arrays["grid/x"] = test.x[: cfg.n_grid]
    save_arrays(ctx, arrays)
    return {"models": models, "cells": rows, "findings": zoo_findings(rows)}


def _report(record: Mapping[str, Any], ctx: Context) -> Any:
    return report(record, ctx)


register(Study(name="zoo", summary="every attribution method × standard/robust models: DiffROAR, leakage, ROAD, "
                                   "pixel perturbation", config=ZooConfig, run=run, report=_report, quick=QUICK))
