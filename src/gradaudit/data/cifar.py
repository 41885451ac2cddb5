"""CIFAR-10 and CIFAR-100 from the python pickle batches or CIFAR-10's binary version.

Under the data root the loaders look for an extracted folder first (``cifar-10-batches-py/``,
``cifar-100-python/``; for CIFAR-10 also the binary version's ``cifar-10-batches-bin/``),
then for a published tarball (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``,
``cifar-10-binary.tar.gz``), read in place without extracting, then download the python
tarball when online. Pickles are read with a restricted unpickler that only rebuilds numpy
arrays, so a tampered file cannot run code. Binary batches are fixed-size records (1 label
byte, then 1024 red, 1024 green and 1024 blue bytes, row-major 32×32), parsed with one
``np.frombuffer`` per file; the binary version has no meta file, so its class names are
built in.
"""

from __future__ import annotations

import functools
import io
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import DataError, check_bool, check_choice
from .download import FileSpec, check_md5, download, missing_error
from .imageset import ImageSet
from .registry import register

__all__ = ["CIFAR_BIN_SETS", "CIFAR_SETS", "RECORD_BYTES", "CifarBinLayout", "CifarLayout", "load_cifar10",
           "load_cifar100", "read_binary_batch", "read_pickle"]

_TORONTO = "https://www.cs.toronto.edu/~kriz/"


def _toronto(name: str, md5: str) -> FileSpec:
    """A tarball published on the CIFAR page: its URL is the page's folder + its name."""
    return FileSpec(name, md5, (_TORONTO + name,))


