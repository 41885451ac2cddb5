"""Study ``synthetic``: the paper's theory testbeds, where the discriminative feature is known.

Part 1, v1 coordinate data (x = s·e_j, paper-protocol §5.1): does |∇ₓ loss| rank the signal
coordinate first (robust models) or last (standard models: "feature inversion")?

Part 2, simplified BlockMNIST (§5.2): does the gradient of a standard model spread over all
task-relevant blocks ("feature leakage", the paper's theorem for wide ReLU MLPs) while the
ℓ∞-robust model's gradient stays on each instance's own signal block?
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from .. import attribution
from ..evaluation.theory import block_leakage, signal_rank
from ..report import Report, plots
from ..training import Recipe, robust_accuracy
from . import narrative
from ._parallel import local_workers
from .base import Context, Study, register
from .config import StudyConfig
from .reporting import add_footer, open_report
from .steps import (
    DataRef,
    ModelConfig,
    TrainedModel,
    load_arrays,
    save_arrays,
    study_data,
    trained_models,
)

__all__ = ["SyntheticConfig"]


def _recipe(epochs: int, eps: float = 0.0, batch_size: int = 250, momentum: float = 0.0) -> Recipe:
    """The reference's synthetic recipe: SGD lr 0.1 (×0.75 every 50 epochs), batch 250, no
    momentum, ℓ∞ PGD with 8 steps of 0.25·ε and no random start (paper-protocol §5.1).

    The study's defaults pass batch 50 and momentum 0.9 (``_FAST``) and train 10 epochs
    instead of the reference's 500 (width 25 000); the reference recipe is
    ``batch_size: 250, momentum: 0`` in a config file. Measured per epoch (issue 13): every
    model is at 100% test accuracy from epoch 1, the v1 robust model's AQ is +1.00 from
    epoch 1, the standard MLPs' leakage (18%) and the linear model's (20%) do not change
    after epoch 1, and the simplified robust MLP's own-block share is 0.82 at epoch 10
    and 0.83 at epoch 20; 20 epochs only doubled the two PGD-trained models' cost."""
    attack = {"attack": "linf", "eps": eps, "attack_steps": 8, "attack_step_size": 0.25 * eps,
              "attack_random_start": False} if eps > 0 else {}
    return Recipe(epochs=epochs, batch_size=batch_size, lr=0.1, momentum=momentum, schedule="step", gamma=0.75,
                  step_every=50, **attack)


def _mlp(label: str, width: int, epochs: int, eps: float = 0.0, **recipe: Any) -> ModelConfig:
    return ModelConfig(label=label, model="mlp", model_options={"hidden": [width]},
                       recipe=_recipe(epochs, eps, **recipe))


_FAST = {"batch_size": 50, "momentum": 0.9}


class V1Config(BaseModel):
    """v1 coordinate data and its models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int = Field(10, ge=2)
    n_train: int = Field(10_000, ge=10)
    n_test: int = Field(1_000, ge=10)
    models: list[ModelConfig] = Field(default_factory=lambda: [
        _mlp("standard MLP", 1000, 10, **_FAST), _mlp("ℓ∞-robust MLP (ε=0.3)", 1000, 10, eps=0.3, **_FAST)])
    gradient: str = Field("loss-grad", pattern="^(loss-grad|grad)$")
    eval_eps: list[float] = Field(default_factory=lambda: [round(0.05 * i, 2) for i in range(11)])
    eval_steps: int = Field(20, ge=1)
    n_show: int = Field(50, ge=1)


class SimplifiedConfig(BaseModel):
    """Simplified BlockMNIST and its models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    blocks: int = Field(10, ge=2)
    block_size: int = Field(1, ge=1)
    noise: str = Field("gaussian", pattern="^(gaussian|uniform)$")
    scale: float = Field(0.1, ge=0, le=1)
    n_train: int = Field(10_000, ge=10)
    n_test: int = Field(1_000, ge=10)
    models: list[ModelConfig] = Field(default_factory=lambda: [
        ModelConfig(label="linear", model="linear", recipe=_recipe(10, **_FAST)),
        _mlp("standard MLP", 1000, 10, **_FAST), _mlp("ℓ∞-robust MLP (ε=0.3)", 1000, 10, eps=0.3, **_FAST)])
    gradient: str = Field("grad", pattern="^(loss-grad|grad)$")
    n_show: int = Field(10, ge=1)


