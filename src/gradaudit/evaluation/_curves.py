"""Shared pieces of the no-retraining perturbation metrics (ROAD, pixel perturbation, patch
degradation): argument checks, signed rankings, removal counts, curves and their areas, and
the scored forward pass."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._seeding import stream_seed  # re-exported: the one seed module
from .._torch_utils import model_device  # re-exported (it lived here)
from .._validation import ParameterError, ParameterTypeError, check_int
from ..masking.ranking import rank_positions

__all__ = [
    "Curve",
    "check_common",
    "check_fractions",
    "check_images",
    "curve_area",
    "model_device",
    "orders_gap",
    "orders_record",
    "rank_scores",
    "removal_count",
    "stream_seed",
    "target_stats",
]


def curve_area(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoidal area under ``ys`` over ``xs``, divided by the span of ``xs``.

    The result is the curve's mean height (in the units of ``ys``), so areas over different
    grids stay comparable; a single point gives its value.
    """
    if len(xs) == 1:
        return float(ys[0])
    total = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return float(total / (xs[-1] - xs[0]))


@dataclass(frozen=True)
class Curve:
    """One perturbation curve: accuracy and mean target probability at each x.

    Attributes:
        x: Removal fractions (ROAD, pixel perturbation) or patch counts (degradation).
        accuracy: Share of images still classified as their label, per x.
        probability: Mean softmax probability of the tracked class, per x.
    """

    x: tuple[float, ...]
    accuracy: tuple[float, ...]
    probability: tuple[float, ...]

    @property
    def accuracy_area(self) -> float:
        """Normalised area under the accuracy curve (see :func:`curve_area`)."""
        return curve_area(self.x, self.accuracy)

    @property
    def probability_area(self) -> float:
        """Normalised area under the probability curve."""
        return curve_area(self.x, self.probability)

    def to_dict(self) -> dict[str, Any]:
        return {
            "x": list(self.x),
            "accuracy": list(self.accuracy),
            "probability": list(self.probability),
            "accuracy_area": self.accuracy_area,
            "probability_area": self.probability_area,
        }


def orders_gap(morf: Curve | None, lerf: Curve | None, area: str) -> float | None:
    """Score of a MoRF/LeRF pair: LeRF's ``area`` minus MoRF's (None unless both ran)."""
    if morf is None or lerf is None:
        return None
    return getattr(lerf, area) - getattr(morf, area)


def orders_record(result: Any, axes: dict[str, Any]) -> dict[str, Any]:
    """JSON-able record of a MoRF/LeRF result (ROAD, patch degradation): protocol, score,
    curve directions, the result's own ``axes`` entries, both curves, config, provenance."""
    return {
        "protocol": result.protocol,
        "score": result.gap,
        "higher_is_better": result.higher_is_better,
        "curve_direction": {"morf": "lower is better", "lerf": "higher is better"},
        **axes,
        "morf": None if result.morf is None else result.morf.to_dict(),
        "lerf": None if result.lerf is None else result.lerf.to_dict(),
        "n_images": result.n_images,
        "config": dict(result.config),
        "provenance": result.provenance,
    }


def check_images(x: torch.Tensor, y: torch.Tensor, attributions: torch.Tensor, caller: str) -> None:
    """Raise unless x is (N,C,H,W) float, y is (N,) int and attributions (N,C|1,H,W)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shown = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ParameterError(f"The 'x' argument of {caller} must be a float (N, C, H, W) tensor. Got {shown}.")
    n, c, h, w = x.shape
    if n == 0:
        raise ParameterError(f"The 'x' argument of {caller} holds no images.")
    if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.is_floating_point():
        shown = (y.dtype, tuple(y.shape)) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ParameterError(f"The 'y' argument of {caller} must be an integer tensor of shape ({n},). Got {shown}.")
    if not isinstance(attributions, torch.Tensor) or tuple(attributions.shape) not in {
        (n, c, h, w),
        (n, 1, h, w),
    }:
        shown = tuple(attributions.shape) if isinstance(attributions, torch.Tensor) else type(attributions).__name__
        raise ParameterError(
            f"The 'attributions' argument of {caller} must have the shape of x, {(n, c, h, w)}, "
            f"or {(n, 1, h, w)}. Got {shown}."
        )


def check_fractions(values: Sequence[float], name: str, caller: str) -> tuple[float, ...]:
    """Return the fractions sorted; raise unless a non-empty set of distinct reals in [0, 1]."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | torch.Tensor):
        raise ParameterTypeError(
            f"The {name!r} parameter of {caller} must be a sequence of floats in [0, 1]. Got {values!r}."
        )
    out = []
    for v in values.tolist() if isinstance(values, torch.Tensor) else values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
            raise ParameterError(
                f"The {name!r} parameter of {caller} must hold floats in [0, 1] (fractions, "
                f"not percents). Got {v!r}."
            )
        out.append(float(v))
    if not out or len(set(out)) != len(out):
        raise ParameterError(
            f"The {name!r} parameter of {caller} must be a non-empty list of distinct values. Got {list(values)!r}."
        )
    return tuple(sorted(out))


def removal_count(fraction: float, d: int) -> int:
    """Coordinates removed at ``fraction`` of ``d``: floor(fraction·d).

    floor, as Quantus's ROAD (``int(size·p/100)``) and Srinivas & Fleuret's pixel perturbation
    (``int(m·1024)``); a 1e-9 guard keeps products such as 0.29·100 = 28.999… at 29.
    """
    return min(d, math.floor(fraction * d + 1e-9))


def rank_scores(score: torch.Tensor, seed: int) -> torch.Tensor:
    """Rank positions (0 = highest) of a signed score map, with the seeded tie-break.

    :func:`gradaudit.masking.rank_positions` ranks by magnitude; shifting each image's scores
    to start at 0 makes that the order of the signed values.
    """
    s = score.detach().double()
    shifted = s - s.flatten(1).amin(1).view(-1, *([1] * (s.dim() - 1)))
    return rank_positions(shifted, by="element", seed=seed)


def target_stats(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: whether argmax equals ``target``, and the softmax probability of ``target``."""
    target = target.long()
    prob = torch.softmax(logits.double(), dim=1).gather(1, target.view(-1, 1)).squeeze(1)
    return logits.argmax(1) == target, prob


def check_common(seed: int, batch_size: int, caller: str) -> None:
    """The seed and batch-size checks every metric shares."""
    check_int(seed, "seed", caller, 0)
    check_int(batch_size, "batch_size", caller, 1)
