"""Cached building blocks shared by the studies: datasets, trained models, attribution maps.

Each step is a run-store job keyed by its config, so studies that need the same model (the
``blockmnist`` and ``zoo`` studies both audit a standard BlockMNIST MLP, say) share it when
they share a store, and a killed study resumes where it stopped.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .. import attribution, data
from .._io import load_tensors, save_tensors
from ..models import ModelSpec
from ..runs import Job
from ..training import Recipe, accuracy, fit, load_run
from .base import Context

__all__ = [
    "DiffROARSettings",
    "ModelConfig",
    "TrainedModel",
    "attribution_maps",
    "dataset",
    "diffroar_result",
    "load_arrays",
    "road_result",
    "save_arrays",
    "trained_model",
]

MAPS = "maps.safetensors"


class ModelConfig(BaseModel):
    """One model to audit: the data it is trained on, its architecture and its recipe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(description="Name shown in reports, e.g. 'MLP ℓ∞ 16/255'.")
    model: str = "mlp"
    model_options: dict[str, Any] = Field(default_factory=dict)
    recipe: Recipe = Field(default_factory=Recipe)
    init_seed: int = Field(0, ge=0)
    normalize: bool = Field(False, description="Put the dataset's per-channel mean/std inside the model "
                                               "as its first layer (CIFAR); inputs stay in [0, 1].")


@functools.lru_cache(maxsize=16)
def _load(name: str, split: str, root: str | None, seed: int, options: tuple[tuple[str, Any], ...]) -> data.ImageSet:
    return data.load(name, split, root=root, seed=seed, **dict(options))


def dataset(ctx: Context, name: str, split: str, seed: int = 0, **options: Any) -> data.ImageSet:
    """A dataset split, loaded once per process (BlockMNIST and synthetic sets are seeded)."""
    root = str(ctx.data_root) if ctx.data_root is not None else None
    return _load(name, split, root, seed, tuple(sorted(options.items())))


@dataclass(frozen=True)
class TrainedModel:
    """A trained model and what the store knows of it."""

    label: str
    model: nn.Module
    spec: ModelSpec
    config: ModelConfig
    dataset: str
    path: Path
    summary: dict[str, Any]

    @property
    def key(self) -> str:
        """The store hash of the model job (identifies the model in other jobs' configs)."""
        return self.path.name.rsplit("-", 1)[-1]


def trained_model(
    ctx: Context, cfg: ModelConfig, name: str, train: data.ImageSet, test: data.ImageSet,
    data_config: dict[str, Any],
) -> TrainedModel:
    """Train (or load) the model of ``cfg`` on ``train``; test accuracy is recorded."""
    norm = (tuple(train.meta["mean"]), tuple(train.meta["std"])) if cfg.normalize else None
    spec = ModelSpec(name=cfg.model, input_shape=train.input_shape, num_classes=train.num_classes,
                     options=cfg.model_options, normalize=norm)
    job_config = {"data": data_config, "spec": spec.model_dump(mode="json"),
                  "recipe": cfg.recipe.model_dump(mode="json"), "init_seed": cfg.init_seed}

    def train_one(job: Job) -> dict[str, Any]:
        net = spec.build(seed=cfg.init_seed)
        result = fit(net, train, cfg.recipe, out=job.path, device=ctx.device, quiet=ctx.quiet,
                     spec=spec.model_dump(mode="json"))
        return {"test_accuracy": accuracy(net, test.x, test.y, device=ctx.device),
                "train_seconds": round(sum(h["seconds"] for h in result.history), 2),
                "final_train_accuracy": result.history[-1]["train_acc"]}

    summary = ctx.store.run("model", job_config, train_one, name=name)
    job = ctx.store.job("model", job_config, name=name)
    model, _ = load_run(job.path, device=ctx.device)
    return TrainedModel(cfg.label, model, spec, cfg, data_config.get("name", train.name), job.path, summary)


