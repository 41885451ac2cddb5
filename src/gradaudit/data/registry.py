"""Dataset names -> loaders, and the data root."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._registry import Registry
from .._validation import ParameterError, check_choice, unknown_name
from .imageset import ImageSet

__all__ = ["DATASETS", "data_root", "load", "register"]

Loader = Callable[..., ImageSet]
DATASETS: Registry[Loader] = Registry("dataset")
SPLITS = ("train", "test")


def register(name: str, *, replace: bool = False) -> Callable[[Loader], Loader]:
    """Register ``fn(split, root, seed, **options) -> ImageSet`` under ``name`` (a taken
    name is refused unless ``replace``)."""
    return DATASETS.register(name, replace=replace)


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$GRADAUDIT_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("GRADAUDIT_DATA")
    return Path(env).expanduser() if env else Path("data")


def load(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> ImageSet:
    """Load a dataset as an in-memory :class:`ImageSet`.

    Args:
        name: One of ``DATASETS`` (mnist, fmnist, cifar10, cifar100, imagenet10,
            blockmnist, blockmnist-top, synthetic-v1, simplified-blockmnist).
        split: "train" or "test".
        root: The data root; None uses ``$GRADAUDIT_DATA`` or ``./data``.
        seed: Seed of generated datasets (BlockMNIST placement, synthetic draws).
        **options: Dataset-specific options (see each loader's docstring).

    Raises:
        ParameterError: Unknown name, split or option.
        DataError: A needed file is missing or corrupt.
    """
    fn = DATASETS.lookup(name)
    check_choice(split, "split", f"load({name!r})", SPLITS)
    accepted = [p for p in inspect.signature(fn).parameters if p not in ("split", "root", "seed")]
    for key in options:
        if key not in accepted:
            raise ParameterError(unknown_name("option", key, accepted, caller=f"load({name!r})"))
    return fn(split=split, root=data_root(root), seed=seed, **options)
