"""Canonical JSON of a job's config and the short hash that names its directory.

Two configs that are equal as values get the same hash, whatever their key order, container
types (tuple or list), or the object that carried them (a pydantic model, a dataclass, a
dict). Floats are written with 15 significant digits, so arithmetic noise in the last bit
(``0.1 + 0.2`` vs ``0.3``) does not split a job in two, and an integral float is written as
an int (``1.0`` and ``1`` are the same value). Booleans stay booleans.

:func:`config_hash` is the package's one config hash: the run store names its job folders
with ``config_hash(kind, config)``; the folders a caller names (:class:`~gradaudit.runs.store.RunFolder`:
DiffROAR/ROAR/KAR retrain groups) keep the hash they always had, ``config_hash(None, config,
exact=True, length=16)`` (the config alone, floats as given), so existing folders resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from enum import Enum
from typing import Any

from .._validation import ParameterTypeError

__all__ = ["HASH_LENGTH", "canonical", "canonical_json", "config_hash"]

HASH_LENGTH = 12  # hex characters (48 bits): collisions are also caught by comparing configs


def _float(value: float, where: str, exact: bool) -> float | int:
    if not math.isfinite(value):
        raise ParameterTypeError(
            f"The job config value at {where} must be a finite number. Got {value!r}; "
            "use None for a missing value."
        )
    if exact:
        return value
    rounded = float(f"{value:.15g}")
    return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded


def canonical(obj: Any, where: str = "config", *, exact: bool = False) -> Any:
    """``obj`` as plain JSON types (dict, list, str, int, float, bool, None), normalised.

    Accepts pydantic models (dumped in JSON mode), dataclasses, mappings with string keys,
    lists, tuples, sets (sorted), paths, enums, numpy scalars and small tensors (as lists).
    ``exact=True`` keeps floats as they are (what a job is given); the default rounds them
    as described above (what is hashed).

    Raises:
        ParameterTypeError: a value of another type (a function, an open file, a module...),
            naming where it sits in the config.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float(obj, where, exact)
    if hasattr(obj, "model_dump"):
        return canonical(obj.model_dump(mode="json"), where, exact=exact)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return canonical(fields, where, exact=exact)
    if isinstance(obj, Mapping):
        return _mapping(obj, where, exact)
    if isinstance(obj, list | tuple):
        return [canonical(v, f"{where}[{i}]", exact=exact) for i, v in enumerate(obj)]
    if isinstance(obj, set | frozenset):
        items = [canonical(v, f"{where}{{}}", exact=exact) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, Enum):
        return canonical(obj.value, where, exact=exact)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy values, torch tensors
        return canonical(obj.tolist(), where, exact=exact)
    raise ParameterTypeError(
        f"The job config value at {where} has type {type(obj).__name__}, which cannot be "
        "hashed. Use JSON types (numbers, strings, lists, dicts), pydantic models or "
        "dataclasses; refer to data and models by name and seed, not by object."
    )


def _mapping(obj: Mapping[Any, Any], where: str, exact: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ParameterTypeError(
                f"The job config at {where} must have string keys. Got the key {key!r}."
            )
        out[key] = canonical(value, f"{where}.{key}", exact=exact)
    return out


def canonical_json(obj: Any, *, exact: bool = False) -> str:
    """The canonical JSON text of ``obj``: sorted keys, no spaces, ASCII, normalised floats
    (``exact=True``: floats as given)."""
    return json.dumps(canonical(obj, exact=exact), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def config_hash(kind: str | None, config: Any, *, exact: bool = False, length: int = HASH_LENGTH) -> str:
    """The short sha256 (hex) of the canonical JSON of ``{"kind": kind, "config": config}``.

    Args:
        kind: The job's kind; None hashes ``config`` alone.
        config: What to hash (see :func:`canonical`).
        exact: Hash floats as given instead of rounded to 15 significant digits.
        length: Hex characters kept (1 to 64).
    """
    text = canonical_json(config if kind is None else {"kind": kind, "config": config}, exact=exact)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:length]
