"""Evaluation of attributions: retraining protocols (DiffROAR, ROAR, KAR) with leakage controls."""

from .diffroar import LEVELS, ROAR_LEVELS, diffroar, kar, roar
from .leakage import LeakageResult, leakage
from .perturbation import DegradationResult, PerturbationResult, degradation, pixel_perturbation
from .registry import METRICS, MetricSpec, Subject, evaluate, get_metric
from .retrain_results import Accuracies, DiffROARCurve, DiffROARResult, RetrainResult
from .road import RoadResult, road
from .sample_quality import activation_maximization, gan_test, gan_test_score, gan_test_targets

__all__ = [
    "LEVELS",
    "METRICS",
    "ROAR_LEVELS",
    "Accuracies",
    "DegradationResult",
    "DiffROARCurve",
    "DiffROARResult",
    "LeakageResult",
    "MetricSpec",
    "PerturbationResult",
    "RetrainResult",
    "RoadResult",
    "Subject",
    "activation_maximization",
    "degradation",
    "diffroar",
    "evaluate",
    "gan_test",
    "gan_test_score",
    "gan_test_targets",
    "get_metric",
    "kar",
    "leakage",
    "pixel_perturbation",
    "road",
    "roar",
]
