"""Method options declared as data: a default, a check, a line of help.

Each check takes (value, name, caller) and returns the value to use or raises a
:class:`~gradaudit.ParameterError` whose message follows the house template.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._validation import ParameterError, ParameterTypeError, check_choice, check_float, check_int
from ._core import OBJECTIVES
from .integrated import BASELINES, RULES
from .pattern import Patterns
from .pattern_methods import SCALES, VARIANTS

__all__ = ["REQUIRED", "Option", "option"]

Check = Callable[[Any, str, str], Any]


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    """One option of a method: default (``REQUIRED`` if it has none), check and help."""

    default: Any
    check: Check
    help: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def shown(self) -> str:
        """The default as shown in ``--help``."""
        if self.required:
            return "required"
        return repr(self.default)


def _any(value: Any, name: str, caller: str) -> Any:
    return value


def option(default: Any = REQUIRED, check: Check = _any, help: str = "") -> Option:
    """An :class:`Option`; with no ``check``, any value is accepted (e.g. Captum kwargs)."""
    return Option(default, check, help)


def int_at_least(low: int) -> Check:
    return lambda v, n, c: check_int(v, n, c, low)


def choice(choices: Sequence[str]) -> Check:
    return lambda v, n, c: check_choice(v, n, c, tuple(choices))


def positive_float(v: Any, name: str, caller: str) -> float:
    return check_float(v, name, caller, 0.0, low_open=True)


def nonnegative_float(v: Any, name: str, caller: str) -> float:
    return check_float(v, name, caller, 0.0)


def optional_nonnegative_float(v: Any, name: str, caller: str) -> float | None:
    return None if v is None else nonnegative_float(v, name, caller)


def bounds(v: Any, name: str, caller: str) -> tuple[float, float]:
    if not isinstance(v, tuple | list) or len(v) != 2:
        raise ParameterTypeError(f"The {name!r} parameter of {caller} must be a pair (low, high). Got {v!r}.")
    lo, hi = (check_float(b, name, caller) for b in v)
    if not lo < hi:
        raise ParameterError(f"The {name!r} parameter of {caller} must have low < high. Got {v!r}.")
    return lo, hi


def tensor_or_none(v: Any, name: str, caller: str) -> torch.Tensor | None:
    if v is not None and not isinstance(v, torch.Tensor):
        raise ParameterTypeError(f"The {name!r} parameter of {caller} must be a tensor or None. Got {type(v).__name__}.")
    return v


def tensor(v: Any, name: str, caller: str) -> torch.Tensor:
    if not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.dim() < 2 or len(v) == 0:
        raise ParameterTypeError(
            f"The {name!r} parameter of {caller} must be a non-empty float tensor (R, ...) of "
            f"reference inputs. Got {v if not isinstance(v, torch.Tensor) else tuple(v.shape)!r}."
        )
    return v


def baseline(v: Any, name: str, caller: str) -> str | torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    return check_choice(v, name, caller, BASELINES)


def patterns(v: Any, name: str, caller: str) -> Patterns:
    if isinstance(v, Patterns):
        return v
    if isinstance(v, str | os.PathLike):
        return Patterns.load(v)
    raise ParameterTypeError(
        f"The {name!r} parameter of {caller} must be Patterns (from fit_patterns) or the path of "
        f"a saved patterns file. Got {type(v).__name__}."
    )


OUTPUT = Option("logit", choice(tuple(OBJECTIVES)), "what is differentiated: logit, prob (softmax) or loss (CE)")
PATTERN_OUTPUT = Option("logit", choice(("logit", "prob")), "what is back-propagated: logit or prob (softmax)")

IG_OPTIONS = {
    "n_steps": Option(64, int_at_least(1), "quadrature nodes"),
    "rule": Option("gauss-legendre", choice(tuple(RULES)), "quadrature rule"),
    "baseline": Option("zero", baseline, "zero, mean, uniform, blur, or a tensor"),
    "output": OUTPUT,
    "data_mean": Option(None, tensor_or_none, "the 'mean' baseline, e.g. per-channel mean (C, 1, 1)"),
    "bounds": Option((0.0, 1.0), bounds, "value range of the 'uniform' baseline"),
    "blur_sigma": Option(4.0, positive_float, "Gaussian σ (pixels) of the 'blur' baseline"),
}
SMOOTH_OPTIONS = {
    "n_samples": Option(25, int_at_least(1), "noisy copies per input"),
    "noise_level": Option(0.15, nonnegative_float, "σ as a fraction of each image's value range"),
    "sigma": Option(None, optional_nonnegative_float, "absolute σ in input units (overrides noise_level)"),
}
PATTERN_OPTIONS = {
    "patterns": Option(REQUIRED, patterns, "fitted Patterns (fit_patterns) or a saved file"),
    "output": PATTERN_OUTPUT,
}
SCALE = Option("output", choice(SCALES), "seed the backward with the output value or with one")
VARIANT = Option("attribution", choice(VARIANTS), "attribution (W⊙a₊) or net (a₊, PatternNet)")
