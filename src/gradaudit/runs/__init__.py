"""The run store: every job (an audited model, a set of attribution maps, a retrain group,
a study) is a directory keyed by the hash of its config; finished jobs are loaded, killed
ones resume. Executors run independent jobs in this process or on a Ray cluster.

How a study composes jobs (each a function ``fn(job) -> JSON-able summary`` that writes
its heavy files under ``job.path``)::

    store = RunStore(out)
    model_cfg = {"data": "fmnist", "spec": spec, "recipe": recipe, "seed": 0}
    store.run("model", model_cfg, train_model, name="mlp-linf16")   # fit(..., out=job.path)
    model_dir = store.job("model", model_cfg).path                  # load_run(model_dir)
    maps_cfg = {"model": model_cfg, "method": "grad", "target": "label"}
    store.run("maps", maps_cfg, compute_maps)                       # save_tensors(job.path/...)
    groups = [{"maps": maps_cfg, "seed": s, "levels": levels} for s in range(3)]
    accs = store.map("retrain-group", groups, retrain, executor=make_executor("ray"))
    store.run("study", study_cfg, lambda job: summarize(accs, job.path))

Put the upstream config (not a path) inside a downstream config, so that changing the
model changes every hash below it. ``RunStore.run`` returns the value read back from
``done.json`` (JSON types: tuples come back as lists), equal on a first and a cached run.

A job whose folder the caller names (``out=`` of DiffROAR/ROAR/KAR, the run directory of
``training.fit``) uses :class:`RunFolder` and :func:`check_same` from the same module: one
config hash, atomic writes, and one refusal of a folder that holds another config.

Reading a store imports neither torch nor Ray, so ``gradaudit runs ls`` starts instantly.
"""

from .executors import EXECUTORS, Executor, InProcessExecutor, RayExecutor, make_executor
from .hashing import canonical, canonical_json, config_hash
from .local import ProcessExecutor, usable_cores
from .lock import JobLockedError
from .store import Job, RunFolder, RunStore, check_same

__all__ = [
    "EXECUTORS",
    "Executor",
    "InProcessExecutor",
    "Job",
    "JobLockedError",
    "ProcessExecutor",
    "RayExecutor",
    "RunFolder",
    "RunStore",
    "canonical",
    "canonical_json",
    "check_same",
    "config_hash",
    "make_executor",
    "usable_cores",
]
