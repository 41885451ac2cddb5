"""Training: one fit loop for every recipe, PGD attacks, regularizers, stacked ensembles."""

from .attacks import eval_mode, pgd, robust_accuracy
from .fit import FitResult, fit, load_run, make_optimizer
from .metrics import accuracy, predict
from .recipe import Recipe
from .regularizers import REGULARIZERS
from .schedule import lr_at

__all__ = [
    "REGULARIZERS",
    "FitResult",
    "Recipe",
    "accuracy",
    "eval_mode",
    "fit",
    "load_run",
    "lr_at",
    "make_optimizer",
    "pgd",
    "predict",
    "robust_accuracy",
]
