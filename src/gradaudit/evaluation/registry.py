"""The metric registry and one entry point, :func:`evaluate`.

Each evaluation is declared once, as data (a :class:`MetricSpec`): its function, its
options (default, check, help), whether a higher score is better, and what it needs
(``model``, ``maps``, ``block_masks``, ``retraining``, ``proxy``), its display label and
its text table. ``gradaudit --help``, ``gradaudit metrics``, the command of each metric
that needs no more than a model, maps and block masks (:data:`MAP_NEEDS`: ``gradaudit
road``, ``perturb``, ``leakage``, ...; ``cli.py`` builds them from the spec), the studies'
``metrics`` and the contract tests read this registry; adding a metric is its module and
one :func:`register` call.

Option defaults are read from the metric function's own signature, and the list-valued
options are checked by the function's own checks, so neither can drift from the function.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .._progress import EVAL_QUIET
from .._registry import Registry
from .._validation import (
    ParameterError,
    ParameterTypeError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    unknown_name,
)
from ..attribution.options import Option
from ..data.imageset import ImageSet
from ..masking.fill import FILLS
from ..masking.ranking import RANK_BY
from ..training.ensemble import PRECISIONS
from . import perturbation as _perturbation
from . import sample_quality as _sample_quality
from . import tables as _tables
from ._curves import check_fractions
from .degradation import BOTH, PATCH_FILLS, PATCH_SCORES, degradation
from .diffroar import diffroar, kar, roar
from .leakage import leakage
from .retrain_setup import RETRAIN_FILLS, check_levels
from .road import ROAD_ORDERS, ROAD_RANKS, road

__all__ = ["MAP_NEEDS", "METRICS", "NEEDS", "MetricOption", "MetricSpec", "Subject", "evaluate", "get_metric",
           "register"]

NEEDS = ("model", "maps", "block_masks", "retraining", "proxy")
MAP_NEEDS = frozenset({"model", "maps", "block_masks"})
"""What a metric computed from one model and its test maps may need (no retraining, no
proxy): these metrics run as their own command and in a study's ``metrics``."""
Check = Callable[[Any, str, str], Any]


@dataclass(frozen=True)
class MetricOption(Option):
    """A metric option (default, check, help); ``many``: the value is a list of numbers
    (the command line reads it comma-separated, e.g. ``--ks 5,10``)."""

    many: bool = False


@dataclass(frozen=True)
class Subject:
    """What a metric evaluates: a model, its test images and their attribution maps, and,
    for the metrics that need them, the training set and its maps (retraining), the
    architecture and recipe to retrain, and a proxy classifier (sample quality).

    ``data_mean`` is the training images' per-channel mean (``fill="mean"``); ``bounds`` the
    input box that imputed values are clamped into (None: no clamp; ROAD)."""

    test: ImageSet
    model: nn.Module | None = None
    maps: torch.Tensor | None = None
    train: ImageSet | None = None
    train_maps: torch.Tensor | None = None
    spec: Any = None
    recipe: Any = None
    proxy: nn.Module | None = None
    data_mean: torch.Tensor | None = None
    bounds: tuple[float, float] | None = None


@dataclass(frozen=True)
class MetricSpec:
    """A registered evaluation.

    Attributes:
        name: Registry name (as in the CLI and the studies' results).
        function: The library function (``gradaudit.evaluation.<name>``).
        compute: ``compute(subject, options, seed, device, quiet) -> result`` with a
            ``to_dict()`` (JSON-able, holding ``higher_is_better``).
        options: Option name -> :class:`~gradaudit.attribution.options.Option`.
        higher_is_better: The score's direction (with the default options).
        needs: What :class:`Subject` must hold, a subset of :data:`NEEDS`.
        summary: One line for ``--help``.
        source: Paper reference.
        label: Name in printed headers (default ``name``).
        table: result -> plain-text table (default
            :func:`~gradaudit.evaluation.tables.summary_table`).
    """

    name: str
    function: Callable[..., Any]
    compute: Callable[[Subject, dict[str, Any], int, Any, bool], Any]
    options: Mapping[str, Option] = field(default_factory=dict)
    higher_is_better: bool = True
    needs: frozenset[str] = frozenset({"model", "maps"})
    summary: str = ""
    source: str = ""
    label: str = ""
    table: Callable[[Any], str] = _tables.summary_table

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "needs", frozenset(self.needs))
        object.__setattr__(self, "label", self.label or self.name)
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ParameterError(f"MetricSpec {self.name!r}: unknown needs {sorted(unknown)}; valid: {', '.join(NEEDS)}.")
        if not isinstance(self.higher_is_better, bool):
            raise ParameterTypeError(f"MetricSpec {self.name!r}: higher_is_better must be a bool.")

    def resolve(self, given: Mapping[str, Any], caller: str) -> dict[str, Any]:
        """The options to use: ``given`` checked, the rest at their defaults."""
        for key in given:
            if key not in self.options:
                raise ParameterError(unknown_name("option", key, self.options, caller=caller)
                                     if self.options else f"{caller} takes no options. Got {key!r}.")
        return {key: opt.check(given[key], key, caller) if key in given else opt.default
                for key, opt in self.options.items()}


