"""ImageNet-10 (``mixed_10``) at 112 px from a local ImageNet tree.

Layout under the data root::

    imagenet/
      train/<wnid>/*.JPEG      one folder per ImageNet class (ILSVRC2012 train)
      val/<wnid>/*.JPEG        the validation images sorted into the same folders
      wordnet.is_a.txt         WordNet hierarchy ("parent child" wnids)
      words.txt                wnid<TAB>names

ImageNet cannot be downloaded automatically (its terms require registration), so a missing
tree raises one :class:`~gradaudit.DataError` that says how to arrange it.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._progress import progress
from .._validation import DataError, check_int
from .download import missing_error, not_found
from .imageset import ImageSet
from .registry import register
from .wordnet import GROUPS, read_hierarchy, superclass_members

__all__ = ["CROP", "RESIZE", "load_imagenet10", "preprocess"]

RESIZE, CROP = 128, 112
_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_SPLIT_FOLDERS = {"train": "train", "test": "val"}
_HOW = ("Get ILSVRC2012 from https://image-net.org/download (registration required), put "
        "the train and val images into "
        "imagenet/train/<wnid>/ and imagenet/val/<wnid>/ (one folder per class), and the "
        "hierarchy files words.txt and wordnet.is_a.txt (http://image-net.org/download-API) "
        "into imagenet/.")


def preprocess(image: Image.Image, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """Resize the shorter side to ``resize`` (bilinear), centre-crop ``crop``: uint8 (3, c, c).

    Formula: torchvision's Resize(resize) + CenterCrop(crop) on an RGB PIL image; the longer
    side becomes int(resize · long / short), the crop starts at round((size − crop) / 2).
    """
    rgb = image.convert("RGB")
    w, h = rgb.size
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    if size != (w, h):
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    w, h = rgb.size
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)
    rgb = rgb.crop((left, top, left + crop, top + crop))
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return preprocess(image)
    except Exception as err:  # any PIL failure is the file's fault
        raise DataError(
            f"Corrupt data file {path}: not a readable image ({type(err).__name__}: {err}). "
            "Delete or replace it."
        ) from None


def _image_files(folder: Path, cap: int | None) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"Missing data for dataset 'imagenet10': class folder {folder} not found. "
                        "Every chosen class needs a folder in train/ and in val/. " + _HOW)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS)
    if not files:
        raise DataError(f"Missing data for dataset 'imagenet10': no images in {folder}.")
    return files[:cap] if cap is not None else files


def _selection(base: Path) -> tuple[list[list[str]], list[str]]:
    """Per superclass, the chosen wnids; and all class wnids (train folders) sorted."""
    needed = [base / "train", base / "wordnet.is_a.txt", base / "words.txt"]
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise missing_error("imagenet10", not_found(missing),
                            "ImageNet cannot be downloaded automatically", _HOW)
    classes = sorted(p.name for p in (base / "train").iterdir()
                     if p.is_dir() and p.name.startswith("n"))
    hierarchy = read_hierarchy(base / "wordnet.is_a.txt", base / "words.txt")
    groups = [w for w, _ in GROUPS["mixed_10"]]
    return superclass_members(hierarchy, classes, groups, balanced=True), classes


@functools.lru_cache(maxsize=2)
def _load_cached(
    split: str, root: str, max_per_class: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]:
    base = Path(root) / "imagenet"
    members, classes = _selection(base)
    class_index = {w: i for i, w in enumerate(classes)}
    files, labels, inet = [], [], []
    for label, wnids in enumerate(members):
        for wnid in wnids:
            found = _image_files(base / _SPLIT_FOLDERS[split] / wnid, max_per_class)
            files += found
            labels += [label] * len(found)
            inet += [class_index[wnid]] * len(found)
    # A numpy buffer: torch's per-image copies of small tensors are ~100× slower on a busy CPU.
    x = np.empty((len(files), 3, CROP, CROP), dtype=np.uint8)
    with progress() as bar, ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        task = bar.add_task(f"imagenet10 {split}", total=len(files))
        for i, arr in enumerate(pool.map(_decode, files)):
            x[i] = arr
            bar.advance(task)
    wnids = tuple(w for m in members for w in m)
    return torch.from_numpy(x), torch.tensor(labels, dtype=torch.int64), torch.tensor(inet, dtype=torch.int64), wnids


@register("imagenet10")
def load_imagenet10(
    split: str, root: Path, seed: int, max_per_class: int | None = None
) -> ImageSet:
    """ImageNet-10: the ``mixed_10`` superclasses of ImageNet, 3×112×112 float32 in [0, 1].

    Ten WordNet superclasses (dog, bird, insect, monkey, car, feline, truck, fruit, fungus,
    boat; labels 0..9 in that order). With ``balanced=True`` semantics each keeps its first
    n_min ImageNet classes by class index (sorted wnid order), n_min = the smallest
    superclass's class count: 6 (boat) on full ImageNet, so 60 classes, ≈78 000 train and
    3 000 val images. Both splits get the protocol's test preprocessing, Resize(128) +
    CenterCrop(112), with no mean/std normalization.

    Memory: the full train split is ≈11.7 GB as float32 (≈2.9 GB while decoding as uint8);
    ``max_per_class`` caps the images per ImageNet class (the first ones in file-name order),
    e.g. 100 → 6 000 images, 0.9 GB. The decoded uint8 images of the last two loads stay
    cached in the process, so a second load of the same split is a copy, not a decode.

    Source: paper-protocol §3.4 and §6; Engstrom et al., robustness library (2019),
    ``CustomImageNet`` with ``common_superclass_wnid('mixed_10')``.

    Reference code: ``MadryLab/robustness`` ``robustness/tools/imagenet_helpers.py``;
    ``harshays/inputgradients`` ``imagenet_utils.get_custom_imagenet_loaders``.

    Deviations:
        The reference augments train images on the fly (RandomResizedCrop, flip, colour
        jitter). An in-memory set holds the deterministic test view of every image; training
        augmentation belongs to the training recipe. Class index = position in the sorted
        list of train/ wnid folders (the ILSVRC index when all 1000 are present); the
        reference reads it from ``imagenet_class_index.json``.

    Args:
        max_per_class: At most this many images per ImageNet class (None: all).

    Returns:
        An ImageSet with ``per_image["imagenet_class"]`` (the original class index) and
        ``meta["wnids"]`` (the chosen ImageNet classes in label order).

    Raises:
        DataError: Missing tree or hierarchy files, a class folder missing from val/, or an
            unreadable image (named).
    """
    if max_per_class is not None:
        check_int(max_per_class, "max_per_class", "load('imagenet10')", low=1)
    x, y, inet, wnids = _load_cached(split, str(root.resolve()), max_per_class)
    meta = {"name": "imagenet10", "split": split, "group": "mixed_10",
            "classes": [name for _, name in GROUPS["mixed_10"]],
            "superclass_wnids": [w for w, _ in GROUPS["mixed_10"]],
            "wnids": list(wnids), "bounds": (0.0, 1.0), "max_per_class": max_per_class}
    return ImageSet(x.float().div_(255.0), y.clone(), meta, {"imagenet_class": inet.clone()})
