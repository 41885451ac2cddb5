"""Seeded generators for generated datasets: one independent stream per (dataset, split, seed)."""

from __future__ import annotations

import torch

from .._seeding import split_seed
from .._validation import check_int

__all__ = ["split_generator"]


def split_generator(seed: int, name: str, split: str) -> torch.Generator:
    """A CPU generator seeded from (name, split, seed), so train and test draws differ."""
    check_int(seed, "seed", f"load({name!r})")
    return torch.Generator().manual_seed(split_seed(seed, name, split))
