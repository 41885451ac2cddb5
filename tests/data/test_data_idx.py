"""MNIST and Fashion-MNIST: real files (via the conftest fixtures), and small IDX files for errors."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gradaudit import DataError, ParameterTypeError, data

MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
FMNIST_COUNTS = {"train": [6000] * 10, "test": [1000] * 10}


def _check_real(s: data.ImageSet, name: str, split: str, counts: list[int]) -> None:
    n = sum(counts)
    assert s.x.shape == (n, 1, 28, 28) and s.x.dtype == torch.float32
    assert s.y.shape == (n,) and s.y.dtype == torch.int64
    assert s.x.min().item() == 0.0 and s.x.max().item() == 1.0
    if split == "test":  # values are k/255 exactly
        assert torch.equal((s.x * 255).round() / 255, s.x)
    assert s.y.bincount(minlength=10).tolist() == counts
    assert s.meta["name"] == name and s.meta["split"] == split and s.num_classes == 10
    assert s.bounds == (0.0, 1.0)


def test_mnist_real(mnist_train: data.ImageSet, mnist_test: data.ImageSet) -> None:
    _check_real(mnist_train, "mnist", "train", MNIST_COUNTS["train"])
    _check_real(mnist_test, "mnist", "test", MNIST_COUNTS["test"])


def test_fmnist_real(fmnist_train: data.ImageSet, fmnist_test: data.ImageSet) -> None:
    _check_real(fmnist_train, "fmnist", "train", FMNIST_COUNTS["train"])
    _check_real(fmnist_test, "fmnist", "test", FMNIST_COUNTS["test"])
    assert fmnist_train.meta["classes"][9] == "Ankle boot"


def test_meta_normalization_is_the_train_statistics(
    mnist_train: data.ImageSet, fmnist_train: data.ImageSet, fmnist_test: data.ImageSet
) -> None:
    for s in (mnist_train, fmnist_train):
        (mean,), (std,) = s.meta["mean"], s.meta["std"]
        actual_std, actual_mean = torch.std_mean(s.x)
        assert abs(actual_mean.item() - mean) < 1e-4
        assert abs(actual_std.item() - std) < 1e-4
    assert fmnist_test.meta["mean"] == fmnist_train.meta["mean"]  # test uses train statistics


def test_loads_are_independent_copies(mnist_root: Path) -> None:
    a = data.load("mnist", "test", root=mnist_root)
    a.x.zero_()
    b = data.load("mnist", "test", root=mnist_root)
    assert b.x.max().item() == 1.0


def test_slice_assets_match_real_files(
    mnist_slice: data.ImageSet, fmnist_slice: data.ImageSet,
    mnist_test: data.ImageSet, fmnist_test: data.ImageSet,
) -> None:
    for sl, full in ((mnist_slice, mnist_test), (fmnist_slice, fmnist_test)):
        assert len(sl) == 300 and sl.y.bincount().tolist() == [30] * 10
        idx = sl.per_image["test_index"]
        assert torch.equal(sl.x, full.x[idx]) and torch.equal(sl.y, full.y[idx])


def test_asset_script_rebuilds_the_slice(mnist_root: Path, tmp_path: Path) -> None:
    import runpy

    from gradaudit._io import load_tensors

    script = Path(__file__).parents[2] / "scripts" / "make_test_assets.py"
    module = runpy.run_path(str(script))
    out = tmp_path / "slice.safetensors"
    module["build"](mnist_root, out)
    committed = Path(__file__).parents[1] / "assets" / "mnist_fmnist_slice.safetensors"
    assert committed.stat().st_size < 1_000_000
    new, old = load_tensors(out), load_tensors(committed)
    assert sorted(new) == sorted(old)
    assert all(torch.equal(new[k], old[k]) for k in new)


def test_small_idx_files_load_with_verify_false(small_idx: Callable) -> None:
    root, images, labels = small_idx("fmnist", "test", 20)
    s = data.load("fmnist", "test", root=root, verify=False)
    assert torch.equal(s.x[:, 0], torch.from_numpy(images).float() / 255)
    assert s.y.tolist() == labels.tolist()


def test_own_copy_fails_md5_by_default(small_idx: Callable) -> None:
    root, _, _ = small_idx("mnist", "test", 20)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*md5.*verify=False"):
        data.load("mnist", "test", root=root)


def _corrupt(root: Path, payload: bytes, *, raw: bool = False) -> Path:
    path = root / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(payload if raw else gzip.compress(payload))
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda gz, idx: (gz[: len(gz) // 2], True), "truncated"),
        (lambda gz, idx: (b"plain bytes, not gzip", True), "not a gzip file"),
        (lambda gz, idx: (b"\x00\x00\x0d\x03" + idx[4:], False), "wrong IDX magic"),
        (lambda gz, idx: (idx[:-7], False), "IDX header says shape"),
        (lambda gz, idx: (idx[:10], False), "truncated IDX header"),
    ],
    ids=["truncated-gzip", "not-gzip", "wrong-magic", "short-data", "short-header"],
)
def test_corrupt_idx_names_the_file(
    small_idx: Callable, formats: SimpleNamespace, damage: Callable, message: str
) -> None:
    root, images, _ = small_idx("mnist", "test", 20)
    idx = formats.idx_bytes(images)
    payload, raw = damage(gzip.compress(idx), idx)
    path = _corrupt(root, payload, raw=raw)
    with pytest.raises(DataError, match=message) as err:
        data.load("mnist", "test", root=root, verify=False)
    assert str(path) in str(err.value)
    assert err.value.__cause__ is None  # raised by the loader, not chained to a numpy/gzip error
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_mismatched_images_and_labels(small_idx: Callable, formats: SimpleNamespace) -> None:
    root, images, _ = small_idx("mnist", "test", 20)
    _corrupt(root, formats.idx_bytes(images[:5]))
    with pytest.raises(DataError, match="do not match"):
        data.load("mnist", "test", root=root, verify=False)


def test_label_out_of_range(small_idx: Callable, formats: SimpleNamespace) -> None:
    root, _, labels = small_idx("mnist", "test", 20)
    labels = labels.copy()
    labels[3] = 12
    path = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    formats.write_idx_gz(path, formats.idx_bytes(labels))
    with pytest.raises(DataError, match="label 12"):
        data.load("mnist", "test", root=root, verify=False)


def test_verify_must_be_bool(small_idx: Callable) -> None:
    root, _, _ = small_idx("mnist", "test", 20)
    with pytest.raises(ParameterTypeError, match="'verify'"):
        data.load("mnist", "test", root=root, verify="no")


def test_gzip_payload_is_not_an_array(tmp_path: Path) -> None:
    """An IDX file holding non-ubyte data (e.g. int32, magic 0x0C) is rejected by name."""
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(b"\x00\x00\x0c\x01" + np.array([2], ">u4").tobytes()
                                   + np.zeros(2, ">i4").tobytes()))
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match="t10k-"):
        data.load("mnist", "test", root=tmp_path, verify=False)
