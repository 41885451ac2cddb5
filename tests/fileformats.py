"""Writers of small data files in the real formats (IDX .gz, Python-2 CIFAR pickles,
tarballs, an ImageNet tree with its WordNet files), shared by the data and study tests."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# ---------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed unsigned-byte IDX file holding ``array``."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_gz(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload))
    return path


# ---------------------------------------------------------------- Python-2 pickles


def _py2_str(text: str | bytes) -> bytes:
    raw = text.encode("latin1") if isinstance(text, str) else text
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(raw)) + raw  # BINSTRING


def _py2_int(value: int) -> bytes:
    return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)


def _py2_array(a: np.ndarray) -> bytes:
    """A numpy uint8 array as numpy 1.x under Python 2 pickled it (protocol 2)."""
    shape = b"(" + b"".join(_py2_int(s) for s in a.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str("u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
             + b"(" + _py2_int(3) + _py2_str("|") + b"NNN" + _py2_int(-1) + _py2_int(-1)
             + _py2_int(0) + b"tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
            + _py2_int(0) + b"\x85" + _py2_str("b") + b"\x87R"
            + b"(" + _py2_int(1) + shape + dtype + b"\x89"
            + _py2_str(np.ascontiguousarray(a).tobytes()) + b"tb")


def _py2_value(v: Any) -> bytes:
    if isinstance(v, np.ndarray):
        return _py2_array(v)
    if isinstance(v, str | bytes):
        return _py2_str(v)
    if isinstance(v, int):
        return _py2_int(v)
    if isinstance(v, list):
        return b"](" + b"".join(_py2_value(x) for x in v) + b"e"
    raise TypeError(type(v))


def py2_pickle(d: dict[str, Any]) -> bytes:
    """A dict pickled as Python 2's cPickle wrote the CIFAR batches (protocol 2, str keys)."""
    body = b"".join(_py2_str(k) + _py2_value(v) for k, v in d.items())
    return b"\x80\x02}(" + body + b"u."


# ---------------------------------------------------------------- CIFAR


def cifar_files(name: str, n: int = 12, seed: int = 0) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The files (name -> bytes) of a small CIFAR variant, and what they hold."""
    from gradaudit.data.cifar import CIFAR_SETS

    layout = CIFAR_SETS[name]
    rng = np.random.default_rng(seed)
    files, truth = {}, {}
    for split, specs in layout.batches.items():
        xs, labels = [], {k: [] for k in layout.label_keys}
        for spec in specs:
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            batch: dict[str, Any] = {"batch_label": f"batch {spec.name}", "data": data,
                                     "filenames": [f"img_{i}.png" for i in range(n)]}
            for kind, (key, _) in layout.label_keys.items():
                y = [int(v) for v in rng.integers(0, layout.sizes[kind], n)]
                batch[key] = y
                labels[kind] += y
            files[spec.name] = py2_pickle(batch)
            xs.append(data.reshape(n, 3, 32, 32))
        truth[split] = (np.concatenate(xs), {k: np.array(v) for k, v in labels.items()})
    meta: dict[str, Any] = {"num_cases_per_batch": n}
    for kind, (_, names_key) in layout.label_keys.items():
        meta[names_key] = [f"{kind}{i}" for i in range(layout.sizes[kind])]
    files[layout.meta.name] = py2_pickle(meta)
    truth["names"] = {k: meta[nk] for k, (_, nk) in layout.label_keys.items()}
    return files, truth


def write_cifar_folder(root: Path, name: str, files: dict[str, bytes]) -> Path:
    from gradaudit.data.cifar import CIFAR_SETS

    folder = root / CIFAR_SETS[name].folder
    folder.mkdir(parents=True, exist_ok=True)
    for file, raw in files.items():
        (folder / file).write_bytes(raw)
    return folder


def small_cifar10_root(root: Path, n: int = 60) -> Path:
    """A data root holding generated CIFAR-10 pickle batches of ``n`` images each (for studies)."""
    files, _ = cifar_files("cifar10", n=n)
    write_cifar_folder(root, "cifar10", files)
    return root


def write_cifar_tarball(root: Path, name: str, files: dict[str, bytes]) -> Path:
    from gradaudit.data.cifar import CIFAR_SETS

    layout = CIFAR_SETS[name]
    path = root / layout.tarball.name
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for file, raw in {"readme.html": b"<html></html>", **files}.items():
            info = tarfile.TarInfo(f"{layout.folder}/{file}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


# ---------------------------------------------------------------- ImageNet


def write_image(path: Path, array: np.ndarray) -> Path:
    """Save an (H, W, 3) uint8 array; the suffix picks the format (.JPEG or .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpeg", ".jpg") else "PNG"
    Image.fromarray(array).save(path, format=fmt)
    return path


def make_imagenet_tree(tmp_path: Path, per_class: int = 3, boat_classes: int = 2) -> dict[str, Any]:
    """A tiny ImageNet tree under tmp_path: every mixed_10 superclass with 2 or 3 classes under an
    intermediate synset, plus decoy classes; returns what the loader must select."""
    from gradaudit.data.wordnet import GROUPS

    base = tmp_path / "imagenet"
    is_a = [("n00000001", "n00000002")]  # an unrelated edge
    words = ["n00000001\troot", "n00000002\tthing"]
    expected: list[list[str]] = []
    rng = np.random.default_rng(0)
    for k, (sup, label) in enumerate(GROUPS["mixed_10"]):
        mid = f"n9{k:02d}00000"
        is_a.append((sup, mid))
        words += [f"{sup}\t{label}", f"{mid}\t{label} kind"]
        count = boat_classes if label == "boat" else 3
        # Class wnids listed out of order: the selection must sort by wnid.
        wnids = [f"n8{k:02d}{i:05d}" for i in reversed(range(count))]
        for w in wnids:
            is_a.append((mid, w))
            words.append(f"{w}\t{label} class")
        expected.append(sorted(wnids)[:boat_classes])
    # A class that WordNet lists under two parents: robustness keeps the last one (decoy).
    is_a += [("n90000000", "n70000001"), ("n00000002", "n70000001")]
    words.append("n70000001\tdecoy")
    (base).mkdir(parents=True)
    (base / "wordnet.is_a.txt").write_text("".join(f"{p} {c}\n" for p, c in is_a))
    (base / "words.txt").write_text("".join(w + "\n" for w in words))
    all_classes = sorted({c for _, c in is_a if c.startswith(("n8", "n7"))})
    for split in ("train", "val"):
        for w in all_classes:
            for i in range(per_class):
                h, wdt = (40 + 8 * i, 60) if i % 2 else (64, 48)
                arr = rng.integers(0, 256, (h, wdt, 3), dtype=np.uint8)
                write_image(base / split / w / f"{w}_{i}.JPEG", arr)
    return {"root": tmp_path, "expected": expected, "classes": all_classes}
