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
from .config import Fractions, LeakageKs, MethodName, StudyConfig
from .measures import DiffROARRequest, DiffROARSettings, diffroar_results, road_result
from .steps import (
    DataRef,
    ModelConfig,
    TrainedModel,
    attribution_maps,
    save_arrays,
    study_data,
    trained_models,
)
from .zoo_report import report, zoo_findings

__all__ = ["ZooConfig", "ZooDataset"]

# every dataset the zoo can audit (one config field each); the default runs the first two
ZOO_DATASETS = ("blockmnist", "fmnist", "cifar10")
DEFAULT_DATASETS = ("blockmnist", "fmnist")


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
    fill: str = Field("zero", pattern="^(zero|mean)$", description="DiffROAR fill of the removed coordinates "
                                                                   "(mean: the dataset mean, for normalised CIFAR).")


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


def _cifar10(n_train: int, n_test: int, epochs: int = 8, n_model_train: int | None = 10_000) -> ZooDataset:
    """A standard and an ℓ2-robust narrow CIFAR ResNet9 (channels-last, stem pooled by 2: CPU-sized)."""
    recipe = Recipe(epochs=epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                    augment="crop-flip")
    options = {"width": 16, "stem_pool": 2, "channels_last": True}
    return ZooDataset(
        models=[ModelConfig(label="ResNet9", model="resnet9", model_options=options, normalize=True, recipe=recipe),
                ModelConfig(label="ResNet9 ℓ2 0.5", model="resnet9", model_options=options, normalize=True,
                            recipe=recipe.model_copy(update={"attack": "l2", "eps": 0.5, "attack_steps": 3}))],
        n_train=n_train, n_test=n_test, n_model_train=n_model_train, fill="mean")


def _default_options() -> dict[str, dict[str, Any]]:
    """Budget-friendly options of the expensive methods (all still exact to ~1%)."""
    return {"ig": {"n_steps": 32}, "pattern-ig": {"n_steps": 32}, "expected-grad": {"n_samples": 32},
            "sg-ig": {"n_samples": 10, "n_steps": 16}}


class ZooConfig(StudyConfig):
    """Config of the ``zoo`` study."""

    datasets: list[str] = Field(default_factory=lambda: list(DEFAULT_DATASETS))
    data_options: dict[str, Any] = Field(default_factory=dict, description="Options of data.load for every "
                                                                           "selected dataset, e.g. verify.")
    methods: list[MethodName] | None = Field(None, description="Attribution methods (None: every registered method).")
    method_options: dict[str, dict[str, Any]] = Field(default_factory=_default_options)
    target: str = Field("label", pattern="^(label|predicted)$")
    blockmnist: ZooDataset = Field(default_factory=lambda: _blockmnist(4000, 1000, 1500))
    fmnist: ZooDataset = Field(default_factory=lambda: _fmnist(10_000, 2000))
    cifar10: ZooDataset = Field(default_factory=lambda: _cifar10(2000, 1000))
    diffroar: DiffROARSettings = Field(default_factory=lambda: DiffROARSettings(levels=[0.05, 0.1, 0.2, 0.5],
                                                                                mask_only=False))
    road_percentages: Fractions = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    leakage_ks: LeakageKs = Field(default_factory=lambda: [5, 10])
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
    "cifar10": _cifar10(300, 100, epochs=1, n_model_train=1000).model_dump(mode="json") | {"n_perturb": 50},
    "method_options": {"ig": {"n_steps": 8}, "pattern-ig": {"n_steps": 8}, "expected-grad": {"n_samples": 8},
                       "smoothgrad": {"n_samples": 5}, "smoothgrad-sq": {"n_samples": 5},
                       "vargrad": {"n_samples": 5}, "sg-ig": {"n_samples": 3, "n_steps": 4}},
    "diffroar": {"levels": [0.1], "seeds": 2, "mask_only": False},
    "road_percentages": [0.2, 0.5, 0.8],
}


