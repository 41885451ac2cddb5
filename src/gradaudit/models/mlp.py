"""Fully connected models: linear and MLP."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from torch import nn

from .layers import activation, check_widths

__all__ = ["linear", "mlp"]


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (256, 256),
    act: str = "relu",
    beta: float = 10.0,
) -> nn.Sequential:
    """Flatten, then Linear/activation per hidden width, then a Linear to the logits.

    The default, two hidden layers of 256, is the MNIST-type MLP of DESIGN decision 5.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = prod(input_shape)
    for h in check_widths(hidden, "hidden", "build('mlp')"):
        layers += [nn.Linear(width, h), activation(act, beta)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def linear(input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """A linear classifier on the flattened input (the paper's 'linear model' baseline)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(prod(input_shape), num_classes))
