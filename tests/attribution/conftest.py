"""Fixtures of the attribution tests: one intra-op thread, small trained models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradaudit import data, models


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The many tiny forward/backward passes here run fastest on one thread (on a shared
    2-core machine, two spinning threads per process made them ~20× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(net: nn.Module, images: data.ImageSet, steps: int) -> nn.Module:
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(net(images.x), images.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in net.parameters():
        p.grad = None
    return net.eval()


@pytest.fixture(scope="session")
def trained(mnist_slice: data.ImageSet) -> dict[str, nn.Module]:
    """An MLP and a CNN fitted to the 300-image MNIST slice (full batch, Adam), so that their
    logits move by several units between a blank and a digit."""
    return {
        "mlp": _train(models.build("mlp", (1, 28, 28), 10, hidden=(64, 64), seed=5), mnist_slice, 30),
        "cnn": _train(models.build("cnn", (1, 28, 28), 10, channels=(8, 16), hidden=32, seed=6), mnist_slice, 30),
    }
