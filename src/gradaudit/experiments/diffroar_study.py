"""The DiffROAR study shared by ``fmnist``, ``cifar10`` and ``imagenet10`` (paper Fig. 2).

For every audited model (standard, adversarially robust, linear) it computes input
gradients of every train and test image, retrains fresh models on top-k and bottom-k
unmasked data at each level over several seeds, and reports DiffROAR with ±std bands, the
computed random-attribution control, the mask-only control of class-information leakage
(for each attribution target: the true label, the paper's choice, and the predicted class),
and ROAD beside it (no retraining; its imputation hides the mask's shape).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from .._validation import ParameterError
from ..report import Report
from ..training import Recipe
from . import narrative
from .base import Context
from .config import DatasetName, Fractions, MethodName, StudyConfig
from .measures import DiffROARRequest, DiffROARSettings, diffroar_results, road_result
from .reporting import add_diffroar, add_footer, add_road, leak_aware_rows, open_report
from .steps import DataRef, ModelConfig, attribution_maps, study_data, trained_models

__all__ = ["DiffROARStudyConfig", "report_diffroar_study", "run_diffroar_study"]


class DiffROARStudyConfig(StudyConfig):
    """DiffROAR of attributions of several models on one dataset."""

    dataset: DatasetName
    data_options: dict[str, Any] = Field(default_factory=dict, description="Options of data.load, e.g. verify.")
    n_train: int | None = Field(None, ge=10, description="Use the first n training images (None: all).")
    n_test: int | None = Field(None, ge=10, description="Use the first n test images (None: all).")
    n_model_train: int | None = Field(
        None, ge=10, description="Train the audited models on the first n training images (None: the n_train "
                                 "images that DiffROAR attributes and retrains on).")
    models: list[ModelConfig]
    method: MethodName = "grad"
    targets: list[str] = Field(default_factory=lambda: ["label", "predicted"])
    predicted_models: list[str] | None = Field(
        None, description="Models also audited with target 'predicted' (None: all).")
    diffroar: DiffROARSettings = Field(default_factory=DiffROARSettings)
    road_percentages: Fractions = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 0.7, 0.9])

    @model_validator(mode="after")
    def _check(self) -> DiffROARStudyConfig:
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"model labels must be unique, got {labels}")
        bad = [t for t in self.targets if t not in ("label", "predicted")]
        if bad or not self.targets:
            raise ValueError(f"targets must be a non-empty list of 'label'/'predicted', got {self.targets}")
        unknown = sorted(set(self.predicted_models or []) - set(labels))
        if unknown:
            raise ValueError(f"predicted_models names models not in 'models': {unknown}")
        return self


def _with_random(res: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """``res`` with the random control of ``source``: random rankings do not depend on the
    audited model or the attribution target, only on the architecture and recipe, so one
    random control per architecture serves every model and target."""
    if res is source or "random" not in source["curves"]:
        return res
    out = {**res, "curves": {**res["curves"], "random": source["curves"]["random"]}}
    if "random" in source.get("leakage", {}):
        out["leakage"] = {**res.get("leakage", {}), "random": source["leakage"]["random"]}
    return out


def _retrain_recipe(recipe: Recipe, settings: DiffROARSettings) -> Recipe:
    """The recipe DiffROAR's retrains follow, with the attack's unused fields at their defaults
    (models that differ only in their attack share their retrains' random control)."""
    unused = {name: Recipe.model_fields[name].default for name in _ATTACK_FIELDS}
    return settings.retrain_recipe(recipe).standard().model_copy(update=unused)


_ATTACK_FIELDS = ("attack_steps", "attack_step_size", "attack_random_start")


def run_diffroar_study(cfg: DiffROARStudyConfig, ctx: Context) -> dict[str, Any]:
    ref = DataRef(name=cfg.dataset, seed=cfg.seed, options=cfg.data_options, n_train=cfg.n_train, n_test=cfg.n_test)
    train, test = study_data(ctx, ref)
    if train.num_classes < 2:
        raise ParameterError(f"{cfg.dataset} has fewer than 2 classes in its first {len(train)} images.")
    split = ref.model_dump(mode="json")
    results: dict[str, Any] = {"models": [], "diffroar": {t: {} for t in cfg.targets}, "road": {}}
    # 1. every audited model (independent jobs: one batch for the executor)
    model_ref = ref if cfg.n_model_train is None else ref.model_copy(update={"n_train": cfg.n_model_train})
    models = trained_models(ctx, [(f"{cfg.dataset}-{i}", m, model_ref) for i, m in enumerate(cfg.models)])
    requests: list[tuple[str, DiffROARRequest]] = []
    seen: set[str] = set()  # architecture+recipe whose random control is already requested
    for tm in models:
        results["models"].append({"model": tm.label, **tm.summary})
        arch = f"{tm.spec.model_dump_json()}|{_retrain_recipe(tm.config.recipe, cfg.diffroar).model_dump_json()}"
        for target in cfg.targets:
            if target == "predicted" and cfg.predicted_models is not None and tm.label not in cfg.predicted_models:
                continue
            # 2. its input gradients on every train and test image
            maps = [attribution_maps(ctx, tm, cfg.method, s, {**split, "split": name}, target=target, seed=cfg.seed)
                    for name, s in (("train", train), ("test", test))]
            requests.append((arch, DiffROARRequest(tm, ref, (maps[0].key, maps[1].key), cfg.diffroar,
                                                   f"{cfg.method}-{target}", random=arch not in seen,
                                                   seed=cfg.seed, target=target)))
            seen.add(arch)
            if target == cfg.targets[0]:
                results["road"][tm.label] = road_result(ctx, tm, test, maps[1].values, label=f"{cfg.method}-{target}",
                                                        percentages=cfg.road_percentages, seed=cfg.seed)
    # 3. every DiffROAR curve (one batch for the executor); one random control per architecture
    curves = diffroar_results(ctx, [r for _, r in requests])
    random_of = {arch: res for (arch, r), res in zip(requests, curves, strict=True) if r.random}
    for (arch, r), res in zip(requests, curves, strict=True):
        results["diffroar"][r.target][r.trained.label] = _with_random(res, random_of[arch])
    results["findings"] = narrative.diffroar_findings(results)
    return results


def report_diffroar_study(record: Mapping[str, Any], ctx: Context, title: str) -> Report:
    res, cfg = record["results"], record["config"]
    r = open_report(record, title)
    r.key_values({"attribution": f"{cfg['method']} (|∂ logit / ∂x| of the target class)",
                  "targets": ", ".join(cfg["targets"]), "ranking": f"{cfg['diffroar']['rank']}, seeded tie-break",
                  "fill of masked coordinates": cfg["diffroar"]["fill"] + " (in the model's input space)",
                  "retraining": "fresh model of the same architecture, the audited model's recipe without attack"
                                + (f" for {cfg['diffroar']['retrain_epochs']} epochs"
                                   if cfg["diffroar"].get("retrain_epochs") else "") + "; "
                                "final-epoch accuracy on the masked test set (no selection on test data)",
                  "retrain precision": cfg["diffroar"].get("precision") or "fp32",
                  "seeds": cfg["diffroar"]["seeds"], "levels k": cfg["diffroar"]["levels"],
                  "mask-only control": "same retraining on the binary keep-mask alone"},
                 caption="Protocol choices.")
    n_model = cfg.get("n_model_train") or cfg.get("n_train")
    r.table(res["models"], columns=["model", "test_accuracy", "train_seconds"],
            caption="Audited models: test accuracy after training on "
                    + (f"the first {n_model:,} training images." if n_model else "the full training split."),
            formats={"test_accuracy": "{:.4f}", "train_seconds": "{:.0f}"})
    for target, by_model in res["diffroar"].items():
        if by_model:
            add_diffroar(r, by_model, f"{cfg['dataset']}, target = {target}")
    r.section("Leak-aware summary", "DiffROAR, the DiffROAR of models retrained on the keep-mask alone, and their "
              "difference (the part the mask's shape does not explain), averaged over the levels k < 1.")
    r.table(leak_aware_rows(res["diffroar"]), caption="Leak-aware DiffROAR per model and target (mean over "
            "levels k < 1 of the seed means).", formats={c: "{:+.3f}" for c in ("DiffROAR", "mask-only DiffROAR",
                                                                             "difference", "DiffROAR at k=0.05")})
    if res["road"]:
        add_road(r, res["road"])
    add_footer(r, record)
    return r
