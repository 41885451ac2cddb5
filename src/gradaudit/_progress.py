"""Progress on stderr: rich bars on a terminal, one log line per finished step everywhere.

Bars are drawn when stderr is a terminal (off with ``quiet``). Log lines, one per finished
step (a model trained, maps computed, a curve finished, a training epoch when no bar is
drawn, a job resumed), go through the ``gradaudit`` logger; the library configures no
handler, so they are silent in a Python session until :func:`configure_log` (which the CLI
calls, unless ``-q``) sends them to stderr, where a log file of a background run shows them:

    04:12:07 model blockmnist-0: done in 12.3 s
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["EVAL_QUIET", "LOGGER", "configure_log", "log_config", "log_step", "progress", "reset_log", "show_progress"]

LOGGER = logging.getLogger("gradaudit")

# The default of every evaluation's ``quiet=`` (DiffROAR/ROAR/KAR, ROAD, pixel perturbation,
# degradation, sample quality, ``evaluation.evaluate``): a library call draws no bars unless
# asked; the CLI (-q) and the studies pass their own.
EVAL_QUIET = True


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so captured and redirected stderr work)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break the work
            self.handleError(record)


def configure_log(quiet: bool = False) -> None:
    """Send the step lines to stderr (``quiet``: warnings only); replaces an earlier call's handler."""
    for handler in [h for h in LOGGER.handlers if isinstance(h, _StderrHandler)]:
        LOGGER.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)
    LOGGER.propagate = False


def log_config() -> bool | None:
    """What :func:`configure_log` set in this process: its ``quiet``, or None when the step
    lines are off (a library call). Worker processes repeat it, so their steps are logged too."""
    if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
        return None
    return LOGGER.level > logging.INFO


def reset_log() -> None:
    """Remove what :func:`configure_log` installed (the library is silent again)."""
    for handler in [h for h in LOGGER.handlers if isinstance(h, _StderrHandler)]:
        LOGGER.removeHandler(handler)
    LOGGER.setLevel(logging.NOTSET)
    LOGGER.propagate = True


def log_step(message: str, seconds: float | None = None) -> None:
    """One line for a finished step, with its elapsed time if given."""
    LOGGER.info(message if seconds is None else f"{message} in {_duration(seconds)}")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def show_progress(quiet: bool = False) -> bool:
    """Whether to draw bars: not ``quiet``, and stderr is a TTY (or GRADAUDIT_PROGRESS=1)."""
    if quiet or os.environ.get("GRADAUDIT_PROGRESS") == "0":
        return False
    return sys.stderr.isatty() or os.environ.get("GRADAUDIT_PROGRESS") == "1"


class _Null:
    """Stands in for rich.Progress when bars are off."""

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def update(self, *args: object, **kwargs: object) -> None:
        pass

    def advance(self, *args: object, **kwargs: object) -> None:
        pass

    def remove_task(self, *args: object, **kwargs: object) -> None:
        pass


@contextlib.contextmanager
def progress(quiet: bool = False) -> Iterator[Progress | _Null]:
    """A rich Progress (to stderr) for nested tasks, or a no-op stand-in."""
    if not show_progress(quiet):
        yield _Null()
        return
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        yield bar
