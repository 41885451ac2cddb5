"""Perturbation tests without retraining: pixel perturbation (Srinivas & Fleuret) here, patch
degradation (Kindermans et al.; PGIG) in :mod:`gradaudit.evaluation.degradation`, re-exported."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._progress import EVAL_QUIET, progress
from .._provenance import provenance
from .._torch_utils import eval_mode
from .._validation import ParameterError, check_choice, check_float
from ..attribution._core import fast_layout
from ..attribution._fastpath import sequential_runner
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
from .degradation import DegradationResult, degradation

__all__ = [
    "DEFAULT_FRACTIONS",
    "ORDERS",
    "PIXEL_FILLS",
    "PIXEL_SCORES",
    "DegradationResult",
    "PerturbationResult",
    "degradation",
    "pixel_perturbation",
    "removal_order",
    "removal_scores",
]

DEFAULT_FRACTIONS = tuple(torch.logspace(-2, 0, 25, dtype=torch.float64).tolist())
ORDERS = ("lerf", "morf")

# Pixel score maps (N, 1, H, W) from attributions (N, C, H, W).
PIXEL_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs-sum": lambda a: a.abs().sum(1, keepdim=True),
    "channel-std": lambda a: a.std(dim=1, keepdim=True),
}
# Replacement values (N, C, 1, 1) or broadcastable, from the clean batch and ``value``.
PIXEL_FILLS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
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
    check_choice(fill, "fill", caller, tuple(PIXEL_FILLS))
    check_float(value, "value", caller)
    check_choice(score, "score", caller, tuple(PIXEL_SCORES))
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
    quiet: bool = EVAL_QUIET,
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
    removal = removal_order(attributions, order=order, score=score, seed=seed)
    d = removal.shape[1]
    counts = tuple(removal_count(m, d) for m in fr)
    n = x.shape[0]
    correct = torch.zeros(len(fr), dtype=torch.float64)
    prob = torch.zeros(len(fr), dtype=torch.float64)
    forward = sequential_runner(model, keep_layout=True) or model  # the model's values, faster on CPU (attribution._fastpath)
    with eval_mode(model), fast_layout(model), torch.inference_mode(), progress(quiet) as bar:
        task = bar.add_task("pixel perturbation", total=-(-n // batch_size))
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
            sequence = removal[i : i + batch_size].to(dev)
            b, c = xb.shape[:2]
            flat = xb.reshape(b, c, d).clone()
            rep = PIXEL_FILLS[fill](xb, value).to(xb.dtype).expand(b, c, 1, 1).reshape(b, c, 1)
            done = 0
            for j, k in enumerate(counts):  # counts increase: each step removes the next pixels
                idx = sequence[:, None, done:k].expand(b, c, k - done)
                flat.scatter_(2, idx, rep.expand(b, c, k - done))
                done = k
                ok, pr = target_stats(forward(flat.view_as(xb).clone()), yb)
                correct[j] += ok.sum().item()
                prob[j] += pr.sum().item()
            bar.advance(task)
    curve = Curve(fr, tuple((correct / n).tolist()), tuple((prob / n).tolist()))
    config = {"fractions": list(fr), "order": order, "fill": fill, "value": value, "score": score,
              "seed": seed, "batch_size": batch_size}
    return PerturbationResult(order, fr, counts, curve, order == "lerf", n, config, provenance())


def removal_order(
    attributions: torch.Tensor, *, order: str = "lerf", score: str = "abs-sum", seed: int = 0
) -> torch.Tensor:
    """(N, H·W) int64 pixel indices (row-major) in the order :func:`pixel_perturbation` removes
    them: by the pixel score, least salient first (LeRF) or most salient first (MoRF).

    Tie rule: pixels of exactly equal score are ordered by the seeded shuffle of
    :func:`gradaudit.masking.rank_positions` (the same ``seed`` gives the same order), so
    a tie never depends on the sort algorithm. A peer that sorts the raw scores itself breaks
    ties its own way; give it :func:`removal_scores` instead to remove the same pixels.
    """
    check_choice(order, "order", "removal_order", ORDERS)
    check_choice(score, "score", "removal_order", tuple(PIXEL_SCORES))
    positions = rank_scores(PIXEL_SCORES[score](attributions.detach().double()), seed)
    return _removal_sequence(positions, order)


def removal_scores(
    attributions: torch.Tensor, *, order: str = "lerf", score: str = "abs-sum", seed: int = 0
) -> torch.Tensor:
    """(N, 1, H, W) float64 tie-free scores whose descending order is :func:`removal_order`:
    the pixel removed at step r (0-based) scores H·W − r.

    For comparisons with libraries that remove the highest score first (Quantus's
    ``PixelFlipping``: ``np.argsort(-a)``), so both remove exactly the same pixels even
    where many attribution scores tie (e.g. the black border of MNIST digits).
    """
    seq = removal_order(attributions, order=order, score=score, seed=seed)
    n, d = seq.shape
    values = torch.arange(d, 0, -1, dtype=torch.float64).expand(n, d)
    out = torch.empty((n, d), dtype=torch.float64).scatter_(1, seq.cpu(), values)
    return out.view(n, 1, *attributions.shape[2:])


def _removal_sequence(positions: torch.Tensor, order: str) -> torch.Tensor:
    """(B, d) pixel indices in removal order: the inverse of the rank positions, read from the
    least salient (LeRF) or the most salient (MoRF) end."""
    flat = positions.flatten(1).long()
    ranks = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
    by_rank = torch.empty_like(flat).scatter_(1, flat, ranks)  # by_rank[r] = pixel of rank r
    return by_rank.flip(1) if order == "lerf" else by_rank
