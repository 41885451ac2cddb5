"""Real image datasets from files under the data root: MNIST and Fashion-MNIST (IDX .gz).

Every known file is md5-checked before it is parsed. A missing or corrupt file raises one
:class:`~gradaudit.DataError` that names the file and says how to provide it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .._validation import DataError
from .imageset import ImageSet
from .registry import register

__all__ = ["IDX_SETS", "FileSpec", "md5sum", "read_idx"]


class FileSpec:
    """A published file: its name, md5 and download URLs."""

    def __init__(self, name: str, md5: str, urls: tuple[str, ...]) -> None:
        self.name, self.md5, self.urls = name, md5, urls


_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/")
_FMNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

IDX_SETS: dict[str, dict[str, object]] = {
    "mnist": {
        "folder": "mnist",
        "urls": _MNIST_URLS,
        "files": {
            "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                      ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
            "test": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                     ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
        },
        "classes": [str(i) for i in range(10)],
    },
    "fmnist": {
        "folder": "fashion-mnist",
        "urls": _FMNIST_URLS,
        "files": {
            "train": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                      ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
            "test": (("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                     ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
        },
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot"],
    },
}


def md5sum(path: Path) -> str:
    """The hex md5 of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _require(path: Path, md5: str | None, dataset: str) -> Path:
    if not path.is_file():
        raise DataError(
            f"Missing data file {path} for dataset {dataset!r}. Put the published file there, "
            f"or point --data-root / GRADAUDIT_DATA at the folder that holds "
            f"{path.parent.name}/{path.name}."
        )
    if md5 is not None and md5sum(path) != md5:
        raise DataError(
            f"Corrupt data file {path}: its md5 is not the published {md5}. "
            f"Delete it and put a fresh copy of {path.name} there."
        )
    return path


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (ubyte data) into a numpy array.

    Raises:
        DataError: Not gzip, truncated, or not an IDX ubyte file.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"Corrupt data file {path}: not a complete gzip file ({err}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"Corrupt data file {path}: wrong IDX magic number (expected ubyte IDX).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"Corrupt data file {path}: truncated IDX header.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(
            f"Corrupt data file {path}: IDX header says shape {shape} but holds "
            f"{len(raw) - header} bytes."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=8)
def _load_idx_cached(name: str, split: str, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    spec = IDX_SETS[name]
    folder = Path(root) / str(spec["folder"])
    (img_name, img_md5), (lbl_name, lbl_md5) = spec["files"][split]  # type: ignore[index]
    images = read_idx(_require(folder / img_name, img_md5, name))
    labels = read_idx(_require(folder / lbl_name, lbl_md5, name))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Corrupt data files in {folder}: images {images.shape} and labels {labels.shape} "
            "do not match."
        )
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _load_idx(name: str, split: str, root: Path) -> ImageSet:
    x, y = _load_idx_cached(name, split, str(root.resolve()))
    meta = {"name": name, "split": split, "classes": IDX_SETS[name]["classes"],
            "bounds": (0.0, 1.0), "mean": (float(x.mean()),), "std": (float(x.std()),)}
    return ImageSet(x.clone(), y.clone(), meta)


@register("mnist")
def load_mnist(split: str, root: Path, seed: int) -> ImageSet:
    """MNIST (LeCun et al. 1998): 1×28×28 in [0, 1], 60 000 train / 10 000 test, 10 classes."""
    return _load_idx("mnist", split, root)


@register("fmnist")
def load_fmnist(split: str, root: Path, seed: int) -> ImageSet:
    """Fashion-MNIST (Xiao et al. 2017): 1×28×28 in [0, 1], 60 000 / 10 000, 10 classes."""
    return _load_idx("fmnist", split, root)
