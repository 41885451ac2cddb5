"""rich progress bars on stderr, off when quiet or when stderr is not a terminal."""

from __future__ import annotations

import contextlib
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

__all__ = ["progress", "show_progress"]


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
