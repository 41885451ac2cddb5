"""Perturbation tests without retraining: pixel perturbation (Srinivas & Fleuret) and patch
degradation (Kindermans et al.; PGIG)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import progress
from .._provenance import provenance
from .._validation import ParameterError, check_bool, check_choice, check_float, check_int
from ..training.attacks import eval_mode
from ._curves import (
    Curve,
    check_common,
    check_fractions,
    check_images,
    model_device,
    rank_scores,
    removal_count,
    target_stats,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "DegradationResult",
    "PerturbationResult",
    "degradation",
    "pixel_perturbation",
]

DEFAULT_FRACTIONS = tuple(torch.logspace(-2, 0, 25, dtype=torch.float64).tolist())
ORDERS = ("lerf", "morf")
BOTH = {"morf": ("morf",), "lerf": ("lerf",), "both": ("morf", "lerf")}

# Pixel score maps (N, 1, H, W) from attributions (N, C, H, W).
_PIXEL_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs-sum": lambda a: a.abs().sum(1, keepdim=True),
    "channel-std": lambda a: a.std(dim=1, keepdim=True),
}
# Replacement values (N, C, 1, 1) or broadcastable, from the clean batch and ``value``.
_PIXEL_FILLS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "constant": lambda x, value: x.new_full((1, 1, 1, 1), value),
    "image-mean": lambda x, value: x.mean((2, 3), keepdim=True),
    "zero": lambda x, value: x.new_zeros((1, 1, 1, 1)),
}


@dataclass(frozen=True)
class PerturbationResult:
    """Pixel-perturbation curve: accuracy and label probability vs the fraction removed.

    Attributes:
        order: "lerf" (least salient removed first; higher is better) or "morf" (lower is better).
        fractions: Removal fractions, increasing.
        counts: Pixels removed per image at each fraction (exactly floor(m·H·W)).
        curve: Accuracy and mean label probability at each fraction, with their areas.
        higher_is_better: Whether a larger area means a better attribution.
    """

    order: str
    fractions: tuple[float, ...]
    counts: tuple[int, ...]
    curve: Curve
    higher_is_better: bool
    n_images: int
    config: dict[str, Any]
    provenance: dict[str, Any] = field(repr=False)
    protocol: str = "pixel-perturbation"

    @property
    def score(self) -> float:
        """Normalised area under the accuracy curve."""
        return self.curve.accuracy_area

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "score": self.score,
            "higher_is_better": self.higher_is_better,
            "order": self.order,
            "fractions": list(self.fractions),
            "counts": list(self.counts),
            "curve": self.curve.to_dict(),
            "n_images": self.n_images,
            "config": dict(self.config),
            "provenance": self.provenance,
        }


def _check_pixel_args(x, y, attributions, fractions, order, fill, value, score, seed, batch_size):
    caller = "pixel_perturbation"
    check_images(x, y, attributions, caller)
    fr = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions, "fractions", caller)
    check_choice(order, "order", caller, ORDERS)
    check_choice(fill, "fill", caller, tuple(_PIXEL_FILLS))
    check_float(value, "value", caller)
    check_choice(score, "score", caller, tuple(_PIXEL_SCORES))
    if score == "channel-std" and attributions.shape[1] < 2:
        raise ParameterError(
            "score='channel-std' of pixel_perturbation needs attributions with at least 2 channels "
            f"(std over channels); got {attributions.shape[1]}. Use score='abs-sum'."
        )
    check_common(seed, batch_size, caller)
    return fr


def pixel_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attributions: torch.Tensor,
    *,
    fractions: Sequence[float] | None = None,
    order: str = "lerf",
    fill: str = "constant",
    value: float = 0.5,
    score: str = "abs-sum",
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    quiet: bool = True,
) -> PerturbationResult:
    """Pixel perturbation: accuracy as the least (or most) salient pixels are replaced.

    Formula: acc(m) = mean_i 1[argmax f(x_i ⊙ M + v ⊙ (1 − M)) = y_i], where M removes
    exactly k = floor(m·H·W) pixels (all channels) of lowest (LeRF) or highest (MoRF) score.

    Source: Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods
    for Model Interpretability", ICLR 2021, arXiv 2006.09128, §5.2.1.

    Reference code: idiap/rethinking-saliency ``utils/pixel_perturb.py``,
    ``utils/misc_functions.py``, ``evaluations.py`` (seed-methods §A.5).

    Deviations:
        * Exactly k pixels are removed; the reference's ``mask = grad ≥ kth smallest``
          removes k − 1 (and leaves one pixel at m = 1).
        * ``score="abs-sum"`` (Σ_c |a|, default) works for any channel count; the reference's
          ``score="channel-std"`` (std over channels of the signed map) needs ≥ 2 channels.
        * ``fill="constant"`` with ``value=0.5`` is the code; ``fill="image-mean"`` (the
          per-channel mean of each clean image) is the paper's "mean pixel value of the
          image"; ``fill="zero"`` is also offered.
        * Ties are broken by the seeded shuffle of the ranking module, not N(0, 1e-20) noise.
        * MoRF (the reference's unused ``smallest-sensitive`` mode) is an option; the mean
          label probability is reported beside the accuracy.

    Args:
        model: Classifier returning logits; evaluated in eval mode (its mode is restored).
        x: Inputs (N, C, H, W). y: Labels (N,).
        attributions: (N, C, H, W) or (N, 1, H, W) maps of ``x``.
        fractions: Fractions in [0, 1]; default ``logspace(-2, 0, 25)``.
        order: "lerf" (default, the paper) or "morf".
        fill: "constant" (default), "image-mean" or "zero".
        value: The constant for ``fill="constant"`` (default 0.5, in the model's input space).
        score: "abs-sum" (default) or "channel-std".
        seed: Seeds the tie-break. batch_size: Images per forward.
        device: Where to run; default the model's device. quiet: No progress bar.

    Returns:
        A :class:`PerturbationResult`.

    Raises:
        ParameterError: Mismatched shapes, fractions outside [0, 1], unknown order/fill/score;
            raised before any work.
    """
    fr = _check_pixel_args(x, y, attributions, fractions, order, fill, value, score, seed, batch_size)
    dev = model_device(model, device)
    positions = rank_scores(_PIXEL_SCORES[score](attributions.detach().double()), seed)
    d = positions[0].numel()
    counts = tuple(removal_count(m, d) for m in fr)
    n = x.shape[0]
    correct = torch.zeros(len(fr), dtype=torch.float64)
    prob = torch.zeros(len(fr), dtype=torch.float64)
    with eval_mode(model), torch.no_grad(), progress(quiet) as bar:
        task = bar.add_task("pixel perturbation", total=-(-n // batch_size))
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
            sequence = _removal_sequence(positions[i : i + batch_size].to(dev), order)
            b, c = xb.shape[:2]
            flat = xb.reshape(b, c, d).clone()
            rep = _PIXEL_FILLS[fill](xb, value).to(xb.dtype).expand(b, c, 1, 1).reshape(b, c, 1)
            done = 0
            for j, k in enumerate(counts):  # counts increase: each step removes the next pixels
                idx = sequence[:, None, done:k].expand(b, c, k - done)
                flat.scatter_(2, idx, rep.expand(b, c, k - done))
                done = k
                ok, pr = target_stats(model(flat.view_as(xb).clone()), yb)
                correct[j] += ok.sum().item()
                prob[j] += pr.sum().item()
            bar.advance(task)
    curve = Curve(fr, tuple((correct / n).tolist()), tuple((prob / n).tolist()))
    config = {"fractions": list(fr), "order": order, "fill": fill, "value": value, "score": score,
              "seed": seed, "batch_size": batch_size}
    return PerturbationResult(order, fr, counts, curve, order == "lerf", n, config, provenance())


def _removal_sequence(positions: torch.Tensor, order: str) -> torch.Tensor:
    """(B, d) pixel indices in removal order: the inverse of the rank positions, read from the
    least salient (LeRF) or the most salient (MoRF) end."""
    flat = positions.flatten(1).long()
    ranks = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
    by_rank = torch.empty_like(flat).scatter_(1, flat, ranks)  # by_rank[r] = pixel of rank r
    return by_rank.flip(1) if order == "lerf" else by_rank


# --------------------------------------------------------------------------- degradation

_PATCH_SCORES: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "sum": lambda a, p: F.avg_pool2d(a.sum(1, keepdim=True), p) * (p * p),
    "abs-sum": lambda a, p: F.avg_pool2d(a.abs().sum(1, keepdim=True), p) * (p * p),
}
_PATCH_FILLS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "patch-mean": lambda x, p: F.avg_pool2d(x, p),
    "zero": lambda x, p: x.new_zeros((1, 1, 1, 1)).expand(x.shape[0], x.shape[1], x.shape[2] // p, x.shape[3] // p),
}


@dataclass(frozen=True)
class DegradationResult:
    """Patch-degradation curves (step n = n patches degraded) and the LeRF − MoRF area.

    Attributes:
        patch_size: Side of the square patches.
        steps: 0, 1, …, n_patches (step 0 is the clean image).
        morf, lerf: Curves; ``probability`` is the mean softmax probability of the class
            predicted on the clean image, ``accuracy`` is against the labels.
        higher_is_better: For the score (gap): True.
    """

    patch_size: int
    steps: tuple[int, ...]
    morf: Curve | None
    lerf: Curve | None
    n_images: int
    config: dict[str, Any]
    provenance: dict[str, Any] = field(repr=False)
    protocol: str = "patch-degradation"
    higher_is_better: bool = True

    @property
    def gap(self) -> float | None:
        """Score: area between the LeRF and MoRF probability curves (None unless both ran)."""
        if self.morf is None or self.lerf is None:
            return None
        return self.lerf.probability_area - self.morf.probability_area

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "score": self.gap,
            "higher_is_better": self.higher_is_better,
            "curve_direction": {"morf": "lower is better", "lerf": "higher is better"},
            "patch_size": self.patch_size,
            "steps": list(self.steps),
            "morf": None if self.morf is None else self.morf.to_dict(),
            "lerf": None if self.lerf is None else self.lerf.to_dict(),
            "n_images": self.n_images,
            "config": dict(self.config),
            "provenance": self.provenance,
        }


def _check_degradation_args(x, y, attributions, patch_size, n_patches, order, fill, patch_score,
                            reproduce_pgig, seed, batch_size) -> int:
    caller = "degradation"
    check_images(x, y, attributions, caller)
    check_int(patch_size, "patch_size", caller, 1)
    h, w = x.shape[2:]
    if h % patch_size or w % patch_size:
        sizes = [s for s in range(1, min(h, w) + 1) if h % s == 0 and w % s == 0]
        raise ParameterError(
            f"The 'patch_size' parameter of degradation must divide the image size {h}×{w}. "
            f"Got {patch_size}; valid sizes: {sizes}."
        )
    total = (h // patch_size) * (w // patch_size)
    if n_patches is not None:
        check_int(n_patches, "n_patches", caller, 1, total)
    check_choice(order, "order", caller, tuple(BOTH))
    check_choice(fill, "fill", caller, tuple(_PATCH_FILLS))
    check_choice(patch_score, "patch_score", caller, tuple(_PATCH_SCORES))
    check_bool(reproduce_pgig, "reproduce_pgig", caller)
    if reproduce_pgig and fill != "patch-mean":
        raise ParameterError("reproduce_pgig=True of degradation needs fill='patch-mean' (PGIG's only fill).")
    check_common(seed, batch_size, caller)
    return total if n_patches is None else n_patches


def _degraded_patches(pos: torch.Tensor, n: int, total: int, order: str, pgig: bool) -> torch.Tensor:
    """Bool (B, 1, Hp, Wp): the patches degraded at step n.

    Exactly the top-n (MoRF) or bottom-n (LeRF) patches; with ``pgig``, PGIG's ranks 1..n
    of the order (the first patch of the order is never degraded).
    """
    rank = pos if order == "morf" else (total - 1) - pos  # 0 = first patch in this order
    return (rank >= 1) & (rank <= n) if pgig else rank < n


def _upsample(t: torch.Tensor, p: int) -> torch.Tensor:
    return t.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)


def degradation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attributions: torch.Tensor,
    *,
    patch_size: int = 4,
    n_patches: int | None = None,
    order: str = "both",
    fill: str = "patch-mean",
    patch_score: str = "sum",
    reproduce_pgig: bool = False,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    quiet: bool = True,
) -> DegradationResult:
    """Patch degradation: probability of the clean prediction as ranked patches are replaced.

    Formula: P_order(n) = mean_i softmax(f(x_i^(n)))_{c_i}, c_i = argmax f(x_i), where x^(n)
    replaces the n highest (MoRF) or lowest (LeRF) scoring p×p patches by their per-channel
    mean; score = area(LeRF) − area(MoRF) of the probability curves over n = 0..n_patches.

    Source: Kindermans et al., "Learning how to explain neural networks: PatternNet and
    PatternAttribution", ICLR 2018, arXiv 1705.05598, §5 (9×9 patches on 224 px); used by
    Schwarzenberg & Castle, "Pattern-Guided Integrated Gradients", ICML 2020 WHI, arXiv
    2007.10685.

    Reference code: DFKI-NLP/pgig ``experiments/degradation_test.py`` (seed-methods §B.5).

    Deviations:
        * Step n degrades exactly the n top-ranked patches; PGIG degrades ranks 1..n, so the
          top patch is never degraded (``reproduce_pgig=True`` restores that).
        * Every channel of a patch is replaced; PGIG replaces only channels whose patch mean is
          > 0 (``reproduce_pgig=True`` restores that too).
        * LeRF and the area between the curves (PGIG computes neither) are added; accuracy
          against the labels is reported beside the probability.
        * Default patch size 4 for 28-px images (9 is for 225 px); ties are broken by the
          seeded shuffle of the ranking module.

    Args:
        model: Classifier returning logits; evaluated in eval mode (its mode is restored).
        x: Inputs (N, C, H, W); H and W divisible by ``patch_size``. y: Labels (N,).
        attributions: (N, C, H, W) or (N, 1, H, W) maps of ``x``.
        patch_size: Patch side (default 4).
        n_patches: Steps 1..n_patches are evaluated (default: all patches).
        order: "morf", "lerf" or "both" (default).
        fill: "patch-mean" (per-channel patch mean, default) or "zero".
        patch_score: "sum" (signed sum over the patch and channels, PGIG) or "abs-sum".
        reproduce_pgig: Reproduce PGIG's rank-0 skip and > 0 channel rule, for comparison.
        seed: Seeds the tie-break. batch_size: Images per forward (× orders).
        device: Where to run; default the model's device. quiet: No progress bar.

    Returns:
        A :class:`DegradationResult`.

    Raises:
        ParameterError: Mismatched shapes, a patch size that does not divide the image,
            unknown order/fill/score; raised before any work.
    """
    steps_max = _check_degradation_args(x, y, attributions, patch_size, n_patches, order, fill,
                                        patch_score, reproduce_pgig, seed, batch_size)
    orders, p = BOTH[order], patch_size
    dev = model_device(model, device)
    positions = rank_scores(_PATCH_SCORES[patch_score](attributions.detach().double(), p), seed)
    total, n = positions[0].numel(), x.shape[0]
    correct = torch.zeros(len(orders), steps_max + 1, dtype=torch.float64)
    prob = torch.zeros_like(correct)
    with eval_mode(model), torch.no_grad(), progress(quiet) as bar:
        task = bar.add_task("degradation", total=-(-n // batch_size))
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
            pos = positions[i : i + batch_size].to(dev)
            values = _upsample(_PATCH_FILLS[fill](xb, p), p)
            logits = model(xb)
            c = logits.argmax(1)
            ok, pr = target_stats(logits, yb)[0], target_stats(logits, c)[1]
            correct[:, 0] += ok.sum().item()
            prob[:, 0] += pr.sum().item()
            xr, cr, yr = xb.repeat(len(orders), 1, 1, 1), c.repeat(len(orders)), yb.repeat(len(orders))
            vr = values.repeat(len(orders), 1, 1, 1)
            for step in range(1, steps_max + 1):
                mask = _upsample(torch.cat([_degraded_patches(pos, step, total, o, reproduce_pgig) for o in orders]), p)
                if reproduce_pgig:
                    mask = mask & (vr > 0)
                out = model(torch.where(mask, vr, xr))
                b = xb.shape[0]
                correct[:, step] += target_stats(out, yr)[0].view(len(orders), b).sum(1).double().cpu()
                prob[:, step] += target_stats(out, cr)[1].view(len(orders), b).sum(1).cpu()
            bar.advance(task)
    steps = tuple(range(steps_max + 1))
    curves = {o: Curve(tuple(float(s) for s in steps), tuple((correct[r] / n).tolist()),
                       tuple((prob[r] / n).tolist())) for r, o in enumerate(orders)}
    config = {"patch_size": p, "n_patches": steps_max, "order": order, "fill": fill,
              "patch_score": patch_score, "reproduce_pgig": reproduce_pgig, "seed": seed,
              "batch_size": batch_size}
    return DegradationResult(p, steps, curves.get("morf"), curves.get("lerf"), n, config, provenance())
