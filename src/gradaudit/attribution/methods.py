"""The built-in methods, registered under the names of DESIGN.md."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import ParameterError
from .gradients import gradient, gradient_times_input, guided_backprop, has_relu, loss_gradient
from .integrated import MIN_STEPS, expected_gradients, integrated_gradients
from .options import (
    IG_OPTIONS,
    OUTPUT,
    PATTERN_OPTIONS,
    PATTERN_OUTPUT,
    REQUIRED,
    SCALE,
    SMOOTH_OPTIONS,
    VARIANT,
    Option,
    int_at_least,
    tensor,
)
from .pattern import fit_patterns, pattern_applicable
from .pattern_methods import pattern_attribution, pattern_integrated_gradients
from .random_map import random_attribution
from .registry import MethodSpec, register
from .smoothing import smoothgrad, smoothgrad_integrated_gradients, smoothgrad_squared, vargrad

__all__: list[str] = []


def _inputs(data: Any) -> torch.Tensor:
    x = data if isinstance(data, torch.Tensor) else getattr(data, "x", None)
    if not isinstance(x, torch.Tensor):
        raise ParameterError(f"fit_options() needs training inputs as a tensor (N, ...) or an ImageSet. Got {type(data).__name__}.")
    return x


def _data_mean(model: nn.Module, data: Any, seed: int, batch_size: int) -> dict[str, Any]:
    x = _inputs(data)
    dims = [0, *range(2, x.dim())]
    total = sum(x[i : i + batch_size].double().sum(dims) for i in range(0, len(x), batch_size))
    mean = total / (x.numel() / x.shape[1])
    return {"data_mean": mean.to(x.dtype).view(-1, *(1,) * (x.dim() - 2))}


def _references(model: nn.Module, data: Any, seed: int, batch_size: int) -> dict[str, Any]:
    return {"references": _inputs(data)}


def _patterns(model: nn.Module, data: Any, seed: int, batch_size: int) -> dict[str, Any]:
    return {"patterns": fit_patterns(model, data, batch_size=batch_size)}


def _patterns_and_mean(model: nn.Module, data: Any, seed: int, batch_size: int) -> dict[str, Any]:
    return {**_patterns(model, data, seed, batch_size), **_data_mean(model, data, seed, batch_size)}


def _check_path(opts: dict[str, Any], x: torch.Tensor, model: nn.Module, caller: str) -> None:
    """Cross-checks of the IG options against the input."""
    low = MIN_STEPS.get(opts["rule"], 1)
    if opts["n_steps"] < low:
        raise ParameterError(f"The 'n_steps' parameter of {caller} must be an int in [{low}, inf) for rule={opts['rule']!r}. Got {opts['n_steps']}.")
    base = opts["baseline"]
    if isinstance(base, torch.Tensor):
        try:
            torch.broadcast_shapes(base.shape, x.shape)
        except RuntimeError:
            raise ParameterError(f"The 'baseline' tensor of {caller} must broadcast to x's shape {tuple(x.shape)}. Got {tuple(base.shape)}.") from None
    elif base == "mean" and opts["data_mean"] is None:
        raise ParameterError(f"baseline='mean' of {caller} needs the 'data_mean' option (e.g. from attribution.fit_options).")
    elif base == "blur" and x.dim() != 4:
        raise ParameterError(f"baseline='blur' of {caller} needs images (N, C, H, W). Got x of shape {tuple(x.shape)}.")
    if opts["data_mean"] is not None:
        try:
            torch.broadcast_shapes(opts["data_mean"].shape, x.shape[1:])
        except RuntimeError:
            raise ParameterError(f"The 'data_mean' option of {caller} must broadcast to one input {tuple(x.shape[1:])}. Got {tuple(opts['data_mean'].shape)}.") from None


def _check_patterns(opts: dict[str, Any], x: torch.Tensor, model: nn.Module, caller: str) -> None:
    opts["patterns"].check(model)
    if "n_steps" in opts:
        _check_path(opts, x, model, caller)


def _check_references(opts: dict[str, Any], x: torch.Tensor, model: nn.Module, caller: str) -> None:
    refs = opts["references"]
    if tuple(refs.shape[1:]) != tuple(x.shape[1:]):
        raise ParameterError(f"The 'references' option of {caller} must hold inputs shaped like x's rows {tuple(x.shape[1:])}. Got {tuple(refs.shape)}.")


_IG_SOURCE = "Sundararajan, Taly & Yan, ICML 2017, arXiv:1703.01365"
_SG_SOURCE = "Smilkov et al., arXiv:1706.03825"
_PA_SOURCE = "Kindermans et al., ICLR 2018, arXiv:1705.05598"

for _spec in (
    MethodSpec("grad", gradient, {"output": OUTPUT}, source="Simonyan et al., arXiv:1312.6034",
               summary="input gradient of the target logit (or prob / loss)"),
    MethodSpec("loss-grad", loss_gradient, {}, source="Shah et al., NeurIPS 2021, arXiv:2102.12781",
               summary="input gradient of the cross-entropy loss"),
    MethodSpec("grad-x-input", gradient_times_input, {"output": OUTPUT}, multiplies_input=True,
               source="Shrikumar et al., arXiv:1605.01713", summary="gradient × input"),
    MethodSpec("ig", integrated_gradients, IG_OPTIONS, multiplies_input=True, source=_IG_SOURCE,
               summary="Integrated Gradients (seed used by baseline='uniform')", validate=_check_path, fit=_data_mean),
    MethodSpec("smoothgrad", smoothgrad, {**SMOOTH_OPTIONS, "output": OUTPUT}, stochastic=True,
               source=_SG_SOURCE, summary="gradient averaged over noisy copies"),
    MethodSpec("smoothgrad-sq", smoothgrad_squared, {**SMOOTH_OPTIONS, "output": OUTPUT}, stochastic=True,
               source="Hooker et al., NeurIPS 2019, arXiv:1806.10758", summary="mean squared gradient over noisy copies"),
    MethodSpec("vargrad", vargrad, {**SMOOTH_OPTIONS, "output": OUTPUT}, stochastic=True,
               source="Adebayo et al., arXiv:1810.03307", summary="variance of the gradient over noisy copies"),
    MethodSpec("expected-grad", expected_gradients,
               {"references": Option(REQUIRED, tensor, "reference inputs (R, ...), e.g. training images"),
                "n_samples": Option(50, int_at_least(1), "(reference, α) draws"), "output": OUTPUT},
               stochastic=True, multiplies_input=True, source="Erion et al., arXiv:1906.10670",
               summary="IG over baselines drawn from a reference set, α ~ U(0, 1)",
               validate=_check_references, fit=_references),
    MethodSpec("sg-ig", smoothgrad_integrated_gradients, {**SMOOTH_OPTIONS, **IG_OPTIONS}, stochastic=True,
               multiplies_input=True, source=f"{_SG_SOURCE}; {_IG_SOURCE}",
               summary="SmoothGrad over Integrated Gradients", validate=_check_path, fit=_data_mean),
    MethodSpec("guided-backprop", guided_backprop, {"output": OUTPUT}, applicable=has_relu,
               source="Springenberg et al., arXiv:1412.6806", summary="Guided Backpropagation (ReLU models)"),
    MethodSpec("pattern-attribution", pattern_attribution, {**PATTERN_OPTIONS, "scale": SCALE, "variant": VARIANT},
               source=_PA_SOURCE, summary="PatternAttribution (W ⊙ a₊ backward); needs fitted patterns",
               applicable=pattern_applicable, validate=_check_patterns, fit=_patterns),
    MethodSpec("pattern-ig", pattern_integrated_gradients,
               {**PATTERN_OPTIONS, **IG_OPTIONS, "output": PATTERN_OUTPUT,
                "scale": Option("one", SCALE.check, SCALE.help)}, multiplies_input=True,
               source="Schwarzenberg & Castle, arXiv:2007.10685", summary="Pattern-Guided Integrated Gradients (PGIG)",
               applicable=pattern_applicable, validate=_check_patterns, fit=_patterns_and_mean),
    MethodSpec("random", random_attribution, {}, stochastic=True, needs_gradient=False,
               source="Shah et al., NeurIPS 2021 (random baseline)", summary="seeded N(0, 1) values, independent per image"),
):
    register(_spec)
