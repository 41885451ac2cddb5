"""Feature leakage on BlockMNIST: how much attribution lands on the label-independent null block."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .._provenance import provenance
from .._validation import ParameterError, ParameterTypeError, check_int
from ..masking.ranking import keep_count, rank_positions

__all__ = ["DEFAULT_KS", "LeakageResult", "leakage"]

DEFAULT_KS = (2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)


@dataclass(frozen=True)
class LeakageResult:
    """Null-block shares of top-k% attributions and of attribution mass, mean ± std over images.

    Attributes:
        ks: Top-k levels in percent of each image's coordinates.
        topk_null_mean, topk_null_std: Per k, the null block's share of the top-k% |a|.
        mass_null_mean, mass_null_std: The null block's share Σ_null |a| / Σ |a|.
        topk_signal_mean, topk_signal_std: Same for the signal block (None without its mask).
        null_area_share: Mean share of the null block in the image: the chance level.
        n_images: Images averaged; n_zero_maps: all-zero maps, left out of the mass share.
    """

    ks: tuple[float, ...]
    topk_null_mean: tuple[float, ...]
    topk_null_std: tuple[float, ...]
    mass_null_mean: float
    mass_null_std: float
    topk_signal_mean: tuple[float, ...] | None
    topk_signal_std: tuple[float, ...] | None
    null_area_share: float
    n_images: int
    n_zero_maps: int
    config: dict[str, Any]
    provenance: dict[str, Any] = field(repr=False)

    protocol: ClassVar[str] = "blockmnist-leakage"
    higher_is_better: ClassVar[bool] = False  # 0 = no attribution on the null block

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "higher_is_better": self.higher_is_better,
            "ks": list(self.ks),
            "topk_null_mean": list(self.topk_null_mean),
            "topk_null_std": list(self.topk_null_std),
            "mass_null_mean": self.mass_null_mean,
            "mass_null_std": self.mass_null_std,
            "topk_signal_mean": None if self.topk_signal_mean is None else list(self.topk_signal_mean),
            "topk_signal_std": None if self.topk_signal_std is None else list(self.topk_signal_std),
            "null_area_share": self.null_area_share,
            "n_images": self.n_images,
            "n_zero_maps": self.n_zero_maps,
            "config": dict(self.config),
            "provenance": self.provenance,
        }


def _as_mask(mask: torch.Tensor | None, shape: torch.Size, name: str) -> torch.Tensor | None:
    """A bool mask broadcast to the attributions' (N, C, H, W); (N, H, W) is read as (N, 1, H, W)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ParameterTypeError(f"The {name!r} argument of leakage must be a bool tensor. Got {got}.")
    m = mask.unsqueeze(1) if mask.dim() == 3 else mask
    try:
        fits = m.dim() == 4 and m.shape[0] == shape[0] and torch.broadcast_shapes(m.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        n, c, h, w = shape
        raise ParameterError(
            f"The {name!r} argument of leakage must have shape {(n, h, w)}, {(n, 1, h, w)} or "
            f"{(n, c, h, w)} to match the attributions. Got {tuple(mask.shape)}."
        )
    return m.expand(shape)


def _check(attributions, ks, seed) -> tuple[float, ...]:
    if not isinstance(attributions, torch.Tensor) or attributions.dim() != 4 or attributions.shape[0] == 0:
        got = tuple(attributions.shape) if isinstance(attributions, torch.Tensor) else type(attributions).__name__
        raise ParameterError(f"The 'attributions' argument of leakage must be a non-empty (N, C, H, W) tensor. Got {got}.")
    check_int(seed, "seed", "leakage", 0)
    d = attributions[0].numel()
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | float) or not 0 < k <= 100:
            raise ParameterError(f"The 'ks' parameter of leakage must hold percents in (0, 100]. Got {k!r}.")
        if keep_count(k / 100, d) < 1:
            raise ParameterError(
                f"The 'ks' parameter of leakage: top {k}% of {d} coordinates is no coordinate; "
                f"use k ≥ {100 / d:.3g}."
            )
        out.append(float(k))
    if not out:
        raise ParameterError("The 'ks' parameter of leakage must hold at least one percent.")
    return tuple(out)


