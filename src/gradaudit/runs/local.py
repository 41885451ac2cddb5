"""Local worker processes: independent jobs side by side on this machine's cores.

``ProcessExecutor`` registers itself as the "process" executor (``make_executor("process",
workers=2)``). The studies use it through :func:`gradaudit.experiments._parallel.local_workers`
for batches of small models, whose training keeps about one core busy per process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from typing import TypeVar

from .._progress import log_config
from .._validation import check_int
from .executors import EXECUTORS, wait_all
from .store import JobTask, RunStore

__all__ = ["ProcessExecutor", "usable_cores"]

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(threads: int, log_quiet: bool | None = None) -> None:
    import torch

    from .._allocator import tune_malloc
    from .._progress import configure_log

    torch.set_num_threads(threads)
    tune_malloc()
    if log_quiet is not None:  # the CLI logs its steps: so do the workers, on the same stderr
        configure_log(quiet=log_quiet)


def usable_cores() -> int:
    """The cores this process may run on (its affinity: taskset, cgroup cpusets), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ProcessExecutor:
    """Runs the items in ``workers`` fresh worker processes on this machine, ``threads``
    torch threads each (default: the cores split evenly between the workers).

    Small models (the synthetic MLPs: batch 50, width 1000) keep one core busy whatever
    the thread count, because each step is a chain of tiny ops; two processes with one
    thread each keep both cores of a 2-core machine busy. One item, or one worker, runs in
    this process, and so do the store jobs (:class:`JobTask`) that are already done, so a
    rerun starts no worker. Waits for every item before it raises the first error (in item order),
    so no worker still writes after ``map`` returns.
    """

    def __init__(self, workers: int | None = None, threads: int | None = None) -> None:
        cores = usable_cores()
        self.workers = cores if workers is None else check_int(workers, "workers", "ProcessExecutor", 1)
        self.threads = (max(1, cores // self.workers) if threads is None
                        else check_int(threads, "threads", "ProcessExecutor", 1))

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        from concurrent.futures import ProcessPoolExecutor

        items = list(items)
        if isinstance(fn, JobTask):  # finished store jobs just read their result: no worker needed
            store = RunStore(fn.root)
            todo = [i for i, (config, name) in enumerate(items) if not store.job(fn.kind, config, name).done]
            if len(todo) < len(items):
                results = [None if i in todo else fn(item) for i, item in enumerate(items)]
                for i, value in zip(todo, self.map(fn, [items[i] for i in todo]), strict=True):
                    results[i] = value
                return results
        if len(items) <= 1 or self.workers == 1:
            return [fn(item) for item in items]
        context = multiprocessing.get_context("spawn")  # no fork of a process with live BLAS/OpenMP threads
        with ProcessPoolExecutor(min(self.workers, len(items)), mp_context=context,
                                 initializer=_init_worker, initargs=(self.threads, log_config())) as pool:
            futures = [pool.submit(fn, item) for item in items]
            results, first = wait_all(f.result for f in futures)
        if first is not None:
            raise first
        return results  # type: ignore[return-value]  (no failure: every result is set)

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


EXECUTORS["process"] = ProcessExecutor
