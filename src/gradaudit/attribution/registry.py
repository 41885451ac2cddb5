"""The method registry and the one entry point, :func:`attribute`.

Output contract (every method): a tensor shaped like ``x``, same dtype and device, detached.
The model is put in eval mode and each module's mode is restored afterwards; no hook or
modified module is left behind; the caller's ``x``, ``target`` and every ``.grad`` are left
as found. Stochastic methods draw from ``seed`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .._registry import Registry
from .._torch_utils import eval_mode
from .._validation import (
    ParameterError,
    ParameterTypeError,
    check_float,
    check_int,
    check_shape,
    unknown_name,
)
from ._core import rows_for_budget
from ._fastpath import plain_leaves

__all__ = ["METHODS", "MethodSpec", "applicable", "attribute", "fit_options", "get_method", "register"]

Applicability = Callable[[nn.Module], tuple[bool, str]]


def always(model: nn.Module) -> tuple[bool, str]:
    """Applies to every differentiable classifier."""
    return True, ""


@dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method.

    Attributes:
        name: Registry name (as in the CLI).
        function: ``function(model, x, target, *, seed, max_batch, **options) -> Tensor``.
        options: Option name -> :class:`~.options.Option` (default, check, help).
        stochastic: Whether the result depends on ``seed``.
        multiplies_input: Whether the map is (x − x') ⊙ something (vanishes where x = x').
        source: Paper reference.
        summary: One line for ``--help``.
        applicable: model -> (applies?, reason if not).
        validate: Cross-checks of resolved options against ``x`` and the model, raising
            ParameterError; called before any work starts.
        fit: (model, data, seed, batch_size) -> data-dependent options (patterns, reference
            set, dataset mean), used by :func:`fit_options`.
        needs_gradient: Whether the model must be differentiable in its input.
    """

    name: str
    function: Callable[..., torch.Tensor]
    options: Mapping[str, Any] = field(default_factory=dict)
    stochastic: bool = False
    multiplies_input: bool = False
    source: str = ""
    summary: str = ""
    applicable: Applicability = always
    validate: Callable[[dict[str, Any], torch.Tensor, nn.Module, str], None] | None = None
    fit: Callable[[nn.Module, Any, int, int], dict[str, Any]] | None = None
    needs_gradient: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


_REGISTRY: Registry[MethodSpec] = Registry("attribution method")
METHODS: Mapping[str, MethodSpec] = MappingProxyType(_REGISTRY)  # read-only view


