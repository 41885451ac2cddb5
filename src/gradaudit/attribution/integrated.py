"""Path methods: Integrated Gradients (quadrature rules, baselines) and Expected Gradients."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._torch_utils import eval_mode
from .._validation import ParameterError
from ._core import OBJECTIVES, GradFn, draw_generator, grid_chunks
from ._paths import ModelGradient, weighted_gradient_sum

__all__ = [
    "BASELINES",
    "RULES",
    "completeness_gap",
    "expected_gradients",
    "integrate",
    "integrated_gradients",
    "make_baseline",
    "quadrature",
]


def _riemann(offset: float) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    def rule(n: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)

    return rule


def _trapezoid(n: int) -> tuple[np.ndarray, np.ndarray]:
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, n), weights


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (nodes + 1.0), 0.5 * weights


# Quadrature rules on [0, 1]: n -> (alphas, weights); the weights sum to 1 for every rule.
RULES: dict[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {
    "riemann-left": _riemann(0.0),
    "riemann-right": _riemann(1.0),
    "riemann-middle": _riemann(0.5),
    "riemann-trapezoid": _trapezoid,
    "gauss-legendre": _gauss_legendre,
}
MIN_STEPS = {"riemann-trapezoid": 2}

BASELINES = ("zero", "mean", "uniform", "blur")


def quadrature(rule: str, n_steps: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alphas, weights) of ``rule`` with ``n_steps`` nodes, in ``like``'s dtype and device."""
    alphas, weights = RULES[rule](n_steps)
    return (torch.as_tensor(alphas, dtype=like.dtype, device=like.device),
            torch.as_tensor(weights, dtype=like.dtype, device=like.device))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images, radius ⌈3σ⌉, edges replicated."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def make_baseline(
    baseline: str | torch.Tensor,
    x: torch.Tensor,
    *,
    data_mean: torch.Tensor | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    blur_sigma: float = 4.0,
    seed: int = 0,
) -> torch.Tensor:
    """The baseline x' of every row of ``x``, expanded to ``x``'s shape.

    "zero": 0 in the model's input space. "mean": ``data_mean`` (e.g. the per-channel
    dataset mean, shape (C, 1, 1)). "uniform": one image of U(bounds) noise drawn from
    ``seed``, shared by all rows. "blur": each image blurred by a Gaussian of ``blur_sigma``
    pixels. A tensor is used as given (broadcast to ``x``).
    """
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x).expand_as(x)
    if baseline == "zero":
        return x.new_zeros(()).expand_as(x)
    if baseline == "mean":
        return data_mean.to(x).expand_as(x)  # type: ignore[union-attr]  # checked by attribute()
    if baseline == "uniform":
        lo, hi = bounds
        if x.numel() and not (float(x.min()) >= lo - 1e-5 * (hi - lo) and float(x.max()) <= hi + 1e-5 * (hi - lo)):
            raise ParameterError(
                f"The 'uniform' baseline draws from bounds=({lo:g}, {hi:g}) but the inputs range over "
                f"[{float(x.min()):.4g}, {float(x.max()):.4g}]. Pass the data's bounds, e.g. bounds=train.bounds.")
        noise = torch.rand(x.shape[1:], generator=draw_generator(seed), dtype=x.dtype)
        return (lo + (hi - lo) * noise).to(x.device).expand_as(x)
    return _gaussian_blur(x, blur_sigma)


def integrate(
    grad_fn: GradFn,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    n_steps: int = 64,
    rule: str = "gauss-legendre",
    baseline: str | torch.Tensor = "zero",
    data_mean: torch.Tensor | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    blur_sigma: float = 4.0,
    seed: int = 0,
    max_batch: int = 256,
) -> torch.Tensor:
    """The path integral of any gradient function: (x − x') ⊙ Σ_k w_k grad_fn(x' + α_k (x − x')),
    the quadrature of (x − x') ⊙ ∫₀¹ grad_fn(x' + α(x − x')) dα, with x' from
    :func:`make_baseline`. Integrated Gradients (``grad_fn`` the model's gradient) and PGIG
    (the PatternAttribution backward) are this function.

    Args:
        grad_fn: A gradient function ``grad_fn(z, t)``; a :class:`~._paths.ModelGradient` of
            a model with an affine head takes the factored route (``_paths.py``).
        x: Inputs (N, ...).
        target: Classes (N,).
        n_steps: Quadrature nodes (default 64).
        rule: "gauss-legendre" (default), "riemann-left", "riemann-right", "riemann-middle"
            or "riemann-trapezoid".
        baseline: "zero" (default), "mean" (needs ``data_mean``), "uniform" (one U(bounds)
            image drawn from ``seed``), "blur" (needs images (N, C, H, W)) or a tensor
            broadcastable to ``x``.
        data_mean: The "mean" baseline, broadcastable to one input (e.g. (C, 1, 1)).
        bounds: Value range for the "uniform" baseline.
        blur_sigma: Gaussian σ in pixels for the "blur" baseline (default 4).
        seed: Seeds the "uniform" baseline.
        max_batch: Rows (image × step) per forward/backward.

    Returns:
        Attributions shaped like ``x``.
    """
    base = make_baseline(baseline, x, data_mean=data_mean, bounds=bounds, blur_sigma=blur_sigma, seed=seed)
    alphas, weights = quadrature(rule, n_steps, x)
    coef = alphas.unsqueeze(1).expand(n_steps, len(x))
    diff = x - base
    return diff * weighted_gradient_sum(grad_fn, base, diff, coef, weights, target, max_batch)


def integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, output: str = "logit", **path: Any
) -> torch.Tensor:
    """Integrated Gradients.

    Formula: a(x) = (x − x') ⊙ Σ_k w_k ∇f_t(x' + α_k (x − x')), the quadrature of
    (x − x') ⊙ ∫₀¹ ∇f_t(x' + α(x − x')) dα; Σ_i a_i ≈ f_t(x) − f_t(x') (completeness).

    Source: Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
    arXiv:1703.01365, eq. (1)-(3). Blurred baseline: Sturmfels, Lundberg & Lee,
    "Visualizing the Impact of Feature Attribution Baselines", Distill 2020.

    Reference code: Captum ``captum/attr/_core/integrated_gradients.py`` and
    ``captum/attr/_utils/approximation_methods.py``; DFKI-NLP/pgig ``explainer/backprop.py``
    (``IntegrateGradExplainer``).

    Deviations: PGIG's IG uses 24 points α = k/25 (k = 1..24, missing α = 1) divided by 25,
    so its completeness is biased; here every rule's weights sum to 1. Captum's
    ``riemann_trapezoid`` uses weights 1/n (halved at the ends) on nodes spaced 1/(n−1), so its
    integral is scaled by (n−1)/n; ours uses 1/(n−1). Defaults: 64 steps, Gauss–Legendre (as
    Captum), zero baseline (in the model's input space; PGIG's zero is the ImageNet-mean
    colour because it works in mean-subtracted space). For a plain ``nn.Sequential`` whose
    first weighted layer A is Linear (an MLP), A runs once per input instead of once per point
    (A(x' + α(x − x')) = A(x') + α(A(x) − A(x')), and Σ_k w_k ∇_z f = Aᵀ Σ_k w_k ∇_h f; see
    ``_paths.py``): the same value up to float rounding, ~3× faster for the MNIST MLP.

    Args:
        model: Classifier returning logits (N, K).
        x: Inputs (N, ...).
        target: Classes (N,).
        output: "logit" (default), "prob" or "loss".
        **path: ``n_steps``, ``rule``, ``baseline``, ``data_mean``, ``bounds``,
            ``blur_sigma``, ``seed``, ``max_batch``: as for :func:`integrate`.

    Returns:
        Attributions shaped like ``x``.
    """
    return integrate(ModelGradient(model, output), x, target, **path)


def expected_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    references: torch.Tensor,
    n_samples: int = 50,
    output: str = "logit",
    seed: int = 0,
    max_batch: int = 256,
) -> torch.Tensor:
    """Expected Gradients: IG averaged over baselines drawn from a reference set.

    Formula: a(x) = (1/n) Σ_k (x − r_k) ⊙ ∇f_t(r_k + α_k (x − r_k)), r_k drawn uniformly
    from ``references`` and α_k ~ U(0, 1), k = 1..n.

    Source: Erion, Janizek, Sturmfels, Lundberg & Lee, "Improving performance of deep
    learning models with axiomatic attribution priors and expected gradients", Nature
    Machine Intelligence 2021, arXiv:1906.10670, eq. (4).

    Reference code: Captum ``captum/attr/_core/gradient_shap.py`` (``GradientShap`` with
    ``stdevs=0``); DFKI-NLP/pgig ``explainer/backprop.py`` (``ExpectedGradExplainer``).

    Deviations: PGIG takes baseline k of image i to be image (i − k) mod B of the same batch
    and one α per k, so results depend on the batch and it fails for batches of ≤ 49 images;
    here (r_k, α_k) are drawn from ``seed`` and shared by every image (common random
    numbers), so any batch or chunking gives the same map for an image. Captum draws per
    image from the global RNG.

    Args:
        model: Classifier returning logits (N, K).
        x: Inputs (N, ...).
        target: Classes (N,).
        references: Reference inputs (R, ...) (e.g. the training images).
        n_samples: Draws (r_k, α_k) (default 50).
        output: "logit" (default), "prob" or "loss".
        seed: Seeds the draws.
        max_batch: Rows (image × sample) per forward/backward.

    Returns:
        Attributions shaped like ``x``.
    """
    gen = draw_generator(seed)
    index = torch.randint(len(references), (n_samples,), generator=gen)
    alphas = torch.rand(n_samples, generator=gen, dtype=torch.float64).to(x)
    refs = references[index.to(references.device)].to(x)
    grad_fn = ModelGradient(model, output)
    total = torch.zeros_like(x)
    tail = (1,) * (x.dim() - 1)
    for items, samples in grid_chunks(len(x), n_samples, max_batch):
        r = refs[samples].unsqueeze(1)  # (k, 1, ...)
        diff = x[items].unsqueeze(0) - r  # (k, m, ...)
        a = alphas[samples].view(-1, 1, *tail)
        points = a * x[items].unsqueeze(0) + (1 - a) * r  # α x + (1 − α) r, associated as Captum's
        k, m = points.shape[:2]
        g = grad_fn(points.reshape(k * m, *x.shape[1:]), target[items].repeat(k))
        total[items] += (diff * g.view_as(diff)).sum(0)
    return total / n_samples


def completeness_gap(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    attributions: torch.Tensor,
    baseline: torch.Tensor | float = 0.0,
    *,
    output: str = "logit",
) -> torch.Tensor:
    """IG's completeness error per row: Σ_i a_i − (f_t(x) − f_t(x')) (Captum's convergence delta).

    Args:
        model: The attributed model.
        x: Inputs (N, ...).
        target: Classes (N,).
        attributions: Attributions of ``x`` (N, ...).
        baseline: x', a tensor broadcastable to ``x`` or a constant (default 0).
        output: The objective that was attributed: "logit", "prob" or "loss".

    Returns:
        (N,) gaps, in the objective's units.
    """
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    objective = OBJECTIVES[output]
    with eval_mode(model), torch.no_grad():
        delta = objective(model(x), target) - objective(model(base), target)
    return attributions.flatten(1).sum(1) - delta
