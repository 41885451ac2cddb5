"""A small CNN for MNIST-sized inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .layers import activation

__all__ = ["cnn"]


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    act: str = "relu",
    beta: float = 10.0,
) -> nn.Sequential:
    """Conv3x3-act-MaxPool2 per entry of ``channels``, then Flatten-Linear-act-Linear.

    Only Linear / Conv2d / ReLU / MaxPool2d / Flatten layers, so PatternAttribution applies.
    """
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), activation(act, beta), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers += [
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        activation(act, beta),
        nn.Linear(hidden, num_classes),
    ]
    return nn.Sequential(*layers)
