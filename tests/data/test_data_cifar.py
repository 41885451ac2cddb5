"""CIFAR-10/100 from small files written in the real formats (Python-2 pickles, folder or tarball)."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gradaudit import DataError, ParameterError, data
from gradaudit.data import cifar


def _expect(s: data.ImageSet, truth: dict, split: str, kind: str = "fine") -> None:
    images, labels = truth[split]
    assert s.x.dtype == torch.float32 and s.x.shape == (len(images), 3, 32, 32)
    assert torch.equal(s.x, torch.from_numpy(images).float() / 255)
    assert s.y.dtype == torch.int64 and s.y.tolist() == labels[kind].tolist()
    assert s.meta["classes"] == truth["names"][kind]
    assert s.bounds == (0.0, 1.0) and s.x.min() >= 0.0 and s.x.max() <= 1.0


@pytest.mark.parametrize("form", ["folder", "tarball"])
def test_cifar10_both_forms(tmp_path: Path, formats: SimpleNamespace, form: str) -> None:
    files, truth = formats.cifar_files("cifar10", n=8)
    getattr(formats, f"cifar_{form}")(tmp_path, "cifar10", files)
    train = data.load("cifar10", "train", root=tmp_path, verify=False)
    test = data.load("cifar10", "test", root=tmp_path, verify=False)
    _expect(train, truth, "train")
    _expect(test, truth, "test")
    assert len(train) == 5 * 8  # five batches, in order
    assert train.meta["mean"] == (0.4914, 0.4822, 0.4465)
    assert train.meta["std"] == (0.2023, 0.1994, 0.2010)


@pytest.mark.parametrize("form", ["folder", "tarball"])
def test_cifar100_fine_and_coarse(tmp_path: Path, formats: SimpleNamespace, form: str) -> None:
    files, truth = formats.cifar_files("cifar100", n=10, seed=1)
    getattr(formats, f"cifar_{form}")(tmp_path, "cifar100", files)
    fine = data.load("cifar100", "test", root=tmp_path, verify=False)
    coarse = data.load("cifar100", "test", root=tmp_path, verify=False, labels="coarse")
    _expect(fine, truth, "test", "fine")
    _expect(coarse, truth, "test", "coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    with pytest.raises(ParameterError, match=r"'labels'.*'fine', 'coarse'"):
        data.load("cifar100", "test", root=tmp_path, verify=False, labels="super")


def test_folder_wins_over_tarball(tmp_path: Path, formats: SimpleNamespace) -> None:
    files_a, truth_a = formats.cifar_files("cifar10", n=4, seed=1)
    files_b, _ = formats.cifar_files("cifar10", n=4, seed=2)
    formats.cifar_folder(tmp_path, "cifar10", files_a)
    formats.cifar_tarball(tmp_path, "cifar10", files_b)
    _expect(data.load("cifar10", "test", root=tmp_path, verify=False), truth_a, "test")


def test_md5_checked_by_default(tmp_path: Path, formats: SimpleNamespace) -> None:
    files, _ = formats.cifar_files("cifar10", n=4)
    folder = formats.cifar_folder(tmp_path, "cifar10", files)
    with pytest.raises(DataError, match="not the published") as err:
        data.load("cifar10", "test", root=tmp_path)
    assert str(folder / "test_batch") in str(err.value)
    tar_root = tmp_path / "t"
    tar = formats.cifar_tarball(tar_root, "cifar10", files)
    with pytest.raises(DataError, match="c58f30108f718f92721af3b95e74349a") as err:
        data.load("cifar10", "test", root=tar_root)
    assert str(tar) in str(err.value)


def test_md5_table_matches_a_file_written_with_it(tmp_path: Path, formats: SimpleNamespace,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """verify=True accepts a folder whose files match the md5 table."""
    files, truth = formats.cifar_files("cifar10", n=4)
    formats.cifar_folder(tmp_path, "cifar10", files)
    layout = cifar.CIFAR_SETS["cifar10"]

    def spec(s: cifar.FileSpec) -> cifar.FileSpec:
        return dataclasses.replace(s, md5=hashlib.md5(files[s.name]).hexdigest())

    patched = dataclasses.replace(
        layout, meta=spec(layout.meta),
        batches={k: tuple(spec(s) for s in v) for k, v in layout.batches.items()})
    monkeypatch.setitem(cifar.CIFAR_SETS, "cifar10", patched)
    _expect(data.load("cifar10", "test", root=tmp_path), truth, "test")


def test_missing_everything_one_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        data.load("cifar100", "train", root=tmp_path)
    msg = str(err.value)
    assert msg.count("Missing data") == 1
    assert str(tmp_path / "cifar-100-python") in msg and "train" in msg and "meta" in msg
    assert str(tmp_path) in msg and "cifar-100-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in msg
    assert "eb9058c3a382ffc7106e4002c42a8d85" in msg and "GRADAUDIT_OFFLINE" in msg


def test_incomplete_folder_without_tarball(tmp_path: Path, formats: SimpleNamespace) -> None:
    files, _ = formats.cifar_files("cifar10", n=4)
    del files["data_batch_3"]
    formats.cifar_folder(tmp_path, "cifar10", files)
    with pytest.raises(DataError, match="data_batch_3") as err:
        data.load("cifar10", "train", root=tmp_path, verify=False)
    assert "data_batch_1" not in str(err.value)


def _folder_with(tmp_path: Path, formats: SimpleNamespace, name: str, file: str,
                 raw: bytes) -> Path:
    files, _ = formats.cifar_files(name, n=4)
    files[file] = raw
    return formats.cifar_folder(tmp_path, name, files) / file


class _Evil:
    def __reduce__(self) -> tuple:
        return (Path.touch, (Path("/tmp/gradaudit-evil-pickle-ran"),))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"garbage, not a pickle", "not a CIFAR python pickle"),
        (None, "not a CIFAR python pickle"),  # truncated pickle
        (pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
        ("no-data", r"expected keys 'data' and 'labels'"),
        ("bad-shape", r"uint8 array of shape \(N, 3072\)"),
        ("bad-dtype", r"uint8 array of shape \(N, 3072\)"),
        ("few-labels", "4 images but 3 labels"),
        ("big-label", "outside 0..9"),
        (pickle.dumps({"data": _Evil()}, protocol=2), "never does"),
    ],
    ids=["garbage", "truncated", "not-dict", "no-data", "bad-shape", "bad-dtype",
         "few-labels", "big-label", "forbidden-global"],
)
def test_corrupt_batch_names_the_file(tmp_path: Path, formats: SimpleNamespace, raw: object,
                                      message: str) -> None:
    good = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}
    variants = {
        "no-data": {"labels": [0]},
        "bad-shape": {**good, "data": np.zeros((4, 1024), np.uint8)},
        "bad-dtype": {**good, "data": np.zeros((4, 3072), np.float32)},
        "few-labels": {**good, "labels": [0, 1, 2]},
        "big-label": {**good, "labels": [0, 1, 2, 10]},
    }
    if raw is None:
        raw = formats.py2_pickle(good)[:-200]
    elif isinstance(raw, str):
        raw = pickle.dumps(variants[raw], protocol=2)
    path = _folder_with(tmp_path, formats, "cifar10", "test_batch", raw)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message) as err:
        data.load("cifar10", "test", root=tmp_path, verify=False)
    assert str(path) in str(err.value)
    assert err.value.__cause__ is None
    assert not Path("/tmp/gradaudit-evil-pickle-ran").exists()


def test_meta_without_class_names(tmp_path: Path, formats: SimpleNamespace) -> None:
    path = _folder_with(tmp_path, formats, "cifar100", "meta",
                        formats.py2_pickle({"fine_label_names": ["a"] * 100}))
    with pytest.raises(DataError, match="coarse_label_names") as err:
        data.load("cifar100", "test", root=tmp_path, verify=False, labels="coarse")
    assert str(path) in str(err.value)


def test_truncated_tarball_names_it(tmp_path: Path, formats: SimpleNamespace) -> None:
    files, _ = formats.cifar_files("cifar10", n=64)
    tar = formats.cifar_tarball(tmp_path, "cifar10", files)
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DataError, match=r"not a complete \.tar\.gz") as err:
        data.load("cifar10", "train", root=tmp_path, verify=False)
    assert str(tar) in str(err.value)


def test_tarball_without_a_member(tmp_path: Path, formats: SimpleNamespace) -> None:
    files, _ = formats.cifar_files("cifar10", n=4)
    del files["test_batch"]
    tar = formats.cifar_tarball(tmp_path, "cifar10", files)
    with pytest.raises(DataError, match="cifar-10-batches-py/test_batch") as err:
        data.load("cifar10", "test", root=tmp_path, verify=False)
    assert str(tar) in str(err.value)


def test_cifar_download_from_mirror(tmp_path: Path, formats: SimpleNamespace,
                                    monkeypatch: pytest.MonkeyPatch,
                                    local_server: tuple[Path, str]) -> None:
    """A missing tarball is fetched (md5-verified) when online; here from a local server."""
    server_dir, url = local_server
    files, truth = formats.cifar_files("cifar10", n=4)
    tar = formats.cifar_tarball(server_dir, "cifar10", files)
    layout = cifar.CIFAR_SETS["cifar10"]
    tarball = dataclasses.replace(layout.tarball, md5=hashlib.md5(tar.read_bytes()).hexdigest(),
                                  urls=(url + tar.name,))
    monkeypatch.setitem(cifar.CIFAR_SETS, "cifar10", dataclasses.replace(layout, tarball=tarball))
    monkeypatch.delenv("GRADAUDIT_OFFLINE")
    root = tmp_path / "root"
    _expect(data.load("cifar10", "test", root=root), truth, "test")
    assert (root / tar.name).read_bytes() == tar.read_bytes()


# ---------------------------------------------------------------- the binary version


def _bin_files(n: int = 6, seed: int = 0) -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Small CIFAR-10 binary batches (name -> bytes) and the (images, labels) of each split."""
    layout = cifar.CIFAR_BIN_SETS["cifar10"]
    rng = np.random.default_rng(seed)
    files, truth = {}, {}
    for split, specs in layout.batches.items():
        xs, ys = [], []
        for spec in specs:
            x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            y = rng.integers(0, 10, n, dtype=np.uint8)
            files[spec.name] = b"".join(bytes([int(y[i])]) + x[i].tobytes() for i in range(n))
            xs.append(x)
            ys.append(y)
        truth[split] = (np.concatenate(xs), np.concatenate(ys).astype(np.int64))
    return files, truth


