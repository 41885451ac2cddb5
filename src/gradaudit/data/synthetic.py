"""Synthetic data with known ground truth: the v1 coordinate data and simplified BlockMNIST.

Both are (N, 1, 1, D) sets with labels y in {0, 1} and sign s = 2y − 1, drawn from a
generator seeded by (name, split, seed), and with ``per_image["signal_mask"]`` marking the
coordinates that carry the label.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._validation import ParameterError, check_choice, check_float, check_int
from ._seeding import split_generator
from .imageset import ImageSet
from .registry import register

__all__ = ["NOISES", "load_simplified_blockmnist", "load_synthetic_v1"]

NOISES = ("gaussian", "uniform")
_CLASSES = ["-1", "+1"]


def _size(split: str, n_train: int, n_test: int, caller: str) -> int:
    check_int(n_train, "n_train", caller, low=1)
    check_int(n_test, "n_test", caller, low=1)
    return n_train if split == "train" else n_test


def _labels(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 2, (n,), generator=gen)
    return y, (2 * y - 1).float()


@register("synthetic-v1")
def load_synthetic_v1(
    split: str, root: Path, seed: int, dim: int = 10, n_train: int = 10_000, n_test: int = 1_000
) -> ImageSet:
    """The v1 synthetic data: one signed coordinate, no noise.

    Formula: y ~ U{0, 1}, s = 2y − 1, j ~ U{0, …, d−1}, x = s·e_j ∈ R^d.

    Source: Shah, Jain & Netrapalli, arXiv 2102.12781 v1 (2021), synthetic experiment;
    paper-protocol §5.1.

    Reference code: ``harshays/inputgradients`` ``scripts/synthetic_data.py``
    (``SemiRandomSignalCoordinate(input_dim=10, num_signal=1, bias_prob=0.1)``).

    Deviations:
        The reference draws j = 0 with probability 1/d and otherwise uniformly from 1..d−1,
        which is uniform over 0..d−1; j is drawn uniformly here (same distribution).

    Args:
        dim: d, the number of coordinates (default 10).
        n_train: Training set size (default 10 000).
        n_test: Test set size (default 1 000).

    Returns:
        An ImageSet of shape (N, 1, 1, d), bounds (−1, 1), with ``per_image``
        ``signal_index`` (int64 j) and ``signal_mask`` (bool one-hot of j).
    """
    caller = "load('synthetic-v1')"
    check_int(dim, "dim", caller, low=1)
    n = _size(split, n_train, n_test, caller)
    gen = split_generator(seed, "synthetic-v1", split)
    y, s = _labels(n, gen)
    j = torch.randint(0, dim, (n,), generator=gen)
    mask = torch.nn.functional.one_hot(j, dim).bool()
    x = mask.float() * s[:, None]
    meta = {"name": "synthetic-v1", "split": split, "classes": list(_CLASSES),
            "bounds": (-1.0, 1.0), "seed": seed, "dim": dim}
    return ImageSet(x.view(n, 1, 1, dim), y, meta,
                    {"signal_index": j, "signal_mask": mask.view(n, 1, 1, dim)})


def _noise(kind: str, scale: float, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    draws = {
        "gaussian": lambda: torch.randn(shape, generator=gen),
        "uniform": lambda: torch.rand(shape, generator=gen) * 2.0 - 1.0,
    }
    return draws[kind]() * scale


@register("simplified-blockmnist")
def load_simplified_blockmnist(
    split: str,
    root: Path,
    seed: int,
    blocks: int = 10,
    block_size: int = 1,
    noise: str = "gaussian",
    scale: float = 0.1,
    n_train: int = 10_000,
    n_test: int = 1_000,
) -> ImageSet:
    """Simplified BlockMNIST: d blocks, the signal on one task-relevant block, noise elsewhere.

    Formula: y ~ U{0, 1}, s = 2y − 1, j* ~ U{0, …, d/2 − 1}; block j* of x equals s·1 and
    every other coordinate is noise: N(0, scale²) ("gaussian") or U(−scale, scale)
    ("uniform"); x is then clipped to the bounds (−1, 1).

    Source: Shah, Jain & Netrapalli, NeurIPS 2021, §5 and Fig. 5 (no code released);
    paper-protocol §5.2. Blocks 0..d/2−1 are task-relevant, d/2..d−1 are noise blocks.

    Deviations:
        The noise law and scale are not recovered from the paper; they are parameters here
        (default N(0, 0.1²)). Bounds are (−1, 1), as for the v1 data, so an attack cannot
        push the ±1 signal outwards; clipping Gaussian noise at ±1 is a 10σ event at the
        default scale (``meta["n_clipped"]`` counts clipped values).

    Args:
        blocks: d, the number of blocks, even, ≥ 2 (default 10).
        block_size: Coordinates per block (default 1); D = d · block_size.
        noise: "gaussian" or "uniform".
        scale: Noise standard deviation (gaussian) or half-width (uniform), in [0, 1].
        n_train: Training set size (default 10 000).
        n_test: Test set size (default 1 000).

    Returns:
        An ImageSet of shape (N, 1, 1, D) with ``per_image`` ``signal_block`` (int64 j*) and
        ``signal_mask`` (bool, the coordinates of block j*); ``meta["block_id"]`` gives each
        coordinate's block and ``meta["task_relevant_blocks"]`` the first d/2 blocks.
    """
    caller = "load('simplified-blockmnist')"
    check_int(blocks, "blocks", caller, low=2)
    if blocks % 2:
        raise ParameterError(
            f"The 'blocks' parameter of {caller} must be an even int in [2, inf). Got {blocks}."
        )
    check_int(block_size, "block_size", caller, low=1)
    check_choice(noise, "noise", caller, NOISES)
    scale = check_float(scale, "scale", caller, 0.0, 1.0)
    n = _size(split, n_train, n_test, caller)
    gen = split_generator(seed, "simplified-blockmnist", split)
    y, s = _labels(n, gen)
    j = torch.randint(0, blocks // 2, (n,), generator=gen)
    block_id = torch.arange(blocks).repeat_interleave(block_size)
    mask = block_id[None, :] == j[:, None]
    raw = torch.where(mask, s[:, None], _noise(noise, scale, (n, blocks * block_size), gen))
    x = raw.clamp(-1.0, 1.0)
    dim = blocks * block_size
    meta = {"name": "simplified-blockmnist", "split": split, "classes": list(_CLASSES),
            "bounds": (-1.0, 1.0), "seed": seed, "blocks": blocks, "block_size": block_size,
            "noise": noise, "scale": scale, "block_id": block_id.tolist(),
            "task_relevant_blocks": list(range(blocks // 2)),
            "n_clipped": int((raw != x).sum())}
    return ImageSet(x.view(n, 1, 1, dim), y, meta,
                    {"signal_block": j, "signal_mask": mask.view(n, 1, 1, dim)})