def attribution_maps(
    ctx: Context,
    trained: TrainedModel,
    method: str,
    images: data.ImageSet,
    split_config: dict[str, Any],
    *,
    target: str = "label",
    seed: int = 0,
    fit_on: data.ImageSet | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, float]:
    """Attributions of ``images`` by ``method`` for ``trained``, cached; (maps, seconds).

    Args:
        target: "label" (the true label, the paper) or "predicted".
        fit_on: Training data for data-dependent options (patterns, mean baseline,
            reference sets), fitted with ``attribution.fit_options``.
    """
    options = dict(options or {})
    job_config = {"model": trained.key, "method": method, "images": split_config, "target": target,
                  "seed": seed, "options": options, "fitted": fit_on is not None}

    def compute(job: Job) -> dict[str, Any]:
        opts = dict(options)
        if fit_on is not None:
            opts.update(attribution.fit_options(method, trained.model, fit_on, seed=seed))
        tgt = images.y if target == "label" else "predicted"
        start = time.perf_counter()
        maps = attribution.attribute(method, trained.model, images.x.to(ctx.device), tgt, seed=seed, **opts)
        seconds = time.perf_counter() - start
        save_tensors(job.path / MAPS, {"maps": maps})
        return {"seconds": round(seconds, 3), "shape": list(maps.shape)}

    summary = ctx.store.run("maps", job_config, compute, name=f"{method}-{split_config.get('split', 'x')}")
    job = ctx.store.job("maps", job_config)
    return load_tensors(job.path / MAPS)["maps"], float(summary["seconds"])


ARRAYS = "arrays.safetensors"


def save_arrays(ctx: Context, arrays: dict[str, torch.Tensor]) -> None:
    """Save the small arrays a study's report draws (so the report can be rebuilt alone)."""
    save_tensors(ctx.out / ARRAYS, {k: v.detach().float().cpu().contiguous() for k, v in arrays.items()})


def load_arrays(ctx: Context) -> dict[str, torch.Tensor]:
    """The arrays saved by :func:`save_arrays` (empty if none)."""
    path = ctx.out / ARRAYS
    return load_tensors(path) if path.is_file() else {}


class DiffROARSettings(BaseModel):
    """How a study runs DiffROAR (the retrain recipe is the audited model's, made standard)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    seeds: int = Field(3, ge=1)
    fill: str = Field("zero", pattern="^(zero|mean)$")
    rank: str = Field("element", pattern="^(element|channel-sum)$")
    mask_only: bool = True
    max_stack: int = Field(64, ge=1)


def diffroar_result(
    ctx: Context,
    trained: TrainedModel,
    train: data.ImageSet,
    test: data.ImageSet,
    maps: tuple[torch.Tensor, torch.Tensor],
    settings: DiffROARSettings,
    *,
    label: str,
    random: bool,
    seed: int = 0,
    target: str = "label",
) -> dict[str, Any]:
    """DiffROAR of ``maps`` for ``trained`` (a cached, resumable store job); its ``to_dict()``.

    ``label`` names the attribution in the job's config (with the model's hash); ``random``
    adds the random-attribution control (needed once per architecture and recipe).
    """
    from ..evaluation import diffroar

    job_config = {"model": trained.key, "attribution": label, "target": target, "random": random,
                  "seed": seed, "settings": settings.model_dump(mode="json"),
                  "train": train.name, "n_train": len(train), "n_test": len(test)}

    def compute(job: Job) -> dict[str, Any]:
        result = diffroar(trained.model, train, test, attributions=maps, spec=trained.spec,
                          recipe=trained.config.recipe, target=target, levels=settings.levels,
                          seeds=settings.seeds, seed=seed, fill=settings.fill, rank=settings.rank,
                          random=random, mask_only=settings.mask_only, out=job.path / "retrains",
                          max_stack=settings.max_stack, device=ctx.device, quiet=ctx.quiet)
        return result.to_dict()

    return ctx.store.run("diffroar", job_config, compute, name=f"diffroar-{label}")


def road_result(
    ctx: Context,
    trained: TrainedModel,
    test: data.ImageSet,
    maps: torch.Tensor,
    *,
    label: str,
    percentages: list[float],
    seed: int = 0,
) -> dict[str, Any]:
    """ROAD (MoRF and LeRF, noisy linear imputation, ranked by |attribution|), cached."""
    from ..evaluation import road

    job_config = {"model": trained.key, "attribution": label, "percentages": percentages, "seed": seed,
                  "n_test": len(test), "test": test.name}

    def compute(job: Job) -> dict[str, Any]:
        result = road(trained.model, test.x, test.y, maps, percentages=percentages, absolute=True,
                      rank="element", seed=seed, device=ctx.device, quiet=ctx.quiet)
        return result.to_dict()

    return ctx.store.run("road", job_config, compute, name=f"road-{label}")