METRICS: Registry[MetricSpec] = Registry("metric")


def register(spec: MetricSpec, *, replace: bool = False) -> MetricSpec:
    """Add ``spec`` to :data:`METRICS` (a taken name is refused unless ``replace``)."""
    return METRICS.add(spec.name, spec, replace=replace)


def get_metric(name: str) -> MetricSpec:
    """The spec of metric ``name``, or a ParameterError naming the closest valid one."""
    return METRICS.lookup(name)


def _missing(spec: MetricSpec, s: Subject) -> list[str]:
    have = {
        "model": s.model is not None,
        "maps": s.maps is not None,
        "block_masks": {"null_mask", "signal_mask"} <= set(s.test.per_image),
        "retraining": s.train is not None and s.train_maps is not None and s.spec is not None
        and s.recipe is not None,
        "proxy": s.proxy is not None,
    }
    return [need for need in NEEDS if need in spec.needs and not have[need]]


_NEED_HELP = {
    "model": "the model",
    "maps": "the test images' attribution maps",
    "block_masks": "a data set with block masks (per_image null_mask and signal_mask, e.g. blockmnist)",
    "retraining": "train, train_maps, spec and recipe (it retrains models)",
    "proxy": "a proxy classifier",
}


def evaluate(
    metric: str,
    subject: Subject,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    quiet: bool = EVAL_QUIET,
    **options: Any,
) -> Any:
    """Run the registered metric ``metric`` on ``subject``.

    Everything is checked before any work starts: the name (``Did you mean …?``), what the
    metric needs, and each option (unknown names and bad values).

    Returns:
        The metric's result object (``to_dict()`` gives its JSON form).

    Raises:
        ParameterError: Unknown metric or option, a bad option value, or a missing input.
    """
    spec = get_metric(metric)
    caller = f"evaluate({metric!r})"
    if not isinstance(subject, Subject):
        raise ParameterTypeError(f"The 'subject' parameter of {caller} must be a Subject. Got {type(subject).__name__}.")
    missing = _missing(spec, subject)
    if missing:
        raise ParameterError(f"{caller} needs {'; '.join(_NEED_HELP[m] for m in missing)}.")
    check_int(seed, "seed", caller, 0)
    opts = spec.resolve(options, caller)
    return spec.compute(subject, opts, seed, device, quiet)


# ---- checks ---------------------------------------------------------------------------

def _defaults(function: Callable[..., Any]) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _choice(choices: Sequence[str]) -> Check:
    def check(v: Any, n: str, c: str) -> Any:
        return check_choice(v, n, c, tuple(choices))

    check.choices = tuple(choices)  # type: ignore[attr-defined]  # (listed in the commands' --help)
    return check


def _int_at_least(low: int) -> Check:
    return lambda v, n, c: check_int(v, n, c, low)


def _optional_int(v: Any, n: str, c: str) -> int | None:
    return None if v is None else check_int(v, n, c, 1)


def _float(v: Any, n: str, c: str) -> float:
    return check_float(v, n, c)


def _nonnegative(v: Any, n: str, c: str) -> float:
    return check_float(v, n, c, 0.0)


def _fractions(high: float) -> Check:
    def check(v: Any, n: str, c: str) -> tuple[float, ...]:
        if isinstance(v, str | bytes) or not isinstance(v, Sequence) or not v:
            raise ParameterTypeError(f"The {n!r} parameter of {c} must be a non-empty list of numbers "
                                     f"in (0, {high:g}]. Got {v!r}.")
        return tuple(check_float(f, n, c, 0.0, high, low_open=True) for f in v)
    return check


