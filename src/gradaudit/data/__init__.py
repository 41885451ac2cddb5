"""Datasets as in-memory tensors: ``data.load(name, split, root, seed)`` -> :class:`ImageSet`."""

from . import blockmnist, cifar, imagenet, sources, synthetic  # noqa: F401  (register loaders)
from .imageset import ImageSet
from .registry import DATASETS, data_root, load

__all__ = ["DATASETS", "ImageSet", "data_root", "load"]
