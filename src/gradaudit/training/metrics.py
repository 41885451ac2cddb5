"""Clean accuracy and predictions of a model on in-memory tensors."""

from __future__ import annotations

import torch
from torch import nn

from .._torch_utils import eval_mode, model_device
from .._validation import ParameterError

__all__ = ["accuracy", "predict"]


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000, device: str | torch.device | None = None
) -> torch.Tensor:
    """Predicted labels (N,) on the CPU, computed in eval mode (the mode is restored).

    ``device`` defaults to the model's (its first parameter's, else ``x``'s).
    """
    return _predict(model, x, batch_size, _device(model, x, device)).cpu()


def _device(model: nn.Module, x: torch.Tensor, device: str | torch.device | None) -> torch.device:
    """``device``, else the model's (its first parameter's), else ``x``'s."""
    return model_device(model, device, default=x.device)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Predicted labels (N,) left on ``device``: no host synchronisation per batch."""
    out = []
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            out.append(model(x[i : i + batch_size].to(device)).argmax(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=device)


def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
) -> float:
    """Share of ``x`` classified as ``y`` (exactly: count / n), in eval mode; NaN for no images."""
    if y.shape != (x.shape[0],):
        raise ParameterError(f"The 'y' argument of accuracy must have shape ({x.shape[0]},). Got {tuple(y.shape)}.")
    if x.shape[0] == 0:
        return float("nan")
    dev = _device(model, x, device)
    hits = _predict(model, x, batch_size, dev) == y.to(dev)
    return int(hits.sum()) / x.shape[0]  # one read of the count from the device
