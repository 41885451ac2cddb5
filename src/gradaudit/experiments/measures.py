"""Cached, resumable evaluation jobs of the studies: DiffROAR (retraining) and ROAD.

DiffROAR jobs are self-describing (model, data and maps are named by store hashes and a
:class:`~.steps.DataRef`), so :func:`diffroar_results` sends a whole batch of them to the
study's executor; each worker loads what it needs from the shared store and data root.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from .. import data
from .._io import load_tensors
from ..evaluation.diffroar import LEVELS, STUDY_MAX_STACK
from ..masking.fill import MASK_VIEW
from ..models import ModelSpec
from ..runs import Job, RunStore
from ..training import Recipe, load_run
from ..training.ensemble import PRECISIONS
from .base import Context
from .config import Levels, library_check
from .steps import MAPS, DataRef, TrainedModel, load_data

__all__ = ["DiffROARRequest", "DiffROARSettings", "MetricRequests", "diffroar_job", "diffroar_results", "metric_results",
           "road_result"]

def _metric_requests(value: Any) -> None:
    """A study's per-model metrics need no more than ``MAP_NEEDS`` (retraining metrics have
    their own jobs)."""
    from .._validation import ParameterError
    from ..evaluation import get_metric
    from ..evaluation.registry import MAP_NEEDS

    for name, options in value.items():
        spec = get_metric(name)
        extra = sorted(spec.needs - MAP_NEEDS)
        if extra:
            raise ParameterError(f"The metric {name!r} needs {', '.join(extra)}; a study's 'metrics' computes "
                                 "the metrics that need only a model, its maps and block masks.")
        spec.resolve(options, f"evaluate({name!r})")


MetricRequests = Annotated[dict[str, dict[str, Any]], library_check(_metric_requests)]
"""Registered metrics (``evaluation.METRICS``) by name, each with its options, checked by
the registry when the config is read."""


class DiffROARSettings(BaseModel):
    """How a study runs DiffROAR (the retrain recipe is the audited model's, made standard)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: Levels = Field(default_factory=lambda: list(LEVELS))
    seeds: int = Field(3, ge=1)
    fill: str = Field("zero", pattern="^(zero|mean)$")
    rank: str = Field("element", pattern="^(element|channel-sum)$")
    mask_only: bool = True
    max_stack: int = Field(STUDY_MAX_STACK, ge=1)
    retrain_epochs: int | None = Field(
        None, ge=1, description="Epochs of each retrain (None: the audited model's recipe's epochs).")
    precision: str | None = Field(
        None, pattern=f"^({'|'.join(PRECISIONS)})$",
        description="Arithmetic of the retrains: tf32 or bf16 on CUDA only (None: fp32).")

    def retrain_recipe(self, recipe: Recipe) -> Recipe:
        """The audited model's recipe with these settings' retrain epochs (``evaluation.diffroar``
        retrains with its ``standard()`` form)."""
        return recipe if self.retrain_epochs is None else recipe.model_copy(update={"epochs": self.retrain_epochs})


@dataclass(frozen=True)
class DiffROARRequest:
    """One DiffROAR curve to compute: a model, its data, the keys of its train/test maps."""

    trained: TrainedModel
    data: DataRef
    maps: tuple[str, str]
    settings: DiffROARSettings
    label: str
    random: bool
    seed: int = 0
    target: str = "label"

    def config(self) -> dict[str, Any]:
        out = {"model": self.trained.key, "data": self.data.model_dump(mode="json"),
               "maps": {"train": self.maps[0], "test": self.maps[1]}, "attribution": self.label,
               "target": self.target, "random": self.random, "seed": self.seed,
               "settings": self.settings.model_dump(mode="json", exclude_none=True)}
        if self.settings.mask_only:  # what the mask-only models see (results made before it was centred differ)
            out["mask_view"] = MASK_VIEW
        return out


def diffroar_job(job: Job, *, data_root: str | None, device: str, quiet: bool) -> dict[str, Any]:
    """Compute the DiffROAR curve a job's config describes (resumable); on any worker."""
    from ..evaluation import diffroar

    c = job.config
    store = RunStore(job.path.parents[1])
    model, info = load_run(store.find(c["model"]).path, device=device)
    train, test = load_data(DataRef(**c["data"]), data_root)
    maps = tuple(load_tensors(store.find(c["maps"][split]).path / MAPS)["maps"][: len(images)]
                 for split, images in (("train", train), ("test", test)))
    s = DiffROARSettings(**c["settings"])
    result = diffroar(model, train, test, attributions=maps, spec=ModelSpec(**info["spec"]),
                      recipe=s.retrain_recipe(Recipe(**info["recipe"])), target=c["target"], levels=s.levels, seeds=s.seeds,
                      seed=c["seed"], fill=s.fill, rank=s.rank, random=c["random"], mask_only=s.mask_only,
                      out=job.path / "retrains", max_stack=s.max_stack, device=device, quiet=quiet,
                      precision=s.precision or "fp32")
    return result.to_dict()


def diffroar_results(ctx: Context, requests: Sequence[DiffROARRequest]) -> list[dict[str, Any]]:
    """The ``to_dict()`` of every requested DiffROAR curve, computed on the study's executor."""
    fn = functools.partial(diffroar_job, data_root=ctx.root, device=ctx.device, quiet=ctx.quiet)
    return ctx.store.map("diffroar", [r.config() for r in requests], fn,
                         names=[f"diffroar-{r.label}" for r in requests], executor=ctx.executor)


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


def metric_results(
    ctx: Context,
    trained: TrainedModel,
    test: data.ImageSet,
    maps: torch.Tensor,
    requests: Mapping[str, Mapping[str, Any]],
    *,
    label: str,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each requested registered metric on one model's test maps (``to_dict()``), cached."""
    from ..evaluation import Subject, evaluate

    out = {}
    for name, options in requests.items():
        job_config = {"model": trained.key, "attribution": label, "metric": name, "options": dict(options),
                      "seed": seed, "n_test": len(test), "test": test.name}

        def compute(job: Job, name: str = name, options: Mapping[str, Any] = options) -> dict[str, Any]:
            subject = Subject(test=test, model=trained.model, maps=maps)
            return evaluate(name, subject, seed=seed, device=ctx.device, quiet=ctx.quiet, **options).to_dict()

        out[name] = ctx.store.run("metric", job_config, compute, name=f"{name}-{label}")
    return out
