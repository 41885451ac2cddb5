"""Small building blocks shared by the architectures."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import ParameterError, check_float, check_int, unknown_name

__all__ = ["Normalize", "activation", "check_widths"]


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


def check_widths(value: Sequence[int], name: str, caller: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    """``value`` as a tuple of positive ints (layer widths), or a ParameterError."""
    ok = isinstance(value, Sequence) and not isinstance(value, str) and (allow_empty or len(value) > 0)
    if ok:
        try:
            return tuple(check_int(v, name, caller, 1) for v in value)
        except ParameterError:
            pass
    need = "a sequence of positive ints" + ("" if allow_empty else " (at least one)")
    raise ParameterError(f"The {name!r} parameter of {caller} must be {need}, e.g. (256, 256). Got {value!r}.")