def register(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (e.g. a Captum method wrapped by ``from_captum``).

    Raises:
        ParameterError: The name is taken and ``replace`` is False.
    """
    return _REGISTRY.add(spec.name, spec, replace=replace)


def get_method(name: str) -> MethodSpec:
    """The spec of method ``name``, or a ParameterError naming the closest valid one."""
    return _REGISTRY.lookup(name)


def applicable(method: str, model: nn.Module) -> tuple[bool, str]:
    """(True, "") if ``method`` can attribute ``model``, else (False, why) for a "not
    applicable" cell (pattern methods need a plain Linear/Conv2d/ReLU/MaxPool2d/Flatten chain;
    Guided Backprop needs ReLUs)."""
    return get_method(method).applicable(model)


def _resolve_options(spec: MethodSpec, given: dict[str, Any], caller: str) -> dict[str, Any]:
    for key in given:
        if key not in spec.options:
            raise ParameterError(unknown_name("option", key, spec.options, caller=caller)
                                 if spec.options else f"{caller} takes no options. Got {key!r}.")
    resolved = {}
    for key, opt in spec.options.items():
        if key not in given and opt.required:
            hint = " (attribution.fit_options() computes it from training data)" if spec.fit else ""
            raise ParameterError(f"{caller} needs the {key!r} option: {opt.help}{hint}.")
        resolved[key] = opt.check(given[key], key, caller) if key in given else opt.default
    return resolved


def _check_input(x: Any, caller: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ParameterTypeError(f"The 'x' argument of {caller} must be a tensor (N, ...). Got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ParameterTypeError(
            f"The 'x' argument of {caller} must be a floating-point tensor; gradients need real "
            f"inputs. Got dtype {x.dtype} (convert with x.float())."
        )
    if x.dim() < 2:
        raise ParameterError(f"The 'x' argument of {caller} must have shape (N, ...), one row per input. Got {tuple(x.shape)}.")
    return x.detach()


def _probe(model: nn.Module, x: torch.Tensor, caller: str, needs_gradient: bool) -> tuple[int, int]:
    """(number of classes, bytes of one row's layer outputs); checks on one row that the model
    returns (1, K) float logits with a gradient w.r.t. the input."""
    z = x[:1].clone().requires_grad_(needs_gradient)
    sizes = [z.numel() * z.element_size()]

    def count(module: nn.Module, inputs: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel() * out.element_size())

    leaves = plain_leaves(model)
    if leaves is not None and len(leaves) > 1:
        # a plain Sequential: its layers in turn are its forward, so no hooks are needed
        # (registering and removing them is most of the probe's cost for a small model)
        with torch.enable_grad():
            out = z
            for m in leaves:
                out = m(out)
                count(m, (), out)
        return _checked_probe(out, caller, needs_gradient), sum(sizes)
    handles = [m.register_forward_hook(count) for m in model.modules() if not any(True for _ in m.children())]
    try:
        with torch.enable_grad():
            out = model(z)
    finally:
        for handle in handles:
            handle.remove()
    return _checked_probe(out, caller, needs_gradient), sum(sizes)


def _checked_probe(out: Any, caller: str, needs_gradient: bool) -> int:
    """The number of classes of a probe's output, after checking it is (1, K) float logits
    (with a gradient w.r.t. the input if ``needs_gradient``)."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1 or not out.is_floating_point():
        shown = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ParameterError(f"{caller} needs a model returning float logits (N, K). Got {shown} for one input.")
    if needs_gradient and not out.requires_grad:
        raise ParameterError(
            f"{caller} needs a model that is differentiable in its input, but model(x) has no "
            "gradient w.r.t. x (it detaches, runs under torch.no_grad, or is not a torch "
            "computation). Use a differentiable model, or method 'random'."
        )
    return out.shape[1]


def _resolve_target(target: Any, model: nn.Module, x: torch.Tensor, k: int, max_batch: int, caller: str) -> torch.Tensor:
    n = len(x)
    if isinstance(target, str):
        if target != "predicted":
            raise ParameterError(f"The 'target' argument of {caller} must be labels (N,), 'predicted' or a class index. Got {target!r}.")
        with torch.no_grad():
            return torch.cat([model(x[i : i + max_batch]).argmax(1) for i in range(0, n, max_batch)])
    if isinstance(target, int) and not isinstance(target, bool):
        check_int(target, "target", caller, 0, k - 1)
        return torch.full((n,), target, dtype=torch.long, device=x.device)
    if not isinstance(target, torch.Tensor) or target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise ParameterTypeError(
            f"The 'target' argument of {caller} must be an int64 label tensor (N,), 'predicted' "
            f"or a class index. Got {type(target).__name__}{'' if not isinstance(target, torch.Tensor) else f' of dtype {target.dtype}'}."
        )
    check_shape(target.shape, (n,), "target", caller)
    if n and (int(target.min()) < 0 or int(target.max()) >= k):
        raise ParameterError(f"The 'target' argument of {caller} must hold classes in [0, {k - 1}]. Got values in [{int(target.min())}, {int(target.max())}].")
    return target.to(device=x.device, dtype=torch.long)


def attribute(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    /,
    target: torch.Tensor | str | int,
    *,
    seed: int = 0,
    max_batch: int | None = None,
    memory_mb: float | None = None,
    **options: Any,
) -> torch.Tensor:
    """Attribute ``model``'s prediction of ``target`` to the coordinates of ``x`` with ``method``.

    Args:
        method: A name in :data:`METHODS`: grad, loss-grad, grad-x-input, ig, smoothgrad,
            smoothgrad-sq, vargrad, expected-grad, sg-ig, guided-backprop,
            pattern-attribution, pattern-ig, random (and any registered later).
        model: Classifier returning logits (N, K).
        x: Inputs (N, ...), floating point (images are (N, C, H, W)).
        target: Labels (N,) (int), ``"predicted"`` (the model's argmax) or one class index.
        seed: Seeds every random draw of the method (noise, references, baselines).
        max_batch: Rows (inputs × steps/samples) per forward/backward. Results do not depend
            on it up to float rounding. Default: from ``memory_mb``.
        memory_mb: Memory budget of one chunk's layer outputs, when ``max_batch`` is None:
            rows = memory_mb / (bytes of one row's layer outputs, measured on one input),
            at most 8192. Default 256 MB on CPU, 1024 MB on CUDA.
        **options: The method's options (see ``METHODS[method].options`` or
            ``gradaudit attribute --help``).

    Returns:
        Attributions shaped like ``x``, same dtype and device.

    Raises:
        ParameterError / ParameterTypeError: Unknown method or option, bad option value,
            method not applicable to the model, non-float ``x``, bad ``target`` shape or
            range, a model without input gradients; all raised before any work starts.
    """
    spec = get_method(method)
    caller = f"attribute({method!r})"
    if not isinstance(model, nn.Module):
        raise ParameterTypeError(f"The 'model' argument of {caller} must be a torch.nn.Module. Got {type(model).__name__}.")
    ok, reason = spec.applicable(model)
    if not ok:
        raise ParameterError(f"{caller} does not apply to this model: {reason}")
    opts = _resolve_options(spec, options, caller)
    check_int(seed, "seed", caller, 0)
    x = _check_input(x, caller)
    if max_batch is not None:
        check_int(max_batch, "max_batch", caller, 1)
    if memory_mb is not None:
        check_float(memory_mb, "memory_mb", caller, 0.0, low_open=True)
    if spec.validate is not None:
        spec.validate(opts, x, model, caller)
    if not len(x):
        return torch.empty_like(x)
    with eval_mode(model):
        k, row_bytes = _probe(model, x, caller, spec.needs_gradient)
        rows = max_batch if max_batch is not None else rows_for_budget(row_bytes, memory_mb, x.device)
        t = _resolve_target(target, model, x, k, rows, caller)
        return spec.function(model, x, t, seed=seed, max_batch=rows, **opts).detach()


def fit_options(method: str, model: nn.Module, data: Any, *, seed: int = 0, batch_size: int = 256) -> dict[str, Any]:
    """The data-dependent options of ``method``, computed from training ``data``.

    Pattern methods get ``patterns`` (:func:`fit_patterns`), Expected Gradients gets the
    reference set, IG-type methods get the per-channel ``data_mean`` (for ``baseline="mean"``);
    other methods get ``{}``. Pass the result on: ``attribute(m, model, x, y, **opts)``.

    Args:
        method: A registered method name.
        model: The model to be attributed.
        data: Training inputs: an ImageSet, a tensor (N, ...), or (patterns only) a loader.
        seed: Seeds any subsampling.
        batch_size: Inputs per forward pass while fitting.
    """
    spec = get_method(method)
    check_int(batch_size, "batch_size", f"fit_options({method!r})", 1)
    return {} if spec.fit is None else spec.fit(model, data, seed, batch_size)
