"""Shared steps of the evaluation commands ``gradaudit diffroar|road|perturb|leakage``.

Each command loads a finished training run and the data it was trained on (:func:`load_audit`),
checks its arguments on one image before any work (:func:`preflight`), attributes the test
images with one method, fitting the options that need training data (:func:`evaluate`), saves
the library's result with the command's settings, seed and provenance (:func:`save_result`)
and prints one of the tables below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import attribution, data, evaluation
from ._io import to_jsonable, write_json
from ._progress import log_step
from ._provenance import provenance
from ._validation import ParameterError, check_choice, check_int, unknown_name
from .data import ImageSet
from .models import ModelSpec
from .training import Recipe, load_run
from .training.fit import data_fingerprint

__all__ = [
    "BLOCK_DATASETS",
    "PERTURB_KINDS",
    "Audit",
    "Evaluated",
    "PerturbKind",
    "diffroar_table",
    "evaluate",
    "fit_method",
    "leakage_table",
    "load_audit",
    "method_settings",
    "parse_method_options",
    "perturb_options",
    "preflight",
    "require_blocks",
    "road_table",
    "run_diffroar",
    "save_diffroar_plot",
    "save_result",
]

BLOCK_DATASETS = ("blockmnist", "blockmnist-top")
TARGETS = ("label", "predicted")

# A metric as the commands call it: (images, their maps, quiet) -> the library's result.
Metric = Callable[[ImageSet, torch.Tensor, bool], Any]


@dataclass(frozen=True)
class Audit:
    """A finished training run, with what is needed to reload its data.

    Attributes:
        run: The run directory.
        model: The trained model (eval mode, on ``device``).
        info: The run's ``run.json`` (spec, recipe, data name and fingerprint, history).
        device: Where the model lives.
        data_root: The data root (None: ``$GRADAUDIT_DATA``).
    """

    run: Path
    model: nn.Module
    info: Mapping[str, Any]
    device: str
    data_root: Path | None

    @property
    def dataset(self) -> str:
        return str(self.info["data"]["name"])

    @property
    def data_seed(self) -> int:
        """The seed the run's data were drawn with (BlockMNIST placement, synthetic draws):
        ``gradaudit train`` loads its data with the recipe's seed."""
        return int(self.info["recipe"].get("seed", 0))

    def load(self, split: str, n: int | None = None, caller: str = "gradaudit") -> ImageSet:
        """The run's dataset ``split`` (its first ``n`` images if given), on the CPU."""
        if n is not None:
            check_int(n, "n", caller, 1)
        images = data.load(self.dataset, split, root=self.data_root, seed=self.data_seed)
        return images if n is None else images.subset(slice(0, n))

    def trained_on(self, train: ImageSet) -> bool:
        """Whether ``train`` (a whole train split) is the data the run was fitted on."""
        return self.info["data"].get("fingerprint") == data_fingerprint(train)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(**self.info["spec"])

    @property
    def recipe(self) -> Recipe:
        return Recipe(**self.info["recipe"])

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.run.resolve()), "dataset": self.dataset, "data_seed": self.data_seed}


def load_audit(run: Path, data_root: Path | None, device: str) -> Audit:
    """Load a run directory written by ``gradaudit train`` (or ``training.fit(spec=...)``).

    Raises:
        ParameterError: ``run`` is not a finished run, or its run.json names no dataset.
    """
    model, info = load_run(run, device=device)
    if not isinstance(info.get("data"), Mapping) or not info["data"].get("name"):
        raise ParameterError(f"The run {run} records no dataset name in run.json; evaluate it with the library instead.")
    return Audit(Path(run), model, info, device, data_root)


