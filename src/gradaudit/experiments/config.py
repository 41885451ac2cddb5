"""Study configs: pydantic-validated, loaded from defaults, a --quick preset and YAML.

Precedence (later wins): the study's defaults, its quick preset (``--quick``), the YAML
file (``--config``), then ``--set key=value`` overrides. The merged config is validated
once, before any work starts; an unknown key, a wrong type or an impossible value gives
one error naming the key.

Values that a library function will receive are checked by that function's own check,
declared beside the field (:func:`library_check`): ``diffroar.levels`` by DiffROAR's, a
study's ``leakage_ks`` by ``leakage``'s, ``road_percentages`` by ``road``'s, attribution
method and dataset names by their registries. So ``--set diffroar.levels=[0,0.5]`` fails
when the config is read, not after the models it would audit are trained.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from .._validation import GradauditError, ParameterError, format_validation_error

__all__ = [
    "DatasetName",
    "Fractions",
    "LeakageKs",
    "Levels",
    "MethodName",
    "StudyConfig",
    "build_config",
    "deep_merge",
    "library_check",
    "parse_override",
    "to_yaml",
]

# "The 'levels' parameter of diffroar() must ..." -> "must ...": the config key names the value.
_PREFIX = re.compile(r"^The '\w+' (?:parameter|argument) of \S+\s*")


def library_check(check: Callable[[Any], Any]) -> AfterValidator:
    """A field validator that runs ``check(value)``, the check of the library function the
    value is passed to, when the config is read; its error becomes the field's error.

    The function's own check is the one rule: a config cannot accept what the function
    will refuse hours later, nor refuse what it accepts.
    """

    def run(value: Any) -> Any:
        try:
            check(value)
        except GradauditError as err:
            raise ValueError(_PREFIX.sub("", str(err), count=1)) from None
        return value

    return AfterValidator(run)


def _levels(value: Any) -> None:
    from ..evaluation.retrain_setup import check_levels  # diffroar's own check

    check_levels(value, "diffroar()")


def _leakage_ks(value: Any) -> None:
    import torch

    from ..evaluation.leakage import _check  # leakage's own check

    # a stand-in map of 2**30 coordinates (no memory): k against the image size is checked at run time
    _check(torch.empty(()).expand(1, 1, 1, 1 << 30), value, 0)


def _fractions(value: Any) -> None:
    from ..evaluation._curves import check_fractions

    check_fractions(value, "percentages", "road()")


def _method(value: Any) -> None:
    from ..attribution import get_method

    get_method(value)


def _dataset(value: Any) -> None:
    from ..data import DATASETS

    DATASETS.lookup(value)


Levels = Annotated[list[float], library_check(_levels)]
"""DiffROAR's fractions k kept, checked by ``diffroar``'s own check."""
LeakageKs = Annotated[list[float], library_check(_leakage_ks)]
"""Top-k levels in percent, checked by ``leakage``'s own check."""
Fractions = Annotated[list[float], library_check(_fractions)]
"""Fractions removed (ROAD), checked by ``road``'s own check."""
MethodName = Annotated[str, library_check(_method)]
"""A registered attribution method."""
DatasetName = Annotated[str, library_check(_dataset)]
"""A registered dataset."""


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
    label: str | None = None,
) -> C:
    """Merge defaults, quick preset, YAML file and overrides; validate once.

    ``label`` names the config in errors ("config of study 'blockmnist'")."""
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
        loc = err.errors()[0].get("loc", ())
        cut = next((i for i, p in enumerate(loc) if isinstance(p, int)), len(loc))  # --set sets whole lists
        key = ".".join(str(p) for p in loc[:cut]) or "KEY"
        where = f"--set {key}=VALUE" + (f" or in {path}" if path is not None else "")
        raise ParameterError(f"{format_validation_error(err, label)} Change it with {where}.") from None


def to_yaml(config: BaseModel) -> str:
    """The config as YAML (what ``--print-config`` shows and what ``--config`` reads)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
