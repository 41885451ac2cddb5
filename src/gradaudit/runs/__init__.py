"""The run store: every job (an audited model, a set of attribution maps, a retrain group,
a study) is a directory keyed by the hash of its config; finished jobs are loaded, killed
ones resume. Executors run independent jobs in this process or on a Ray cluster.

    >>> from gradaudit.runs import RunStore
    >>> store = RunStore("runs")
    >>> result = store.run("model", config, train_one)   # train_one(job) -> JSON-able summary

Reading a store imports neither torch nor Ray, so ``gradaudit runs ls`` starts instantly.
"""

from .executors import EXECUTORS, Executor, InProcessExecutor, RayExecutor, make_executor
from .hashing import canonical, canonical_json, config_hash
from .lock import JobLockedError
from .store import Job, RunStore

__all__ = [
    "EXECUTORS",
    "Executor",
    "InProcessExecutor",
    "Job",
    "JobLockedError",
    "RayExecutor",
    "RunStore",
    "canonical",
    "canonical_json",
    "config_hash",
    "make_executor",
]