def _cell(ctx: Context, cfg: ZooConfig, name: str, ds: ZooDataset, tm: TrainedModel, method: str,
          ref: DataRef) -> tuple[dict[str, Any], torch.Tensor | None, DiffROARRequest | None]:
    """The retraining-free metrics of one (dataset, model, method) cell, its test maps and
    its DiffROAR request (maps and request are None where the method does not apply)."""
    ok, reason = attribution.applicable(method, tm.model)
    row: dict[str, Any] = {"dataset": name, "model": tm.label, "method": method, "applicable": ok}
    if not ok:
        return row | {"reason": reason}, None, None
    train, test = study_data(ctx, ref)
    split = ref.model_dump(mode="json")
    opts = cfg.method_options.get(method, {})
    # data-dependent options (patterns, reference sets, data mean) are fitted on the train subset
    maps = {s: attribution_maps(ctx, tm, method, images, {**split, "split": s}, target=cfg.target, seed=cfg.seed,
                                fit_on=train, options=opts) for s, images in (("train", train), ("test", test))}
    row["seconds_per_1000"] = 1000 * (maps["train"].seconds + maps["test"].seconds) / (len(train) + len(test))
    g_test = maps["test"].values
    if _has_blocks(test):
        leak = leakage(g_test, test.per_image["null_mask"], test.per_image["signal_mask"], ks=cfg.leakage_ks,
                       seed=cfg.seed)
        for k, v in zip(leak.ks, leak.topk_null_mean, strict=True):
            row[f"null top-{k:g}%"] = v
        row["null mass"] = leak.mass_null_mean
    few = test.subset(slice(0, ds.n_perturb))
    rd = road_result(ctx, tm, few, g_test[: ds.n_perturb], label=method, percentages=cfg.road_percentages,
                     seed=cfg.seed)
    row |= {"ROAD MoRF": rd["morf"]["accuracy_area"], "ROAD LeRF": rd["lerf"]["accuracy_area"],
            "ROAD gap": rd["score"]}
    row["pixel perturbation"] = _pixel_area(ctx, tm, few, g_test[: ds.n_perturb], method, cfg.seed)
    n_dr = ds.diffroar_n_train.get(tm.label)
    dr_ref = ref if n_dr is None else ref.model_copy(update={"n_train": min(n_dr, len(train))})
    settings = cfg.diffroar if ds.fill == cfg.diffroar.fill else cfg.diffroar.model_copy(update={"fill": ds.fill})
    request = DiffROARRequest(tm, dr_ref, (maps["train"].key, maps["test"].key), settings, method,
                              random=False, seed=cfg.seed, target=cfg.target)
    return row, g_test, request


def _has_blocks(images: Any) -> bool:
    """Whether the images carry signal/null block masks (BlockMNIST): then leakage applies."""
    return {"null_mask", "signal_mask"} <= set(images.per_image)


def _ref(cfg: ZooConfig, name: str, **sizes: int | None) -> DataRef:
    return DataRef(name=name, seed=cfg.seed, options=cfg.data_options, **sizes)


def _add_diffroar(row: dict[str, Any], d: Mapping[str, Any]) -> None:
    means = d["curves"]["attribution"]["diffroar"]["mean"]
    for k, v in zip(d["levels"], means, strict=True):
        row[f"DiffROAR@{k:g}"] = v
    row["DiffROAR mean"] = sum(means) / len(means)


def _pixel_area(ctx: Context, tm: TrainedModel, test: Any, maps: torch.Tensor, method: str, seed: int) -> float:
    """Area under the LeRF pixel-perturbation accuracy curve (Srinivas & Fleuret), cached."""
    job_config = {"model": tm.key, "attribution": method, "n_test": len(test), "seed": seed, "test": test.name}

    def compute(job: Job) -> dict[str, Any]:
        res = pixel_perturbation(tm.model, test.x, test.y, maps, fill="constant", seed=seed, device=ctx.device)
        return {"area": res.score, "curve": to_jsonable(res.curve.to_dict())}

    return float(ctx.store.run("perturb", job_config, compute, name=f"perturb-{method}")["area"])


def run(cfg: ZooConfig, ctx: Context) -> dict[str, Any]:
    # 1. every audited model of every dataset (independent jobs: one batch for the executor)
    wanted = [(name, i, m) for name in cfg.datasets for i, m in enumerate(getattr(cfg, name).models)]
    trained = trained_models(ctx, [(f"zoo-{name}-{i}", m, _ref(cfg, name, n_train=getattr(cfg, name).n_model_train))
                                   for name, i, m in wanted])
    rows: list[dict[str, Any]] = []
    requests: list[tuple[dict[str, Any], DiffROARRequest]] = []
    arrays: dict[str, torch.Tensor] = {}
    # 2. every cell's maps and retraining-free metrics
    for (name, i, _), tm in zip(wanted, trained, strict=True):
        ds: ZooDataset = getattr(cfg, name)
        ref = _ref(cfg, name, n_train=ds.n_train, n_test=ds.n_test)
        grid = _has_blocks(study_data(ctx, ref)[1])  # the report's grids show the block boundary
        for method in cfg.method_list():
            row, maps, request = _cell(ctx, cfg, name, ds, tm, method, ref)
            rows.append(row)
            if request is not None:
                requests.append((row, request))
            if grid and maps is not None:
                arrays[f"grid/{name}/{i}/{method}"] = maps[: cfg.n_grid]
        if grid:
            arrays[f"grid/{name}/x"] = study_data(ctx, ref)[1].x[: cfg.n_grid]
    # 3. every cell's DiffROAR (one batch for the executor)
    for (row, _), d in zip(requests, diffroar_results(ctx, [r for _, r in requests]), strict=True):
        _add_diffroar(row, d)
    if arrays:  # grids of the block-mask data only (safetensors cannot hold an empty file)
        save_arrays(ctx, arrays)
    models = [{"dataset": name, "model": tm.label, **tm.summary} for (name, _, _), tm in zip(wanted, trained, strict=True)]
    return {"models": models, "cells": rows, "findings": zoo_findings(rows)}


def _report(record: Mapping[str, Any], ctx: Context) -> Any:
    return report(record, ctx)


register(Study(name="zoo", summary="every attribution method × standard/robust models: DiffROAR, leakage, ROAD, "
                                   "pixel perturbation", config=ZooConfig, run=run, report=_report, quick=QUICK))
