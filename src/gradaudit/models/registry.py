"""Model names -> constructors, used by configs, studies and the CLI."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._validation import ParameterError, unknown_name
from .cnn import cnn
from .layers import Normalize
from .mlp import linear, mlp
from .resnet import imagenet_resnet18, resnet

__all__ = ["MODELS", "build"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": linear,
    "mlp": mlp,
    "cnn": cnn,
    "resnet9": functools.partial(resnet, 9),
    "resnet18": functools.partial(resnet, 18),
    "resnet34": functools.partial(resnet, 34),
    "resnet50": functools.partial(resnet, 50),
    "resnet18-imagenet": imagenet_resnet18,
}


def build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    seed: int | None = 0,
    **options: Any,
) -> nn.Module:
    """Build a freshly initialised model.

    Args:
        name: One of ``MODELS``.
        input_shape: (C, H, W) of one input.
        num_classes: Number of logits.
        normalize: Optional (mean, std) per channel, applied inside the model as its first
            layer, so inputs stay in pixel space.
        seed: Seeds the initialisation without touching the global RNG; None draws from
            the global RNG.
        **options: Architecture options (``hidden`` for mlp, ``width``/``act``/``beta`` for
            ResNets, ``channels`` for cnn, ...).

    Raises:
        ParameterError: Unknown name or option.
    """
    if name not in MODELS:
        raise ParameterError(unknown_name("model", name, MODELS))
    ctor = MODELS[name]
    accepted = [p for p in inspect.signature(ctor).parameters if p not in ("input_shape", "num_classes")]
    for key in options:
        if key not in accepted:
            raise ParameterError(unknown_name("option", key, accepted, caller=f"build({name!r})"))
    if len(input_shape) != 3:
        raise ParameterError(
            f"The 'input_shape' parameter of build({name!r}) must be (C, H, W). Got {tuple(input_shape)}."
        )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        net = ctor(input_shape=tuple(input_shape), num_classes=num_classes, **options)
    if normalize is not None:
        net = nn.Sequential(Normalize(*normalize), net)
    return net
