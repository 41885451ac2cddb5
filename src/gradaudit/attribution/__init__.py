"""Attribution methods: one entry point, a registry by name, batched and seeded.

    >>> from gradaudit import attribution
    >>> maps = attribution.attribute("ig", model, x, target=y, n_steps=64)
    >>> opts = attribution.fit_options("pattern-ig", model, train)   # fitted patterns
    >>> maps = attribution.attribute("pattern-ig", model, x, target=y, **opts)

``METHODS`` maps each name to its :class:`MethodSpec` (function, options with defaults,
stochastic?, multiplies input?, source, applicability). ``applicable(method, model)`` says
whether a method can attribute a model (for "not applicable" cells of a study).
"""

from . import methods as _methods  # noqa: F401  (registers the built-in methods)
from ._core import OBJECTIVES
from .captum_adapter import from_captum
from .integrated import BASELINES, RULES, completeness_gap
from .options import REQUIRED, Option, option
from .pattern import Patterns, fit_patterns
from .registry import METHODS, MethodSpec, applicable, attribute, fit_options, get_method, register

__all__ = [
    "BASELINES",
    "METHODS",
    "OBJECTIVES",
    "REQUIRED",
    "RULES",
    "MethodSpec",
    "Option",
    "Patterns",
    "applicable",
    "attribute",
    "completeness_gap",
    "fit_options",
    "fit_patterns",
    "from_captum",
    "get_method",
    "option",
    "register",
]