class SyntheticConfig(StudyConfig):
    """Config of the ``synthetic`` study."""

    v1: V1Config = Field(default_factory=V1Config)
    simplified: SimplifiedConfig = Field(default_factory=SimplifiedConfig)


QUICK: dict[str, Any] = {
    "v1": {"n_train": 2000, "n_test": 500, "eval_eps": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "eval_steps": 10,
           "models": [_mlp("standard MLP", 256, 8, **_FAST).model_dump(mode="json"),
                      _mlp("ℓ∞-robust MLP (ε=0.3)", 256, 15, eps=0.3, **_FAST).model_dump(mode="json")]},
    "simplified": {"n_train": 2000, "n_test": 500,
                   "models": [ModelConfig(label="linear", model="linear",
                                          recipe=_recipe(10, **_FAST)).model_dump(mode="json"),
                              _mlp("standard MLP", 128, 10, **_FAST).model_dump(mode="json"),
                              _mlp("ℓ∞-robust MLP (ε=0.3)", 128, 15, eps=0.3, **_FAST).model_dump(mode="json")]},
}


def _v1_ref(cfg: V1Config, seed: int) -> DataRef:
    return DataRef(name="synthetic-v1", seed=seed, options={"dim": cfg.dim, "n_train": cfg.n_train,
                                                            "n_test": cfg.n_test})


def _simplified_ref(cfg: SimplifiedConfig, seed: int) -> DataRef:
    return DataRef(name="simplified-blockmnist", seed=seed, options={
        "blocks": cfg.blocks, "block_size": cfg.block_size, "noise": cfg.noise, "scale": cfg.scale,
        "n_train": cfg.n_train, "n_test": cfg.n_test})


def _eval_v1(cfg: V1Config, seed: int, ctx: Context,
             models: list[TrainedModel]) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    _, test = study_data(ctx, _v1_ref(cfg, seed))
    rows, arrays = [], {"v1/x": test.x[: cfg.n_show].flatten(1)}
    for i, tm in enumerate(models):
        g = attribution.attribute(cfg.gradient, tm.model, test.x.to(ctx.device), test.y.to(ctx.device)).cpu()
        rank = signal_rank(g, test.per_image["signal_index"])
        curve = robust_accuracy(tm.model, test.x.to(ctx.device), test.y.to(ctx.device), norm="linf",
                                eps=cfg.eval_eps, steps=cfg.eval_steps, bounds=test.bounds, seed=seed)
        rows.append({"model": tm.label, "test_accuracy": tm.summary["test_accuracy"], **rank.to_dict(),
                     "robust_accuracy": {str(k): v for k, v in curve.items()},
                     "train_seconds": tm.summary["train_seconds"]})
        arrays[f"v1/g{i}"] = g[: cfg.n_show].flatten(1)
    return rows, arrays


