"""Cached building blocks shared by the studies: data references, trained models, maps.

Each step is a run-store job keyed by its config, so studies that need the same model (the
``blockmnist`` and ``zoo`` studies both audit a standard BlockMNIST MLP, say) share it when
they share a store, and a killed study resumes where it stopped.

Model jobs are self-describing: their config names the data (a :class:`DataRef`), the
architecture and the recipe, so :func:`trained_models` can hand a whole batch of them to the
study's executor (in-process, or Ray workers that share the store root and the data root).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .. import attribution, data
from .._io import load_tensors, save_tensors
from .._validation import ParameterError, unknown_name
from ..models import ModelSpec
from ..runs import Job
from ..training import Recipe, accuracy, fit, load_run
from .base import Context
from .config import library_check

__all__ = [
    "DataRef",
    "Maps",
    "ModelConfig",
    "TrainedModel",
    "attribution_maps",
    "check_data",
    "dataset",
    "load_arrays",
    "load_data",
    "save_arrays",
    "study_data",
    "train_model_job",
    "trained_model",
    "trained_models",
]

MAPS = "maps.safetensors"
ARRAYS = "arrays.safetensors"


class DataRef(BaseModel):
    """A dataset split pair as a job config can name it: loader name, seed and options, and
    the first ``n_train`` / ``n_test`` images (None: all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)
    n_train: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)


def _model_name(name: Any) -> None:
    from ..models import MODELS

    if name not in MODELS:
        raise ParameterError(unknown_name("model", name, MODELS))


class ModelConfig(BaseModel):
    """One model to audit: its architecture and its recipe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(description="Name shown in reports, e.g. 'MLP ℓ∞ 16/255'.")
    model: Annotated[str, library_check(_model_name)] = "mlp"
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
    return _load(name, split, ctx.root, seed, tuple(sorted(options.items())))


def load_data(ref: DataRef, data_root: str | None) -> tuple[data.ImageSet, data.ImageSet]:
    """(train, test) of ``ref``, loaded once per process and cut to its sizes."""
    opts = tuple(sorted(ref.options.items()))
    train = _load(ref.name, "train", data_root, ref.seed, opts)
    test = _load(ref.name, "test", data_root, ref.seed, opts)
    if ref.n_train is not None:
        train = train.subset(slice(0, ref.n_train))
    if ref.n_test is not None:
        test = test.subset(slice(0, ref.n_test))
    return train, test


def _data_fields(node: Any, seed: int = 0) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(dataset name, seed, data options) of every ``dataset`` / ``datasets`` field in a dumped
    config, each with the nearest enclosing ``seed`` and ``data_options``."""
    if isinstance(node, Mapping):
        seed = node["seed"] if isinstance(node.get("seed"), int) else seed
        options = node.get("data_options") if isinstance(node.get("data_options"), Mapping) else {}
        names = [node.get("dataset")] if isinstance(node.get("dataset"), str) else []
        names += [n for n in node.get("datasets") or [] if isinstance(n, str)]
        for name in names:
            yield name, seed, dict(options)
        for value in node.values():
            yield from _data_fields(value, seed)
    elif isinstance(node, list):
        for value in node:
            yield from _data_fields(value, seed)


def check_data(cfg: BaseModel, data_root: str | None) -> None:
    """Load both splits of every dataset ``cfg`` names, before any job starts.

    A missing, corrupt (md5) or unreadable data file raises its :class:`DataError` here, not
    after the first models are trained; the splits stay in the process's cache, where the
    study's own loads find them.
    """
    for name, seed, options in dict.fromkeys(
            (n, s, tuple(sorted(o.items()))) for n, s, o in _data_fields(cfg.model_dump(mode="json"))):
        for split in ("train", "test"):
            _load(name, split, data_root, seed, options)


def study_data(ctx: Context, ref: DataRef) -> tuple[data.ImageSet, data.ImageSet]:
    """(train, test) of ``ref`` from the study's data root."""
    return load_data(ref, ctx.root)


