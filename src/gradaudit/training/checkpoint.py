"""Training state <-> one safetensors file (weights, optimizer, RNG, progress).

One file per checkpoint, written atomically, so a kill at any moment leaves either the
previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from .._io import save_tensors

__all__ = ["load_checkpoint", "read_metadata", "save_checkpoint"]


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    generators: dict[str, torch.Generator],
    metadata: dict[str, Any],
) -> None:
    """Save model weights, optimizer state, generator states and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    scalars: dict[str, Any] = {}
    if optimizer is not None:
        for i, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{i}.{key}"] = value
                else:
                    scalars[f"{i}.{key}"] = value
    for name, gen in generators.items():
        tensors[f"rng.{name}"] = gen.get_state()
    save_tensors(path, tensors, {**metadata, "optim_scalars": scalars})


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata stored in a safetensors file."""
    with safe_open(os.fspath(path), framework="pt") as f:
        raw = f.metadata() or {}
    return {k: json.loads(v) for k, v in raw.items()}


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    generators: dict[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` saved into the given objects; return metadata."""
    path = Path(path)
    state: dict[str, torch.Tensor] = {}
    optim: dict[int, dict[str, Any]] = {}
    with safe_open(os.fspath(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            kind, _, rest = key.partition(".")
            if kind == "model":
                state[rest] = f.get_tensor(key)
            elif kind == "optim":
                i, _, name = rest.partition(".")
                optim.setdefault(int(i), {})[name] = f.get_tensor(key)
            elif kind == "rng" and generators is not None and rest in generators:
                generators[rest].set_state(f.get_tensor(key))
    model.load_state_dict(state)
    meta = read_metadata(path)
    if optimizer is not None and optim:
        for compound, value in meta.get("optim_scalars", {}).items():
            i, _, name = compound.partition(".")
            optim.setdefault(int(i), {})[name] = value
        sd = optimizer.state_dict()
        sd["state"] = optim
        optimizer.load_state_dict(sd)
    return meta
