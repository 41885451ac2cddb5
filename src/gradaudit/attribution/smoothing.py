"""Noise smoothing as composition: one wrapper turns any method into its SmoothGrad,
SmoothGrad² or VarGrad version; SmoothGrad, SmoothGrad², VarGrad and SmoothGrad-IG are
that wrapper over the plain gradient and over Integrated Gradients.

Noise: n standard-normal draws ε_k of one input's shape, from ``seed``, shared by all images
of the call (common random numbers), scaled per image by σ_i = noise_level · (max x_i −
min x_i) (the SmoothGrad paper's noise level, per image) or by an absolute ``sigma``. Sharing
the draws makes a batch give the same map as per-image calls, and any chunking the same
result as none.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._validation import check_choice
from ._core import derive_seed, draw_generator, grid_chunks
from ._paths import ModelGradient, weighted_gradient_sum
from .gradients import gradient
from .integrated import integrated_gradients

__all__ = [
    "REDUCTIONS",
    "noise_scale",
    "smooth",
    "smoothgrad",
    "smoothgrad_integrated_gradients",
    "smoothgrad_squared",
    "vargrad",
]

REDUCTIONS = ("mean", "mean-square", "variance")


def noise_scale(x: torch.Tensor, noise_level: float, sigma: float | None) -> torch.Tensor:
    """σ per image (N,): ``sigma`` if given, else noise_level · (max − min) of each image."""
    if sigma is not None:
        return x.new_full((len(x),), sigma)
    flat = x.flatten(1)
    return noise_level * (flat.amax(1) - flat.amin(1))


class _Moments:
    """Per-image running sum, sum of squares, or mean and M2 (Chan et al.'s parallel update,
    so VarGrad = M2 / n never subtracts two large nearly equal numbers)."""

    def __init__(self, like: torch.Tensor, reduce: str) -> None:
        self.reduce = reduce
        self.count = torch.zeros(len(like), dtype=torch.long)
        self.total = torch.zeros_like(like)  # Σa, Σa² or the running mean
        self.m2 = torch.zeros_like(like) if reduce == "variance" else None

    def add(self, items: slice, a: torch.Tensor) -> None:
        """Merge samples ``a`` (m, k, ...) of images ``items`` (equal counts within ``items``)."""
        k = a.shape[1]
        if self.m2 is None:
            self.total[items] += (a if self.reduce == "mean" else a * a).sum(1)
            return
        n_old = int(self.count[items.start])
        n_new = n_old + k
        batch_mean = a.mean(1)
        delta = batch_mean - self.total[items]
        self.m2[items] += (a - batch_mean.unsqueeze(1)).square().sum(1) + delta.square() * (n_old * k / n_new)
        self.total[items] += delta * (k / n_new)
        self.count[items] = n_new

    def result(self, n: int) -> torch.Tensor:
        return self.m2 / n if self.m2 is not None else self.total / n


def smooth(
    inner: Callable[..., torch.Tensor], reduce: str, fused_mean: Callable[..., torch.Tensor] | None = None
) -> Callable[..., torch.Tensor]:
    """The noise-smoothed version of method ``inner``: mean, mean of squares or variance of
    ``inner`` over n noisy copies of each input.

    ``fused_mean(model, x, target, eps, sigma, max_batch=..., **inner_options)``, if given,
    computes the mean directly from the draws (same value, less work); it is used for
    ``reduce="mean"`` only.
    """
    check_choice(reduce, "reduce", "smooth()", REDUCTIONS)

    def smoothed(
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        n_samples: int = 25,
        noise_level: float = 0.15,
        sigma: float | None = None,
        seed: int = 0,
        max_batch: int = 256,
        **inner_options: object,
    ) -> torch.Tensor:
        eps = torch.randn((n_samples, *x.shape[1:]), generator=draw_generator(seed), dtype=x.dtype).to(x.device)
        sigmas = noise_scale(x, noise_level, sigma)
        if fused_mean is not None and reduce == "mean":
            return fused_mean(model, x, target, eps, sigmas, max_batch=max_batch, **inner_options)
        scale = sigmas.view(-1, 1, *(1,) * (x.dim() - 1))
        inner_seed = derive_seed(seed, "inner")
        moments = _Moments(x, reduce)
        for items, samples in grid_chunks(len(x), n_samples, max_batch):
            noisy = x[items].unsqueeze(1) + scale[items] * eps[samples].unsqueeze(0)  # (m, k, ...)
            m, k = noisy.shape[:2]
            a = inner(model, noisy.reshape(m * k, *x.shape[1:]), target[items].repeat_interleave(k),
                      seed=inner_seed, max_batch=max_batch, **inner_options)
            moments.add(items, a.view(m, k, *x.shape[1:]))
        return moments.result(n_samples)

    smoothed.__name__ = f"smooth_{reduce.replace('-', '_')}_{inner.__name__}"
    return smoothed


def _gradient_noise_mean(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    eps: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    output: str = "logit",
    max_batch: int = 256,
) -> torch.Tensor:
    """(1/n) Σ_k ∇f(x_i + σ_i ε_k) as one weighted gradient sum (first layer factored out)."""
    n = len(eps)
    coef = sigmas.unsqueeze(0).expand(n, len(x))
    weights = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device)
    return weighted_gradient_sum(ModelGradient(model, output), x, eps, coef, weights, target, max_batch, per_sample=True)


# The part of the smoothed methods' docstrings that they share, after each one's own head
# (summary, formula, source, reference code): the noise, PGIG's and Captum's differences,
# the method's own further differences ({extra}), the arguments (the inner method's: {inner}).
_SHARED_DOC = """
    Noise: ε_k ~ N(0, σ_i²), σ_i = noise_level · (max x_i − min x_i), or an absolute ``sigma``.

    Deviations: PGIG adds each new noise draw to the already-noised input (sample k sees a
    random walk x + Σ_{{j≤k}} ε_j), overwrites the caller's tensor and never zeroes
    ``inp.grad``, so it sums accumulated gradients; here every sample is x + σε_k and the
    input is left intact. Captum's σ is absolute and its draws come from the global RNG;
    here σ is a fraction of each image's range (``sigma`` gives an absolute one) and the draws
    come from ``seed``, shared by all images.{extra}

    Args:
        model: Classifier returning logits (N, K).
        x: Inputs (N, ...).
        target: Classes (N,).
        n_samples: Noisy copies per input (default 25, PGIG's and the SmoothGrad paper's
            range).
        noise_level: σ as a fraction of each image's value range (default 0.15).
        sigma: Absolute σ in input units; overrides ``noise_level``.
        seed: Seeds the noise.
        max_batch: Rows per forward/backward.
        **inner_options: Options of the smoothed method ({inner}).

    Returns:
        Attributions shaped like ``x``.
    """


def _documented(method: Callable[..., torch.Tensor], name: str, inner: str, head: str,
                extra: str = "") -> Callable[..., torch.Tensor]:
    """``method`` named ``name``, documented by its own ``head`` and ``_SHARED_DOC``."""
    method.__name__ = name
    method.__doc__ = head + _SHARED_DOC.format(extra=extra, inner=inner)
    return method


smoothgrad = _documented(smooth(gradient, "mean", fused_mean=_gradient_noise_mean), "smoothgrad", "``output``", """\
SmoothGrad: the input gradient averaged over noisy copies.

    Formula: a(x) = (1/n) Σ_k ∇f_t(x + ε_k).

    Source: Smilkov et al., "SmoothGrad: removing noise by adding noise", ICML 2017 workshop,
    arXiv:1706.03825, eq. (2).

    Reference code: Captum ``captum/attr/_core/noise_tunnel.py``; DFKI-NLP/pgig
    ``explainer/backprop.py`` (``SmoothGradExplainer``).
