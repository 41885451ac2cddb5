"""The run store: every job (an audited model, a set of attribution maps, a retrain group,
a study) is a directory keyed by the hash of its config; finished jobs are loaded, killed
ones resume. Executors run independent jobs in this process or on a Ray cluster.

    >>> from gradaudit.runs import RunStore
    >>> store = RunStore("runs")
    >>> result = store.run("model", config, train_one)   # train_one(job) -> JSON-able summary

Names are imported on first use, so ``gradaudit --help`` stays fast (the store needs torch
for its atomic-write helpers).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EXECUTORS",
    "Executor",
    "InProcessExecutor",
    "Job",
    "JobLockedError",
    "RayExecutor",
    "RunStore",
    "canonical_json",
    "config_hash",
    "make_executor",
]

_WHERE = {
    "EXECUTORS": "executors", "Executor": "executors", "InProcessExecutor": "executors",
    "RayExecutor": "executors", "make_executor": "executors",
    "Job": "store", "RunStore": "store", "JobLockedError": "lock",
    "canonical_json": "hashing", "config_hash": "hashing",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
