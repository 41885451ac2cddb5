"""Downloads: md5-verified, atomic, fast to fail offline, one clear error for missing files."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest

from gradaudit import DataError, ParameterError, data
from gradaudit.data import download as dl


def _published(server: tuple[Path, str], payload: bytes) -> tuple[str, str]:
    folder, url = server
    (folder / "file.bin").write_bytes(payload)
    return url + "file.bin", hashlib.md5(payload).hexdigest()


def test_download_writes_verified_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_server: tuple[Path, str]
) -> None:
    monkeypatch.delenv("GRADAUDIT_OFFLINE")
    payload = bytes(range(256)) * 5000
    url, md5 = _published(local_server, payload)
    dest = tmp_path / "root" / "file.bin"
    spec = dl.FileSpec("file.bin", md5, ("http://127.0.0.1:9/nothing", url))
    paths = dl.ensure_files(dest.parent, [spec], "toy")
    assert paths == [dest]
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]


def test_download_with_wrong_md5_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_server: tuple[Path, str]
) -> None:
    monkeypatch.delenv("GRADAUDIT_OFFLINE")
    url, _ = _published(local_server, b"not the published bytes")
    folder = tmp_path / "root"
    spec = dl.FileSpec("file.bin", "0" * 32, (url,))
    with pytest.raises(DataError) as err:
        dl.ensure_files(folder, [spec], "toy")
    msg = str(err.value)
    assert "file.bin" in msg and "not the published" in msg and str(folder) in msg
    assert list(folder.iterdir()) == []  # no partial or temporary file left behind


def test_offline_error_lists_every_missing_file_where_and_how(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        data.load("mnist", "train", root=tmp_path)
    assert time.perf_counter() - start < 2.0
    msg = str(err.value)
    folder = tmp_path / "mnist"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert name in msg
    assert str(folder) in msg
    assert "GRADAUDIT_OFFLINE=1" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in msg
    assert "GRADAUDIT_DATA" in msg


def test_unreachable_host_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADAUDIT_OFFLINE")
    monkeypatch.setenv("GRADAUDIT_DOWNLOAD_TIMEOUT", "2")
    spec = dl.FileSpec("x.gz", "0" * 32, ("http://127.0.0.1:9/x.gz",))  # connection refused
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"x\.gz.*download failed"):
        dl.ensure_files(tmp_path, [spec], "toy")
    assert time.perf_counter() - start < 3.0


def test_hanging_name_lookup_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADAUDIT_OFFLINE")
    monkeypatch.setenv("GRADAUDIT_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(3))
    spec = dl.FileSpec("x.gz", None, ("https://example.invalid/x.gz",))
    start = time.perf_counter()
    with pytest.raises(DataError, match="timed out"):
        dl.ensure_files(tmp_path, [spec], "toy")
    assert time.perf_counter() - start < 2.0


def test_bad_timeout_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADAUDIT_OFFLINE")
    monkeypatch.setenv("GRADAUDIT_DOWNLOAD_TIMEOUT", "soon")
    spec = dl.FileSpec("x.gz", None, ("http://127.0.0.1:9/x.gz",))
    with pytest.raises(DataError, match="GRADAUDIT_DOWNLOAD_TIMEOUT"):
        dl.ensure_files(tmp_path, [spec], "toy")


def test_existing_file_with_wrong_md5_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    spec = dl.FileSpec("a.bin", "0" * 32)
    with pytest.raises(DataError) as err:
        dl.ensure_files(tmp_path, [spec], "toy")
    assert str(tmp_path / "a.bin") in str(err.value)
    assert hashlib.md5(b"abc").hexdigest() in str(err.value)
    assert dl.ensure_files(tmp_path, [spec], "toy", verify=False) == [tmp_path / "a.bin"]


def test_unknown_dataset_and_option_list_the_valid_ones() -> None:
    with pytest.raises(ParameterError, match="Did you mean 'cifar10'"):
        data.load("cifar-10")
    with pytest.raises(ParameterError, match="verify"):
        data.load("mnist", verfy=False)
    with pytest.raises(ParameterError, match="'split'"):
        data.load("mnist", "valid")
