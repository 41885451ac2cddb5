"""Input-gradient regularizers: gradient norm, score matching, anti-score matching.

Formula: L = CE(f(x), y) + λ·R(x, y), where f_y(x), the *raw logit* of the label, is read as
log p(x|y) up to a constant, and R is one of

    gradnorm:             R = ½·mean_b ‖∇ₓf_y‖²
    score-matching:       R = mean_b h + ½·mean_b ‖∇ₓf_y‖² + τ·mean_b h²
    anti-score-matching:  R = −mean_b min(h, threshold)

with h the Taylor-trick estimate of tr ∇²ₓ f_y (:func:`hessian_trace_estimate`).

Source: Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for
Model Interpretability", ICLR 2021, arXiv:2006.09128, §3.2 eq. 3, §3.3 and §5
(seed-methods §A.2).

Reference code: idiap/rethinking-saliency ``regularizers.py`` (GradNormRegularizer,
ScoreMatching, AntiScoreMatching) and ``train.py`` (the values it trains with).

Deviations:
    * Defaults (``PAPER_DEFAULTS``) follow the paper's text: grad-norm λ=1e-3; score matching
      λ=1e-3, τ=1e-3; anti-score matching λ=1e-4, threshold 1000. The paper does not state
      S and σ; they are the reference classes' defaults (S=1, σ=0.01). The values the
      reference *trains* with are ``CODE_DEFAULTS``: λ=1e-5 for all three, S=1, σ=0.01,
      τ=1e-3, and for anti-score matching σ=0.001, threshold 1e4 — 10 to 100 times weaker.
    * None of the regularizer's forward passes (the clean one that gives ∇ₓf_y, and the noisy
      ones of the trace estimate) updates BatchNorm running statistics; they normalise with
      batch statistics as the training forward does (the reference updates the running
      statistics on every noisy batch, seed-methods §A.2.5). See :func:`frozen_bn_stats`.
    * Noise comes from an explicit ``torch.Generator`` (the fit loop's seeded one).
    * ``antithetic=True`` (off by default, not in the paper) evaluates each noise draw at
      x + v and x − v, which cancels the dropped first-order term ∇fᵀv exactly (and every
      odd-order term). It costs 2S noisy forwards instead of S.
    * A positive weight is required once a regularizer is named: λ = 0 would train the
      baseline under the regularizer's name at the regularizer's cost.
    * Score and anti-score matching refuse a model whose only activations are piecewise
      linear (ReLU & co.): its input Hessian is zero almost everywhere, so h is pure noise.
      Build it with ``act="softplus"`` (β = 10 in the paper).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .._validation import (
    ParameterError,
    check_bool,
    check_float,
    check_int,
    unknown_name,
)

__all__ = [
    "CODE_DEFAULTS",
    "DEFAULTS",
    "PAPER_DEFAULTS",
    "REGULARIZERS",
    "anti_score_matching",
    "check_regularizer",
    "check_smooth_model",
    "frozen_bn_stats",
    "gradient_norm",
    "hessian_trace_estimate",
    "recipe_fields",
    "regularization",
    "regularizer_options",
    "score_matching",
    "target_logit_gradient",
]

# λ (reg_weight) and options as written in the paper (§5); each regularizer's option names
# are these keys.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "gradnorm": {"reg_weight": 1e-3},
    "score-matching": {"reg_weight": 1e-3, "samples": 1, "sigma": 0.01, "tau": 1e-3,
                       "antithetic": False},
    "anti-score-matching": {"reg_weight": 1e-4, "samples": 1, "sigma": 0.01, "threshold": 1000.0,
                            "antithetic": False},
}
# What the reference code trains with (train.py) where it differs from the paper.
_CODE_CHANGES: dict[str, dict[str, Any]] = {
    "gradnorm": {"reg_weight": 1e-5},
    "score-matching": {"reg_weight": 1e-5},
    "anti-score-matching": {"reg_weight": 1e-5, "sigma": 0.001, "threshold": 1e4},
}
CODE_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {**paper, **_CODE_CHANGES[name]} for name, paper in PAPER_DEFAULTS.items()
}

_SMOOTH = (nn.Softplus, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
           nn.Sigmoid, nn.Softmax, nn.LogSoftmax)
_PIECEWISE_LINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.Hardtanh, nn.RReLU)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, BatchNorm layers keep their running statistics untouched.

    In train mode the layers still normalise with the batch's statistics (as the training
    forward does); in eval mode they use the running ones. Implemented by switching
    ``track_running_stats`` off for the block, so neither the running mean/var nor
    ``num_batches_tracked`` change, even for a batch with non-finite values.
    """
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m in bns:
            m.track_running_stats = True


