"""A small CNN for MNIST-sized inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .._validation import ParameterError, check_int
from .layers import activation, check_widths

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
    channels = check_widths(channels, "channels", "build('cnn')", allow_empty=False)
    hidden = check_int(hidden, "hidden", "build('cnn')", 1)
    c, h, w = input_shape
    if min(h, w) < 2 ** len(channels):
        raise ParameterError(
            f"build('cnn') halves H and W {len(channels)} times, so it needs inputs of at least "
            f"{2 ** len(channels)} px a side. Got {tuple(input_shape)}; use fewer channels."
        )
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
