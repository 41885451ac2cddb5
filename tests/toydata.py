"""Tiny generated data sets and helpers shared by the training tests (no data root needed)."""

from __future__ import annotations

import torch

from gradaudit.data import ImageSet


def prototypes(n: int, seed: int, noise: float = 0.25) -> ImageSet:
    """Three classes of noisy 1×6×6 prototypes inside [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = (torch.rand(3, 1, 6, 6, generator=g)[y] + noise * torch.randn(n, 1, 6, 6, generator=g)).clamp(0, 1)
    return ImageSet(x, y, {"name": "toy", "classes": ["a", "b", "c"], "bounds": (0.0, 1.0)})


def flat_weights(net: torch.nn.Module) -> torch.Tensor:
    """All parameters of ``net`` as one flat CPU tensor."""
    return torch.cat([p.detach().flatten().cpu() for p in net.parameters()])


class Opaque(torch.nn.Module):
    """``net`` behind a custom forward: a model that the library's Sequential fast paths
    cannot see into, so it takes the plain (hooked, autograd) route."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
