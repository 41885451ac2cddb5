"""Shared steps of the evaluation commands (``gradaudit diffroar``, ``attribute`` and the
commands ``cli.py`` builds from the metric registry: ``road``, ``perturb``, ``leakage``, ...).

Each command opens what it audits, a finished training run or your own model and data
(``user_model.open_audit``), attributes the test images with one method, fitting the options
that need training data (``user_model.fit_method``), runs the registered metric through
``evaluation.evaluate`` after checking its arguments on one image (:func:`evaluate_metric`),
or DiffROAR (``user_model.run_diffroar``), and saves the library's result
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

from . import attribution, evaluation
from ._cli_options import parse_option
from ._io import to_jsonable, write_json
from ._progress import log_step
from ._provenance import provenance
from ._validation import ParameterError, check_choice, check_int, unknown_name
from .data import ImageSet
from .evaluation.diffroar import TARGETS
from .user_model import Audit, fit_method, load_audit, method_settings, run_diffroar

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


def save_result(path: Path, command: str, audit: Audit, result: Mapping[str, Any],
                settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Write the library's ``result`` (its config included) with the command's settings, the
    seed and provenance to ``path`` atomically; return what was written."""
    record = {"command": command, **audit.describe(), "seed": seed, "settings": dict(settings),
              **dict(result), "provenance": provenance()}
    record = to_jsonable(record)
    write_json(path, record)
    return record


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
