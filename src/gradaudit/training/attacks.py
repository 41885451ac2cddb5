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
      ``min(1, eps/‖δ‖)``, as torchattacks' PGDL2 does, so the two agree without random start
      (the reference divides by ``‖g‖ + 1e-15`` and rescales by ``eps/max(‖δ‖, eps)``, the same
      projection).
    * The l2 random start is uniform in the eps-ball (radius ``eps·U^(1/d)``); the reference
      and torchattacks scale a Gaussian direction by ``eps·U``, which crowds the centre.
    * The attack runs under ``torch.enable_grad()``, so it also works inside a caller's
      ``torch.no_grad()`` block; the random start uses a seeded generator, never the global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._torch_utils import eval_mode  # re-exported (it lived here)
from .._validation import ParameterError, ParameterTypeError, check_choice, check_float, check_int

__all__ = ["eval_mode", "pgd", "robust_accuracy"]

NORMS = ("linf", "l2")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator) -> torch.Tensor:
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


def _check_inputs(x: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float], caller: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ParameterTypeError(
            f"The 'x' argument of {caller} must be a float tensor (N, ...). "
            f"Got {getattr(x, 'shape', type(x).__name__)}."
        )
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],) or y.dtype != torch.long:
        raise ParameterError(
            f"The 'y' argument of {caller} must be an int64 tensor of shape ({x.shape[0]},). "
            f"Got {getattr(y, 'dtype', None)} {tuple(getattr(y, 'shape', ()))}."
        )
    if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
        raise ParameterError(f"The 'bounds' parameter of {caller} must be (lo, hi) with lo < hi. Got {bounds!r}.")
    lo, hi = float(bounds[0]), float(bounds[1])
    if x.numel():
        x_lo, x_hi, slack = float(x.min()), float(x.max()), 1e-5 * (hi - lo)
        if not (x_lo >= lo - slack and x_hi <= hi + slack):  # also catches NaN
            raise ParameterError(
                f"The inputs of {caller} range over [{x_lo:.4g}, {x_hi:.4g}], outside bounds=({lo:g}, {hi:g}); the "
                "attack would clamp them into that box. Pass the data's own bounds (ImageSet.bounds), e.g. "
                "bounds=train.bounds for standardized inputs."
            )


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
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy loss; returns the adversarial inputs.

    Formula: δ ← Π_{‖δ‖≤ε, x+δ∈[lo,hi]}(δ + α·s(∇_δ CE(f(x+δ), y))), with s = sign for
    l-inf and s(g) = g/‖g‖₂ for l2 (per example), CE averaged over the batch.

    Args:
        model: Classifier returning logits. Evaluated in eval mode; every module's mode is
            restored, and parameter ``.grad`` fields are left untouched.
        x: Inputs (N, C, H, W) inside ``bounds``; not modified.
        y: Labels (N,), int64.
        norm: "linf" or "l2".
        eps: Radius of the threat model in input units; 0 returns a copy of ``x``.
        steps: Number of PGD steps (default 10).
        step_size: α; None means 2.5·eps/steps.
        random_start: Start from a uniform draw in the eps-ball (else from x).
        restarts: Independent starts; per example the highest-loss result is kept.
        bounds: The input box (lo, hi): the data's (``ImageSet.bounds``, e.g. standardized
            inputs' (−0.42, 2.82)); inputs outside it raise, never silently clamped.
        seed: Seeds the random starts when no ``generator`` is given.
        generator: A ``torch.Generator`` on ``x``'s device for the random starts (the
            training loop passes its own, so that a resumed run continues its sequence);
            None creates one from ``seed``.

    Returns:
        Adversarial inputs, detached, shaped like ``x``.

    Raises:
        ParameterError: Unknown norm, a negative eps, non-positive steps or restarts, bad
            bounds, inputs outside ``bounds``, or labels that do not match ``x``.
    """
    caller = "pgd"
    check_choice(norm, "norm", caller, NORMS)
    eps = check_float(eps, "eps", caller, 0.0)
    steps = check_int(steps, "steps", caller, 1)
    restarts = check_int(restarts, "restarts", caller, 1)
    alpha = 2.5 * eps / steps if step_size is None else check_float(step_size, "step_size", caller, 0.0)
    _check_inputs(x, y, bounds, caller)
    bounds = (float(bounds[0]), float(bounds[1]))
    if eps == 0:
        return x.detach().clone()
    if random_start and generator is None:
        generator = torch.Generator(device=x.device).manual_seed(check_int(seed, "seed", caller, 0))
    x = x.detach()
    with eval_mode(model), torch.enable_grad():
        best: torch.Tensor | None = None
        for _ in range(restarts):
            start = _random_start(x, norm, eps, generator) if random_start else torch.zeros_like(x)
            adv = _attack_once(model, x, y, norm, eps, steps, alpha, start, bounds)
            if restarts == 1:
                return adv
            with torch.no_grad():
                loss = F.cross_entropy(model(adv), y, reduction="none")
            if best is None:
                best, best_loss = adv, loss
            else:
                better = loss > best_loss
                best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), adv, best)
                best_loss = torch.where(better, loss, best_loss)
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
    start; raise ``restarts`` for a stronger estimate. Each radius is attacked with a fresh
    generator seeded with ``seed``, so its result does not depend on the other radii listed.

    Args:
        model: Classifier returning logits, on ``x``'s device; its modes are restored.
        x: Inputs (N, C, H, W) inside ``bounds``.
        y: Labels (N,), int64.
        norm, steps, step_size, random_start, restarts, bounds: As in :func:`pgd`.
        eps: Radii, each ≥ 0.
        batch_size: Images per attack batch.
        seed: Seed of the random starts.

    Returns:
        ``{eps: accuracy}`` with accuracies in [0, 1].

    Raises:
        ParameterError: As :func:`pgd`, or an empty ``eps`` or ``x``.
    """
    caller = "robust_accuracy"
    radii = [check_float(e, "eps", caller, 0.0) for e in eps]
    if not radii:
        raise ParameterError(f"The 'eps' parameter of {caller} must list at least one radius. Got {eps!r}.")
    batch_size = check_int(batch_size, "batch_size", caller, 1)
    _check_inputs(x, y, bounds, caller)
    if x.shape[0] == 0:
        raise ParameterError(f"The 'x' argument of {caller} holds no images.")
    out: dict[float, float] = {}
    for e in radii:
        gen = torch.Generator(device=x.device).manual_seed(check_int(seed, "seed", caller, 0))
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            adv = pgd(model, xb, yb, norm=norm, eps=e, steps=steps, step_size=step_size,
                      random_start=random_start, restarts=restarts, bounds=bounds, generator=gen)
            with torch.no_grad(), eval_mode(model):
                correct += (model(adv).argmax(1) == yb).sum().item()
        out[e] = correct / x.shape[0]
    return out
