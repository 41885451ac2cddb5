"""ROAD: RemOve And Debias, the retraining-free removal test with noisy linear imputation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .._progress import EVAL_QUIET, progress
from .._provenance import provenance
from .._torch_utils import eval_mode
from .._validation import ParameterError, check_bool, check_choice, check_float
from ..attribution._core import fast_layout
from ..data.imageset import check_bounds
from ..masking.fill import FILLS, fill_masked
from ..masking.ranking import keep_mask_count, scores
from ._curves import (
    Curve,
    check_common,
    check_fractions,
    check_images,
    model_device,
    orders_gap,
    orders_record,
    rank_scores,
    removal_count,
    stream_seed,
    target_stats,
)

__all__ = ["DEFAULT_PERCENTAGES", "ROAD_ORDERS", "ROAD_RANKS", "RoadResult", "road"]

DEFAULT_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_ORDERS = {"morf": ("morf",), "lerf": ("lerf",), "both": ("morf", "lerf")}
ROAD_RANKS = ("channel-sum", "element")


@dataclass(frozen=True)
class RoadResult:
    """MoRF / LeRF accuracy curves of ROAD and their areas.

    Attributes:
        percentages: Removal fractions in [0, 1], increasing.
        counts: Coordinates removed per image at each fraction.
        morf: Curve when the most relevant coordinates go first (None if not asked).
        lerf: Curve when the least relevant go first (None if not asked).
        n_images: Images evaluated.
        config: The arguments that produced the result (seed included).
        provenance: Library versions and git revision.
    """

    percentages: tuple[float, ...]
    counts: tuple[int, ...]
    morf: Curve | None
    lerf: Curve | None
    n_images: int
    config: dict[str, Any]
    provenance: dict[str, Any] = field(repr=False)

    protocol: ClassVar[str] = "ROAD"
    higher_is_better: ClassVar[bool] = True  # the score (gap); MoRF alone: lower is better

    @property
    def gap(self) -> float | None:
        """Score: LeRF accuracy area − MoRF accuracy area (None unless both orders ran)."""
        return orders_gap(self.morf, self.lerf, "accuracy_area")

    def to_dict(self) -> dict[str, Any]:
        return orders_record(self, {"percentages": list(self.percentages), "counts": list(self.counts)})


def _positions(attributions: torch.Tensor, rank: str, absolute: bool, seed: int) -> torch.Tensor:
    """Rank positions (0 = most relevant), per pixel (channel-sum) or per element."""
    a = attributions.detach()
    if absolute:
        s = scores(a, "channel-sum" if rank == "channel-sum" else "element")
    else:
        s = a.sum(1, keepdim=True) if rank == "channel-sum" else a
    return rank_scores(s, seed)


def _keep(positions: torch.Tensor, k: int, order: str) -> torch.Tensor:
    """Kept coordinates after removing k: MoRF drops ranks < k (keeps the d − k bottom-ranked),
    LeRF the k last ranks (keeps the d − k top-ranked)."""
    return keep_mask_count(positions, positions[0].numel() - k, "bottom" if order == "morf" else "top")


def _validate(x, y, attributions, percentages, order, fill, rank, absolute, noise, mean, seed, batch_size):
    caller = "road"
    check_images(x, y, attributions, caller)
    pcts = check_fractions(percentages, "percentages", caller)
    check_choice(order, "order", caller, tuple(ROAD_ORDERS))
    check_choice(fill, "fill", caller, FILLS)
    check_choice(rank, "rank", caller, ROAD_RANKS)
    check_bool(absolute, "absolute", caller)
    check_float(noise, "noise", caller, 0.0)
    check_common(seed, batch_size, caller)
    if fill == "mean" and (not isinstance(mean, torch.Tensor) or mean.numel() != x.shape[1]):
        raise ParameterError(
            f"fill='mean' in road needs 'mean', the per-channel dataset mean of {x.shape[1]} values."
        )
    return pcts


def road(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attributions: torch.Tensor,
    *,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    order: str = "both",
    fill: str = "nli",
    rank: str = "channel-sum",
    absolute: bool = False,
    noise: float = 0.01,
    mean: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    quiet: bool = EVAL_QUIET,
    bounds: tuple[float, float] | None = None,
) -> RoadResult:
    """ROAD: accuracy of the unchanged model as attributed coordinates are imputed away.

    Formula: acc_order(p) = mean_i 1[argmax f(impute(x_i, R_order(a_i, p))) = y_i], where
    R_morf removes the floor(p·d) highest-ranked coordinates and R_lerf the lowest-ranked;
    score = area(LeRF) − area(MoRF) (areas normalised by the span of ``percentages``).

    Source: Rong, Leemann, Nguyen, Fiedler, Haghighi, Kasneci, "A Consistent and Efficient
    Evaluation Strategy for Attribution Methods", ICML 2022, arXiv 2202.00449, §4–5.

    Reference code: tleemann/road_evaluation (``road/road.py``, ``road/imputations.py``);
    Quantus ``quantus/metrics/faithfulness/road.py`` (MoRF only).

    Deviations:
        * Ranking: ROAD's channel sum of the signed attribution by default; ties are broken
          by the seeded shuffle of :func:`gradaudit.masking.rank_positions` instead of adding
          1e-4·N(0, 1) to the min-max normalised map. ``rank="element"`` ranks the C·H·W
          coordinates (Quantus's convention when attributions have the input's shape), and
          ``absolute=True`` ranks |a| (Quantus's ``abs=True``).
        * Counts: floor(p·d) coordinates are removed, as Quantus; fractions are in [0, 1]
          (Quantus takes percents).
        * Imputation: all images, orders and channels of a batch are imputed by one batched
          conjugate-gradient solve (see :func:`gradaudit.masking.fill.linear_imputation`),
          equal to the per-image sparse solve of the reference to within 1e-5 (float32).
        * Noise: drawn from a stream seeded by (seed, order, percentage), so a result does
          not depend on ``batch_size`` nor on which other percentages or orders were asked.
        * MoRF and LeRF run in the same pass, and so do a few percentages (one imputation
          solve and one forward for up to ``GROUP_VALUES`` input values); the mean
          probability of the label is reported beside the accuracy.

    Args:
        model: Classifier returning logits; evaluated in eval mode (its mode is restored).
        x: Inputs (N, C, H, W) in the model's input space.
        y: Labels (N,).
        attributions: (N, C, H, W) or (N, 1, H, W) maps of ``x``.
        percentages: Removal fractions in [0, 1]; default 0.1, 0.2, …, 0.9.
        order: "morf", "lerf" or "both" (default).
        fill: "nli" (ROAD's noisy linear imputation, default), "zero" or "mean".
        rank: "channel-sum" (ROAD, default) or "element".
        absolute: Rank |a| instead of the signed a.
        noise: Std of the Gaussian noise added to imputed coordinates ("nli" only).
        mean: Per-channel dataset mean, for ``fill="mean"``.
        seed: Seeds the tie-break and the noise.
        batch_size: Images per forward (each forward holds ``batch_size`` × orders inputs).
        device: Where to run; default the model's device.
        quiet: No progress bar.
        bounds: The data's input box (``ImageSet.bounds``), or None (no clamp). When
            given, imputed coordinates (noise included) are clamped into it, so a model
            never sees inputs outside the range it was trained on; kept ones are unchanged.

    Returns:
        A :class:`RoadResult`.

    Raises:
        ParameterError: Shapes that do not match, fractions outside [0, 1], unknown order,
            fill or rank, bad seed or batch size; raised before any work.
    """
    pcts = _validate(x, y, attributions, percentages, order, fill, rank, absolute, noise, mean, seed, batch_size)
    box = None if bounds is None else check_bounds(bounds, "road")
    orders = ROAD_ORDERS[order]
    dev = model_device(model, device)
    positions = _positions(attributions, rank, absolute, seed)
    d = positions[0].numel()
    counts = tuple(removal_count(p, d) for p in pcts)
    n = x.shape[0]
    correct = torch.zeros(len(orders), len(pcts), dtype=torch.float64)
    prob = torch.zeros(len(orders), len(pcts), dtype=torch.float64)
    noisy = fill == "nli" and noise > 0
    group = _fraction_group(len(pcts), min(batch_size, n) * len(orders) * x[0].numel(), x.numel() * len(orders) if noisy else 0)
    with eval_mode(model), fast_layout(model), torch.inference_mode(), progress(quiet) as bar:
        task = bar.add_task("ROAD", total=-(-len(pcts) // group) * -(-n // batch_size))
        for start in range(0, len(pcts), group):
            js = range(start, min(start + group, len(pcts)))
            # each (percentage, order) has its own noise stream over all of x, so a result does
            # not depend on the grouping
            draws = [_noise(x, seed, o, pcts[j]) for j in js for o in orders] if noisy else None
            stack = len(js) * len(orders)
            for i in range(0, n, batch_size):
                xb = x[i : i + batch_size].to(dev)
                pos = positions[i : i + batch_size].to(dev)
                # rows ordered (percentage, order, image): one imputation solve and one forward
                # for the group (every plane's solve is its own: the values of a solve alone)
                keep = torch.cat([_keep(pos, counts[j], o) for j in js for o in orders])
                xs = fill_masked(xb.repeat(stack, 1, 1, 1), keep, fill, mean=mean, noise=0.0)
                if draws is not None or box is not None:
                    # 0/1 float mask: bool where() is slow on the CPU for random masks
                    kept = keep.view(torch.uint8).to(xs.dtype)
                if draws is not None:
                    extra = torch.cat([dr[i : i + batch_size] for dr in draws]).to(dev, xs.dtype)
                    xs = xs.addcmul_(extra, 1 - kept, value=noise)
                if box is not None:  # lerp at weight 1 (kept) is xs exactly
                    xs = torch.lerp(xs.clamp(*box), xs, kept)
                ok, pr = target_stats(model(xs), y[i : i + batch_size].to(dev).repeat(stack))
                b = xb.shape[0]
                correct[:, start : js.stop] += ok.view(len(js), len(orders), b).sum(2).double().cpu().T
                prob[:, start : js.stop] += pr.view(len(js), len(orders), b).sum(2).cpu().T
                bar.advance(task)
    curves = {
        o: Curve(pcts, tuple((correct[r] / n).tolist()), tuple((prob[r] / n).tolist()))
        for r, o in enumerate(orders)
    }
    config = {
        "percentages": list(pcts), "order": order, "fill": fill, "rank": rank, "absolute": absolute,
        "noise": noise, "seed": seed, "batch_size": batch_size,
    }
    return RoadResult(pcts, counts, curves.get("morf"), curves.get("lerf"), n, config, provenance())


# Percentages whose inputs together hold at most this many values are imputed and evaluated
# together (a few MB per solver buffer), and at most GROUP_DRAWS noise values are drawn ahead.
GROUP_VALUES = 512 * 784
GROUP_DRAWS = 2**25


def _fraction_group(n_pcts: int, values_per_pct: int, draws_per_pct: int) -> int:
    """How many percentages share one imputation solve and forward: as many as stay within
    GROUP_VALUES input values (and GROUP_DRAWS noise draws), at least one. A solve is many
    small operations per iteration; a few percentages together amortise their overhead
    (MoRF on 128 MNIST images, 2 threads: ~0.8× the time of one solve per percentage), while
    a buffer beyond a few MB leaves the cache and is slower again."""
    by_values = GROUP_VALUES // max(1, values_per_pct)
    by_draws = GROUP_DRAWS // max(1, draws_per_pct) if draws_per_pct else n_pcts
    return max(1, min(n_pcts, by_values, by_draws))


def _noise(x: torch.Tensor, seed: int, order: str, fraction: float) -> torch.Tensor:
    """Standard normal draws shaped like x, from the (seed, order, fraction) stream (CPU)."""
    gen = torch.Generator().manual_seed(stream_seed(seed, "road-noise", order, fraction))
    return torch.randn(x.shape, generator=gen)
