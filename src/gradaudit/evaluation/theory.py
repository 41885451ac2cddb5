"""Ground-truth checks of gradient attributions on the synthetic data of the paper's theory.

Source: Shah, Jain & Netrapalli, "Do Input Gradients Highlight Discriminative Features?",
NeurIPS 2021, arXiv:2102.12781 — v1 §5 (coordinate data x = y·e_j; "feature inversion")
and v3 §5 (simplified BlockMNIST; "feature leakage"). See paper-protocol §5.

Reference code: harshays/inputgradients ``02_fig_in_synthetic_data.ipynb`` (cells 16–18:
Pr[argmax |g| = signal], Pr[argmin |g| = signal] on loss gradients of the test points).

Deviations: none in the metrics; the simplified-BlockMNIST leakage share is our own
quantitative form of the paper's Fig. 5 (which is shown only as heatmaps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .._validation import ParameterError

__all__ = ["BlockLeakage", "SignalRank", "block_leakage", "signal_rank"]


class _Record:
    """A result of plain numbers: ``to_dict()`` gives its fields."""

    def to_dict(self) -> dict[str, float]:
        return asdict(self)  # type: ignore[call-overload]  (every subclass is a dataclass)


@dataclass(frozen=True)
class SignalRank(_Record):
    """How often the signal coordinate is ranked first / last by |attribution|.

    Attributes:
        top1: Pr[argmax_j |g_j| = signal index].
        bottom1: Pr[argmin_j |g_j| = signal index].
        aq: top1 − bottom1, the v1 paper's "AQ(A_G, 1)" (+1: always first; −1: always last).
        n: Number of points.
    """

    top1: float
    bottom1: float
    aq: float
    n: int


def _flat(g: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if g.shape[0] != n:
        raise ParameterError(f"{name} has {g.shape[0]} rows but the signal indices have {n}.")
    return g.detach().reshape(n, -1).abs().float().cpu()


def signal_rank(grads: torch.Tensor, signal_index: torch.Tensor) -> SignalRank:
    """Top-1 and bottom-1 rate of the signal coordinate under |grads|.

    Args:
        grads: Attributions (N, ...) flattened to N × d.
        signal_index: (N,) index of the signal coordinate of each point (flattened).
    """
    n = signal_index.shape[0]
    g = _flat(grads, n, "grads")
    idx = signal_index.cpu().long()
    top1 = (g.argmax(1) == idx).float().mean().item()
    bottom1 = (g.argmin(1) == idx).float().mean().item()
    return SignalRank(top1, bottom1, top1 - bottom1, n)


@dataclass(frozen=True)
class BlockLeakage(_Record):
    """Where |attribution| falls on simplified BlockMNIST.

    Attributes:
        own_share: Mean over points of Σ_{own signal block}|g| / Σ_{task-relevant blocks}|g|.
            1 = instance-specific; 1/(number of relevant blocks) = no better than leaking
            uniformly over all task-relevant blocks (the paper's theorem for standard MLPs).
        own_share_std: Its standard deviation over points.
        relevant_share: Mean Σ_{task-relevant}|g| / Σ|g| (how little lands on noise blocks).
        chance: 1 / number of task-relevant blocks.
        top_block_is_own: Pr[the block with the largest Σ|g| is the point's signal block].
    """

    own_share: float
    own_share_std: float
    relevant_share: float
    chance: float
    top_block_is_own: float


def block_leakage(
    grads: torch.Tensor, signal_block: torch.Tensor, block_ids: torch.Tensor, relevant: int
) -> BlockLeakage:
    """Share of |grads| on each point's own signal block among the task-relevant blocks.

    Args:
        grads: Attributions (N, ...) with d coordinates per point.
        signal_block: (N,) block index holding each point's signal.
        block_ids: (d,) block index of every coordinate.
        relevant: Blocks 0..relevant-1 are task-relevant; the rest are noise.
    """
    n = signal_block.shape[0]
    g = _flat(grads, n, "grads")
    ids = block_ids.reshape(-1).cpu().long()
    if ids.shape[0] != g.shape[1]:
        raise ParameterError(f"block_ids has {ids.shape[0]} entries but grads have {g.shape[1]} coordinates.")
    n_blocks = int(ids.max().item()) + 1
    per_block = torch.zeros(n, n_blocks).index_add_(1, ids, g)
    rel = per_block[:, :relevant]
    own = per_block.gather(1, signal_block.cpu().long().view(-1, 1)).squeeze(1)
    share = own / rel.sum(1).clamp_min(1e-30)
    return BlockLeakage(
        own_share=share.mean().item(),
        own_share_std=share.std().item() if n > 1 else 0.0,
        relevant_share=(rel.sum(1) / per_block.sum(1).clamp_min(1e-30)).mean().item(),
        chance=1.0 / relevant,
        top_block_is_own=(per_block.argmax(1) == signal_block.cpu().long()).float().mean().item(),
    )