def _write_bin(root: Path, files: dict[str, bytes], form: str = "folder") -> Path:
    """The binary batches as the extracted folder, or (form "tarball") as the archive only."""
    layout = cifar.CIFAR_BIN_SETS["cifar10"]
    folder = root / ("src" if form == "tarball" else "") / layout.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in {"batches.meta.txt": b"airplane\n", **files}.items():
        (folder / name).write_bytes(raw)
    if form == "folder":
        return folder
    with tarfile.open(root / layout.tarball.name, "w:gz") as tar:
        tar.add(folder, arcname=layout.folder)
    shutil.rmtree(folder.parent)
    return root / layout.tarball.name


@pytest.mark.parametrize("form", ["folder", "tarball"])
def test_cifar10_binary_version_both_forms(tmp_path: Path, form: str) -> None:
    files, truth = _bin_files()
    _write_bin(tmp_path, files, form)
    for split in ("train", "test"):
        s = data.load("cifar10", split, root=tmp_path, verify=False)
        images, labels = truth[split]
        assert s.x.dtype == torch.float32 and s.x.shape == (len(images), 3, 32, 32)
        assert torch.equal(s.x, torch.from_numpy(images).float() / 255)
        assert s.y.dtype == torch.int64 and s.y.tolist() == labels.tolist()
        assert s.meta["classes"][:3] == ["airplane", "automobile", "bird"] and s.num_classes == 10
        assert s.meta["version"] == "binary" and s.meta["mean"] == (0.4914, 0.4822, 0.4465)
    assert len(data.load("cifar10", "train", root=tmp_path, verify=False)) == 5 * 6


