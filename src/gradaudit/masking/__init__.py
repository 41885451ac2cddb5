"""Masking: compact per-image rankings, keep-masks built per batch, and fills."""

from .fill import FILLS, fill_masked
from .ranking import RANK_BY, keep_count, keep_mask, rank_positions, scores

__all__ = ["FILLS", "RANK_BY", "fill_masked", "keep_count", "keep_mask", "rank_positions", "scores"]
