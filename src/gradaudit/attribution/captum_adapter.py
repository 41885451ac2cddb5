"""Any Captum attribution as a gradaudit method function.

Example:
    >>> from captum.attr import DeepLift
    >>> from gradaudit import attribution
    >>> attribution.register(attribution.MethodSpec(
    ...     "captum-deeplift", attribution.from_captum(DeepLift), multiplies_input=True,
    ...     source="Shrikumar et al., ICML 2017"))
    >>> maps = attribution.attribute("captum-deeplift", model, x, target=y)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import ParameterError, ParameterTypeError

__all__ = ["from_captum"]


@contextlib.contextmanager
def _seeded_global_rngs(seed: int, device: torch.device) -> Iterator[None]:
    """Captum draws from the global torch and numpy RNGs: seed both inside the block and put
    back the caller's states after it."""
    devices = [device] if device.type == "cuda" else []
    state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


def _builder(captum_method: Any) -> Callable[[nn.Module], Any]:
    if isinstance(captum_method, type):
        return captum_method
    if hasattr(captum_method, "attribute") and hasattr(captum_method, "forward_func"):
        def bound(model: nn.Module) -> Any:
            if captum_method.forward_func is not model:
                raise ParameterError(
                    "This Captum object wraps another model; pass its class (or a factory "
                    "model -> Captum object) to from_captum() instead."
                )
            return captum_method
        return bound
    if callable(captum_method):
        return captum_method
    raise ParameterTypeError(
        "from_captum() needs a Captum attribution class, a Captum object, or a factory "
        f"model -> Captum object. Got {type(captum_method).__name__}."
    )


def from_captum(captum_method: Any, **attribute_kwargs: Any) -> Callable[..., torch.Tensor]:
    """Wrap a Captum attribution as ``fn(model, x, target, *, seed, max_batch, **options)``.

    Args:
        captum_method: A Captum class taking the model (``Saliency``, ``DeepLift``, ...), a
            factory ``model -> Captum object`` (e.g. ``lambda m: NoiseTunnel(Saliency(m))``),
            or a Captum object built on the very model it will be called with.
        **attribute_kwargs: Fixed keyword arguments of the object's ``attribute`` (e.g.
            ``n_steps=64``); options given at call time override them.

    Returns:
        A method function for :class:`MethodSpec` / :func:`register`. Inputs are passed to
        Captum in chunks of ``max_batch`` images; Captum's global-RNG draws are seeded from
        ``seed`` and the caller's RNG states are restored, so the same seed gives the same
        maps (a different ``max_batch`` can change stochastic methods' draws).
    """
    build = _builder(captum_method)

    def captum_attribution(
        model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, seed: int = 0, max_batch: int = 256, **options: Any
    ) -> torch.Tensor:
        explainer = build(model)
        kwargs = {**attribute_kwargs, **options}
        out = torch.empty_like(x)
        with _seeded_global_rngs(seed, x.device):
            for i in range(0, len(x), max_batch):
                chunk = x[i : i + max_batch].clone().requires_grad_(True)
                out[i : i + max_batch] = explainer.attribute(chunk, target=target[i : i + max_batch], **kwargs).detach()
        return out

    name = getattr(captum_method, "__name__", type(captum_method).__name__)
    captum_attribution.__name__ = f"captum_{name}"
    captum_attribution.__doc__ = f"Captum's {name} through gradaudit's attribute() contract."
    return captum_attribution