@dataclass(frozen=True)
class TrainedModel:
    """A trained model and what the store knows of it."""

    label: str
    model: nn.Module
    spec: ModelSpec
    config: ModelConfig
    data: DataRef
    path: Path
    summary: dict[str, Any]

    @property
    def key(self) -> str:
        """The store hash of the model job (identifies the model in other jobs' configs)."""
        return self.path.name.rsplit("-", 1)[-1]


def _model_job_config(cfg: ModelConfig, ref: DataRef, train: data.ImageSet) -> dict[str, Any]:
    norm = (tuple(train.meta["mean"]), tuple(train.meta["std"])) if cfg.normalize else None
    spec = ModelSpec(name=cfg.model, input_shape=train.input_shape, num_classes=train.num_classes,
                     options=cfg.model_options, normalize=norm)
    return {"data": ref.model_dump(mode="json"), "spec": spec.model_dump(mode="json"),
            "recipe": cfg.recipe.model_dump(mode="json"), "init_seed": cfg.init_seed}


def train_model_job(job: Job, *, data_root: str | None, device: str, quiet: bool) -> dict[str, Any]:
    """Train the model a job's config describes (resumes from its checkpoint); any worker."""
    c = job.config
    train, test = load_data(DataRef(**c["data"]), data_root)
    spec = ModelSpec(**c["spec"])
    net = spec.build(seed=c["init_seed"])
    result = fit(net, train, Recipe(**c["recipe"]), out=job.path, device=device, quiet=quiet, spec=c["spec"])
    return {"test_accuracy": accuracy(net, test.x, test.y, device=device),
            "train_seconds": round(sum(h["seconds"] for h in result.history), 2),
            "final_train_accuracy": result.history[-1]["train_acc"]}


def trained_models(ctx: Context, requests: Sequence[tuple[str, ModelConfig, DataRef]]) -> list[TrainedModel]:
    """Train (or load) every ``(store name, config, data)`` model, on the study's executor."""
    configs = [_model_job_config(cfg, ref, load_data(ref, ctx.root)[0]) for _, cfg, ref in requests]
    names = [name for name, _, _ in requests]
    fn = functools.partial(train_model_job, data_root=ctx.root, device=ctx.device, quiet=ctx.quiet)
    summaries = ctx.store.map("model", configs, fn, names=names, executor=ctx.executor)
    out = []
    for (name, cfg, ref), config, summary in zip(requests, configs, summaries, strict=True):
        job = ctx.store.job("model", config, name=name)
        model, _ = load_run(job.path, device=ctx.device)
        out.append(TrainedModel(cfg.label, model, ModelSpec(**config["spec"]), cfg, ref, job.path, summary))
    return out


def trained_model(ctx: Context, cfg: ModelConfig, name: str, ref: DataRef) -> TrainedModel:
    """Train (or load) one model (see :func:`trained_models`)."""
    return trained_models(ctx, [(name, cfg, ref)])[0]


class Maps(NamedTuple):
    """Attribution maps of a split and what it took to compute them."""

    values: torch.Tensor
    seconds: float
    key: str  # the maps job's hash (names them in other jobs' configs)


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
) -> Maps:
    """Attributions of ``images`` by ``method`` for ``trained``, cached.

    Args:
        split_config: Names the images in the job's config (data, split, subset).
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

    name = f"{method}-{split_config.get('split', 'x')}-{trained.path.name.rsplit('-', 1)[0]}"  # which model's maps
    summary = ctx.store.run("maps", job_config, compute, name=name)
    job = ctx.store.job("maps", job_config)
    return Maps(load_tensors(job.path / MAPS)["maps"], float(summary["seconds"]), job.hash)


def save_arrays(ctx: Context, arrays: dict[str, torch.Tensor]) -> None:
    """Save the small arrays a study's report draws (so the report can be rebuilt alone)."""
    save_tensors(ctx.out / ARRAYS, {k: v.detach().float().cpu().contiguous() for k, v in arrays.items()})


def load_arrays(ctx: Context) -> dict[str, torch.Tensor]:
    """The arrays saved by :func:`save_arrays` (empty if none)."""
    path = ctx.out / ARRAYS
    return load_tensors(path) if path.is_file() else {}
