"""One writer per job: an exclusive ``flock`` on ``<job>/lock``, holding the owner's pid.

The kernel releases an ``flock`` when its process dies, however it dies (``kill -9``
included), so a lock file left by a killed process is simply taken over by the next
writer; there is no stale-pid guessing. The file records the holder's pid, host and start
time only to tell a blocked user who holds the job. POSIX only (Linux, macOS); on network
filesystems, ``flock`` is as reliable as the filesystem's lock support.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .._validation import GradauditError

try:
    import fcntl
except ImportError:  # Windows: the rest of gradaudit works; the run store's locks do not
    fcntl = None  # type: ignore[assignment]

__all__ = ["JobLock", "JobLockedError", "holder", "is_locked"]

LOCK_NAME = "lock"
GRACE_S = 0.2


class JobLockedError(GradauditError, RuntimeError):
    """Another live process is writing the job."""


def holder(path: Path) -> dict[str, Any]:
    """What the lock file says about its (last) holder; {} if unreadable."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` (probes with a shared lock)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a probe lock we may have taken
    return False


class JobLock:
    """An exclusive, non-blocking lock on one job directory; use as a context manager.

    Args:
        directory: The job directory (created if missing).
        job: How to name the job in error messages.
        wait: Seconds to wait for a holder to let go before reporting the job as held. A
            grace of 0.2 s is always added, to ride over a concurrent ``runs ls`` probe
            (which holds the lock for microseconds).
    """

    def __init__(self, directory: Path, job: str, wait: float = 0.0) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.job = job
        self.wait = wait
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`JobLockedError` naming the holder."""
        if fcntl is None:
            raise GradauditError("The run store locks jobs with POSIX file locks (fcntl), which "
                                 "this platform lacks; run on Linux or macOS (or WSL).")
        if self._fd is not None:
            raise GradauditError(f"The lock of job {self.job} is already held by this object.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait + GRACE_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise JobLockedError(self._held_message()) from None
                time.sleep(0.05 if self.wait <= 1 else 0.5)
                continue
            if self._same_file(fd):
                self._fd = fd
                self._record(fd)
                return
            os.close(fd)  # the holder released and removed that file meanwhile: retry

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _record(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)

    def _held_message(self) -> str:
        info = holder(self.path)
        who = (f"process {info.get('pid')} on {info.get('host')} (since {info.get('since')})"
               if info else "another process")
        return (f"The job {self.job} is being written by {who}. Wait for it to finish, or stop "
                f"that process; a killed process's lock is taken over automatically.")

    def release(self) -> None:
        """Remove the lock file and release the lock (a no-op if not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # unlink before unlocking, so a waiter never locks a dead file
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

