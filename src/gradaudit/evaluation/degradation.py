"""Patch degradation (Kindermans et al.; PGIG): the clean prediction's probability as the
highest- (MoRF) or lowest-scoring (LeRF) patches are replaced by their mean."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import EVAL_QUIET, progress
from .._provenance import provenance
from .._torch_utils import eval_mode
from .._validation import ParameterError, check_bool, check_choice, check_int
from ..attribution._core import fast_layout
from ._curves import (
    Curve,
    check_common,
    check_images,
    model_device,
    orders_gap,
    orders_record,
    rank_scores,
    target_stats,
)

__all__ = ["PATCH_FILLS", "PATCH_SCORES", "DegradationResult", "degradation"]

BOTH = {"morf": ("morf",), "lerf": ("lerf",), "both": ("morf", "lerf")}

PATCH_SCORES: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "sum": lambda a, p: F.avg_pool2d(a.sum(1, keepdim=True), p) * (p * p),
    "abs-sum": lambda a, p: F.avg_pool2d(a.abs().sum(1, keepdim=True), p) * (p * p),
}
PATCH_FILLS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
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
        return orders_gap(self.morf, self.lerf, "probability_area")

    def to_dict(self) -> dict[str, Any]:
        return orders_record(self, {"patch_size": self.patch_size, "steps": list(self.steps)})


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
    check_choice(fill, "fill", caller, tuple(PATCH_FILLS))
    check_choice(patch_score, "patch_score", caller, tuple(PATCH_SCORES))
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
    quiet: bool = EVAL_QUIET,
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
    positions = rank_scores(PATCH_SCORES[patch_score](attributions.detach().double(), p), seed)
    n = x.shape[0]
    correct = torch.zeros(len(orders), steps_max + 1, dtype=torch.float64)
    prob = torch.zeros_like(correct)
    with eval_mode(model), fast_layout(model), torch.no_grad(), progress(quiet) as bar:
        task = bar.add_task("degradation", total=-(-n // batch_size))
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
            values = _upsample(PATCH_FILLS[fill](xb, p), p)
            ok, pr = _degrade_batch(model, xb, yb, positions[i : i + batch_size].to(dev), values,
                                    orders, steps_max, p, reproduce_pgig)
            correct += ok
            prob += pr
            bar.advance(task)
    steps = tuple(range(steps_max + 1))
    curves = {o: Curve(tuple(map(float, steps)), tuple((correct[r] / n).tolist()),
                       tuple((prob[r] / n).tolist())) for r, o in enumerate(orders)}
    config = {"patch_size": p, "n_patches": steps_max, "order": order, "fill": fill,
              "patch_score": patch_score, "reproduce_pgig": reproduce_pgig, "seed": seed,
              "batch_size": batch_size}
    return DegradationResult(p, steps, curves.get("morf"), curves.get("lerf"), n, config, provenance())


def _degrade_batch(model, xb, yb, pos, values, orders, steps_max, p, pgig):
    """(orders, steps + 1) correct counts and summed probabilities of the clean prediction.

    Step 0 is the clean batch (one forward shared by the orders); each later step is one
    forward over the batch repeated once per order.
    """
    o, b, total = len(orders), xb.shape[0], pos[0].numel()
    logits = model(xb)
    clean = logits.argmax(1)
    correct = torch.zeros(o, steps_max + 1, dtype=torch.float64)
    prob = torch.zeros_like(correct)
    correct[:, 0] = target_stats(logits, yb)[0].sum().item()
    prob[:, 0] = target_stats(logits, clean)[1].sum().item()
    xr, vr = xb.repeat(o, 1, 1, 1), values.repeat(o, 1, 1, 1)
    cr, yr = clean.repeat(o), yb.repeat(o)
    for step in range(1, steps_max + 1):
        patches = torch.cat([_degraded_patches(pos, step, total, od, pgig) for od in orders])
        mask = _upsample(patches, p)
        if pgig:
            mask = mask & (vr > 0)
        out = model(torch.where(mask, vr, xr))
        correct[:, step] = target_stats(out, yr)[0].view(o, b).sum(1).double().cpu()
        prob[:, step] = target_stats(out, cr)[1].view(o, b).sum(1).cpu()
    return correct, prob
