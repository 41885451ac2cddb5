"""Known data files: md5 checks, and downloads from their canonical URLs.

Every published file the loaders read is described by a :class:`FileSpec` (name, md5, URLs).
:func:`ensure_files` finds the files of one dataset in one folder, downloads the missing ones
when the network answers, checks every md5, and raises one :class:`~gradaudit.DataError` that
says what is missing, where it looked and how to provide it.

Downloads never hang a machine without internet: set ``GRADAUDIT_OFFLINE=1`` to skip them,
and every network step (name lookup included) gives up after ``GRADAUDIT_DOWNLOAD_TIMEOUT``
seconds (default 10). A download is hashed while it streams and written atomically, so a
failed or corrupt transfer leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_open
from .._progress import progress
from .._validation import DataError

__all__ = [
    "OFFLINE_ENV",
    "TIMEOUT_ENV",
    "FileSpec",
    "check_md5",
    "download",
    "ensure_files",
    "md5sum",
    "missing_error",
    "not_found",
    "offline",
]

OFFLINE_ENV = "GRADAUDIT_OFFLINE"
TIMEOUT_ENV = "GRADAUDIT_DOWNLOAD_TIMEOUT"
_DEFAULT_TIMEOUT = 10.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileSpec:
    """A published file: its name in its folder, its md5 (None if unknown) and its URLs."""

    name: str
    md5: str | None
    urls: tuple[str, ...] = ()


def md5sum(path: Path) -> str:
    """The hex md5 of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def offline() -> bool:
    """Whether downloads are switched off (``GRADAUDIT_OFFLINE`` set to 1/true/yes)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else _DEFAULT_TIMEOUT
    except ValueError:
        raise DataError(
            f"{TIMEOUT_ENV} must be a number of seconds. Got {raw!r}; unset it or set e.g. 10."
        ) from None
    return value if value > 0 else _DEFAULT_TIMEOUT


# The library's way round an md5 check; the CLI leaves it out of its messages (no option does it).
VERIFY_HINT = " (or, for your own copy in the same format, pass verify=False)"


def check_md5(path: Path, md5: str | None, dataset: str) -> None:
    """Raise a DataError naming ``path`` if its md5 is not ``md5`` (None: nothing to check)."""
    if md5 is None:
        return
    actual = md5sum(path)
    if actual != md5:
        raise DataError(
            f"Corrupt data file {path} for dataset {dataset!r}: its md5 is {actual}, not the "
            f"published {md5}. Delete it and put a fresh copy of {path.name} there{VERIFY_HINT}."
        )


class _FetchError(Exception):
    """One URL failed; the message says why."""


def _resolve(host: str, port: int, timeout: float) -> None:
    """Look ``host`` up, giving up after ``timeout`` s (getaddrinfo itself has no timeout)."""
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port)
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise _FetchError(f"name lookup of {host} timed out after {timeout:g} s")
    if outcome[0] is not None:
        raise _FetchError(f"cannot resolve {host} ({outcome[0]})")


def _fetch(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Stream ``url`` into ``dest`` atomically, checking the md5 before the file appears."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _FetchError(f"not an http(s) URL: {url}")
    _resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout)
    h = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_open(dest) as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress() as bar:
                task = bar.add_task(f"download {dest.name}", total=total)
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
                    bar.advance(task, len(chunk))
            if md5 is not None and h.hexdigest() != md5:
                raise _FetchError(f"downloaded md5 {h.hexdigest()} is not the published {md5}")
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise _FetchError(str(getattr(err, "reason", err))) from None


def download(spec: FileSpec, dest: Path) -> str | None:
    """Try to download ``spec`` to ``dest``; None on success, else why it failed."""
    if offline():
        return f"downloads are off ({OFFLINE_ENV}=1)"
    if not spec.urls:
        return "it has no public download URL"
    timeout = _timeout()
    reasons = []
    for url in spec.urls:
        try:
            _fetch(url, dest, spec.md5, timeout)
            return None
        except _FetchError as err:
            reasons.append(f"{url}: {err}")
    return "download failed (" + "; ".join(reasons) + ")"


def missing_error(dataset: str, what: str, why: str, how: str) -> DataError:
    """One DataError for missing files: what (and where it looked), why no download, the fix."""
    return DataError(
        f"Missing data for dataset {dataset!r}: {what}; {why}. {how} Or point --data-root / "
        "GRADAUDIT_DATA at the data root that holds them."
    )


def not_found(paths: Sequence[Path]) -> str:
    """'a, b not found in folder' for the missing ``paths``."""
    folders = sorted({str(p.parent) for p in paths})
    return f"{', '.join(p.name for p in paths)} not found in {', '.join(folders)}"


def _how_to_get(specs: Sequence[FileSpec], folder: Path) -> str:
    urls = [f"{s.urls[0]} (md5 {s.md5})" for s in specs if s.urls]
    if not urls:
        return f"Put the files into {folder}."
    return f"Download {', '.join(urls)} into {folder}."


def ensure_files(
    folder: Path, specs: Sequence[FileSpec], dataset: str, *, verify: bool = True
) -> list[Path]:
    """The paths of ``specs`` in ``folder``: downloaded if missing, md5-checked if ``verify``.

    Raises:
        DataError: Some files are missing and cannot be downloaded (one error listing all of
            them), or a file's md5 is not the published one.
    """
    paths = [folder / s.name for s in specs]
    missing = [(s, p) for s, p in zip(specs, paths, strict=True) if not p.is_file()]
    fetched: set[Path] = set()
    for i, (spec, path) in enumerate(missing):
        why = download(spec, path)
        if why is not None:  # one failure says enough: do not wait on the network again
            left = missing[i:]
            raise missing_error(dataset, not_found([p for _, p in left]), why,
                                _how_to_get([s for s, _ in left], folder))
        fetched.add(path)
    if verify:
        for spec, path in zip(specs, paths, strict=True):
            if path not in fetched:
                check_md5(path, spec.md5, dataset)
    return paths
