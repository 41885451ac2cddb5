"""Small building blocks shared by the architectures."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import ParameterError, check_float, unknown_name

__all__ = ["Normalize", "activation"]


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the first layer of a model.

    Keeping normalisation inside the model lets data, attacks and masks live in pixel space
    ([0, 1]); ``eps`` of an attack is then in pixel units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


_ACTIVATIONS = ("relu", "softplus")


def activation(name: str, beta: float = 10.0) -> nn.Module:
    """A fresh activation module: ``relu`` or ``softplus`` (``Softplus(beta)``).

    Softplus gives a non-zero input Hessian, which score-matching regularizers need
    (Srinivas & Fleuret, ICLR 2021, use beta = 10).
    """
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        return nn.Softplus(beta=check_float(beta, "beta", "activation", 0.0, low_open=True))
    raise ParameterError(unknown_name("activation", name, _ACTIVATIONS))
