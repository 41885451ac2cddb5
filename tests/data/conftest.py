"""Fixtures of the data tests: no network, a local HTTP server, and the file writers of
``tests/fileformats.py`` (IDX .gz, Python-2 CIFAR pickles, tarballs, an ImageNet tree)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fileformats import (
    cifar_files,
    idx_bytes,
    make_imagenet_tree,
    py2_pickle,
    write_cifar_folder,
    write_cifar_tarball,
    write_idx_gz,
    write_image,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data tests never touch the network (download tests opt back in explicitly)."""
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An HTTP server on 127.0.0.1 over a fresh folder: yields (folder, base URL)."""
    folder = tmp_path / "server"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- IDX


@pytest.fixture
def small_idx(tmp_path: Path) -> Callable[[str, str, int], tuple[Path, np.ndarray, np.ndarray]]:
    """Write a small IDX split of an IDX dataset under tmp_path; returns (root, images, labels)."""
    from gradaudit.data.sources import IDX_SETS

    def make(name: str, split: str = "test", n: int = 20) -> tuple[Path, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        folder = tmp_path / str(IDX_SETS[name]["folder"])
        (img, _), (lbl, _) = IDX_SETS[name]["files"][split]  # type: ignore[index]
        write_idx_gz(folder / img, idx_bytes(images))
        write_idx_gz(folder / lbl, idx_bytes(labels))
        return tmp_path, images, labels

    return make


# ---------------------------------------------------------------- Python-2 pickles


# ---------------------------------------------------------------- ImageNet


@pytest.fixture
def imagenet_tree(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """A tiny ImageNet tree (see :func:`fileformats.make_imagenet_tree`) in tmp_path."""

    def make(per_class: int = 3, boat_classes: int = 2) -> dict[str, Any]:
        return make_imagenet_tree(tmp_path, per_class, boat_classes)

    return make


# ---------------------------------------------------------------- fixtures exposing the writers


@pytest.fixture
def formats() -> SimpleNamespace:
    """The writers above, for test modules (conftest functions cannot be imported)."""
    return SimpleNamespace(idx_bytes=idx_bytes, write_idx_gz=write_idx_gz, py2_pickle=py2_pickle,
                           cifar_files=cifar_files, cifar_folder=write_cifar_folder,
                           cifar_tarball=write_cifar_tarball, write_image=write_image)