def test_python_version_wins_over_binary(tmp_path: Path, formats: SimpleNamespace) -> None:
    files, truth = formats.cifar_files("cifar10", n=4)
    formats.cifar_folder(tmp_path, "cifar10", files)
    _write_bin(tmp_path, _bin_files()[0])
    s = data.load("cifar10", "test", root=tmp_path, verify=False)
    _expect(s, truth, "test")
    assert s.meta["version"] == "python"


def test_binary_md5_checked_by_default(tmp_path: Path) -> None:
    folder = _write_bin(tmp_path, _bin_files()[0])
    with pytest.raises(DataError, match="803d5f7f4d78ea53de84dbe85f74fb6d") as err:
        data.load("cifar10", "test", root=tmp_path)
    assert str(folder / "test_batch.bin") in str(err.value) and "not the published" in str(err.value)
    tar = _write_bin(tmp_path / "t", _bin_files()[0], "tarball")
    with pytest.raises(DataError, match="c32a1d4ab5d03f1284b67883e8d87530") as err:
        data.load("cifar10", "test", root=tmp_path / "t")
    assert str(tar) in str(err.value)


@pytest.mark.parametrize(("cut", "message"), [(1, "not a whole number of 3073-byte"),
                                               (None, r"label byte 10 is outside 0\.\.9")],
                         ids=["truncated", "big-label"])
def test_corrupt_binary_batch_names_the_file(tmp_path: Path, cut: int | None, message: str) -> None:
    files, _ = _bin_files()
    raw = files["test_batch.bin"]
    files["test_batch.bin"] = raw[:-cut] if cut else bytes([10]) + raw[1:]
    folder = _write_bin(tmp_path, files)
    with pytest.raises(DataError, match=message) as err:
        data.load("cifar10", "test", root=tmp_path, verify=False)
    assert str(folder / "test_batch.bin") in str(err.value) and "\n" not in str(err.value)


def test_cifar10_missing_names_both_versions(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        data.load("cifar10", "test", root=tmp_path)
    msg = str(err.value)
    assert msg.count("Missing data") == 1
    for place in ("cifar-10-batches-py", "cifar-10-batches-bin", "cifar-10-python.tar.gz",
                  "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"):
        assert place in msg