""", extra=" For a plain ``nn.Sequential`` whose first layer A is Linear (an MLP), A(ε_k) is "
         "computed once per draw and Aᵀ once per input (``_paths.py``): the same value up to float rounding.")

smoothgrad_squared = _documented(smooth(gradient, "mean-square"), "smoothgrad_squared", "``output``", """\
SmoothGrad²: the mean of squared gradients over noisy copies.

    Formula: a(x) = (1/n) Σ_k ∇f_t(x + ε_k)².

    Source: Hooker, Erhan, Kindermans & Kim, "A Benchmark for Interpretability Methods in Deep
    Neural Networks", NeurIPS 2019, arXiv:1806.10758, §4 (SG-SQ); the noise of SmoothGrad.

    Reference code: Captum's NoiseTunnel (``smoothgrad_sq``); DFKI-NLP/pgig
    ``explainer/backprop.py`` (``SmoothGrad2Explainer``).
""")

vargrad = _documented(smooth(gradient, "variance"), "vargrad", "``output``", """\
VarGrad: the variance of the gradient over noisy copies.

    Formula: a(x) = (1/n) Σ_k (∇f_t(x + ε_k) − ḡ)², with ḡ = (1/n) Σ_k ∇f_t(x + ε_k) the
    SmoothGrad map.

    Source: Adebayo et al., "Local Explanation Methods for Deep Neural Networks Lack
    Sensitivity to Parameter Values", ICLR 2018 workshop, arXiv:1810.03307.

    Reference code: Captum's NoiseTunnel (``vargrad``), whose E[g²] − E[g]² is replaced here
    (below); DFKI-NLP/pgig ``explainer/backprop.py`` (``VarGradExplainer``).
""", extra=" The variance is accumulated with Chan et al.'s update (mean and M2), not as "
         "E[g²] − E[g]² as Captum and PGIG do, which cancels catastrophically when the mean gradient is large.")

smoothgrad_integrated_gradients = _documented(
    smooth(integrated_gradients, "mean"), "smoothgrad_integrated_gradients",
    "``n_steps``, ``rule``, ``baseline``, ``output``, ...", """\
SmoothGrad-IG: Integrated Gradients averaged over noisy copies (SmoothGrad composed over IG).

    Formula: a(x) = (1/n) Σ_k IG(x + ε_k), each IG with its own options (baseline, steps).

    Source: Smilkov et al., arXiv:1706.03825, §3.3 (SmoothGrad applied to Integrated
    Gradients); Sundararajan et al., ICML 2017, arXiv:1703.01365.

    Reference code: Captum's NoiseTunnel(IntegratedGradients); DFKI-NLP/pgig
    ``explainer/backprop.py`` (``SmoothGradIGExplainer (sg_ig)``).
""", extra=" PGIG's sg_ig instead replaces each path gradient ∇f(α_k x) by SmoothGrad at α_k x "
         "(the noise is not multiplied by x − x'); here SmoothGrad wraps IG as the SmoothGrad "
         "paper and Captum's NoiseTunnel(IntegratedGradients) do.")
