"""PatternNet / PatternAttribution signal patterns: Kindermans' two-component estimator a₊,
fitted in one streaming pass over the data.

For every weighted layer (Linear, or Conv2d with each receptive-field patch as a sample),
with input x, pre-activation y = Wx + b and activated output ŷ (ReLU(y) when a ReLU follows
the layer, y otherwise), the pass accumulates per output neuron j:

    n₊_j = Σ 1[y_j > 0],  Σ x·1[y_j > 0],  Σ x·y_j·1[y_j > 0],  Σ ŷ_j  (over all samples)

and then, with E₊ the mean over the positive regime and E the mean over all samples,

    a₊_j = (E₊[x y_j] − E₊[x] E[ŷ_j]) / (w_jᵀ E₊[x y_j] − w_jᵀ E₊[x] E[ŷ_j])

(Kindermans et al., ICLR 2018, eq. 4-8; the bias's pattern is 0). A neuron that is never
positive, or whose denominator vanishes, gets a zero pattern.

Source: Kindermans, Schütt, Alber, Müller, Erhan, Kim & Dähne, "Learning how to explain
neural networks: PatternNet and PatternAttribution", ICLR 2018, arXiv:1705.05598.

Reference code: albermax/innvestigate ``innvestigate/tools/pattern.py``
(``ReluPositivePattern``); DFKI-NLP/pgig ``synthetic.ipynb`` (``compute_pattern``).

Deviations:
    * E[ŷ] is the mean of the layer's *activated* output over all samples, as the PGIG
      notebook's ``compute_pattern`` uses it (iNNvestigate uses the positive-regime output
      for every layer, which differs only for a layer without a ReLU after it, e.g. the
      logits). On the notebook's linear example this gives its published [1.01835, 0.01835]
      exactly; iNNvestigate's variant gives [1.0138, 0.0138].
    * The notebook's saturating example prints [−1.0033, −0.0033, 0] for layer one because a
      shape (N, 1, 1) output broadcasts ``x_plus * y_plus`` to an (M, M) outer product, so
      its E₊[xy] is E₊[x]·E₊[y]. The estimator here computes E₊[xy] and gives
      [−1.0171, −0.0171] on the same data (tests/attribution/test_attribution_pattern.py).
    * The PGIG repository ships Kindermans' VGG-16 patterns and has no fitting code; here
      patterns are fitted for any plain chain of Linear / Conv2d / ReLU / MaxPool2d /
      Flatten layers, streaming over a tensor, an ImageSet or a data loader.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._io import load_tensors, save_tensors
from .._provenance import provenance
from .._torch_utils import eval_mode
from .._validation import DataError, ParameterError, check_int
from ..models import Normalize

__all__ = ["PASS_THROUGH", "WEIGHTED", "Patterns", "chain", "fit_patterns", "pattern_applicable"]

WEIGHTED = (nn.Linear, nn.Conv2d)
# Layers replayed as they are: gating (ReLU), switches (max-pool), reshapes, fixed affine maps.
PASS_THROUGH = (nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout, Normalize)
_KIND = "gradaudit.patterns"


def _leaves(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield prefix, module


def chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in forward order, as (qualified name, module).

    Raises:
        ParameterError: The model is not a (nested) ``nn.Sequential`` of supported layers, so
            its forward cannot be replayed layer by layer.
    """
    if not isinstance(model, nn.Sequential):
        raise ParameterError(
            f"{type(model).__name__} is not an nn.Sequential: pattern methods replay the forward "
            "layer by layer, which needs a plain chain of Linear/Conv2d/ReLU/MaxPool2d/Flatten "
            "(skip connections and BatchNorm are not supported)."
        )
    layers = list(_leaves(model, ""))
    for name, m in layers:
        if not isinstance(m, WEIGHTED + PASS_THROUGH):
            raise ParameterError(
                f"Layer {name!r} is a {type(m).__name__}; pattern methods support only "
                "Linear, Conv2d, ReLU, MaxPool2d, Flatten (and Normalize/Identity/Dropout)."
            )
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            raise ParameterError(
                f"Conv2d layer {name!r} must have groups=1, padding_mode='zeros' and integer "
                "padding for pattern methods."
            )
    if not any(isinstance(m, WEIGHTED) for _, m in layers):
        raise ParameterError("The model has no Linear or Conv2d layer to fit a pattern for.")
    return layers


def pattern_applicable(model: nn.Module) -> tuple[bool, str]:
    """(True, "") if pattern methods apply to ``model``, else (False, the reason)."""
    try:
        chain(model)
    except ParameterError as err:
        return False, str(err)
    return True, ""


@dataclass(frozen=True, eq=False)
class Patterns:
    """Fitted signal patterns a₊, one per weighted layer, each shaped like the layer's weight.

    Attributes:
        tensors: Layer name (as in :func:`chain`) -> pattern tensor.
        n_samples: Number of inputs the statistics were computed on.
    """

    tensors: Mapping[str, torch.Tensor]
    n_samples: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the patterns to a safetensors file (atomically), with provenance."""
        save_tensors(path, dict(self.tensors), metadata={"kind": _KIND, "n_samples": self.n_samples, **provenance()})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Patterns:
        """Read patterns written by :meth:`save`.

        Raises:
            DataError: Missing or unreadable file, or not a gradaudit patterns file.
        """
        import json

        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_tensors(path)
        except (OSError, ValueError, RuntimeError, SafetensorError) as err:
            raise DataError(f"Cannot read patterns from {path}: {err}. Fit them with fit_patterns().") from None
        if json.loads(meta.get("kind", "null")) != _KIND:
            raise DataError(f"{path} is not a gradaudit patterns file (written by Patterns.save).")
        return cls(tensors, int(json.loads(meta["n_samples"])))

    def check(self, model: nn.Module) -> None:
        """Raise a ParameterError unless these patterns match ``model``'s weighted layers."""
        for name, m in chain(model):
            if not isinstance(m, WEIGHTED):
                continue
            if name not in self.tensors:
                raise ParameterError(
                    f"The patterns have no entry for layer {name!r}: they were fitted for another "
                    "model. Fit them for this one with fit_patterns(model, data)."
                )
            if tuple(self.tensors[name].shape) != tuple(m.weight.shape):
                raise ParameterError(
                    f"The pattern of layer {name!r} has shape {tuple(self.tensors[name].shape)}, "
                    f"but its weight has shape {tuple(m.weight.shape)}: refit with fit_patterns()."
                )


