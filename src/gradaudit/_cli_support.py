"""Shared steps of the evaluation commands (``gradaudit diffroar``, ``attribute`` and the
commands ``cli.py`` builds from the metric registry: ``road``, ``perturb``, ``leakage``, ...).

Each command loads a finished training run and the data it was trained on (:func:`load_audit`),
attributes the test images with one method, fitting the options that need training data
(:func:`fit_method`), runs the registered metric through ``evaluation.evaluate`` after
checking its arguments on one image (:func:`evaluate_metric`), and saves the library's result
with the command's settings, seed and provenance (:func:`save_result`); the metric's own
table (``MetricSpec.table``) is what the command prints.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import attribution, data, evaluation
from ._cli_options import parse_option
from ._io import to_jsonable, write_json
from ._progress import log_step
from ._provenance import provenance
from ._validation import ParameterError, check_choice, check_int, unknown_name
from .data import ImageSet
from .models import ModelSpec
from .training import Recipe, data_fingerprint, load_run

__all__ = [
    "BLOCK_DATASETS",
    "Audit",
    "Evaluated",
    "evaluate_metric",
    "fit_method",
    "load_audit",
    "method_settings",
    "parse_method_options",
    "require_blocks",
    "run_diffroar",
    "save_diffroar_plot",
    "save_result",
]

BLOCK_DATASETS = ("blockmnist", "blockmnist-top")
TARGETS = ("label", "predicted")


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


def parse_method_options(method: str, texts: Sequence[str] | None) -> dict[str, Any]:
    """The ``--option name=value`` pairs of ``method``, checked by the method's registry entry.

    Raises:
        ParameterError: Unknown method (closest match named), unknown option or bad value
            (the messages of ``attribution.attribute``), an option given twice.
    """
    spec = attribution.get_method(method)
    caller = f"attribute({method!r})"
    given: dict[str, Any] = {}
    for key, value in (parse_option(t) for t in texts or []):
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


@dataclass(frozen=True)
class Evaluated:
    """What :func:`evaluate_metric` returns: the metric's result and how the maps were made."""

    result: Any
    settings: dict[str, Any]


def evaluate_metric(audit: Audit, metric: str, options: Mapping[str, Any], method: str, given: Mapping[str, Any],
                    images: ImageSet, *, target: str, fit_n: int, seed: int, quiet: bool, caller: str,
                    bounds: tuple[float, float] | None = None) -> Evaluated:
    """The registered ``metric`` (``evaluation.evaluate``) of ``method``'s maps of ``images``.

    Before any attribution: the target and ``fit_n`` are checked and the metric runs on the
    first image with an all-zero map, so a bad argument raises the library's error first.
    The training images' per-channel mean is passed for ``fill="mean"``; ``bounds`` (the
    input box imputed values are clamped into) for your own model's data.
    """
    check_choice(target, "target", caller, TARGETS)
    check_int(fit_n, "fit_n", caller, 1)
    images = images.to(audit.device)
    mean = audit.load("train").x.mean((0, 2, 3)).to(audit.device) if options.get("fill") == "mean" else None

    def run(on: ImageSet, maps: torch.Tensor, silent: bool) -> Any:
        subject = evaluation.Subject(test=on, model=audit.model, maps=maps, data_mean=mean, bounds=bounds)
        return evaluation.evaluate(metric, subject, seed=seed, device=audit.device, quiet=silent, **options)

    one = images.subset(slice(0, 1))
    run(one, torch.zeros_like(one.x), True)
    options_used, fitted = fit_method(audit, method, given, fit_n=fit_n, seed=seed)
    start = time.perf_counter()
    maps = attribution.attribute(method, audit.model, images.x, images.y if target == "label" else "predicted",
                                 seed=seed, **options_used)
    log_step(f"{caller}: {method} maps of {len(images)} images of {audit.run.name} computed", time.perf_counter() - start)
    start = time.perf_counter()
    result = run(images, maps, quiet)
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

    Arguments are checked before the training set is loaded, options fitted or anything
    attributed: the protocol's options in ``kw`` are the metric registry's resolved ``diffroar``
    options (``MetricSpec.resolve``, as the command reads them), the method's options are
    checked by :func:`parse_method_options`. ``kw``: target, levels, seeds, seed, fill, rank, random,
    mask_only, max_stack. Returns (result, settings to record).
    """
    caller = "gradaudit diffroar"
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            check_int(value, name, caller, 1)
    check_int(fit_n, "fit_n", caller, 1)
    check_choice(kw["target"], "target", caller, TARGETS)
    check_int(kw["seed"], "seed", caller, 0)
    test = audit.load("test", n_test, caller)
    full = audit.load("train")
    train = full if n_train is None else full.subset(slice(0, n_train))
    options, fitted = fit_method(audit, method, given, fit_n=fit_n, seed=kw["seed"], train=train)
    result = evaluation.diffroar(audit.model, train, test, method=method, method_options=options,
                                 spec=audit.spec, recipe=audit.recipe, out=folder / "retrains",
                                 device=device, quiet=quiet, **kw)
    settings = method_settings(method, given, fitted, kw["target"], fit_n, len(test))
    settings.update(n_test=settings.pop("n_images"), n_train=len(train), train_is_run_data=audit.trained_on(full))
    return result, settings


def require_blocks(audit: Audit, caller: str) -> None:
    """Raise unless the run was trained on BlockMNIST(-Top), whose images carry block masks."""
    if audit.dataset not in BLOCK_DATASETS:
        raise ParameterError(
            f"{caller} needs a run trained on blockmnist or blockmnist-top (their test "
            f"images carry the null- and signal-block masks); the run {audit.run} was trained on "
            f"{audit.dataset!r}. Train one with `gradaudit train --dataset blockmnist`."
        )


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
