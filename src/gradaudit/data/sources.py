"""Real image datasets from IDX files under the data root: MNIST and Fashion-MNIST.

Every known file is md5-checked before it is parsed, and downloaded from its canonical URL
when it is missing and the network answers (see :mod:`gradaudit.data.download`). A missing
or corrupt file raises one :class:`~gradaudit.DataError` that names the file and the fix.
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .._validation import DataError, check_bool
from .download import FileSpec, ensure_files, md5sum
from .imageset import ImageSet
from .registry import register

__all__ = ["IDX_SETS", "FileSpec", "idx_files", "idx_tensors", "load_fmnist", "load_mnist",
           "md5sum", "read_idx"]

_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/")
_FMNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# Per dataset: folder under the data root, URL prefixes, (file, md5) pairs per split,
# class names, and the per-channel mean/std of the *train* split (the same for both splits,
# so a model normalizes test inputs with train statistics).
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
        "mean": (0.1307,),
        "std": (0.3081,),
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
        "mean": (0.2860,),
        "std": (0.3530,),
    },
}


def idx_files(name: str, split: str) -> tuple[FileSpec, FileSpec]:
    """The (images, labels) file specs of an IDX dataset's split, with full download URLs."""
    spec = IDX_SETS[name]
    pairs = spec["files"][split]  # type: ignore[index]
    urls = spec["urls"]
    return tuple(  # type: ignore[return-value]
        FileSpec(file, md5, tuple(prefix + file for prefix in urls))  # type: ignore[union-attr]
        for file, md5 in pairs
    )


def _gunzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        # wbits 31: gzip container; decompressobj lets a truncated stream be detected.
        inflater = zlib.decompressobj(31)
        out = inflater.decompress(raw)
    except (OSError, zlib.error) as err:
        raise DataError(f"Corrupt data file {path}: not a gzip file ({err}).") from None
    if not inflater.eof:
        raise DataError(f"Corrupt data file {path}: the gzip stream is truncated.")
    return out


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (ubyte data) into a numpy array.

    Raises:
        DataError: Not gzip, truncated, or not an IDX ubyte file.
    """
    raw = _gunzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(
            f"Corrupt data file {path}: wrong IDX magic number {raw[:4].hex() or 'none'} "
            "(expected 00 00 08 0N, an unsigned-byte IDX file)."
        )
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
def _load_idx_cached(
    name: str, split: str, root: str, verify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    folder = Path(root) / str(IDX_SETS[name]["folder"])
    img_path, lbl_path = ensure_files(folder, idx_files(name, split), name, verify=verify)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Corrupt data files {img_path} and {lbl_path}: images of shape {images.shape} "
            f"and labels of shape {labels.shape} do not match (expected (N, H, W) and (N,))."
        )
    n_classes = len(IDX_SETS[name]["classes"])  # type: ignore[arg-type]
    if labels.size and int(labels.max()) >= n_classes:
        raise DataError(
            f"Corrupt data file {lbl_path}: label {int(labels.max())} is outside 0..{n_classes - 1}."
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def idx_tensors(
    name: str, split: str, root: Path, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached (x float32 (N,1,28,28) in [0,1], y int64); callers must not modify them."""
    return _load_idx_cached(name, split, str(root.resolve()), verify)


def _load_idx(name: str, split: str, root: Path, verify: bool) -> ImageSet:
    check_bool(verify, "verify", f"load({name!r})")
    x, y = idx_tensors(name, split, root, verify)
    spec = IDX_SETS[name]
    meta = {"name": name, "split": split, "classes": list(spec["classes"]),  # type: ignore[call-overload]
            "bounds": (0.0, 1.0), "mean": spec["mean"], "std": spec["std"]}
    return ImageSet(x.clone(), y.clone(), meta)


@register("mnist")
def load_mnist(split: str, root: Path, seed: int, verify: bool = True) -> ImageSet:
    """MNIST (LeCun et al. 1998): 1×28×28 in [0, 1], 60 000 train / 10 000 test, 10 classes.

    Files: ``<root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``, downloaded from
    the PyTorch mirror when missing and online. ``meta["mean"]``/``["std"]`` are the train
    split's statistics (0.1307, 0.3081) for ``models.build(..., normalize=...)``.

    Args:
        verify: Check each file's md5 against the published one (default). Pass False only
            for your own copies in the IDX format (e.g. a subset).
    """
    return _load_idx("mnist", split, root, verify)


@register("fmnist")
def load_fmnist(split: str, root: Path, seed: int, verify: bool = True) -> ImageSet:
    """Fashion-MNIST (Xiao et al. 2017): 1×28×28 in [0, 1], 60 000 / 10 000, 10 classes.

    Files: ``<root>/fashion-mnist/`` with the same names as MNIST. Train statistics
    (0.2860, 0.3530) in ``meta``. ``verify`` as for :func:`load_mnist`.
    """
    return _load_idx("fmnist", split, root, verify)
