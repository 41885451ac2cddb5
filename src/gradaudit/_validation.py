"""User errors and the argument checks that raise them.

Every public entry point validates its arguments once, with these helpers, so that every
message follows one template (parameter, caller, allowed, given):

    The 'n_steps' parameter of attribute('ig') must be an int in [1, inf). Got 0.

The CLI maps :class:`GradauditError` to one line on stderr and exit status 2.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "DataError",
    "GradauditError",
    "ParameterError",
    "ParameterTypeError",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_shape",
    "format_validation_error",
    "unknown_name",
]


class GradauditError(Exception):
    """An error caused by the user's input; the message says what is wrong and what to do."""


class ParameterError(GradauditError, ValueError):
    """An argument or config value outside its allowed set."""


class ParameterTypeError(GradauditError, TypeError):
    """An argument of the wrong type."""


class DataError(GradauditError, OSError):
    """A data file that is missing, corrupt or of the wrong layout."""


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    left = "(" if (low is None or low_open) else "["
    right = ")" if (high is None or high_open) else "]"
    return f"{left}{lo}, {hi}{right}"


def check_int(
    value: Any,
    name: str,
    caller: str,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Return ``value`` if it is an int in [low, high], else raise a ParameterError."""
    allowed = f"an int in {_interval(low, high, False, False)}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterTypeError(
            f"The {name!r} parameter of {caller} must be {allowed}. Got {value!r}."
        )
    if (low is not None and value < low) or (high is not None and value > high):
        raise ParameterError(f"The {name!r} parameter of {caller} must be {allowed}. Got {value!r}.")
    return value


def check_float(
    value: Any,
    name: str,
    caller: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` if it is a finite real in the interval, else raise."""
    allowed = f"a float in {_interval(low, high, low_open, high_open)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterTypeError(
            f"The {name!r} parameter of {caller} must be {allowed}. Got {value!r}."
        )
    v = float(value)
    bad = math.isnan(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        raise ParameterError(f"The {name!r} parameter of {caller} must be {allowed}. Got {value!r}.")
    return v


def check_bool(value: Any, name: str, caller: str) -> bool:
    """Return ``value`` if it is a bool, else raise a ParameterTypeError."""
    if not isinstance(value, bool):
        raise ParameterTypeError(f"The {name!r} parameter of {caller} must be a bool. Got {value!r}.")
    return value


def unknown_name(kind: str, given: str, valid: Iterable[str], *, caller: str | None = None) -> str:
    """The message for an unknown name: lists the valid ones and the closest match."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(given), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = f" of {caller}" if caller else ""
    return f"Unknown {kind}{where}: {given!r}.{hint} Valid: {', '.join(valid)}."


def check_choice(value: Any, name: str, caller: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise with the closest match."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ParameterError(
            f"The {name!r} parameter of {caller} must be one of "
            f"{', '.join(repr(c) for c in choices)}. Got {value!r}.{hint}"
        )
    return value


def check_shape(actual: Sequence[int], expected: Sequence[int | None], name: str, caller: str) -> None:
    """Raise if ``actual`` does not match ``expected`` (None matches any size)."""
    ok = len(actual) == len(expected) and all(
        e is None or a == e for a, e in zip(actual, expected, strict=True)
    )
    if not ok:
        shown = tuple("*" if e is None else e for e in expected)
        raise ParameterError(
            f"The {name!r} argument of {caller} must have shape {shown}. Got {tuple(actual)}."
        )


def format_validation_error(err: Exception, title: str | None = None) -> str:
    """One line for a pydantic ValidationError: each bad field, why, and the value given.

    ``title`` names what was validated ("config of study 'blockmnist'"; default: the model's
    class name).
    """
    errors = getattr(err, "errors", None)
    if errors is None:
        return str(err)
    title = title or getattr(err, "title", "config")
    parts = []
    for e in errors():
        loc = ".".join(str(p) for p in e.get("loc", ())) or "value"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ").rstrip(".")
        given = e.get("input")
        said = "got " in msg.lower() or repr(given) in msg  # the message already shows the value
        shown = "" if said or isinstance(given, dict) else f" (got {given!r})"
        parts.append(f"{loc} {msg}{shown}" if msg.startswith("must ") else f"{loc}: {msg}{shown}")
    return f"Invalid {title}: " + "; ".join(parts) + "."