def _parse_option(text: str) -> tuple[str, Any]:
    """'n_steps=32' -> ('n_steps', 32): the value is read as a YAML scalar or list."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParameterError(f"--option must be name=value, e.g. n_steps=32. Got {text!r}.")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ParameterError(f"--option {key.strip()}: cannot read {raw!r} as a YAML value (a number, word or [list]).") from None


def parse_method_options(method: str, texts: Sequence[str] | None) -> dict[str, Any]:
    """The ``--option name=value`` pairs of ``method``, checked by the method's registry entry.

    Raises:
        ParameterError: Unknown method (closest match named), unknown option or bad value
            (the messages of ``attribution.attribute``), an option given twice.
    """
    spec = attribution.get_method(method)
    caller = f"attribute({method!r})"
    given: dict[str, Any] = {}
    for key, value in (_parse_option(t) for t in texts or []):
        if key in given:
            raise ParameterError(f"--option {key} is given twice; give each option once.")
        if key not in spec.options:
            raise ParameterError(unknown_name("option", key, spec.options, caller=caller)
                                 if spec.options else f"{caller} takes no options. Got {key!r}.")
        spec.options[key].check(value, key, caller)
        given[key] = value
    return given


def fit_method(audit: Audit, method: str, given: Mapping[str, Any], *, fit_n: int, seed: int,
               train: ImageSet | None = None) -> tuple[dict[str, Any], list[str]]:
    """(every option of ``method`` to pass on, names of the fitted ones).

    Options that ``method`` requires and were not given (patterns, reference set), and the
    data mean for ``baseline=mean``, are fitted with ``attribution.fit_options`` on the first
    ``fit_n`` training images (``train`` if given, else the run's train split).
    """
    spec = attribution.get_method(method)
    missing = any(opt.required and key not in given for key, opt in spec.options.items())
    if not missing and not (given.get("baseline") == "mean" and "data_mean" not in given):
        return dict(given), []
    images = (train if train is not None else audit.load("train")).subset(slice(0, fit_n))
    fitted = attribution.fit_options(method, audit.model, images.x.to(audit.device), seed=seed)
    fitted = {k: v for k, v in fitted.items() if k not in given}
    return {**fitted, **given}, sorted(fitted)


def preflight(metric: Metric, images: ImageSet) -> None:
    """Run ``metric`` on the first image with an all-zero map, so that a bad argument raises
    the library's error before any attribution is computed or file written."""
    one = images.subset(slice(0, 1))
    metric(one, torch.zeros_like(one.x), True)


@dataclass(frozen=True)
class Evaluated:
    """What :func:`evaluate` returns: the metric's result and how the maps were made."""

    result: Any
    settings: dict[str, Any]


def evaluate(audit: Audit, method: str, given: Mapping[str, Any], images: ImageSet, metric: Metric, *,
             target: str, fit_n: int, seed: int, quiet: bool, caller: str) -> Evaluated:
    """Check the arguments, attribute ``images`` with ``method``, run ``metric`` on the maps."""
    check_choice(target, "target", caller, TARGETS)
    check_int(fit_n, "fit_n", caller, 1)
    images = images.to(audit.device)
    preflight(metric, images)
    options, fitted = fit_method(audit, method, given, fit_n=fit_n, seed=seed)
    start = time.perf_counter()
    maps = attribution.attribute(method, audit.model, images.x, images.y if target == "label" else "predicted",
                                 seed=seed, **options)
    log_step(f"{caller}: {method} maps of {len(images)} images of {audit.run.name} computed", time.perf_counter() - start)
    start = time.perf_counter()
    result = metric(images, maps, quiet)
    log_step(f"{caller}: {caller.rsplit(' ', 1)[-1]} of {method} finished", time.perf_counter() - start)
    return Evaluated(result, method_settings(method, given, fitted, target, fit_n, len(images)))


def method_settings(method: str, given: Mapping[str, Any], fitted: Sequence[str], target: str,
                    fit_n: int, n: int) -> dict[str, Any]:
    """How the attributions were made, as recorded in the result files."""
    return {"method": method, "method_options": to_jsonable(dict(given)), "fitted_options": list(fitted),
            "fit_n": fit_n if fitted else None, "target": target, "n_images": n}


def save_result(path: Path, command: str, audit: Audit, result: Mapping[str, Any],
                settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Write the library's ``result`` (its config included) with the command's settings, the
    seed and provenance to ``path`` atomically; return what was written."""
    record = {"command": command, **audit.describe(), "seed": seed, "settings": dict(settings),
              **dict(result), "provenance": provenance()}
    record = to_jsonable(record)
    write_json(path, record)
    return record


def run_diffroar(audit: Audit, method: str, given: Mapping[str, Any], *, n_train: int | None,
                 n_test: int | None, fit_n: int, folder: Path, device: str, quiet: bool,
                 **kw: Any) -> tuple[Any, dict[str, Any]]:
    """``evaluation.diffroar`` of ``method`` on the run's data, resumable in ``folder/retrains``.

    Arguments are checked on one test image before the training set is loaded, options
    fitted or anything attributed. ``kw``: target, levels, seeds, seed, fill, rank, random,
    mask_only, max_stack. Returns (result, settings to record).
    """
    from .evaluation.retrain_setup import check_arguments

    caller = "gradaudit diffroar"
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            check_int(value, name, caller, 1)
    check_int(fit_n, "fit_n", caller, 1)
    test = audit.load("test", n_test, caller)
    one = test.subset(slice(0, 1))
    check_arguments("diffroar()", audit.model, one, one, method=method, attributions=None, spec=audit.spec,
                    recipe=audit.recipe, method_options=given, engine="auto", **kw)
    full = audit.load("train")
    train = full if n_train is None else full.subset(slice(0, n_train))
    options, fitted = fit_method(audit, method, given, fit_n=fit_n, seed=kw["seed"], train=train)
    result = evaluation.diffroar(audit.model, train, test, method=method, method_options=options,
                                 spec=audit.spec, recipe=audit.recipe, out=folder / "retrains",
                                 device=device, quiet=quiet, **kw)
    settings = method_settings(method, given, fitted, kw["target"], fit_n, len(test))
    settings.update(n_test=settings.pop("n_images"), n_train=len(train), train_is_run_data=audit.trained_on(full))
    return result, settings


def require_blocks(audit: Audit) -> None:
    """Raise unless the run was trained on BlockMNIST(-Top), whose images carry block masks."""
    if audit.dataset not in BLOCK_DATASETS:
        raise ParameterError(
            f"gradaudit leakage needs a run trained on blockmnist or blockmnist-top (their test "
            f"images carry the null- and signal-block masks); the run {audit.run} was trained on "
            f"{audit.dataset!r}. Train one with `gradaudit train --dataset blockmnist`."
        )


# ---- tables -----------------------------------------------------------------------------------

def _pm(mean: float, std: float) -> str:
    """A signed difference '+0.5160 ± 0.0933', or the mean alone where the std is undefined
    (one seed)."""
    return f"{mean:+.4f}" if std != std else f"{mean:+.4f} ± {std:.4f}"


def _acc(mean: float, std: float) -> str:
    """An accuracy or share '0.9123 ± 0.0040' (the mean alone for one seed)."""
    return f"{mean:.4f}" if std != std else f"{mean:.4f} ± {std:.4f}"


def diffroar_table(result: Any) -> str:
    """Per level: top-k and bottom-k accuracy, DiffROAR, and the controls that ran."""
    cur = result.attribution
    cols: list[tuple[str, Callable[[int], str]]] = [
        ("top-k acc", lambda i: _acc(cur.top.mean[i], cur.top.std[i])),
        ("bottom-k acc", lambda i: _acc(cur.bottom.mean[i], cur.bottom.std[i])),
        ("DiffROAR", lambda i: _pm(cur.diffroar.mean[i], cur.diffroar.std[i])),
    ]
    rnd = result.random
    if rnd is not None:
        cols.append(("random DiffROAR", lambda i: _pm(rnd.diffroar.mean[i], rnd.diffroar.std[i])))
    mask = result.mask_only.get("attribution")
    if mask is not None:
        cols.append(("mask-only top acc", lambda i: _acc(mask.top.mean[i], mask.top.std[i])))
        cols.append(("mask-only DiffROAR", lambda i: _pm(mask.diffroar.mean[i], mask.diffroar.std[i])))
    rows = [[f"{k:g}", *(f(i) for _, f in cols)] for i, k in enumerate(result.levels)]
    return _align(["k", *(name for name, _ in cols)], rows)


def road_table(result: Any) -> str:
    """Per removal fraction: MoRF/LeRF accuracy; then the areas and the gap."""
    orders = [(name, c) for name, c in (("MoRF", result.morf), ("LeRF", result.lerf)) if c is not None]
    head = ["fraction", "removed", *(f"{name} acc" for name, _ in orders)]
    rows = [[f"{p:g}", str(k), *(f"{c.accuracy[i]:.4f}" for _, c in orders)]
            for i, (p, k) in enumerate(zip(result.percentages, result.counts, strict=True))]
    lines = [_align(head, rows)] + [f"accuracy area {name} {c.accuracy_area:.4f}" for name, c in orders]
    if result.gap is not None:
        lines.append(f"gap (LeRF − MoRF, higher is better) {result.gap:.4f}")
    return "\n".join(lines)


def leakage_table(result: Any) -> str:
    """Per k: the null (and signal) block's share of the top-k% |attribution|; then the mass."""
    signal = result.topk_signal_mean is not None
    head = ["k %", "null share", *(["signal share"] if signal else [])]
    rows = []
    for i, k in enumerate(result.ks):
        row = [f"{k:g}", _acc(result.topk_null_mean[i], result.topk_null_std[i])]
        if signal:
            row.append(_acc(result.topk_signal_mean[i], result.topk_signal_std[i]))
        rows.append(row)
    return "\n".join([
        _align(head, rows),
        f"null block's share of |attribution| mass {_acc(result.mass_null_mean, result.mass_null_std)}",
        f"null block's share of the image (chance level) {result.null_area_share:.4f}",
    ])


def _align(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows])


def _pixel_table(r: Any) -> str:
    c = r.curve
    rows = [[f"{f:.4g}", str(k), f"{a:.4f}", f"{p:.4f}"]
            for f, k, a, p in zip(r.fractions, r.counts, c.accuracy, c.probability, strict=True)]
    better = "higher" if r.higher_is_better else "lower"
    order = {"morf": "MoRF", "lerf": "LeRF"}.get(r.order, r.order)
    return "\n".join([_align(["fraction", "removed", f"{order} acc", "prob"], rows),
                      f"accuracy area {r.score:.4f} ({better} is better)"])


def _degradation_table(r: Any) -> str:
    orders = [(name, c) for name, c in (("MoRF", r.morf), ("LeRF", r.lerf)) if c is not None]
    head = ["patches", *(f"{name} {q}" for name, _ in orders for q in ("prob", "acc"))]
    rows = [[str(step), *(f"{v[i]:.4f}" for _, c in orders for v in (c.probability, c.accuracy))]
            for i, step in enumerate(r.steps)]
    lines = [_align(head, rows)] + [f"probability area {name} {c.probability_area:.4f}" for name, c in orders]
    if r.gap is not None:
        lines.append(f"gap (LeRF − MoRF, higher is better) {r.gap:.4f}")
    return "\n".join(lines)


# ---- perturbation kinds: the function, the options that apply to it, its table ------------------

@dataclass(frozen=True)
class PerturbKind:
    """One ``gradaudit perturb --kind``: the library function, its CLI options, its table."""

    function: Callable[..., Any]
    options: tuple[str, ...]
    table: Callable[[Any], str]


PERTURB_KINDS: Mapping[str, PerturbKind] = {
    "pixel": PerturbKind(evaluation.pixel_perturbation, ("fractions", "order", "fill"), _pixel_table),
    "degradation": PerturbKind(evaluation.degradation, ("patch_size", "order", "fill"), _degradation_table),
}


def perturb_options(kind: str, given: Mapping[str, Any]) -> tuple[PerturbKind, dict[str, Any]]:
    """The kind's spec and its options among ``given`` (None = the library's default).

    Raises:
        ParameterError: Unknown kind, or an option set that does not apply to it.
    """
    check_choice(kind, "kind", "gradaudit perturb", tuple(PERTURB_KINDS))
    spec = PERTURB_KINDS[kind]
    for key, value in given.items():
        if value is not None and key not in spec.options:
            where = ", ".join(k for k, s in PERTURB_KINDS.items() if key in s.options)
            raise ParameterError(f"--{key.replace('_', '-')} does not apply to --kind {kind}; only to --kind {where}.")
    return spec, {k: v for k, v in given.items() if v is not None}


def save_diffroar_plot(result: Any, path: Path, title: str) -> Path:
    """The paper's Fig. 2 for one method: DiffROAR ± std vs k, random and mask-only dotted."""
    from .report.plots import diffroar_curves, save_figure

    def series(curve: Any) -> tuple[Any, ...]:
        d = curve.diffroar
        return (result.levels, d.mean, d.std) if len(result.seeds) > 1 else (result.levels, d.mean)

    label = str(result.config.get("method") or "attribution")
    curves = {label: series(result.attribution)}
    if result.random is not None:
        curves["random"] = series(result.random)
    extra = {label: series(result.mask_only["attribution"])} if "attribution" in result.mask_only else None
    fig = diffroar_curves(curves, title=title, extra=extra, random_line=result.random is None)
    return save_figure(fig, path, formats=("png",))[0]
