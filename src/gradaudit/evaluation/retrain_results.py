"""Result objects of the retraining protocols (DiffROAR, ROAR, KAR): frozen, JSON-able.

Accuracies are stored per level and per retraining seed; means and standard deviations
(sample std, ddof = 1; null for a single seed) are derived. Differences are paired by seed:
the top-k and bottom-k retrains of one seed share the initialisation and the batch order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._io import to_jsonable

__all__ = ["Accuracies", "DiffROARCurve", "DiffROARResult", "RetrainResult"]


def _mean(row: Sequence[float]) -> float:
    return sum(row) / len(row)


def _std(row: Sequence[float]) -> float:
    if len(row) < 2:
        return math.nan
    m = _mean(row)
    return math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))


@dataclass(frozen=True)
class Accuracies:
    """Numbers of retrained models: ``values[level][seed]``."""

    values: tuple[tuple[float, ...], ...]

    @property
    def mean(self) -> tuple[float, ...]:
        """Mean over seeds, per level."""
        return tuple(_mean(row) for row in self.values)

    @property
    def std(self) -> tuple[float, ...]:
        """Sample standard deviation over seeds (ddof = 1), per level; NaN for one seed."""
        return tuple(_std(row) for row in self.values)

    def __sub__(self, other: Accuracies) -> Accuracies:
        """Per-seed (paired) difference."""
        return Accuracies(tuple(tuple(a - b for a, b in zip(r, s, strict=True))
                                for r, s in zip(self.values, other.values, strict=True)))

    def to_dict(self) -> dict[str, Any]:
        return {"per_seed": [list(r) for r in self.values], "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class DiffROARCurve:
    """Top-k and bottom-k retraining accuracies of one ranking, and their difference.

    Attributes:
        top: Accuracy of models retrained and tested on top-k unmasked data.
        bottom: The same on bottom-k unmasked data.
    """

    top: Accuracies
    bottom: Accuracies

    @property
    def diffroar(self) -> Accuracies:
        """DiffROAR(k) = acc(top-k) − acc(bottom-k), per seed."""
        return self.top - self.bottom

    def to_dict(self) -> dict[str, Any]:
        return {"top": self.top.to_dict(), "bottom": self.bottom.to_dict(),
                "diffroar": self.diffroar.to_dict()}


def _leakage(real: DiffROARCurve, mask: DiffROARCurve) -> dict[str, Any]:
    return {
        "mask_only": mask.to_dict(),
        "leak_free_margin": {"top": (real.top - mask.top).to_dict(),
                             "bottom": (real.bottom - mask.bottom).to_dict()},
        "mask_only_diffroar": mask.diffroar.to_dict(),
        "diffroar_minus_mask_only": (real.diffroar - mask.diffroar).to_dict(),
    }


@dataclass(frozen=True)
class DiffROARResult:
    """What :func:`gradaudit.evaluation.diffroar` returns.

    Attributes:
        levels: Fractions k of each image's coordinates kept (unmasked).
        seeds: Retraining seeds (initialisation and data order of retrain r).
        curves: "attribution" (and "random" when the control ran) -> its curve.
        mask_only: The mask-only control (models retrained on the keep-mask alone), per
            ranking name; empty when it did not run.
        config: Everything that determines the numbers (JSON-able).
        provenance: Library versions and git revision.
    """

    levels: tuple[float, ...]
    seeds: tuple[int, ...]
    curves: Mapping[str, DiffROARCurve]
    mask_only: Mapping[str, DiffROARCurve] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    protocol: str = "diffroar"
    higher_is_better: bool = True

    @property
    def attribution(self) -> DiffROARCurve:
        return self.curves["attribution"]

    @property
    def random(self) -> DiffROARCurve | None:
        return self.curves.get("random")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: config, seeds, per-seed accuracies, means/stds, leakage control."""
        out: dict[str, Any] = {
            "protocol": self.protocol, "higher_is_better": self.higher_is_better,
            "levels": list(self.levels), "seeds": list(self.seeds),
            "curves": {name: c.to_dict() for name, c in self.curves.items()},
        }
        if self.mask_only:
            out["leakage"] = {name: _leakage(self.curves[name], m) for name, m in self.mask_only.items()}
        out["config"] = dict(self.config)
        out["provenance"] = dict(self.provenance)
        return to_jsonable(out)


@dataclass(frozen=True)
class RetrainResult:
    """What :func:`~gradaudit.evaluation.roar` and :func:`~gradaudit.evaluation.kar` return.

    Attributes:
        protocol: "roar" (levels are fractions removed, the most important first) or "kar"
            (levels are fractions kept, the most important first).
        levels: The fractions.
        seeds: Retraining seeds.
        accuracy: "attribution" (and "random") -> accuracies of the retrained models.
        mask_only: The same, for models retrained on the keep-mask alone (if it ran).
        higher_is_better: False for ROAR (a good ranking makes accuracy drop), True for KAR.
        config, provenance: As in :class:`DiffROARResult`.
    """

    protocol: str
    levels: tuple[float, ...]
    seeds: tuple[int, ...]
    accuracy: Mapping[str, Accuracies]
    mask_only: Mapping[str, Accuracies] = field(default_factory=dict)
    higher_is_better: bool = True
    config: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "protocol": self.protocol, "higher_is_better": self.higher_is_better,
            "levels": list(self.levels), "seeds": list(self.seeds),
            "accuracy": {name: a.to_dict() for name, a in self.accuracy.items()},
        }
        if self.mask_only:
            out["leakage"] = {name: {"mask_only": m.to_dict(),
                                     "leak_free_margin": (self.accuracy[name] - m).to_dict()}
                              for name, m in self.mask_only.items()}
        out["config"] = dict(self.config)
        out["provenance"] = dict(self.provenance)
        return to_jsonable(out)
