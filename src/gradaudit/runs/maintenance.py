"""Looking after a run store: the table of jobs, and garbage collection.

``gc`` deletes a job by first taking its lock (so it never deletes a job being written),
then renaming the directory to a hidden ``.trash-*`` name (so no reader ever sees a
half-deleted job), then removing it. Done jobs are kept unless asked for explicitly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._validation import DataError, ParameterError
from .lock import JobLock, JobLockedError
from .store import Job, RunStore

__all__ = ["JobRow", "format_age", "format_size", "gc", "job_rows", "parse_age"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TRASH = ".trash-"


@dataclass(frozen=True)
class JobRow:
    """One line of ``gradaudit runs ls``."""

    kind: str
    name: str
    hash: str
    status: str
    size: int
    age_s: float
    wall_s: float | None
    path: Path

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "hash": self.hash, "status": self.status,
                "size": self.size, "age_s": round(self.age_s, 1), "wall_s": self.wall_s,
                "path": str(self.path)}


def _walk_stats(path: Path) -> tuple[int, float]:
    """Total size in bytes and newest modification time of the files under ``path``."""
    size, newest = 0, path.stat().st_mtime
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(os.path.join(folder, name))
                size += st.st_size
                newest = max(newest, st.st_mtime)
    return size, newest


def _row(job: Job, now: float) -> JobRow:
    status = job.status
    wall = None
    if status == "done":
        wall = job.info().get("wall_s")
    size, newest = _walk_stats(job.path)
    return JobRow(job.kind, job.name, job.hash, status, size, now - newest, wall, job.path)


def job_rows(store: RunStore, kind: str | None = None) -> list[JobRow]:
    """The jobs of ``store`` (optionally one kind) with status, size, age and wall time.

    Raises:
        ParameterError: the store's root does not exist.
    """
    if not store.root.is_dir():
        raise ParameterError(f"No run store at {store.root}: the folder does not exist. "
                             "Pass the folder your runs were written to with --root.")
    now = time.time()
    return [_row(job, now) for job in store.jobs(kind)]


def parse_age(text: str) -> float:
    """'90s', '30m', '12h', '7d', '2w' (or a plain number of days) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
    if not m:
        raise ParameterError(f"--older-than must be a duration like 30m, 12h, 7d or 2w. "
                             f"Got {text!r}.")
    return float(m[1]) * _UNITS[m[2] or "d"]


def format_age(seconds: float) -> str:
    """A short age: 45s, 12m, 3h, 5d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def format_size(n: int) -> str:
    """A short size: 512B, 3.4K, 12.0M, 1.2G."""
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def _selected(row: JobRow, statuses: set[str], older_than: float | None) -> bool:
    return row.status in statuses and (older_than is None or row.age_s >= older_than)


def _delete(row: JobRow) -> bool:
    """Delete one job unless a process took it meanwhile; True if deleted."""
    trash = row.path.parent / f"{_TRASH}{row.path.name}-{os.getpid()}"
    try:
        with JobLock(row.path, f"{row.kind}/{row.path.name}", wait=0):
            os.replace(row.path, trash)
    except JobLockedError:
        return False
    shutil.rmtree(trash)
    return True


def _clean_strays(store: RunStore, rows: list[JobRow], dry_run: bool) -> list[Path]:
    """Remove leftovers of killed writers: unfinished trash, and temp files of atomic
    writes, the latter under the job's lock so that no live writer loses its temp file."""
    strays = sorted(store.root.glob(f"*/{_TRASH}*"))
    if not dry_run:
        for path in strays:
            shutil.rmtree(path, ignore_errors=True)
    for row in rows:
        if row.status == "running" or not any(row.path.glob("**/.*.tmp")):
            continue  # (look first: taking the lock would touch the job's mtime)
        try:
            with JobLock(row.path, f"{row.kind}/{row.path.name}", wait=0):
                temps = sorted(p for p in row.path.glob("**/.*.tmp") if p.is_file())
                for path in [] if dry_run else temps:
                    path.unlink(missing_ok=True)
        except JobLockedError:
            continue
        strays += temps
    return strays


def gc(store: RunStore, *, partial: bool = True, done: bool = False, corrupt: bool = False,
       older_than: float | None = None, kind: str | None = None,
       dry_run: bool = False) -> dict[str, list[Any]]:
    """Delete unfinished (and, if asked, finished or corrupt) jobs; never a running one.

    Args:
        store: The run store.
        partial: Delete partial and failed jobs.
        done: Also delete done jobs (explicit opt-in).
        corrupt: Also delete jobs whose run files are unreadable.
        older_than: Only jobs untouched for at least this many seconds.
        kind: Only jobs of this kind.
        dry_run: Report what would be deleted; delete nothing.

    Returns:
        ``{"deleted": [JobRow...], "kept_running": [JobRow...], "strays": [Path...]}``; with
        ``dry_run`` the rows are those that would be deleted.
    """
    statuses = {s for s, on in (("partial", partial), ("failed", partial), ("done", done),
                                ("corrupt", corrupt)) if on}
    every = job_rows(store, kind)
    deleted, busy = [], []
    for row in (r for r in every if _selected(r, statuses, older_than)):
        if dry_run or _delete(row):
            deleted.append(row)
        else:
            busy.append(row)
    strays = _clean_strays(store, [r for r in every if r not in deleted], dry_run)
    return {"deleted": deleted, "kept_running": busy, "strays": strays}


def describe(job: Job) -> dict[str, Any]:
    """What ``gradaudit runs show`` prints: identity, status, config, result or last error."""
    out: dict[str, Any] = {"kind": job.kind, "name": job.name, "hash": job.hash,
                           "path": str(job.path), "status": job.status}
    try:
        stored = job.read_config()
        out.update(config=stored.get("config"), created=stored.get("created"),
                   provenance=stored.get("provenance"))
    except DataError as err:
        out["config_error"] = str(err)
    if out["status"] == "done":
        info = job.info()
        out.update(result=info["result"], finished=info.get("finished"), wall_s=info.get("wall_s"))
    elif (job.path / "done.json").exists():
        try:
            job.info()
        except DataError as err:
            out["done_error"] = str(err)
    if (job.path / "error.json").exists():
        with contextlib.suppress(OSError, ValueError):
            out["last_error"] = json.loads((job.path / "error.json").read_text(encoding="utf-8"))
    return out