def _eval_simplified(cfg: SimplifiedConfig, seed: int, ctx: Context,
                     models: list[TrainedModel]) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    _, test = study_data(ctx, _simplified_ref(cfg, seed))
    # show points ordered by (sign, signal block), as in the paper's Fig. 5
    order = torch.argsort(test.per_image["signal_block"] + cfg.blocks * test.y, stable=True)
    show = order[torch.linspace(0, len(order) - 1, cfg.n_show).long()]
    rows, arrays = [], {"simplified/x": test.x[show].flatten(1)}
    block_ids = torch.as_tensor(test.meta["block_id"])
    for i, tm in enumerate(models):
        g = attribution.attribute(cfg.gradient, tm.model, test.x.to(ctx.device), test.y.to(ctx.device)).cpu()
        leak = block_leakage(g, test.per_image["signal_block"], block_ids, cfg.blocks // 2)
        rows.append({"model": tm.label, "test_accuracy": tm.summary["test_accuracy"], **leak.to_dict(),
                     "train_seconds": tm.summary["train_seconds"]})
        arrays[f"simplified/g{i}"] = g[show].flatten(1)
    return rows, arrays


def run(cfg: SyntheticConfig, ctx: Context) -> dict[str, Any]:
    v1_ref, s_ref = _v1_ref(cfg.v1, cfg.seed), _simplified_ref(cfg.simplified, cfg.seed)
    requests = [(f"v1-{i}", m, v1_ref) for i, m in enumerate(cfg.v1.models)]
    requests += [(f"simplified-{i}", m, s_ref) for i, m in enumerate(cfg.simplified.models)]
    # all five at once, side by side on one-thread workers: each is a chain of tiny ops
    models = trained_models(local_workers(ctx, len(requests)), requests)
    n_v1 = len(cfg.v1.models)
    v1_rows, a1 = _eval_v1(cfg.v1, cfg.seed, ctx, models[:n_v1])
    s_rows, a2 = _eval_simplified(cfg.simplified, cfg.seed, ctx, models[n_v1:])
    save_arrays(ctx, {**a1, **a2})
    return {"v1": v1_rows, "simplified": s_rows, "findings": narrative.synthetic_findings(v1_rows, s_rows)}


_V1_HEADERS = {"test_accuracy": "test accuracy (%)", "top1": "signal ranked first (%)",
               "bottom1": "signal ranked last (%)", "aq": "AQ"}
_SIMPLIFIED_HEADERS = {"test_accuracy": "test accuracy (%)", "own_share": "mass on own block (%)",
                       "chance": "uniform spread (%)", "top_block_is_own": "own block ranked first (%)",
                       "relevant_share": "mass on task-relevant blocks (%)"}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def report(record: Mapping[str, Any], ctx: Context) -> Report:
    res, cfg = record["results"], record["config"]
    arrays = load_arrays(ctx)
    r = open_report(record, "Synthetic testbeds: do input gradients rank the known signal first?")
    r.key_values({"v1 gradient": cfg["v1"]["gradient"], "simplified gradient": cfg["simplified"]["gradient"],
                  "attribution target": "true label", "ranking": "|gradient| per coordinate",
                  "robustness evaluation": f"ℓ∞ PGD, {cfg['v1']['eval_steps']} steps, random start",
                  "seed": record["seed"]}, caption="Protocol choices.")
    r.section("v1 coordinate data (x = s·e_j)", "Each point has one non-zero coordinate (the signal); "
              "the label is its sign. A faithful attribution ranks that coordinate first.")
    r.table(res["v1"], columns=["model", "test_accuracy", "top1", "bottom1", "aq"], headers=_V1_HEADERS,
            caption="Share of the test points whose signal coordinate the |gradient| ranks first, and last, and "
                    "AQ = first − last; AQ = +1 is perfect, −1 is feature inversion.",
            formats={"test_accuracy": _pct, "top1": _pct, "bottom1": _pct, "aq": "{:+.2f}"})
    curves = {row["model"]: ([float(k) for k in row["robust_accuracy"]], list(row["robust_accuracy"].values()))
              for row in res["v1"]}
    r.figure(plots.accuracy_curves(curves, xlabel="ℓ∞ radius ε", ylabel="robust accuracy"),
             "Accuracy under ℓ∞ PGD: the robust model keeps full accuracy up to its training radius.")
    v1_maps = {row["model"]: arrays[f"v1/g{i}"] for i, row in enumerate(res["v1"])}
    r.figure(plots.coordinate_heatmaps(arrays["v1/x"], v1_maps),
             "Test points (rows) by coordinate: the input and each model's |gradient|, normalised per row; "
             "a faithful map lights up the same cell as the input.")
    r.section("Simplified BlockMNIST", "The signal sits on one of the first d/2 (task-relevant) blocks; "
              "the others hold noise. Feature leakage = the gradient spreads over all task-relevant blocks.")
    r.table(res["simplified"], columns=["model", "test_accuracy", "own_share", "chance", "top_block_is_own",
                                        "relevant_share"], headers=_SIMPLIFIED_HEADERS,
            caption="Mean share of the task-relevant |gradient| mass on each point's own signal block (100% = "
                    "instance-specific; the uniform spread over the task-relevant blocks = feature leakage), how "
                    "often that block gets the largest share, and the share of all mass on task-relevant blocks.",
            formats=dict.fromkeys(("test_accuracy", "own_share", "chance", "top_block_is_own", "relevant_share"),
                                  _pct))
    s_maps = {row["model"]: arrays[f"simplified/g{i}"] for i, row in enumerate(res["simplified"])}
    r.figure(plots.coordinate_heatmaps(arrays["simplified/x"], s_maps, n_relevant=cfg["simplified"]["blocks"] // 2
                                       * cfg["simplified"]["block_size"]),
             "The paper's Fig. 5: inputs (±1 on the signal block) and per-row normalised |gradients|; the "
             "divider separates task-relevant from noise coordinates.")
    add_footer(r, record)
    return r


register(Study(name="synthetic", summary="v1 coordinate data and simplified BlockMNIST: gradients vs known signal",
               config=SyntheticConfig, run=run, report=report, quick=QUICK))
