"""Clean accuracy and predictions of a model on in-memory tensors."""

from __future__ import annotations

import torch
from torch import nn

from .attacks import eval_mode

__all__ = ["accuracy", "predict"]


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000, device: str | torch.device | None = None
) -> torch.Tensor:
    """Predicted labels (N,) on the CPU, computed in eval mode (the mode is restored)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            out.append(model(x[i : i + batch_size].to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
) -> float:
    """Share of ``x`` classified as ``y``, in eval mode."""
    if x.shape[0] == 0:
        return float("nan")
    return (predict(model, x, batch_size=batch_size, device=device) == y.cpu()).float().mean().item()
