"""Study ``srinivas``: score-matching regularizers, gradient quality and sample quality.

Srinivas & Fleuret (ICLR 2021) read the logits as an implicit class-conditional density,
log p(x|y) = f_y(x) + const, so the input gradient is its score. Training with a score-
matching regularizer should align the gradients with the data (more discriminative, more
perceptually aligned); anti-score matching should do the reverse; a gradient-norm penalty
is the cheap middle ground. Their evidence: GAN-test accuracy of activation-maximization
samples (score > baseline > anti) and pixel-perturbation curves. This study trains the four
Softplus models and measures both, plus DiffROAR of their input gradients.

The GAN-test proxy is adversarially trained (ℓ2 PGD), not a standard classifier as in the
reference: activation-maximization samples are gradient ascent on a logit, and their
adversarial part transfers to a standard proxy, which then labels nearly every sample as its
target (Fashion-MNIST, 500 steps: 100% for three of the four models; on models trained on
20,000 images all four at 100%, while an ℓ2-robust proxy gave 91/91/84/91%). Each run checks
the scores for saturation (≥ 2 models at ≥ 99%, or a spread < 5%), records ``saturated`` and
the reason in ``results["gan_test"]`` and says it in the report; the proxy's mean probability
of the target is recorded beside the accuracy as a graded score.

Sizes: the default (Fashion-MNIST MLPs) and ``--set dataset=cifar10`` (Softplus ResNet18s at
the paper's size, for a GPU) take their fields from :data:`PRESETS`; ``--quick`` is a smoke
run of either; ``configs/srinivas-cifar10-cpu.yaml`` is CIFAR-10 sized for a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._io import load_tensors, save_tensors, to_jsonable
from ..evaluation import gan_test, gan_test_score, gan_test_targets, pixel_perturbation
from ..evaluation.sample_quality import GAN_TEST_DEFAULTS, gan_test_saturation
from ..report import Report, plots
from ..runs import Job
from ..training import Recipe
from ..training.regularizers import recipe_fields
from .base import Context, Study, register
from .config import DatasetName, StudyConfig, deep_merge
from .measures import DiffROARRequest, DiffROARSettings, diffroar_results
from .reporting import add_diffroar, add_footer, mask_only_note, open_report
from .steps import (
    DataRef,
    ModelConfig,
    TrainedModel,
    attribution_maps,
    load_arrays,
    save_arrays,
    study_data,
    trained_models,
)

__all__ = ["PRESETS", "SrinivasConfig", "Variant", "preset_for"]

SAMPLES = "samples.safetensors"


class Variant(BaseModel):
    """One training variant: a regularizer (None = baseline) and its settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    regularizer: str | None = None
    defaults: str = Field("paper", pattern="^(paper|code)$", description="λ and options: the paper's or the code's.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="e.g. reg_weight, sigma, tau.")


def _variants() -> list[Variant]:
    return [Variant(label="baseline"), Variant(label="gradient norm", regularizer="gradnorm"),
            Variant(label="score matching", regularizer="score-matching"),
            Variant(label="anti-score matching", regularizer="anti-score-matching")]


class GanTestSettings(BaseModel):
    """Activation-maximization sampling for the GAN-test (seed-methods §A.6–A.7) and the
    saturation check of its scores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_samples: int = Field(1000, ge=1)
    steps: int = Field(GAN_TEST_DEFAULTS["steps"], ge=1)
    step_size: float = Field(GAN_TEST_DEFAULTS["step_size"], gt=0)
    weight_decay: float = Field(GAN_TEST_DEFAULTS["weight_decay"], ge=0)
    saturation_ceiling: float = Field(0.99, gt=0, le=1, description="A model at or above this GAN-test accuracy "
                                                                    "counts as at the ceiling.")
    saturation_min_at_ceiling: int = Field(2, ge=1, description="Saturated when this many models are at the "
                                                                "ceiling ...")
    saturation_min_spread: float = Field(0.05, ge=0, description="... or the best and worst model differ by less.")


class SrinivasConfig(StudyConfig):
    """Config of the ``srinivas`` study.

    ``dataset`` and ``size`` pick a preset (:data:`PRESETS`) that fills every field not given:
    Softplus MLPs and a robust MLP proxy on 28×28 grey images, Softplus CIFAR ResNets and a
    robust ResNet proxy on CIFAR; ``--quick`` sets ``size: quick``. Anything given (YAML,
    ``--set``) is merged over the preset key by key.
    """

    dataset: DatasetName = "fmnist"
    data_options: dict[str, Any] = Field(default_factory=dict, description="Options of data.load, e.g. verify.")
    size: Literal["default", "quick"] = Field("default", description="Which preset of the dataset fills the "
                                                                     "fields not given (--quick: quick).")
    model: str
    model_options: dict[str, Any]
    recipe: Recipe
    variants: list[Variant] = Field(default_factory=_variants)
    proxy: ModelConfig
    gan_test: GanTestSettings = Field(default_factory=GanTestSettings)
    perturbation_n_test: int = Field(2000, ge=10)
    diffroar: DiffROARSettings
    n_train: int | None = Field(None, ge=100)
    n_test: int | None = Field(None, ge=10, description="Test images for gradients and DiffROAR (None: all).")
    n_show: int = Field(8, ge=1, le=32)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        preset = dict(preset_for(str(data.get("dataset", "fmnist"))).get(data.get("size", "default"), {}))
        # a model named here brings its own options: the preset's belong to the preset's model
        if "model" in data:
            preset.pop("model_options", None)
        proxy = data.get("proxy")
        if isinstance(proxy, Mapping) and "model" in proxy and "proxy" in preset:
            preset["proxy"] = {k: v for k, v in preset["proxy"].items() if k != "model_options"}
        return deep_merge(preset, data)


_MLP_RECIPE = Recipe(epochs=8, batch_size=128, lr=0.1, momentum=0.9, schedule="onecycle")
_MLP_QUICK_RECIPE = Recipe(epochs=3, batch_size=128, lr=0.1, momentum=0.9, schedule="onecycle")
# The proxy is adversarially trained (ℓ2 PGD): activation-maximization samples are gradient
# ascent on a logit, and a standard proxy is fooled by their transferable adversarial part
# (on Fashion-MNIST a standard MLP proxy labelled every sample of three of the four models
# as its target). A robust proxy only answers to changes a human would see.
_MLP_PROXY_ATTACK = {"attack": "l2", "eps": 1.0, "attack_steps": 3}
_CIFAR_RECIPE = Recipe(epochs=30, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                       augment="crop-flip")
_CIFAR_PROXY_ATTACK = {"attack": "l2", "eps": 0.5, "attack_steps": 7}
_SOFTPLUS = {"act": "softplus", "beta": 10.0}
# --quick on CIFAR: a narrow channels-last ResNet9 with its stem average-pooled by 2 (CPU-sized)
_CIFAR_CPU_OPTIONS = {"width": 8, "stem_pool": 2, "channels_last": True}
_CIFAR_QUICK_RECIPE = Recipe(epochs=2, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="onecycle")


def _dump(x: BaseModel) -> dict[str, Any]:
    return x.model_dump(mode="json")


def _proxy(label: str, model: str, options: dict[str, Any], recipe: Recipe, attack: dict[str, Any]) -> dict[str, Any]:
    return _dump(ModelConfig(label=label, model=model, model_options=options, init_seed=123,
                             recipe=recipe.model_copy(update={"seed": 123, **attack})))


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # 28×28 grey images (Fashion-MNIST, MNIST): Softplus MLPs 784-256-256-10
    "mlp": {
        "default": {
            "model": "mlp", "model_options": {"hidden": [256, 256], **_SOFTPLUS}, "recipe": _dump(_MLP_RECIPE),
            "proxy": _proxy("proxy (ReLU MLP 1024-512, ℓ2 ε=1 PGD-trained)", "mlp", {"hidden": [1024, 512]},
                            _MLP_RECIPE, _MLP_PROXY_ATTACK),
            "diffroar": {"levels": [0.05, 0.1, 0.2], "mask_only": False},
        },
        "quick": {
            "model": "mlp", "model_options": {"hidden": [256, 256], **_SOFTPLUS}, "n_train": 5000,
            "recipe": _dump(_MLP_QUICK_RECIPE),
            "proxy": _proxy("proxy (ReLU MLP 512-256, ℓ2 ε=1 PGD-trained)", "mlp", {"hidden": [512, 256]},
                            _MLP_QUICK_RECIPE, _MLP_PROXY_ATTACK),
            "gan_test": {"n_samples": 200, "steps": 100},
            "perturbation_n_test": 300,
            "diffroar": {"levels": [0.05, 0.2], "seeds": 2, "mask_only": False},
        },
    },
    # 3×32×32 colour images (CIFAR-10/100): Softplus CIFAR ResNets, as Srinivas & Fleuret
    "resnet": {
        "default": {
            "model": "resnet18", "model_options": {"width": 64, **_SOFTPLUS}, "recipe": _dump(_CIFAR_RECIPE),
            "proxy": _proxy("proxy (ReLU ResNet18, ℓ2 ε=0.5 PGD-trained)", "resnet18", {"width": 64},
                            _CIFAR_RECIPE, _CIFAR_PROXY_ATTACK),
            "diffroar": {"levels": [0.05, 0.1, 0.2], "fill": "mean", "mask_only": False},
        },
        "quick": {
            "model": "resnet9", "model_options": {**_CIFAR_CPU_OPTIONS, **_SOFTPLUS}, "n_train": 1000,
            "n_test": 500, "recipe": _dump(_CIFAR_QUICK_RECIPE),
            "proxy": _proxy("proxy (ReLU ResNet9 width 8, ℓ2 ε=0.5 PGD-trained)", "resnet9", _CIFAR_CPU_OPTIONS,
                            _CIFAR_QUICK_RECIPE, {**_CIFAR_PROXY_ATTACK, "attack_steps": 2}),
            "gan_test": {"n_samples": 100, "steps": 50},
            "perturbation_n_test": 200,
            "diffroar": {"levels": [0.1], "seeds": 1, "fill": "mean", "mask_only": False},
        },
    },
}
# which preset a dataset takes; any other dataset takes the MLP preset
PRESET_OF_DATASET: dict[str, str] = {"cifar10": "resnet", "cifar100": "resnet"}


def preset_for(dataset: str) -> dict[str, dict[str, Any]]:
    """The presets (size -> fields) of ``dataset``."""
    return PRESETS[PRESET_OF_DATASET.get(dataset, "mlp")]


QUICK: dict[str, Any] = {"size": "quick"}


def _model_config(cfg: SrinivasConfig, v: Variant) -> ModelConfig:
    fields = recipe_fields(v.regularizer, v.defaults, **v.overrides)
    return ModelConfig(label=v.label, model=cfg.model, model_options=cfg.model_options,
                       recipe=cfg.recipe.model_copy(update=fields))


def _samples(ctx: Context, tm: TrainedModel, proxy: TrainedModel, targets: torch.Tensor, cfg: SrinivasConfig,
             shape: tuple[int, ...], bounds: tuple[float, float]) -> tuple[dict[str, Any], torch.Tensor]:
    """GAN-test of ``tm``'s activation-maximization samples, cached with the first samples."""
    g = cfg.gan_test
    job_config = {"model": tm.key, "proxy": proxy.key, "n": g.n_samples, "steps": g.steps, "step_size": g.step_size,
                  "weight_decay": g.weight_decay, "seed": cfg.seed}

    def compute(job: Job) -> dict[str, Any]:
        res = gan_test_score(tm.model, proxy.model, targets, shape=shape, bounds=bounds, seed=cfg.seed,
                             steps=g.steps, step_size=g.step_size, weight_decay=g.weight_decay, quiet=ctx.quiet)
        save_tensors(job.path / SAMPLES, {"x": res.samples.x[: cfg.n_show], "y": res.samples.target[: cfg.n_show]})
        return to_jsonable({k: v for k, v in res.to_dict().items() if k != "per_class"}) | {
            "per_class": to_jsonable(res.per_class)}

    result = ctx.store.run("gan-test", job_config, compute, name="gan-test")
    return result, load_tensors(ctx.store.job("gan-test", job_config).path / SAMPLES)["x"]


def run(cfg: SrinivasConfig, ctx: Context) -> dict[str, Any]:
    ref = DataRef(name=cfg.dataset, seed=cfg.seed, options=cfg.data_options, n_train=cfg.n_train,
                  n_test=cfg.n_test)
    train, test = study_data(ctx, ref)
    split = ref.model_dump(mode="json")
    # the proxy and the four variants are independent jobs: one batch for the executor
    proxy, *models = trained_models(ctx, [("proxy", cfg.proxy, ref)] + [
        (f"srinivas-{i}", _model_config(cfg, v), ref) for i, v in enumerate(cfg.variants)])
    targets = gan_test_targets(cfg.gan_test.n_samples, labels=test.y)
    real = test.subset(slice(0, cfg.gan_test.n_samples))
    results: dict[str, Any] = {"proxy": {"model": cfg.proxy.label, **proxy.summary,
                                         "gan_test_on_real_images": gan_test(proxy.model, real.x, real.y),
                                         "n_real": len(real)},
                               "models": [], "perturbation": {}, "diffroar": {}}
    few = test.subset(slice(0, cfg.perturbation_n_test))
    arrays: dict[str, torch.Tensor] = {"x": test.x[: cfg.n_show]}
    requests = []
    for i, (v, tm) in enumerate(zip(cfg.variants, models, strict=True)):
        gan, samples = _samples(ctx, tm, proxy, targets, cfg, train.input_shape, train.bounds)
        grads = {s: attribution_maps(ctx, tm, "grad", images, {**split, "split": s}, seed=cfg.seed)
                 for s, images in (("train", train), ("test", test))}
        g_test = grads["test"].values
        pp = pixel_perturbation(tm.model, few.x, few.y, g_test[: len(few)], fill="constant", seed=cfg.seed)
        results["perturbation"][v.label] = {"area": pp.score, **to_jsonable(pp.curve.to_dict())}
        requests.append(DiffROARRequest(tm, ref, (grads["train"].key, grads["test"].key), cfg.diffroar, "grad",
                                        random=i == 0, seed=cfg.seed))
        results["models"].append({"model": v.label, "regularizer": v.regularizer, **tm.summary,
                                  "reg_weight": tm.config.recipe.reg_weight, "gan_test": gan["accuracy"],
                                  "gan_test_probability": gan["target_probability"],
                                  "gradient_norm": g_test.flatten(1).norm(dim=1).mean().item(),
                                  "pixel_perturbation_area": pp.score})
        arrays[f"g{i}"], arrays[f"s{i}"] = g_test[: cfg.n_show], samples
    for v, res in zip(cfg.variants, diffroar_results(ctx, requests), strict=True):
        results["diffroar"][v.label] = res
    results["gan_test"] = _saturation(results["models"], cfg.gan_test)
    save_arrays(ctx, arrays)
    results["findings"] = _findings(results)
    return results


def _saturation(rows: list[dict[str, Any]], g: GanTestSettings) -> dict[str, Any]:
    """Whether the GAN-test accuracies (and, separately, the target probabilities) tell the
    models apart; ``saturated`` refers to the accuracy, the paper's score."""
    if len(rows) < 2:
        return {"saturated": False, "reason": "one model: nothing to tell apart."}
    limits = {"ceiling": g.saturation_ceiling, "min_at_ceiling": g.saturation_min_at_ceiling,
              "min_spread": g.saturation_min_spread}
    acc = gan_test_saturation({r["model"]: r["gan_test"] for r in rows}, **limits).to_dict()
    prob = gan_test_saturation({r["model"]: r["gan_test_probability"] for r in rows}, **limits).to_dict()
    return acc | {"score": "accuracy", "probability": prob}


def _findings(results: Mapping[str, Any]) -> list[str]:
    rows = {r["model"]: r for r in results["models"]}
    out = [f"{r['model']}: test accuracy {r['test_accuracy']:.1%}, GAN-test {r['gan_test']:.1%} (mean target "
           f"probability {r['gan_test_probability']:.3f}), mean ‖∇ₓf_y‖ "
           f"{r['gradient_norm']:.3g}, pixel-perturbation area {r['pixel_perturbation_area']:.3f}."
           for r in results["models"]]
    order = sorted(rows, key=lambda k: -rows[k]["gan_test"])
    out.append("GAN-test ordering (best first): " + " > ".join(order) + ".")
    claim = ("score matching", "baseline", "anti-score matching")
    if all(c in rows for c in claim):
        holds = rows[claim[0]]["gan_test"] > rows[claim[1]]["gan_test"] > rows[claim[2]]["gan_test"]
        out.append("Srinivas & Fleuret's claim GAN-test(score) > GAN-test(baseline) > GAN-test(anti) "
                   + ("holds here." if holds else "does NOT hold here."))
    sat = results["gan_test"]
    if sat["saturated"]:
        out.append("GAN-test SATURATED: " + sat["reason"] + " The ordering above is not evidence either way"
                   + (" (the mean target probability is not saturated: " + sat["probability"]["reason"] + ")."
                      if not sat["probability"]["saturated"] else "."))
    else:
        out.append("GAN-test not saturated: " + sat["reason"].removeprefix("not saturated: "))
    out.append(f"The {results['proxy']['model']} has test accuracy {results['proxy']['test_accuracy']:.1%}; it "
               f"classifies the first {results['proxy']['n_real']} real test images with "
               f"{results['proxy']['gan_test_on_real_images']:.1%} accuracy (the GAN-test of real data, an upper "
               "reference).")
    return out


def report(record: Mapping[str, Any], ctx: Context) -> Report:
    res, cfg = record["results"], record["config"]
    arrays = load_arrays(ctx)
    r = open_report(record, "Score matching and the quality of input gradients (Srinivas & Fleuret, ICLR 2021)",
                    on=f" on {cfg['dataset']}")
    r.key_values({"architecture": f"{cfg['model']} {cfg['model_options']}", "attribution": "∇ₓ f_y (raw target logit)",
                  "GAN-test": f"{cfg['gan_test']['n_samples']} activation-maximization samples, "
                              f"{cfg['gan_test']['steps']} steps of {cfg['gan_test']['step_size']}, "
                              f"pull {cfg['gan_test']['weight_decay']} toward 0.5; proxy: {res['proxy']['model']}, "
                              f"test accuracy {res['proxy']['test_accuracy']:.1%}",
                  "GAN-test saturation check": f"saturated when ≥ {cfg['gan_test']['saturation_min_at_ceiling']} "
                                               f"models score ≥ {cfg['gan_test']['saturation_ceiling']:.0%} or the "
                                               f"spread is < {cfg['gan_test']['saturation_min_spread']:.0%}",
                  "pixel perturbation": "LeRF, fill 0.5, fractions logspace(−2, 0, 25)",
                  "DiffROAR mask-only control": mask_only_note(cfg["diffroar"]),
                  "regularizer settings": {v["label"]: v for v in cfg["variants"]}}, caption="Protocol choices.")
    r.table(res["models"], columns=["model", "regularizer", "reg_weight", "test_accuracy", "gan_test",
                                    "gan_test_probability", "gradient_norm", "pixel_perturbation_area",
                                    "train_seconds"],
            caption="Per training variant: test accuracy, GAN-test accuracy of its samples (higher = samples the "
                    "proxy recognises) and the proxy's mean probability of the target class, mean input-gradient "
                    "norm, and the pixel-perturbation area (higher = the gradient finds the pixels the model can "
                    "lose)." + (" The GAN-test accuracy is SATURATED: " + res["gan_test"]["reason"]
                                if res.get("gan_test", {}).get("saturated") else ""),
            formats={"test_accuracy": "{:.4f}", "gan_test": "{:.3f}", "gan_test_probability": "{:.3f}",
                     "gradient_norm": "{:.3g}",
                     "pixel_perturbation_area": "{:.3f}", "train_seconds": "{:.0f}"})
    labels = [v["label"] for v in cfg["variants"]]
    series = {lab: (res["perturbation"][lab]["x"], res["perturbation"][lab]["accuracy"]) for lab in labels}
    r.figure(plots.accuracy_curves(series, xlabel="fraction of pixels removed (least salient first)",
                                   ylabel="accuracy", logx=True),
             "Pixel perturbation (LeRF): accuracy as the least salient pixels are replaced by 0.5; a curve that "
             "stays high longer means the gradient ranks the unimportant pixels last.")
    grads = {lab: arrays[f"g{i}"] for i, lab in enumerate(labels)}
    r.figure(plots.attribution_grid(arrays["x"], grads, transpose=True),
             "Input gradients ∇ₓ f_y of the same test images for each variant (blue negative, red positive).")
    samples = {lab: arrays[f"s{i}"] for i, lab in enumerate(labels)}
    r.figure(plots.attribution_grid(arrays["x"][: next(iter(samples.values())).shape[0]],
                                    {k: v - 0.5 for k, v in samples.items()}, transpose=True),
             "Activation-maximization samples for the same target classes (shown relative to the 0.5 start); "
             "the first column shows a real test image of each target class.")
    add_diffroar(r, res["diffroar"], cfg["dataset"])
    add_footer(r, record)
    return r


register(Study(name="srinivas", summary="score matching / gradient norm / anti-score matching: gradient and sample "
                                        "quality", config=SrinivasConfig, run=run, report=report, quick=QUICK))
