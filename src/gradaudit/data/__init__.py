"""Datasets as in-memory tensors: ``data.load(name, split, root, seed)`` -> :class:`ImageSet`."""

from . import blockmnist, cifar, imagenet, sources, synthetic  # noqa: F401  (register loaders)
from .imageset import ImageSet, as_imageset
from .registry import DATASETS, data_root, load

__all__ = ["DATASETS", "ImageSet", "as_imageset", "data_root", "load"]
