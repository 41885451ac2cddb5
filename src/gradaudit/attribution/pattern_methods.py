"""PatternAttribution and Pattern-Guided Integrated Gradients (PGIG).

Both back-propagate through the model with every weight W replaced by W ⊙ a₊ (the fitted
patterns of :mod:`.pattern`) in the backward pass only: the forward (hence the ReLU gates and
max-pool switches) is the model's own. The model is replayed layer by layer from its
:func:`~.pattern.chain`; no module or weight of the caller's model is modified.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._core import OBJECTIVES, GradFn
from .gradients import map_rows
from .integrated import integrate
from .pattern import WEIGHTED, Patterns, chain

__all__ = ["SCALES", "VARIANTS", "pattern_attribution", "pattern_gradient", "pattern_integrated_gradients"]

SCALES = ("output", "one")
VARIANTS = ("attribution", "net")


class _PatternLinear(torch.autograd.Function):
    """y = F.linear(x, W, b) forward; dx = g · B backward (B = W ⊙ a₊, or a₊)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                back: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(back)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (back,) = ctx.saved_tensors
        return g @ back, None, None, None


class _PatternConv2d(torch.autograd.Function):
    """Conv2d forward with the module's weight; backward as a transposed conv with B."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: nn.Conv2d, back: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(back)
        ctx.shape, ctx.module = x.shape, module
        return F.conv2d(x, module.weight.detach(), None if module.bias is None else module.bias.detach(),
                        module.stride, module.padding, module.dilation)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (back,) = ctx.saved_tensors
        m = ctx.module
        dx = torch.nn.grad.conv2d_input(ctx.shape, back, g, m.stride, m.padding, m.dilation)
        return dx, None, None


def pattern_gradient(
    model: nn.Module, patterns: Patterns, output: str = "logit", scale: str = "output", variant: str = "attribution"
) -> GradFn:
    """The PatternAttribution backward as a gradient function ``grad_fn(z, t)``.

    ``output``: "logit" (default) or "prob" (softmax), the objective back-propagated.
    ``scale="output"`` (default) seeds the backward with the objective's value at z
    (Kindermans' y), ``"one"`` with 1. ``variant="attribution"`` (default) uses W ⊙ a₊,
    ``"net"`` uses a₊ (PatternNet's signal estimate).
    """
    layers = chain(model)
    back = {}
    for name, m in layers:
        if isinstance(m, WEIGHTED):
            a = patterns.tensors[name].to(m.weight)
            w = a * m.weight.detach() if variant == "attribution" else a
            back[name] = w if isinstance(m, nn.Conv2d) else w.contiguous()
    objective = OBJECTIVES[output]

    def forward(h: torch.Tensor) -> torch.Tensor:
        for name, m in layers:
            if isinstance(m, nn.Linear):
                h = _PatternLinear.apply(h, m.weight.detach(), None if m.bias is None else m.bias.detach(), back[name])
            elif isinstance(m, nn.Conv2d):
                h = _PatternConv2d.apply(h, m, back[name])
            else:
                h = m(h)
        return h

    def grad_fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            value = objective(forward(z), t)
            if scale == "output":
                value = value * value.detach()
            (g,) = torch.autograd.grad(value.sum(), z)
        return g

    return grad_fn


def pattern_attribution(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    patterns: Patterns,
    seed: int = 0,
    max_batch: int = 256,
    **backward: Any,
) -> torch.Tensor:
    """PatternAttribution: the backward pass with W ⊙ a₊ in place of W, seeded with the output.

    Formula: a(x) = y_t(x) · B(x)ᵀ e_t, where B(x) is the model's Jacobian at x with every
    weight W replaced by W ⊙ a₊ (the ReLU gates and pooling switches of the forward at x are
    kept) and y_t the target's logit.

    Source: Kindermans et al., "Learning how to explain neural networks: PatternNet and
    PatternAttribution", ICLR 2018, arXiv:1705.05598, §4 (eq. 9).

    Reference code: DFKI-NLP/pgig ``explainer/pattern.py`` and ``synthetic.ipynb``;
    albermax/innvestigate ``innvestigate/analyzer/pattern_based.py``.

    Deviations: PGIG's torch code seeds the backward with the softmax probability p_t through
    the softmax Jacobian and swaps W ← W ⊙ A in place in the shared model (restoring it later
    by reloading); here the default seeds with the logit y_t as Kindermans do, PGIG's
    convention is ``output="prob"``, and the weights are never touched (a replayed forward
    with a custom backward). ``variant="net"`` gives PatternNet (a₊ instead of W ⊙ a₊).

    Args:
        model: A plain chain of Linear / Conv2d / ReLU / MaxPool2d / Flatten layers.
        x: Inputs (N, ...).
        target: Classes (N,).
        patterns: Fitted patterns (:func:`fit_patterns`) of this model.
        seed: Unused.
        max_batch: Rows per forward/backward.
        **backward: ``output``, ``scale``, ``variant``: as for :func:`pattern_gradient`.

    Returns:
        Attributions shaped like ``x``.
    """
    return map_rows(pattern_gradient(model, patterns, **backward), x, target, max_batch)


def pattern_integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    patterns: Patterns,
    output: str = "logit",
    scale: str = "one",
    **path: Any,
) -> torch.Tensor:
    """Pattern-Guided Integrated Gradients (PGIG): IG whose path gradients are PatternAttribution
    backward passes.

    Formula: a(x) = (x − x') ⊙ Σ_k w_k B(x' + α_k (x − x'))ᵀ e_t, with B(z) the Jacobian at z
    with W replaced by W ⊙ a₊ (gates and switches of the forward at each path point).

    Source: Schwarzenberg & Castle, "Pattern-Guided Integrated Gradients", ICML 2020 WHI
    workshop, arXiv:2007.10685.

    Reference code: DFKI-NLP/pgig ``explainer/pattern.py`` (``pattern_integrate_grad``) and
    ``synthetic.ipynb`` (``walk_the_line``).

    Deviations: PGIG's torch code uses 24 points α = k/25 divided by 25 (α = 1 missing) and
    seeds each backward with the softmax probability at the path point; its notebook uses 100
    right-Riemann points seeded with 1. Here the rule and steps are those of ``ig`` (default
    64 Gauss–Legendre nodes), the seed is 1 (``scale="one"``, the notebook) or the output
    (``"output"``), and the objective is the logit (``output="prob"`` for PGIG's torch code).

    Args:
        model: A plain chain of Linear / Conv2d / ReLU / MaxPool2d / Flatten layers.
        x: Inputs (N, ...).
        target: Classes (N,).
        patterns: Fitted patterns (:func:`fit_patterns`) of this model.
        output: "logit" (default) or "prob".
        scale: "one" (default) or "output".
        **path: ``n_steps``, ``rule``, ``baseline``, ``data_mean``, ``bounds``,
            ``blur_sigma``, ``seed``, ``max_batch``: as for :func:`~.integrated.integrate`
            (and ``ig``).

    Returns:
        Attributions shaped like ``x``.
    """
    return integrate(pattern_gradient(model, patterns, output, scale), x, target, **path)
