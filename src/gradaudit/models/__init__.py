"""Model architectures and the name registry (``models.build``)."""

from .layers import Normalize, activation
from .registry import MODELS, build
from .spec import ModelSpec

__all__ = ["MODELS", "ModelSpec", "Normalize", "activation", "build"]