def _mean_std(t: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) std over images, ignoring NaN; NaN if nothing is left."""
    t = t[~t.isnan()]
    if t.numel() == 0:
        return float("nan"), float("nan")
    return t.mean().item(), t.std(correction=0).item()


def leakage(
    attributions: torch.Tensor,
    null_mask: torch.Tensor,
    signal_mask: torch.Tensor | None = None,
    *,
    ks: Sequence[float] = DEFAULT_KS,
    seed: int = 0,
) -> LeakageResult:
    """BlockMNIST feature leakage: the null block's share of top-k% |a| and of Σ|a|.

    Formula: per image, topk_null(k) = |top_k%(|a|) ∩ null| / |top_k%(|a|)| and
    mass_null = Σ_null |a| / Σ |a|; both averaged (± std) over images. 0 is ideal; the null
    block's area share is what a map with no preference for either block gets.

    Source: Shah, Jain & Netrapalli, "Do Input Gradients Highlight Discriminative Features?",
    NeurIPS 2021, arXiv 2102.12781, §4 (BlockMNIST; the paper shows maps, no number);
    the top-k% proxy with k ∈ {2.5, 5, 10, 15, 20, 25, 30} follows Serrurier et al. 2023
    (paper-protocol §4).

    Reference code: none released for BlockMNIST.

    Deviations:
        * Ties among |a| are broken by the seeded shuffle of the ranking module; the top-k%
          count is round(k/100 · C·H·W), the ranking module's rule.
        * An all-zero map has no mass share; it is left out of the mass mean and counted in
          ``n_zero_maps`` (its top-k share, a random draw by the tie-break, is kept).

    Args:
        attributions: (N, C, H, W) maps; ranked by |a| over all C·H·W coordinates.
        null_mask: Bool (N, H, W), (N, 1, H, W) or (N, C, H, W): True on the null block
            (e.g. ``ImageSet.per_image["null_mask"]`` of BlockMNIST).
        signal_mask: Optional bool mask of the signal block, same shapes; its top-k share is
            reported too. Must not overlap ``null_mask``.
        ks: Top-k levels in percent, in (0, 100].
        seed: Seeds the tie-break.

    Returns:
        A :class:`LeakageResult`.

    Raises:
        ParameterError: Masks whose shape does not match, overlapping masks, an empty null
            mask, ks outside (0, 100]; raised before any work.
    """
    levels = _check(attributions, ks, seed)
    shape = attributions.shape
    null = _as_mask(null_mask, shape, "null_mask")
    signal = _as_mask(signal_mask, shape, "signal_mask")
    if signal is not None and bool((null & signal).any()):
        raise ParameterError("The 'null_mask' and 'signal_mask' arguments of leakage overlap; they must be disjoint.")
    if not bool(null.flatten(1).any(1).all()):
        raise ParameterError("The 'null_mask' argument of leakage is empty for some image; every image needs a null block.")
    positions = rank_positions(attributions, by="element", seed=seed)
    d = positions[0].numel()
    null_f = null.flatten(1)
    topk_null, topk_signal = [], []
    for k in levels:
        top = (positions < keep_count(k / 100, d)).flatten(1)
        count = top.sum(1).double()
        topk_null.append(_mean_std((top & null_f).sum(1) / count))
        if signal is not None:
            topk_signal.append(_mean_std((top & signal.flatten(1)).sum(1) / count))
    mag = attributions.detach().abs().double().flatten(1)
    total = mag.sum(1)
    mass = torch.where(total > 0, (mag * null_f).sum(1) / total, float("nan"))
    mass_mean, mass_std = _mean_std(mass)
    config = {"ks": list(levels), "seed": seed, "signal_mask": signal is not None}
    return LeakageResult(
        ks=levels,
        topk_null_mean=tuple(m for m, _ in topk_null),
        topk_null_std=tuple(s for _, s in topk_null),
        mass_null_mean=mass_mean,
        mass_null_std=mass_std,
        topk_signal_mean=tuple(m for m, _ in topk_signal) if signal is not None else None,
        topk_signal_std=tuple(s for _, s in topk_signal) if signal is not None else None,
        null_area_share=null_f.double().mean(1).mean().item(),
        n_images=shape[0],
        n_zero_maps=int((total == 0).sum()),
        config=config,
        provenance=provenance(),
    )