def _cifar10_train(md5s: tuple[str, ...], suffix: str = "") -> tuple[FileSpec, ...]:
    """CIFAR-10's training batches ``data_batch_1`` … ``data_batch_5`` (+ ``suffix``)."""
    return tuple(FileSpec(f"data_batch_{i}{suffix}", md5) for i, md5 in enumerate(md5s, 1))


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant's files live and which pickle keys hold what."""

    folder: str
    tarball: FileSpec
    meta: FileSpec
    batches: Mapping[str, tuple[FileSpec, ...]]
    label_keys: Mapping[str, tuple[str, str]]  # label type -> (batch key, meta key of names)
    sizes: Mapping[str, int]  # label type -> number of classes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR_SETS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        tarball=_toronto("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
        meta=FileSpec("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        batches={
            "train": _cifar10_train((
                "c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec",
                "54ebc095f3ab1f0389bbae665268c751", "634d18415352ddfa80567beed471001a",
                "482c414d41f54cd18b22e5b47cb7c3cb")),
            "test": (FileSpec("test_batch", "40351d587109b95175f43aff81a1287e"),),
        },
        label_keys={"fine": ("labels", "label_names")},
        sizes={"fine": 10},
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        tarball=_toronto("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
        meta=FileSpec("meta", "7973b15100ade9c7d40fb424638fde48"),
        batches={
            "train": (FileSpec("train", "16019d7e3df5f24257cddd939b257f8d"),),
            "test": (FileSpec("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        },
        label_keys={"fine": ("fine_labels", "fine_label_names"),
                    "coarse": ("coarse_labels", "coarse_label_names")},
        sizes={"fine": 100, "coarse": 20},
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}



@dataclass(frozen=True)
class CifarBinLayout:
    """Where a CIFAR variant's binary-version files live, and its built-in class names."""

    folder: str
    tarball: FileSpec
    batches: Mapping[str, tuple[FileSpec, ...]]
    classes: tuple[str, ...]


# The binary version (``cifar-10-binary.tar.gz``): md5s of its published batch files.
_BIN_MD5 = {
    "train": ("5dd7e06a14cb22eb9f671a540d1b7c25", "5ea93a67294ea407fff1d09f752e9692",
              "942cd6a4bcdd0dd3c604fbe906cb4421", "ae636b3ba5c66a11e91e8cb52e771fcb",
              "53f37980c15c3d472c316c40844f3f0d"),
    "test": ("803d5f7f4d78ea53de84dbe85f74fb6d",),
}
CIFAR_BIN_SETS: dict[str, CifarBinLayout] = {
    "cifar10": CifarBinLayout(
        folder="cifar-10-batches-bin",
        tarball=_toronto("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
        batches={"train": _cifar10_train(_BIN_MD5["train"], ".bin"),
                 "test": (FileSpec("test_batch.bin", _BIN_MD5["test"][0]),)},
        # The order of the label bytes (batches.meta.txt of the published archive).
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"),
    ),
}

RECORD_BYTES = 1 + 3 * 32 * 32  # one binary record: the label byte, then the pixel bytes

# The globals a CIFAR pickle may name: numpy array reconstruction only.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never does")
        return super().find_class(*target)


def _text(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key


def read_pickle(raw: bytes, label: str) -> dict[str, Any]:
    """Unpickle one CIFAR file (Python 2 or 3 pickle) into a dict with str keys.

    Raises:
        DataError: Not a pickle, names a forbidden global, or not a dict.
    """
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as err:  # any failure inside pickle is the file's fault
        raise DataError(
            f"Corrupt data file {label}: not a CIFAR python pickle ({type(err).__name__}: {err})."
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"Corrupt data file {label}: wrong pickle layout, expected a dict, got "
            f"{type(obj).__name__}."
        )
    return {_text(k): v for k, v in obj.items()}


def _layout_error(label: str, what: str) -> DataError:
    return DataError(f"Corrupt data file {label}: wrong pickle layout, {what}.")


def _batch(d: dict[str, Any], label: str, key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The (uint8 (n, 3, 32, 32), int64 (n,)) arrays of one batch dict, validated."""
    data, labels = d.get("data"), d.get(key)
    if data is None or labels is None:
        raise _layout_error(label, f"expected keys 'data' and {key!r}, got {sorted(d)}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        shown = getattr(data, "shape", type(data).__name__)
        raise _layout_error(label, f"'data' must be a uint8 array of shape (N, 3072), got {shown}")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise _layout_error(label, f"{key!r} must be a list of ints") from None
    if y.shape[0] != data.shape[0]:
        raise _layout_error(label, f"{data.shape[0]} images but {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise _layout_error(label, f"{key!r} holds {int(y.max())}, outside 0..{n_classes - 1}")
    return data.reshape(-1, 3, 32, 32), y


def _class_names(d: dict[str, Any], label: str, key: str, n_classes: int) -> list[str]:
    names = d.get(key)
    if not isinstance(names, list | tuple) or len(names) != n_classes:
        raise _layout_error(label, f"expected {key!r} with {n_classes} class names")
    return [str(_text(n)) for n in names]


def read_binary_batch(raw: bytes, label: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The (uint8 (n, 3, 32, 32), int64 (n,)) arrays of one binary-version batch file.

    Raises:
        DataError: The size is not a whole number of records, or a label byte is too large.
    """
    if not raw or len(raw) % RECORD_BYTES:
        raise DataError(
            f"Corrupt data file {label}: {len(raw)} bytes is not a whole number of "
            f"{RECORD_BYTES}-byte CIFAR binary records (1 label byte, then 3072 pixel bytes), so "
            "it is truncated or not a CIFAR binary batch. Put a fresh copy of it there."
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    y = records[:, 0].astype(np.int64)
    if int(y.max()) >= n_classes:
        raise DataError(
            f"Corrupt data file {label}: label byte {int(y.max())} is outside 0..{n_classes - 1}."
        )
    return records[:, 1:].reshape(-1, 3, 32, 32), y


Files = dict[str, tuple[bytes, str]]  # file name -> (raw bytes, display label)


def _read_folder(folder: Path, specs: list[FileSpec], name: str, verify: bool) -> Files:
    out = {}
    for spec in specs:
        path = folder / spec.name
        if verify:
            check_md5(path, spec.md5, name)
        out[spec.name] = (path.read_bytes(), str(path))
    return out


def _read_tarball(tar_path: Path, folder: str, specs: list[FileSpec], url: str) -> Files:
    """Read the needed members (``folder/<name>``) of the tarball in one sequential pass."""
    wanted = {f"{folder}/{s.name}": s.name for s in specs}
    out: Files = {}
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    if f is not None:
                        out[wanted[member.name]] = (f.read(), f"{tar_path}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(
            f"Corrupt data file {tar_path}: not a complete .tar.gz archive ({err}). Delete it "
            f"and download {url} again."
        ) from None
    lost = [m for m, n in wanted.items() if n not in out]
    if lost:
        raise DataError(f"Corrupt data file {tar_path}: it has no member {', '.join(lost)}.")
    return out


def _lacking(folder: Path, specs: list[FileSpec], version: str, always: bool) -> str:
    """'the folder F with a, b' (the files it lacks); 'the folder F' if absent and not always."""
    if not always and not folder.is_dir():
        return f"the folder {folder}{version}"
    lacking = [s.name for s in specs if not (folder / s.name).is_file()]
    return f"the folder {folder}{version} with {', '.join(lacking)}"


def _read_files(name: str, split: str, root: Path, verify: bool) -> tuple[str, Files]:
    """Which version the data root holds ("python" or "binary"), and its split's raw files.

    The python version's files are the split's batches and the meta file; the binary
    version's, the split's ``.bin`` batches. Folders win over tarballs, the python version
    over the binary one; with neither, the python tarball is downloaded when online.
    """
    layout, binary = CIFAR_SETS[name], CIFAR_BIN_SETS.get(name)
    specs = [*layout.batches[split], layout.meta]
    folder = root / layout.folder
    if all((folder / s.name).is_file() for s in specs):
        return "python", _read_folder(folder, specs, name, verify)
    bin_specs = list(binary.batches[split]) if binary else []
    bin_folder = root / binary.folder if binary else None
    if binary and bin_folder and all((bin_folder / s.name).is_file() for s in bin_specs):
        return "binary", _read_folder(bin_folder, bin_specs, name, verify)
    tar_path = root / layout.tarball.name
    if not tar_path.is_file() and binary and (root / binary.tarball.name).is_file():
        bin_tar = root / binary.tarball.name
        if verify:
            check_md5(bin_tar, binary.tarball.md5, name)
        return "binary", _read_tarball(bin_tar, binary.folder, bin_specs, binary.tarball.urls[0])
    if not tar_path.is_file():
        why = download(layout.tarball, tar_path)
        if why is not None:
            places = [_lacking(folder, specs, "", True)]
            how = (f"Download {layout.tarball.urls[0]} (md5 {layout.tarball.md5}) into {root} "
                   f"(read as is, or extracted to {folder})")
            if binary and bin_folder:
                places.append(_lacking(bin_folder, bin_specs, " (binary version)", False))
                places.append(f"the tarball {root / binary.tarball.name}")
                how += (f", or the binary version {binary.tarball.urls[0]} (md5 "
                        f"{binary.tarball.md5}, read as is, or extracted to {bin_folder})")
            places.append(f"the tarball {tar_path}")
            what = f"neither {', nor '.join(places)} was found"
            raise missing_error(name, what, why, how + ".")
    elif verify:
        check_md5(tar_path, layout.tarball.md5, name)
    return "python", _read_tarball(tar_path, layout.folder, specs, layout.tarball.urls[0])


@functools.lru_cache(maxsize=4)
def _load_cached(
    name: str, split: str, root: str, verify: bool, labels: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], str]:
    layout = CIFAR_SETS[name]
    batch_key, names_key = layout.label_keys[labels]
    n_classes = layout.sizes[labels]
    version, files = _read_files(name, split, Path(root), verify)
    xs, ys = [], []
    if version == "binary":
        bin_layout = CIFAR_BIN_SETS[name]
        classes = list(bin_layout.classes)
        for spec in bin_layout.batches[split]:
            x, y = read_binary_batch(*files[spec.name], n_classes)
            xs.append(x)
            ys.append(y)
    else:
        raw, label = files[layout.meta.name]
        classes = _class_names(read_pickle(raw, label), label, names_key, n_classes)
        for spec in layout.batches[split]:
            raw, label = files[spec.name]
            x, y = _batch(read_pickle(raw, label), label, batch_key, n_classes)
            xs.append(x)
            ys.append(y)
    x_all = torch.from_numpy(np.concatenate(xs))
    return x_all, torch.from_numpy(np.concatenate(ys)), tuple(classes), version


def _load(name: str, split: str, root: Path, verify: bool, labels: str) -> ImageSet:
    caller = f"load({name!r})"
    check_bool(verify, "verify", caller)
    check_choice(labels, "labels", caller, tuple(CIFAR_SETS[name].label_keys))
    x, y, classes, version = _load_cached(name, split, str(root.resolve()), verify, labels)
    layout = CIFAR_SETS[name]
    meta = {"name": name, "split": split, "classes": list(classes), "bounds": (0.0, 1.0),
            "mean": layout.mean, "std": layout.std, "labels": labels, "version": version}
    return ImageSet(x.float().div_(255.0), y.clone(), meta)


@register("cifar10")
def load_cifar10(split: str, root: Path, seed: int, verify: bool = True) -> ImageSet:
    """CIFAR-10 (Krizhevsky 2009): 3×32×32 float32 in [0, 1], 50 000 train / 10 000 test.

    Reads the python version (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``) or the
    binary version (``cifar-10-batches-bin/`` or ``cifar-10-binary.tar.gz``), whichever the
    data root holds; ``meta["version"]`` says which ("python" or "binary"). Both hold the
    same images and labels in the same order.

    ``meta["mean"]``/``["std"]`` hold the protocol's normalization, mean (0.4914, 0.4822,
    0.4465) and std (0.2023, 0.1994, 0.2010), for ``models.build(..., normalize=(mean,
    std))``; the images themselves stay in [0, 1] so attacks and masks work in pixel space.

    Source: paper-protocol §6; reference code ``harshays/inputgradients`` ``data_utils.py``.

    Deviations:
        The reference normalizes the images themselves; here the normalization lives in the
        model, so ε and the bounds (0, 1) are in pixel units.

    Args:
        verify: Check md5s against the published ones (default); False for your own copies.
    """
    return _load("cifar10", split, root, verify, "fine")


@register("cifar100")
def load_cifar100(
    split: str, root: Path, seed: int, verify: bool = True, labels: str = "fine"
) -> ImageSet:
    """CIFAR-100 (Krizhevsky 2009): 3×32×32 float32 in [0, 1], 50 000 / 10 000 images.

    ``meta["mean"]``/``["std"]`` are the train split's per-channel statistics (0.5071,
    0.4865, 0.4409) / (0.2673, 0.2564, 0.2762).

    Args:
        verify: Check md5s against the published ones (default); False for your own copies.
        labels: "fine" (100 classes, default) or "coarse" (20 superclasses).
    """
    return _load("cifar100", split, root, verify, labels)
