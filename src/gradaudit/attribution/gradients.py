"""Single-pass gradient methods: input gradient, loss gradient, gradient × input, Guided
Backprop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ._core import GradFn, grid_chunks
from ._fastpath import COMMUTES_WITH_MAX
from ._paths import ModelGradient

__all__ = [
    "gradient",
    "gradient_times_input",
    "guided_backprop",
    "guided_relus",
    "has_relu",
    "loss_gradient",
    "map_rows",
]


def map_rows(grad_fn: GradFn, x: torch.Tensor, target: torch.Tensor, max_batch: int) -> torch.Tensor:
    """``grad_fn`` over ``x`` in chunks of at most ``max_batch`` rows."""
    out = torch.empty_like(x)
    for items, _ in grid_chunks(len(x), 1, max_batch):
        out[items] = grad_fn(x[items], target[items])
    return out


def gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    output: str = "logit",
    seed: int = 0,
    max_batch: int = 256,
) -> torch.Tensor:
    """Input gradient of the target's logit (or probability, or loss).

    Formula: a(x) = ∂ f_t(x) / ∂x, with f_t the raw logit of class t (``output="logit"``),
    its softmax probability (``"prob"``) or the cross-entropy loss (``"loss"``).

    Source: Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", ICLR 2014
    workshop, arXiv:1312.6034; the logit gradient is the object of Shah, Jain & Netrapalli,
    NeurIPS 2021, arXiv:2102.12781.

    Reference code: harshays/inputgradients ``scripts/saliency_utils.py`` (``LogitGrad``);
    Captum ``captum/attr/_core/saliency.py`` (``Saliency(abs=False)``).

    Deviations: the signed gradient is returned (rankings take |a| later); the reference
    code returns |g|. ``seed`` is unused (deterministic).

    Args:
        model: Classifier returning logits (N, K).
        x: Inputs (N, ...).
        target: Classes (N,), int64.
        output: "logit" (default), "prob" or "loss".
        seed: Unused.
        max_batch: Rows per forward/backward.

    Returns:
        Attributions shaped like ``x``.
    """
    return map_rows(ModelGradient(model, output), x, target, max_batch)


def loss_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, seed: int = 0, max_batch: int = 256
) -> torch.Tensor:
    """Input gradient of the cross-entropy loss at the target class.

    Formula: a(x) = ∂ CE(f(x), t) / ∂x = −∂ log softmax_t(f(x)) / ∂x.

    Source: Shah, Jain & Netrapalli, NeurIPS 2021, arXiv:2102.12781, App. C (footnote 2).

    Reference code: harshays/inputgradients ``scripts/saliency_utils.py`` (``LossGrad``,
    ``CE(reduction='sum')``).

    Deviations: none (a per-row sum equals the reference's summed loss in eval mode).

    Args:
        model: Classifier returning logits (N, K).
        x: Inputs (N, ...).
        target: Classes (N,).
        seed: Unused.
        max_batch: Rows per forward/backward.

    Returns:
        Attributions shaped like ``x``.
    """
    return map_rows(ModelGradient(model, "loss"), x, target, max_batch)


def gradient_times_input(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, **options: Any
) -> torch.Tensor:
    """Gradient × input.

    Formula: a(x) = x ⊙ ∂ f_t(x) / ∂x.

    Source: Shrikumar et al., "Not Just a Black Box", arXiv:1605.01713 (2016).

    Reference code: Captum ``captum/attr/_core/input_x_gradient.py``; harshays/inputgradients
    ``LogitGradientTimesInput``.

    Deviations: the reference's logit variant differentiates the softmax by default
    (``apply_softmax=True``); here the raw logit is the default and ``output="prob"`` gives
    the softmax variant.

    Args:
        model, x, target, **options: As for :func:`gradient` (``output``, ``seed``,
            ``max_batch``).

    Returns:
        Attributions shaped like ``x``.
    """
    return x * gradient(model, x, target, **options)


def _guide_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
    """Forward hook: the gradient reaching this ReLU's output is clamped at 0 before the ReLU's
    own backward gates it, so the ReLU passes gradient only where input > 0 and gradient > 0."""
    if isinstance(out, torch.Tensor) and out.requires_grad:
        out.register_hook(lambda g: g.clamp(min=0))


COMMUTES_WITH_MAX.add(_guide_hook)  # clamping after a max-pool's routing = before it


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Guided-backprop ReLUs inside the block; every hook is removed on exit, even on error."""
    handles = [m.register_forward_hook(_guide_hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def guided_backprop(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, **options: Any
) -> torch.Tensor:
    """Guided Backpropagation.

    Formula: the gradient of f_t, except that every ReLU passes back max(g, 0) ⊙ 1[input > 0]
    instead of g ⊙ 1[input > 0].

    Source: Springenberg et al., "Striving for Simplicity: The All Convolutional Net",
    ICLR 2015 workshop, arXiv:1412.6806.

    Reference code: Captum ``captum/attr/_core/guided_backprop_deconvnet.py``; DFKI-NLP/pgig
    ``explainer/backprop.py`` (``GuidedBackpropExplainer``).

    Deviations: the PGIG reference monkey-patches ``nn.ReLU.forward`` for good, so every
    later method in the same process is silently computed with guided ReLUs, and it seeds
    the backward with the softmax probability. Here the guide lives in temporary forward
    hooks on the model's ``nn.ReLU`` modules, removed before returning (also on error), and
    the raw logit is the default (``output="prob"`` gives the softmax). Only ``nn.ReLU``
    modules are guided (as in Captum); functional ``torch.relu`` calls are not.

    Args:
        model: Classifier with ``nn.ReLU`` modules, returning logits (N, K).
        x, target, **options: As for :func:`gradient` (``output``, ``seed``, ``max_batch``).

    Returns:
        Attributions shaped like ``x``.
    """
    with guided_relus(model):
        return gradient(model, x, target, **options)


def has_relu(model: nn.Module) -> tuple[bool, str]:
    """Guided Backprop applies when the model has ``nn.ReLU`` modules to guide."""
    if any(isinstance(m, nn.ReLU) for m in model.modules()):
        return True, ""
    return False, (
        f"{type(model).__name__} has no nn.ReLU module; Guided Backprop only changes the "
        "backward pass of ReLUs, so it would equal the plain gradient."
    )
