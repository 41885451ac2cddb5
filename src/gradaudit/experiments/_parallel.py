"""Local parallelism for the studies: independent jobs side by side on a multi-core CPU.

The default executor runs a study's jobs one after another in this process. Small models
(the synthetic MLPs: batch 50, width 1000; the CPU-sized BlockMNIST ResNet) are chains of
tiny ops that keep about one core busy whatever the thread count, so on a 2-core machine
half the CPU idles. :func:`local_workers` hands a batch of such jobs to one
single-threaded worker process per core instead, when the study runs in-process on the
CPU; a Ray executor, a CUDA device or a single core is left as it is.
"""

from __future__ import annotations

import dataclasses

from ..runs import InProcessExecutor, ProcessExecutor, usable_cores
from .base import Context

__all__ = ["local_workers"]


def local_workers(ctx: Context, jobs: int) -> Context:
    """``ctx`` with a process executor of ``min(cores, jobs)`` one-thread workers when the
    study runs in-process on a multi-core CPU and there is more than one job; else ``ctx``."""
    cores = usable_cores()
    workers = min(cores, jobs)
    if ctx.device != "cpu" or workers < 2 or not isinstance(ctx.executor, InProcessExecutor):
        return ctx
    return dataclasses.replace(ctx, executor=ProcessExecutor(workers=workers, threads=1))
