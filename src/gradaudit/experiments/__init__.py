"""The paper's studies as named, configurable pipelines (``gradaudit run <study>``)."""

from . import blockmnist, cifar10, fmnist, imagenet10, main_job, srinivas, synthetic, zoo  # noqa: F401
from .base import STUDIES, Context, Study, register, render_report, run_study, study_config
from .config import StudyConfig, build_config

__all__ = [
    "STUDIES",
    "Context",
    "Study",
    "StudyConfig",
    "build_config",
    "register",
    "render_report",
    "run_study",
    "study_config",
]
