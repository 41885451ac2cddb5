"""A serialisable description of a model: enough to rebuild it from a run directory."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from .registry import MODELS, build

__all__ = ["ModelSpec"]


class ModelSpec(BaseModel):
    """Name, shapes and options of a registered architecture (``models.build``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int = Field(ge=1)
    options: dict[str, Any] = Field(default_factory=dict)
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(MODELS.unknown(name))
        return name

    def build(self, seed: int | None = 0) -> nn.Module:
        """A freshly initialised model of this spec."""
        return build(self.name, self.input_shape, self.num_classes,
                     normalize=self.normalize, seed=seed, **self.options)
