"""BlockMNIST and BlockMNIST-Top on the real MNIST files and on the committed slice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradaudit import ParameterError, data
from gradaudit.data.blockmnist import build_blockmnist, null_patch


@pytest.fixture(scope="module")
def blocks(mnist_root: Path) -> dict[str, data.ImageSet]:
    return {split: data.load("blockmnist", split, root=mnist_root, seed=0)
            for split in ("train", "test")}


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, :, :28], x[:, :, 28:]


def _check_structure(s: data.ImageSet, mnist: data.ImageSet) -> None:
    n = len(s)
    assert s.x.shape == (n, 1, 56, 28) and s.x.dtype == torch.float32
    idx = s.per_image["mnist_index"]
    digits = mnist.x[idx]
    assert torch.equal(s.y, mnist.y[idx]) and set(s.y.tolist()) <= {0, 1}
    top = s.per_image["signal_top"]
    upper, lower = _halves(s.x)
    patch = null_patch().expand(n, 1, 28, 28)
    # Exactly one block holds the digit, pixel for pixel; the other holds the null patch.
    signal = torch.where(top.view(n, 1, 1, 1), upper, lower)
    null = torch.where(top.view(n, 1, 1, 1), lower, upper)
    assert torch.equal(signal, digits)
    assert torch.equal(null, patch)
    assert not any(torch.equal(d, null_patch()[None]) for d in digits[:50])
    # Masks: bool (N, 1, 56, 28), complementary, the signal mask covers the digit's block.
    sm, nm = s.per_image["signal_mask"], s.per_image["null_mask"]
    assert sm.dtype == torch.bool and sm.shape == s.x.shape and torch.equal(nm, ~sm)
    top4 = top.view(n, 1, 1, 1).expand(n, 1, 28, 28)
    assert torch.equal(sm, torch.cat([top4, ~top4], dim=2))  # the block that holds the digit


def test_blockmnist_real(blocks: dict[str, data.ImageSet], mnist_train: data.ImageSet,
                         mnist_test: data.ImageSet) -> None:
    train, test = blocks["train"], blocks["test"]
    assert (len(train), len(test)) == (12_665, 2_115)
    assert train.y.bincount().tolist() == [5923, 6742] and test.y.bincount().tolist() == [980, 1135]
    _check_structure(train, mnist_train)
    _check_structure(test, mnist_test)
    for s in (train, test):
        assert abs(s.per_image["signal_top"].float().mean().item() - 0.5) < 0.03
        assert s.meta["classes"] == ["0", "1"] and s.bounds == (0.0, 1.0)
    # Balanced within each class too (placement is independent of the label).
    for c in (0, 1):
        assert abs(train.per_image["signal_top"][train.y == c].float().mean().item() - 0.5) < 0.03


def test_blockmnist_seeds(mnist_root: Path, blocks: dict[str, data.ImageSet]) -> None:
    again = data.load("blockmnist", "test", root=mnist_root, seed=0)
    assert torch.equal(again.x, blocks["test"].x)
    other = data.load("blockmnist", "test", root=mnist_root, seed=1)
    top0, top1 = blocks["test"].per_image["signal_top"], other.per_image["signal_top"]
    agree = (top0 == top1).float().mean().item()
    assert 0.45 < agree < 0.55  # independent draws agree about half the time
    for seed in range(2, 6):
        s = data.load("blockmnist", "test", root=mnist_root, seed=seed)
        assert abs(s.per_image["signal_top"].float().mean().item() - 0.5) < 0.03
    # Train and test placements come from different streams.
    train_top = blocks["train"].per_image["signal_top"][: len(top0)]
    assert not torch.equal(train_top, top0)


def test_blockmnist_top(mnist_root: Path, mnist_test: data.ImageSet) -> None:
    s = data.load("blockmnist-top", "test", root=mnist_root, seed=3)
    assert len(s) == 2_115 and s.meta["name"] == "blockmnist-top"
    assert s.per_image["signal_top"].all()
    _check_structure(s, mnist_test)
    assert torch.equal(s.x, data.load("blockmnist-top", "test", root=mnist_root, seed=4).x)


def test_null_patch_geometry() -> None:
    p = null_patch()
    assert p.shape == (28, 28) and set(p.unique().tolist()) == {0.0, 1.0}
    rows, cols = torch.nonzero(p, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (9, 18, 9, 18)  # centred 10×10
    assert int(p.sum()) == 36 + 20 - 4  # outline + two diagonals, sharing the 4 corners
    box = p[9:19, 9:19]
    assert box[0].all() and box[-1].all() and box[:, 0].all() and box[:, -1].all()
    assert box.diagonal().all() and box.flip(1).diagonal().all()
    assert box[1:-1, 1:-1].sum() == 16  # inside the outline: only the diagonals
    assert torch.equal(p, p.flip(0)) and torch.equal(p, p.flip(1))


def test_build_from_the_committed_slice(mnist_slice: data.ImageSet) -> None:
    s = build_blockmnist(mnist_slice, seed=0)
    assert len(s) == 60 and s.y.bincount().tolist() == [30, 30]
    _check_structure(s, mnist_slice)
    assert s.meta["split"] == "test"
    with pytest.raises(ParameterError, match=r"\(N, 1, 28, 28\)"):
        build_blockmnist(s, seed=0)
