"""BlockMNIST and BlockMNIST-Top: an MNIST 0/1 digit and a fixed null patch, stacked.

Each image is 1×56×28: two 28×28 blocks on top of each other. The signal block holds an
MNIST digit (class 0 = digit 0, class 1 = digit 1); the other block holds the null patch,
the same for every image and independent of the label. Built in memory from MNIST in one
vectorised pass.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._validation import ParameterError, check_bool
from ._seeding import split_generator
from .imageset import ImageSet
from .registry import register
from .sources import idx_tensors

__all__ = ["BLOCK", "PATCH", "PATCH_OFFSET", "build_blockmnist", "load_blockmnist",
           "load_blockmnist_top", "null_patch"]

BLOCK = 28
PATCH = 10
PATCH_OFFSET = (BLOCK - PATCH) // 2


def null_patch() -> torch.Tensor:
    """The 28×28 null block: a centred 10×10 square outline with both diagonals, 1-px white
    lines (1.0) on black (0.0)."""
    block = torch.zeros(BLOCK, BLOCK)
    lo, hi = PATCH_OFFSET, PATCH_OFFSET + PATCH - 1
    i = torch.arange(PATCH)
    block[lo, lo:hi + 1] = 1.0
    block[hi, lo:hi + 1] = 1.0
    block[lo:hi + 1, lo] = 1.0
    block[lo:hi + 1, hi] = 1.0
    block[lo + i, lo + i] = 1.0
    block[lo + i, hi - i] = 1.0
    return block


def build_blockmnist(mnist: ImageSet, seed: int, top_only: bool = False) -> ImageSet:
    """BlockMNIST from the digits 0 and 1 of an MNIST set (1×28×28 images, labels 0..9).

    Formula: x = [d; p] if the signal is on top else [p; d], d the digit, p the null patch;
    signal on top ~ Bernoulli(1/2) per image (always on top for BlockMNIST-Top).

    Source: Shah, Jain & Netrapalli, NeurIPS 2021, §4 (no code or data released);
    paper-protocol §4 and DESIGN decision 6.

    Args:
        mnist: MNIST images (N, 1, 28, 28) in [0, 1] with digit labels; only 0s and 1s are used.
        seed: Seeds the top/bottom placement (with the split name in ``mnist.meta``).
        top_only: BlockMNIST-Top: the digit always in the top block.

    Returns:
        An ImageSet of shape (M, 1, 56, 28), labels 0/1, with ``per_image`` ``signal_mask`` and
        ``null_mask`` (bool, (M, 1, 56, 28), the two blocks), ``signal_top`` (bool, (M,)) and
        ``mnist_index`` (int64, the row of the digit in ``mnist``).
    """
    if mnist.input_shape != (1, BLOCK, BLOCK):
        raise ParameterError(
            f"The 'mnist' argument of build_blockmnist must hold (N, 1, 28, 28) images. "
            f"Got {tuple(mnist.x.shape)}."
        )
    split = str(mnist.meta.get("split", "train"))
    name = "blockmnist-top" if top_only else "blockmnist"
    index = torch.nonzero(mnist.y <= 1).squeeze(1)
    digits, y = mnist.x[index], mnist.y[index]
    n = len(index)
    if top_only:
        top = torch.ones(n, dtype=torch.bool)
    else:
        top = torch.rand(n, generator=split_generator(seed, "blockmnist", split)) < 0.5
    rows = torch.arange(n)
    signal_block = (~top).long()  # 0: top block, 1: bottom block
    x = null_patch().repeat(n, 2, 1, 1)  # (n, 2 blocks, 28, 28)
    x[rows, signal_block] = digits[:, 0]
    signal = torch.zeros(n, 2, BLOCK, BLOCK, dtype=torch.bool)
    signal[rows, signal_block] = True
    x, signal = x.view(n, 1, 2 * BLOCK, BLOCK), signal.view(n, 1, 2 * BLOCK, BLOCK)
    meta = {"name": name, "split": split, "classes": ["0", "1"], "bounds": (0.0, 1.0),
            "seed": seed, "block_shape": (BLOCK, BLOCK),
            "null_patch": {"size": PATCH, "offset": PATCH_OFFSET}}
    per_image = {"signal_mask": signal, "null_mask": ~signal, "signal_top": top,
                 "mnist_index": index}
    return ImageSet(x, y.clone(), meta, per_image)


def _load(split: str, root: Path, seed: int, verify: bool, top_only: bool) -> ImageSet:
    name = "blockmnist-top" if top_only else "blockmnist"
    check_bool(verify, "verify", f"load({name!r})")
    split_generator(seed, name, split)  # validates seed before any file is read
    x, y = idx_tensors("mnist", split, root, verify)
    mnist = ImageSet(x, y, {"name": "mnist", "split": split})
    return build_blockmnist(mnist, seed, top_only=top_only)


@register("blockmnist")
def load_blockmnist(split: str, root: Path, seed: int, verify: bool = True) -> ImageSet:
    """BlockMNIST: 1×56×28, digit 0 vs 1, the digit in the top or bottom block with
    probability ½ (seeded), the null patch in the other; 12 665 train / 2 115 test.

    See :func:`build_blockmnist` for the construction and the ``per_image`` masks.

    Args:
        verify: md5-check the MNIST files (default); False for your own IDX copies.
    """
    return _load(split, root, seed, verify, top_only=False)


@register("blockmnist-top")
def load_blockmnist_top(split: str, root: Path, seed: int, verify: bool = True) -> ImageSet:
    """BlockMNIST-Top: as BlockMNIST, with the digit always in the top block."""
    return _load(split, root, seed, verify, top_only=True)