def _target_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x).gather(1, y.view(-1, 1)).squeeze(1)


def _reused_target_logits(x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if not x.requires_grad or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ParameterError(
            "The 'logits' argument of the regularizers must be model(x) of shape (N, C), computed "
            f"from an x with requires_grad=True. Got shape {tuple(logits.shape)} and "
            f"x.requires_grad={x.requires_grad}; pass logits=None to let the regularizer run its "
            "own forward pass."
        )
    return logits.gather(1, y.view(-1, 1)).squeeze(1)


def target_logit_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    create_graph: bool = True,
    logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_y(x) per example, ∇ₓ f_y(x)); ``create_graph`` keeps the graph for double backprop.

    The forward runs inside :func:`frozen_bn_stats`, so BatchNorm running statistics are
    left as found, and with gradients enabled (also under ``torch.no_grad()``). ``logits``,
    the caller's own ``model(x)`` from an ``x`` that requires grad (e.g. the training
    forward), is reused instead of a second forward pass.
    """
    if logits is None:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad(), frozen_bn_stats(model):
            fy = _target_logits(model, x, y)
    else:
        fy = _reused_target_logits(x, y, logits)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(fy.sum(), x, create_graph=create_graph,
                                      retain_graph=create_graph or logits is not None)
    return fy, grad


def hessian_trace_estimate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator,
    samples: int = 1,
    sigma: float = 0.01,
    antithetic: bool = False,
    fy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example estimate of tr ∇²ₓ f_y(x) by the Taylor trick: forward passes only.

    Formula: h = (2/σ²)·(1/S)·Σ_s [f_y(x + v_s) − f_y(x)], v_s ~ N(0, σ² I)
    (antithetic: h = (1/σ²)·(1/S)·Σ_s [f_y(x + v_s) + f_y(x − v_s) − 2 f_y(x)]).

    Source: Srinivas & Fleuret, ICLR 2021, §3.2 eq. 3: E[f(x+v) − f(x) − ∇fᵀv] ≈ (σ²/2)·tr H,
    and the zero-mean ∇fᵀv is dropped.

    Reference code: idiap/rethinking-saliency ``regularizers.py`` (ScoreMatching).

    Deviations: ``antithetic`` (see the module docstring); BatchNorm running statistics are
    never updated.

    Dropping ∇fᵀv keeps its variance: one plain sample has variance 4‖∇f‖²/σ² + 2‖H‖²_F
    (plus O(σ²) bias terms), so at σ = 0.01 the estimate is dominated by the gradient unless
    S is huge or x is near a stationary point of f_y. The antithetic form removes the
    4‖∇f‖²/σ² part. The factor 2/σ² also amplifies float32 rounding of the logits (≈ 1e-7
    relative): by 2e4 at σ = 0.01, and 2e6 at the code's anti-score σ = 0.001.

    Args:
        model: Maps (N, ...) inputs to (N, C) logits.
        x: Inputs, shape (N, ...).
        y: Labels, shape (N,).
        generator: Source of the noise (on ``x.device``).
        samples: S, the number of noise draws (default 1, as the reference).
        sigma: σ, the noise standard deviation in input units (default 0.01, as the reference).
        antithetic: Use ±v pairs (2S forwards).
        fy: f_y(x) if already computed (its graph is kept), else computed here.

    Returns:
        Tensor (N,): h per example, differentiable w.r.t. the model's parameters.
    """
    check_int(samples, "samples", "hessian_trace_estimate()", 1)
    check_float(sigma, "sigma", "hessian_trace_estimate()", 0.0, low_open=True)
    with frozen_bn_stats(model):
        if fy is None:
            fy = _target_logits(model, x, y)
        total = torch.zeros_like(fy)
        for _ in range(samples):
            v = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sigma
            if antithetic:
                total = total + _target_logits(model, x + v, y) + _target_logits(model, x - v, y) - 2 * fy
            else:
                total = total + 2 * (_target_logits(model, x + v, y) - fy)
    return total / (samples * sigma**2)


