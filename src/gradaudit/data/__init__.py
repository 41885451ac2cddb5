"""Datasets as in-memory tensors: ``data.load(name, split, root, seed)`` -> :class:`ImageSet`."""

from . import sources  # noqa: F401  (registers the loaders)
from .imageset import ImageSet
from .registry import DATASETS, data_root, load

__all__ = ["DATASETS", "ImageSet", "data_root", "load"]
