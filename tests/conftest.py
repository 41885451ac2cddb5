"""Shared fixtures. Real MNIST / Fashion-MNIST come from the data root ($GRADAUDIT_DATA);
tests that need them skip with a clear reason when the files are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from gradaudit import data
from gradaudit.data.sources import IDX_SETS

ASSETS = Path(__file__).parent / "assets"


def _idx_present(name: str) -> Path | None:
    root = os.environ.get("GRADAUDIT_DATA")
    if not root:
        return None
    spec = IDX_SETS[name]
    folder = Path(root) / str(spec["folder"])
    files = [f for pair in spec["files"].values() for f, _ in pair]  # type: ignore[union-attr]
    return Path(root) if all((folder / f).is_file() for f in files) else None


def require_idx(name: str) -> Path:
    """The data root holding ``name``, or skip the test saying what is missing."""
    root = _idx_present(name)
    if root is None:
        pytest.skip(
            f"{name} files not found: set GRADAUDIT_DATA to a folder holding "
            f"{IDX_SETS[name]['folder']}/*-ubyte.gz (CI points it at ../shared/data)."
        )
    return root


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    return require_idx("mnist")


@pytest.fixture(scope="session")
def fmnist_root() -> Path:
    return require_idx("fmnist")


@pytest.fixture(scope="session")
def mnist_train(mnist_root: Path) -> data.ImageSet:
    return data.load("mnist", "train", root=mnist_root)


@pytest.fixture(scope="session")
def mnist_test(mnist_root: Path) -> data.ImageSet:
    return data.load("mnist", "test", root=mnist_root)


@pytest.fixture(scope="session")
def fmnist_train(fmnist_root: Path) -> data.ImageSet:
    return data.load("fmnist", "train", root=fmnist_root)


@pytest.fixture(scope="session")
def fmnist_test(fmnist_root: Path) -> data.ImageSet:
    return data.load("fmnist", "test", root=fmnist_root)


def _asset_slice(name: str) -> data.ImageSet:
    """A small real slice of the test set (tests/assets, rebuilt by scripts/make_test_assets.py)."""
    from gradaudit._io import load_tensors

    t = load_tensors(ASSETS / "mnist_fmnist_slice.safetensors")
    meta = {"name": name, "split": "test", "classes": IDX_SETS[name]["classes"],
            "bounds": (0.0, 1.0)}
    return data.ImageSet(t[f"{name}_x"].float() / 255.0, t[f"{name}_y"], meta,
                         {"test_index": t[f"{name}_index"]})


@pytest.fixture(scope="session")
def mnist_slice() -> data.ImageSet:
    """300 real MNIST test images (30 per class); needs no data root."""
    return _asset_slice("mnist")


@pytest.fixture(scope="session")
def fmnist_slice() -> data.ImageSet:
    """300 real Fashion-MNIST test images (30 per class); needs no data root."""
    return _asset_slice("fmnist")


@pytest.fixture
def one_thread():
    """One torch thread: stacked and alone training are then bitwise equal, a 1-CPU Ray task
    or a job subprocess computes the same, and tiny models run faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    """Tests never rely on the global RNG, but seed it so any slip is reproducible."""
    torch.manual_seed(0)