class _Stats:
    """Streaming sums of one weighted layer (float64)."""

    def __init__(self, weight: torch.Tensor) -> None:
        out, fan_in = weight.shape[0], weight[0].numel()
        kw = {"dtype": torch.float64, "device": weight.device}
        self.n_pos = torch.zeros(out, **kw)
        self.sum_x = torch.zeros(out, fan_in, **kw)
        self.sum_xy = torch.zeros(out, fan_in, **kw)
        self.sum_out = torch.zeros(out, **kw)
        self.n_all = 0

    def update(self, x: torch.Tensor, y: torch.Tensor, relu_after: bool) -> None:
        """x: (B, in, L) inputs, y: (B, out, L) pre-activations (L = 1 for Linear)."""
        mask = (y > 0).to(y.dtype)
        self.n_pos += mask.sum((0, 2)).double()
        self.sum_x += torch.einsum("bol,bil->oi", mask, x).double()
        self.sum_xy += torch.einsum("bol,bil->oi", mask * y, x).double()
        self.sum_out += (y.clamp(min=0) if relu_after else y).sum((0, 2)).double()
        self.n_all += y.shape[0] * y.shape[2]

    def pattern(self, weight: torch.Tensor) -> torch.Tensor:
        pos = self.n_pos.clamp(min=1).unsqueeze(1)
        mean_y = (self.sum_out / max(self.n_all, 1)).unsqueeze(1)
        cov = self.sum_xy / pos - self.sum_x / pos * mean_y
        denom = (weight.flatten(1).double() * cov).sum(1, keepdim=True)
        ok = (self.n_pos.unsqueeze(1) > 0) & (denom.abs() > 1e-12 * cov.abs().sum(1, keepdim=True).clamp(min=1e-300))
        a = torch.where(ok, cov / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(cov))
        return a.view_as(weight).to(weight.dtype)


def _layer_io(m: nn.Module, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, in, L), pre-activations (B, out, L)) of a weighted layer."""
    if isinstance(m, nn.Linear):
        return h.reshape(-1, h.shape[-1], 1), y.reshape(-1, y.shape[-1], 1)
    patches = F.unfold(h, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    return patches, y.flatten(2)


def _batches(data: Any, batch_size: int) -> Iterator[torch.Tensor]:
    x = data if isinstance(data, torch.Tensor) else getattr(data, "x", None)
    if isinstance(x, torch.Tensor):
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size]
        return
    if not isinstance(data, Iterable):
        raise ParameterError(
            "The 'data' argument of fit_patterns() must be a tensor (N, ...), an ImageSet or an "
            f"iterable of batches. Got {type(data).__name__}."
        )
    for batch in data:
        yield batch[0] if isinstance(batch, tuple | list) else batch


def fit_patterns(model: nn.Module, data: Any, *, batch_size: int = 256) -> Patterns:
    """Fit PatternAttribution's a₊ patterns of every Linear/Conv2d layer of ``model``.

    Args:
        model: A plain chain (nested ``nn.Sequential``) of Linear / Conv2d / ReLU / MaxPool2d /
            Flatten layers (e.g. gradaudit's ``linear``, ``mlp`` and ``cnn``).
        data: Inputs: a tensor (N, ...), an ImageSet, or an iterable of batches (tensors or
            (x, y) pairs, e.g. a DataLoader). Kindermans et al. fit on training data.
        batch_size: Inputs per forward pass when ``data`` is a tensor or an ImageSet.

    Returns:
        The fitted :class:`Patterns` (save them with ``.save(path)``).

    Raises:
        ParameterError: The model is not such a chain, or ``data`` holds no inputs.
    """
    check_int(batch_size, "batch_size", "fit_patterns()", 1)
    layers = chain(model)
    weighted = {name: m for name, m in layers if isinstance(m, WEIGHTED)}
    stats = {name: _Stats(m.weight.detach()) for name, m in weighted.items()}
    param = next(model.parameters())
    n = 0
    with eval_mode(model), torch.no_grad():
        for xb in _batches(data, batch_size):
            h = xb.to(device=param.device, dtype=param.dtype)
            n += len(h)
            for i, (name, m) in enumerate(layers):
                y = m(h)
                if name in stats:
                    relu_after = i + 1 < len(layers) and isinstance(layers[i + 1][1], nn.ReLU)
                    stats[name].update(*_layer_io(m, h, y), relu_after)
                h = y
    if n == 0:
        raise ParameterError("The 'data' argument of fit_patterns() holds no inputs.")
    tensors = {name: stats[name].pattern(m.weight.detach()).cpu() for name, m in weighted.items()}
    return Patterns(tensors, n)