def _squared_norm(grad: torch.Tensor) -> torch.Tensor:
    return grad.flatten(1).pow(2).sum(1)


def gradient_norm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient-norm regularizer, by double backprop.

    Formula: R = ½·(1/B)·Σ_b ‖∇ₓ f_{y_b}(x_b)‖².

    Source: Srinivas & Fleuret, ICLR 2021, §5 (the "gradient-norm regularization" baseline).

    Reference code: idiap/rethinking-saliency ``regularizers.py`` (GradNormRegularizer).

    Args:
        model: Maps (N, ...) inputs to (N, C) logits.
        x: Inputs (N, ...). y: Labels (N,).
        generator: Unused (the registry passes one to every regularizer).
        logits: Optional ``model(x)`` of the training forward (x requiring grad), reused to
            save a forward pass (see :func:`target_logit_gradient`).

    Returns:
        Scalar tensor, differentiable w.r.t. the model's parameters.
    """
    _, grad = target_logit_gradient(model, x, y, logits=logits)
    return 0.5 * _squared_norm(grad).mean()


def score_matching(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    tau: float = 1e-3,
    logits: torch.Tensor | None = None,
    **trace: Any,
) -> torch.Tensor:
    """Regularized score matching of the implicit density p(x|y) ∝ exp f_y(x).

    Formula: R = (1/B)·Σ_b [h_b + ½‖∇ₓ f_{y_b}(x_b)‖² + τ·h_b²], h from
    :func:`hessian_trace_estimate`.

    Source: Srinivas & Fleuret, ICLR 2021, §3.2–3.3 (τ is the paper's stability constant μ:
    without it "the Hessian trace collapses to negative infinity").

    Reference code: idiap/rethinking-saliency ``regularizers.py`` (ScoreMatching).

    Deviations: see the module docstring (frozen BatchNorm statistics, ``antithetic``).
    ``logits`` as in :func:`gradient_norm`; ``trace`` (``generator``, ``samples``, ``sigma``,
    ``antithetic``) as in :func:`hessian_trace_estimate`.

    Returns:
        Scalar tensor, differentiable w.r.t. the model's parameters.
    """
    fy, grad = target_logit_gradient(model, x, y, logits=logits)
    h = hessian_trace_estimate(model, x.detach(), y, fy=fy, **trace)
    return h.mean() + 0.5 * _squared_norm(grad).mean() + tau * h.pow(2).mean()


def anti_score_matching(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threshold: float = 1000.0,
    logits: torch.Tensor | None = None,
    **trace: Any,
) -> torch.Tensor:
    """Anti-score matching: pushes the Hessian trace up, capped at ``threshold``.

    Formula: R = −(1/B)·Σ_b min(h_b, threshold), h and the other options as in
    :func:`score_matching`.

    Source: Srinivas & Fleuret, ICLR 2021, §3.3 and §5 (threshold 1000).

    Reference code: idiap/rethinking-saliency ``regularizers.py`` (AntiScoreMatching).
    """
    fy = None if logits is None else _reused_target_logits(x, y, logits)
    h = hessian_trace_estimate(model, x.detach(), y, fy=fy, **trace)
    return -torch.clamp(h, max=threshold).mean()


REGULARIZERS: dict[str, Callable[..., torch.Tensor]] = {
    "gradnorm": gradient_norm,
    "score-matching": score_matching,
    "anti-score-matching": anti_score_matching,
}

_OPTION_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "samples": lambda v, c: check_int(v, "samples", c, 1),
    "sigma": lambda v, c: check_float(v, "sigma", c, 0.0, low_open=True),
    "tau": lambda v, c: check_float(v, "tau", c, 0.0),
    "threshold": lambda v, c: check_float(v, "threshold", c),
    "antithetic": lambda v, c: check_bool(v, "antithetic", c),
}


def check_regularizer(name: str | None, weight: float, options: dict[str, Any]) -> None:
    """Validate a regularizer name, weight and options before any training starts.

    Raises:
        ParameterError: Unknown name or option, a weight that is not > 0, or an option
            value out of range (the message names the valid values).
    """
    if name is None:
        return
    if name not in REGULARIZERS:
        raise ParameterError(unknown_name("regularizer", name, REGULARIZERS))
    caller = f"regularizer {name!r}"
    paper = PAPER_DEFAULTS[name]["reg_weight"]
    if isinstance(weight, int | float) and not isinstance(weight, bool) and weight == 0:
        raise ParameterError(
            f"The 'reg_weight' parameter of {caller} must be a float in (0, inf). Got {weight!r}: "
            f"λ = 0 trains the baseline. The paper uses {paper:g}."
        )
    check_float(weight, "reg_weight", caller, 0.0, low_open=True)
    valid = [k for k in PAPER_DEFAULTS[name] if k != "reg_weight"]
    for key, value in options.items():
        if key not in valid:
            raise ParameterError(unknown_name("option", key, valid, caller=caller))
        _OPTION_CHECKS[key](value, caller)


def regularizer_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options regularizer ``name`` runs with: ``PAPER_DEFAULTS`` updated by ``options``."""
    base = {k: v for k, v in PAPER_DEFAULTS[name].items() if k != "reg_weight"}
    return {**base, **(options or {})}


DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {"paper": PAPER_DEFAULTS, "code": CODE_DEFAULTS}


def recipe_fields(name: str | None, defaults: str = "paper", **overrides: Any) -> dict[str, Any]:
    """``Recipe`` fields for regularizer ``name`` with every option spelled out.

    ``Recipe(**base, **recipe_fields("score-matching"))`` trains with the paper's λ, S, σ,
    τ; ``defaults="code"`` takes the reference code's values instead; ``overrides`` replace
    single values (``reg_weight=1e-2``, ``sigma=0.05``). Spelling every option out makes the
    run's recorded recipe independent of later changes to the defaults. ``name=None`` gives
    the baseline's fields.

    Raises:
        ParameterError: unknown name, defaults or option (checked as by ``Recipe``).
    """
    if name is None:
        return {"regularizer": None, "reg_weight": 0.0, "reg_options": {}}
    if defaults not in DEFAULTS:
        raise ParameterError(unknown_name("defaults", defaults, DEFAULTS, caller="recipe_fields()"))
    if name not in REGULARIZERS:
        raise ParameterError(unknown_name("regularizer", name, REGULARIZERS))
    entry = {**DEFAULTS[defaults][name], **overrides}
    weight = entry.pop("reg_weight")
    check_regularizer(name, weight, entry)
    return {"regularizer": name, "reg_weight": weight, "reg_options": entry}


def check_smooth_model(name: str, model: nn.Module) -> None:
    """Raise if ``name`` needs a non-zero input Hessian and ``model`` is piecewise linear.

    Raises:
        ParameterError: score/anti-score matching on a model whose activation modules are
            all piecewise linear (e.g. ``act="relu"``).
    """
    if name == "gradnorm":
        return
    kinds = [m for m in model.modules() if isinstance(m, _SMOOTH + _PIECEWISE_LINEAR)]
    if kinds and not any(isinstance(m, _SMOOTH) for m in kinds):
        raise ParameterError(
            f"The regularizer {name!r} needs a smooth model: the input Hessian of a model whose "
            f"activations are all piecewise linear ({type(kinds[0]).__name__}) is zero almost "
            "everywhere. Build it with act='softplus' (--act softplus; the paper uses beta=10)."
        )


def regularization(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    options: dict[str, Any],
    generator: torch.Generator | None = None,
    *,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """The value of regularizer ``name`` on a batch (to be multiplied by λ).

    Options not given take their ``PAPER_DEFAULTS`` values. BatchNorm running statistics are
    left as found. ``generator`` (on ``x.device``) drives the noise; None seeds a fresh one
    with 0 (only for one-off calls: a training loop must pass its own). ``logits``: the
    training forward's ``model(x)``, computed from an ``x`` with ``requires_grad=True``;
    reusing it saves one forward pass per step.

    Raises:
        ParameterError: see :func:`check_smooth_model`.
    """
    check_smooth_model(name, model)
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    return REGULARIZERS[name](model, x, y, generator=generator, logits=logits,
                              **regularizer_options(name, options))
