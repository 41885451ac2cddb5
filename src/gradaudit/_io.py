"""Atomic file writes: a reader (or a resumed job) never sees a half-written file.

Each writer writes to a temporary file in the destination directory, flushes it to disk
and renames it over the destination (``os.replace`` is atomic on POSIX). The file gets the
mode an ordinary ``open()`` would give it (``0o666`` less the process umask: 0644 under the
usual 022), not the 0600 of ``tempfile.mkstemp``, so colleagues and workers running as
another user can read reports, results and checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import load_file, save

__all__ = [
    "atomic_open",
    "file_mode",
    "load_tensors",
    "read_json",
    "save_tensors",
    "to_jsonable",
    "write_bytes",
    "write_json",
    "write_text",
]


def file_mode() -> int:
    """The permission bits a new file gets under the process umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux shows the umask in /proc (a read, safe beside other threads); elsewhere
    # os.umask only reads by setting, so set a value and put the old one back at once.
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary binary file that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, paths, tuples and pydantic models to JSON types."""
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and obj != obj:  # NaN is not valid JSON
        return None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Save tensors to a safetensors file atomically; ``metadata`` is stored as JSON strings."""
    meta = {k: json.dumps(to_jsonable(v)) for k, v in (metadata or {}).items()}
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_bytes(path, save(flat, metadata=meta))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load all tensors of a safetensors file onto the CPU."""
    return load_file(os.fspath(path))
