"""Training: one fit loop for every recipe, PGD attacks, regularizers, stacked ensembles."""

from .._torch_utils import eval_mode
from .attacks import pgd, robust_accuracy
from .ensemble import Member, StackedFit, fit_stacked
from .fit import FitResult, check_model_fits, data_fingerprint, fit, load_run, make_optimizer
from .metrics import accuracy, predict
from .recipe import Recipe
from .regularizers import REGULARIZERS
from .schedule import lr_at

__all__ = [
    "REGULARIZERS",
    "FitResult",
    "Member",
    "Recipe",
    "StackedFit",
    "accuracy",
    "check_model_fits",
    "data_fingerprint",
    "eval_mode",
    "fit",
    "fit_stacked",
    "load_run",
    "lr_at",
    "make_optimizer",
    "pgd",
    "predict",
    "robust_accuracy",
]
