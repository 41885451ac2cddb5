"""Seed derivation, in one place: every independent random stream's seed is a hash of the
user's seed and the stream's name, so streams never share draws and no global RNG is read.

Three hash layouts exist for historical reasons; each is kept exactly, because changing one
would change the numbers of every stored result drawn from it:

- :func:`derive_seed` (sha256 of ``"{seed}:{salt}"``, 56 bits): attribution sub-steps
  (a smoothing wrapper's inner method) and the retraining protocols (test maps, the random
  control's rankings).
- :func:`stream_seed` (blake2b of ``repr((seed, *keys))``, 63 bits): the perturbation
  curves' noise streams (ROAD's imputation noise per order and fraction).
- :func:`split_seed` (sha256 of ``"{name}|{split}|{seed}"``, 63 bits): generated data
  sets, one stream per (data set, split, seed).
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed", "split_seed", "stream_seed"]


def derive_seed(seed: int, salt: str) -> int:
    """An independent seed for one use of ``seed`` (e.g. a smoothing wrapper's inner method,
    the random control's train ranks)."""
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def stream_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed for one random stream, from the user's seed and the stream's keys."""
    digest = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def split_seed(seed: int, name: str, split: str) -> int:
    """A 63-bit seed for data set ``name``'s ``split`` drawn with ``seed``."""
    digest = hashlib.sha256(f"{name}|{split}|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
