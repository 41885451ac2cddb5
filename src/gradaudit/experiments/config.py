"""Study configs: pydantic-validated, loaded from defaults, a --quick preset and YAML.

Precedence (later wins): the study's defaults, its quick preset (``--quick``), the YAML
file (``--config``), then ``--set key=value`` overrides. The merged config is validated
once, before any work starts; an unknown key, a wrong type or an impossible value gives
one error naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .._validation import ParameterError, format_validation_error

__all__ = ["StudyConfig", "build_config", "deep_merge", "parse_override", "to_yaml"]


class StudyConfig(BaseModel):
    """Base of every study config: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0


C = TypeVar("C", bound=StudyConfig)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, merging nested mappings key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """'a.b=3' -> {'a': {'b': 3}} (the value is parsed as YAML)."""
    if "=" not in text:
        raise ParameterError(f"--set expects key=value (e.g. epochs=3). Got {text!r}.")
    key, _, raw = text.partition("=")
    value: Any = yaml.safe_load(raw) if raw.strip() else ""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParameterError(f"Config file {path} does not exist. Pass an existing YAML file to --config.")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParameterError(f"Config file {path} is not valid YAML: {err}".replace("\n", " ")) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ParameterError(f"Config file {path} must hold a mapping of keys to values, not {type(loaded).__name__}.")
    return loaded


def build_config(
    cls: type[C],
    *,
    quick: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> C:
    """Merge defaults, quick preset, YAML file and overrides; validate once."""
    merged: dict[str, Any] = {}
    if quick:
        merged = deep_merge(merged, quick)
    if path is not None:
        merged = deep_merge(merged, _read_yaml(Path(path)))
    for text in overrides:
        merged = deep_merge(merged, parse_override(text))
    try:
        return cls.model_validate(merged)
    except ValidationError as err:
        raise ParameterError(format_validation_error(err)) from None


def to_yaml(config: BaseModel) -> str:
    """The config as YAML (what ``--print-config`` shows and what ``--config`` reads)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
