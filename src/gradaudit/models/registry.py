"""Model names -> constructors, used by configs, studies and the CLI."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._registry import Registry
from .._validation import ParameterError, check_int, unknown_name
from .cnn import cnn
from .layers import Normalize
from .mlp import linear, mlp
from .resnet import imagenet_resnet18, resnet

__all__ = ["MODELS", "build"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.add("linear", linear)
MODELS.add("mlp", mlp)
MODELS.add("cnn", cnn)
for _depth in (9, 18, 34, 50):
    MODELS.add(f"resnet{_depth}", functools.partial(resnet, _depth))
MODELS.add("resnet18-imagenet", imagenet_resnet18)


def _check_common(name: str, input_shape: Sequence[int], num_classes: int,
                  normalize: tuple[Sequence[float], Sequence[float]] | None) -> tuple[int, int, int]:
    caller = f"build({name!r})"
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else input_shape
    if (not isinstance(shape, tuple) or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
        raise ParameterError(f"The 'input_shape' parameter of {caller} must be (C, H, W) of positive ints. Got {input_shape!r}.")
    check_int(num_classes, "num_classes", caller, 1)
    if normalize is not None:
        try:
            mean, std = normalize
            ok = len(mean) == shape[0] and len(std) == shape[0] and all(float(s) > 0 for s in std)
            ok = ok and all(isinstance(float(m), float) for m in mean)
        except (TypeError, ValueError):  # not a pair of sequences of numbers (e.g. True)
            ok = False
        if not ok:
            raise ParameterError(
                f"The 'normalize' parameter of {caller} must be (mean, std) with {shape[0]} "
                f"values each (one per channel) and std > 0, e.g. the data's "
                f"(train.meta['mean'], train.meta['std']). Got {normalize!r}."
            )
    return shape  # type: ignore[return-value]


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
        name: One of ``MODELS``: linear, mlp, cnn, resnet9, resnet18, resnet34, resnet50
            (CIFAR-style), resnet18-imagenet (7x7 stem, for 112 px ImageNet-10).
        input_shape: (C, H, W) of one input.
        num_classes: Number of logits.
        normalize: Optional (mean, std) per channel, applied inside the model as its first
            layer (``Normalize``), so inputs, attacks and masks stay in pixel space.
        seed: Seeds the initialisation without touching the global RNG (its state is saved
            and restored around the build); None draws from, and advances, the global RNG.
        **options: Architecture options: ``hidden``/``act``/``beta`` for mlp,
            ``channels``/``hidden``/``act``/``beta`` for cnn, ``width``/``act``/``beta`` for
            ResNets.

    Returns:
        The model (an ``nn.Module`` on the CPU, in train mode).

    Raises:
        ParameterError: Unknown name or option, or an invalid shape, class count or option
            value.
    """
    ctor = MODELS.lookup(name)
    accepted = [p for p in inspect.signature(ctor).parameters if p not in ("input_shape", "num_classes")]
    for key in options:
        if key not in accepted:
            raise ParameterError(unknown_name("option", key, accepted, caller=f"build({name!r})"))
    shape = _check_common(name, input_shape, num_classes, normalize)
    if seed is None:
        net = ctor(input_shape=shape, num_classes=num_classes, **options)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_int(seed, "seed", f"build({name!r})", 0))
            net = ctor(input_shape=shape, num_classes=num_classes, **options)
    if normalize is not None:
        net = nn.Sequential(Normalize(*normalize), net)
    return net