def _optional_fractions(v: Any, n: str, c: str) -> tuple[float, ...] | None:
    return None if v is None else check_fractions(v, n, c)


_MANY = "many"  # a table entry (check, help, _MANY): the option is a list of numbers


def _options(function: Callable[..., Any], table: Mapping[str, tuple[Any, ...]]) -> dict[str, Option]:
    """Options with the defaults of ``function``'s signature."""
    defaults = _defaults(function)
    return {name: MetricOption(defaults[name], check, help, many=_MANY in rest)
            for name, (check, help, *rest) in table.items()}


# ---- the metrics ----------------------------------------------------------------------

def _retrain_compute(function: Callable[..., Any]) -> Callable[..., Any]:
    def compute(s: Subject, o: dict[str, Any], seed: int, device: Any, quiet: bool) -> Any:
        return function(s.model, s.train, s.test, attributions=(s.train_maps, s.maps), spec=s.spec,
                        recipe=s.recipe, seed=seed, device=device, quiet=quiet, **o)
    return compute


def _retrain_options(function: Callable[..., Any]) -> dict[str, Option]:
    return _options(function, {
        "levels": (lambda v, n, c: check_levels(v, c), "fractions of coordinates kept (top-k) or removed", _MANY),
        "seeds": (_int_at_least(1), "retrains per level and arm"),
        "fill": (_choice(RETRAIN_FILLS), "value of the removed coordinates"),
        "rank": (_choice(RANK_BY), "rank single coordinates or channel-summed pixels"),
        "random": (check_bool, "also retrain on random rankings (the control)"),
        "mask_only": (check_bool, "also retrain on the keep-masks alone (the leakage control)"),
        "max_stack": (_int_at_least(1), "retrains trained together as one stacked model"),
        "precision": (_choice(PRECISIONS), "arithmetic of the retrains: fp32, or on CUDA tf32 / bf16"),
    })


_RETRAIN_NEEDS = frozenset({"retraining"})
_SHAH = "Shah, Jain & Netrapalli, NeurIPS 2021, arXiv:2102.12781"
_HOOKER = "Hooker et al., 'A Benchmark for Interpretability Methods in Deep Neural Networks', NeurIPS 2019"

register(MetricSpec(
    "diffroar", diffroar, _retrain_compute(diffroar), _retrain_options(diffroar),
    higher_is_better=True, needs=_RETRAIN_NEEDS, source=_SHAH, label="DiffROAR", table=_tables.diffroar_table,
    summary="top-k minus bottom-k retrained accuracy per level (retrains models)"))
register(MetricSpec(
    "roar", roar, _retrain_compute(roar), _retrain_options(roar),
    higher_is_better=False, needs=_RETRAIN_NEEDS, source=_HOOKER, label="ROAR",
    summary="retrained accuracy after removing the top-k coordinates (retrains models)"))
register(MetricSpec(
    "kar", kar, _retrain_compute(kar), _retrain_options(kar),
    higher_is_better=True, needs=_RETRAIN_NEEDS, source=_HOOKER, label="KAR",
    summary="retrained accuracy keeping only the top-k coordinates (retrains models)"))


def _road_compute(s: Subject, o: dict[str, Any], seed: int, device: Any, quiet: bool) -> Any:
    return road(s.model, s.test.x, s.test.y, s.maps, mean=s.data_mean, bounds=s.bounds, seed=seed, device=device,
                quiet=quiet, **o)


register(MetricSpec(
    "road", road, _road_compute, _options(road, {
        "percentages": (check_fractions, "fractions of coordinates removed", _MANY),
        "order": (_choice(tuple(ROAD_ORDERS)), "morf, lerf or both"),
        "fill": (_choice(FILLS), "imputation of removed coordinates"),
        "rank": (_choice(ROAD_RANKS), "rank channel-summed pixels or single coordinates"),
        "absolute": (check_bool, "rank by |attribution|"),
        "noise": (_nonnegative, "σ of the imputation noise"),
    }), higher_is_better=True, label="ROAD", table=_tables.road_table,
    source="Rong et al., 'A Consistent and Efficient Evaluation Strategy for Attribution Methods', ICML 2022",
    summary="accuracy after removing and imputing ranked coordinates, no retraining (LeRF − MoRF area)"))


