"""Projected gradient descent (PGD) attacks in l-inf and l2, and robust accuracy.

Source: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018, arXiv:1706.06083.

Reference code: harshays/inputgradients ``scripts/ptb_utils.py`` (paper-protocol §3.2).

Deviations from the reference code:
    * The model is put in eval mode for the attack and restored after it (the reference
      attacks in train mode, so BatchNorm statistics see adversarial batches).
    * Gradients are taken w.r.t. the perturbation only; the model's ``.grad`` fields are
      left untouched.
    * Random start is on by default (uniform in the l-inf box; uniform in the l2 ball), and
      ``restarts`` keeps, per example, the perturbation with the highest loss.
    * The step on the l2 sphere normalises by ``‖g‖ + 1e-10`` and projects with
      ``min(1, eps/‖δ‖)``, as torchattacks' PGDL2 does, so the two agree without random start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_float, check_int

__all__ = ["eval_mode", "pgd", "robust_accuracy"]

NORMS = ("linf", "l2")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block and restore each module's mode after."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    direction = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    direction = direction / (_per_sample_norm(direction) + 1e-12)
    d = x[0].numel()
    radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) ** (1.0 / d)
    return direction * (eps * radius).view(-1, *([1] * (x.dim() - 1)))


def _attack_once(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
    start: torch.Tensor,
    bounds: tuple[float, float],
) -> torch.Tensor:
    lo, hi = bounds
    adv = torch.clamp(x + start, lo, hi).detach()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            if norm == "linf":
                adv = adv + step_size * grad.sign()
                delta = torch.clamp(adv - x, -eps, eps)
            else:
                adv = adv + step_size * grad / (_per_sample_norm(grad) + 1e-10)
                delta = adv - x
                delta = delta * torch.clamp(eps / _per_sample_norm(delta), max=1.0)
            adv = torch.clamp(x + delta, lo, hi).detach()
    return adv


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy loss; returns the adversarial inputs.

    Formula: δ ← Π_{‖δ‖≤ε, x+δ∈[lo,hi]}(δ + α·s(∇_δ CE(f(x+δ), y))), with s = sign for
    l-inf and s(g) = g/‖g‖₂ for l2.

    Args:
        model: Classifier returning logits. Evaluated in eval mode; its mode is restored.
        x: Inputs (N, C, H, W) inside ``bounds``.
        y: Labels (N,).
        norm: "linf" or "l2".
        eps: Radius of the threat model in input units; 0 returns ``x`` unchanged.
        steps: Number of PGD steps.
        step_size: α; None means 2.5·eps/steps.
        random_start: Start from a uniform draw in the eps-ball (else from x).
        restarts: Independent starts; per example the highest-loss result is kept.
        bounds: The input box (lo, hi).
        generator: Source of the random starts (a seeded ``torch.Generator`` for
            reproducible attacks); None uses the global RNG.

    Returns:
        Adversarial inputs, detached, shaped like ``x``.
    """
    caller = "pgd"
    check_choice(norm, "norm", caller, NORMS)
    eps = check_float(eps, "eps", caller, 0.0)
    steps = check_int(steps, "steps", caller, 1)
    restarts = check_int(restarts, "restarts", caller, 1)
    alpha = 2.5 * eps / steps if step_size is None else check_float(step_size, "step_size", caller, 0.0)
    if eps == 0:
        return x.detach().clone()
    best, best_loss = x.detach().clone(), torch.full((x.shape[0],), -float("inf"), device=x.device)
    with eval_mode(model):
        for _ in range(restarts):
            start = _random_start(x, norm, eps, generator) if random_start else torch.zeros_like(x)
            adv = _attack_once(model, x.detach(), y, norm, eps, steps, alpha, start, bounds)
            with torch.no_grad():
                loss = F.cross_entropy(model(adv), y, reduction="none")
            better = loss > best_loss
            best[better], best_loss[better] = adv[better], loss[better]
    return best


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: Sequence[float],
    steps: int = 40,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 500,
    seed: int = 0,
) -> dict[float, float]:
    """Accuracy under PGD at each radius in ``eps`` (0 gives clean accuracy).

    Evaluation attacks default to 40 steps (four times the training attack) with random
    start; raise ``restarts`` for a stronger estimate.

    Returns:
        ``{eps: accuracy}`` with accuracies in [0, 1].
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    out: dict[float, float] = {}
    for e in eps:
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            adv = pgd(model, xb, yb, norm=norm, eps=float(e), steps=steps, step_size=step_size,
                      random_start=random_start, restarts=restarts, bounds=bounds, generator=gen)
            with torch.no_grad(), eval_mode(model):
                correct += (model(adv).argmax(1) == yb).sum().item()
        out[float(e)] = correct / x.shape[0]
    return out
