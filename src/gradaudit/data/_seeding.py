"""Seeded generators for generated datasets: one independent stream per (dataset, split, seed)."""

from __future__ import annotations

import hashlib

import torch

from .._validation import check_int

__all__ = ["split_generator"]


def split_generator(seed: int, name: str, split: str) -> torch.Generator:
    """A CPU generator seeded from (name, split, seed), so train and test draws differ."""
    check_int(seed, "seed", f"load({name!r})")
    digest = hashlib.sha256(f"{name}|{split}|{seed}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
