"""What produced a result: library versions and the git revision.

Every result file gradaudit writes carries :func:`provenance` next to its config and seed.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["git_revision", "provenance", "versions"]

_PACKAGES = ("gradaudit", "torch", "numpy", "captum", "pydantic", "safetensors", "matplotlib")


@functools.cache
def git_revision() -> dict[str, Any]:
    """The git commit of the gradaudit source tree and whether it had uncommitted changes.

    Looks at the checkout that holds this file, not the current directory; returns
    ``{"commit": None}`` for an installed copy outside git.
    """
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


@functools.cache
def versions() -> dict[str, str | None]:
    """Versions of Python, the platform and the libraries that shape results."""
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict[str, Any]:
    """Versions plus git revision, as stored in every result file."""
    return {"versions": versions(), "git": git_revision()}