def _pixel(s: Subject, o: dict[str, Any], seed: int, device: Any, quiet: bool) -> Any:
    return _perturbation.pixel_perturbation(s.model, s.test.x, s.test.y, s.maps, seed=seed, device=device,
                                            quiet=quiet, **o)


register(MetricSpec(
    "pixel-perturbation", _perturbation.pixel_perturbation, _pixel, _options(_perturbation.pixel_perturbation, {
        "fractions": (_optional_fractions, "fractions of pixels removed (None: 25 log-spaced in [0.01, 1])", _MANY),
        "order": (_choice(_perturbation.ORDERS), "remove least (lerf) or most (morf) salient first"),
        "fill": (_choice(tuple(_perturbation.PIXEL_FILLS)), "value of the removed pixels"),
        "value": (_float, "the constant fill value"),
        "score": (_choice(tuple(_perturbation.PIXEL_SCORES)), "pixel score from the map's channels"),
    }), higher_is_better=True, source="Srinivas & Fleuret, ICLR 2021, §5.2.1", label="pixel perturbation",
    table=_tables.pixel_table,
    summary="accuracy as the least (or most) salient pixels are removed, no retraining"))


def _patches(s: Subject, o: dict[str, Any], seed: int, device: Any, quiet: bool) -> Any:
    return degradation(s.model, s.test.x, s.test.y, s.maps, seed=seed, device=device, quiet=quiet, **o)


register(MetricSpec(
    "degradation", degradation, _patches, _options(degradation, {
        "patch_size": (_int_at_least(1), "side of the square patches"),
        "n_patches": (_optional_int, "patches removed (None: all)"),
        "order": (_choice(tuple(BOTH)), "morf, lerf or both"),
        "fill": (_choice(tuple(PATCH_FILLS)), "value of the removed patches"),
        "patch_score": (_choice(tuple(PATCH_SCORES)), "patch score from the map"),
    }), higher_is_better=True, label="patch degradation", table=_tables.degradation_table,
    source="Schulz et al., 'Restricting the Flow: Information Bottlenecks for Attribution', ICLR 2020",
    summary="accuracy as ranked patches are removed (LeRF − MoRF area), no retraining"))


def _leak(s: Subject, o: dict[str, Any], seed: int, device: Any, quiet: bool) -> Any:
    masks = s.test.per_image
    return leakage(s.maps, masks["null_mask"], masks["signal_mask"], seed=seed, **o)


register(MetricSpec(
    "leakage", leakage, _leak, _options(leakage, {
        "ks": (_fractions(100.0), "top-k% of coordinates checked against the null block", _MANY),
    }), higher_is_better=False, needs=frozenset({"maps", "block_masks"}), source=_SHAH,
    label="Null-block leakage", table=_tables.leakage_table,
    summary="share of the attribution on BlockMNIST's null block (0 = none)"))


def _gan(s: Subject, o: dict[str, Any], seed: int, device: Any, quiet: bool) -> Any:
    n = o.pop("n")
    n = len(s.test) if n is None else n
    check_int(n, "n", "evaluate('gan-test')", 1, len(s.test))
    targets = _sample_quality.gan_test_targets(n, labels=s.test.y)
    bounds = tuple(s.test.meta.get("bounds", (0.0, 1.0)))
    return _sample_quality.gan_test_score(s.model.to(device), s.proxy.to(device), targets,
                                          shape=tuple(s.test.x.shape[1:]), bounds=bounds, seed=seed,
                                          quiet=quiet, **o)


_GAN = _sample_quality.GAN_TEST_DEFAULTS
register(MetricSpec(
    "gan-test", _sample_quality.gan_test_score, _gan, {
        "n": Option(None, _optional_int, "samples, one per test label in order (None: every test image)"),
        "steps": Option(_GAN["steps"], _int_at_least(1), "activation-maximisation steps"),
        "step_size": Option(_GAN["step_size"], _nonnegative, "step size η"),
        "weight_decay": Option(_GAN["weight_decay"], _nonnegative, "pull towards the range's centre"),
    }, higher_is_better=True, needs=frozenset({"model", "proxy"}),
    source="Shmelkov et al., ECCV 2018; Srinivas & Fleuret, ICLR 2021, Table 1",
    summary="sample quality: a proxy's accuracy on the model's class-conditional samples"))
