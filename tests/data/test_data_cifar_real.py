"""CIFAR-10 on the real files of the binary version (``cifar-10-batches-bin/`` in the data root).

Skipped with the reason when ``GRADAUDIT_DATA`` does not hold the six published files; CI
points it at ``../shared/data``. Each split is loaded once per module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from gradaudit import DataError, data
from gradaudit.data.cifar import CIFAR_BIN_SETS

pytestmark = pytest.mark.slow  # loading the 50,000 training images takes a few seconds

LAYOUT = CIFAR_BIN_SETS["cifar10"]
FILES = [s.name for specs in LAYOUT.batches.values() for s in specs]


@pytest.fixture(scope="module")
def cifar_root() -> Path:
    root = os.environ.get("GRADAUDIT_DATA")
    if not root or not all((Path(root) / LAYOUT.folder / f).is_file() for f in FILES):
        pytest.skip(f"CIFAR-10 binary files not found: set GRADAUDIT_DATA to a folder holding "
                    f"{LAYOUT.folder}/{{{','.join(FILES)}}} (CI points it at ../shared/data).")
    return Path(root)


@pytest.fixture(scope="module")
def train(cifar_root: Path) -> data.ImageSet:
    return data.load("cifar10", "train", root=cifar_root)  # md5-checked (verify=True)


@pytest.fixture(scope="module")
def test(cifar_root: Path) -> data.ImageSet:
    return data.load("cifar10", "test", root=cifar_root)


def test_shapes_labels_and_class_names(train: data.ImageSet, test: data.ImageSet) -> None:
    assert train.x.shape == (50_000, 3, 32, 32) and test.x.shape == (10_000, 3, 32, 32)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert train.meta["version"] == "binary" and train.bounds == (0.0, 1.0)
    assert torch.bincount(train.y, minlength=10).tolist() == [5_000] * 10
    assert torch.bincount(test.y, minlength=10).tolist() == [1_000] * 10
    classes = train.meta["classes"]
    assert classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"]
    assert classes[int(train.y[0])] == "frog" and classes[int(test.y[0])] == "cat"


def test_float_images_round_trip_to_the_bytes(cifar_root: Path, train: data.ImageSet,
                                              test: data.ImageSet) -> None:
    for s, name, start in ((train, "data_batch_1.bin", 0), (train, "data_batch_5.bin", 40_000),
                           (test, "test_batch.bin", 0)):
        raw = torch.frombuffer(bytearray((cifar_root / LAYOUT.folder / name).read_bytes()),
                               dtype=torch.uint8).view(10_000, 3073)
        x = s.x[start : start + 10_000]
        back = (x * 255).round().to(torch.uint8)
        assert torch.equal(back.view(10_000, 3072), raw[:, 1:])  # uint8-exact, R G B planes
        assert torch.equal(back.float() / 255, x)
        assert torch.equal(s.y[start : start + 10_000], raw[:, 0].long())
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0


def test_one_byte_truncated_copy_gets_the_clear_error(cifar_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / LAYOUT.folder
    shutil.copytree(cifar_root / LAYOUT.folder, folder, ignore=shutil.ignore_patterns("data_*"))
    bad = folder / "test_batch.bin"
    bad.chmod(0o644)
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError) as err:
        data.load("cifar10", "test", root=tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"Corrupt data file {bad}") and "\n" not in msg
    assert "not the published 803d5f7f4d78ea53de84dbe85f74fb6d" in msg
    with pytest.raises(DataError, match=r"30729999 bytes is not a whole number of 3073-byte") as err:
        data.load("cifar10", "test", root=tmp_path, verify=False)
    assert str(bad) in str(err.value)
