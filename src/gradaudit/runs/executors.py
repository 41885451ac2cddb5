"""Where independent jobs run: in this process (default) or on a Ray cluster.

An executor maps a function over items: ``executor.map(fn, items) -> list`` with results
in the order of ``items``. The studies use it through :meth:`RunStore.map`, whose tasks
write into the shared run store, so results land in one place whichever machine ran them,
and a job's result is the same whichever executor ran it: jobs are seeded by their
config, use no global RNG, and the value returned is the one read back from ``done.json``.

Example:
    >>> store = RunStore("/shared/runs")           # a path every Ray node sees
    >>> with RayExecutor(address="auto") as ex:   # or RayExecutor() for a local Ray
    ...     accs = store.map("model", configs, train_one, executor=ex)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from .._validation import GradauditError, ParameterError, check_float, unknown_name

__all__ = ["EXECUTORS", "Executor", "InProcessExecutor", "RayExecutor", "make_executor"]

T = TypeVar("T")
R = TypeVar("R")

RAY_HINT = "pip install 'gradaudit[ray]'"


class Executor(Protocol):
    """Runs ``fn`` over ``items``; returns the results in order, or raises the error of the
    first item (in item order) that failed."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]: ...


class InProcessExecutor:
    """Runs the items one after another in this process: sequential and deterministic.

    Stops at the first error (the jobs finished before it stay done in the store).
    """

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return [fn(item) for item in items]

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise GradauditError(f"RayExecutor needs Ray, which is not installed: {RAY_HINT}. "
                             "Or use the in-process executor.") from None


class RayExecutor:
    """Runs each item as a Ray task, on a local Ray or a cluster.

    Ray is imported when the first map starts. If Ray is not initialised yet, it is started
    with ``ray.init(address=address, num_cpus=num_cpus)`` (``address=None`` starts a local
    Ray on this machine; ``"auto"`` or ``"ray://host:10001"`` joins a cluster) and shut down
    by :meth:`close` (or at the end of a ``with`` block). A Ray already initialised by the
    caller is used as is and left running.

    Tasks that write into a :class:`RunStore` must see the same store root: on a cluster,
    put the root on a filesystem every node mounts at the same path. All tasks are awaited
    before an error is raised, so no task is left writing when the call returns.

    Args:
        address: Ray cluster address, or None for a local Ray.
        num_cpus: CPUs of a local Ray (None: all of this machine's).
        cpus_per_job: CPUs reserved by each task (Ray sets the task's thread count to it).
        gpus_per_job: GPUs reserved by each task (fractions share a GPU).
        init_options: More keyword arguments for ``ray.init`` (e.g. ``runtime_env``).
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 cpus_per_job: float = 1, gpus_per_job: float = 0,
                 init_options: Mapping[str, Any] | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_job = check_float(cpus_per_job, "cpus_per_job", "RayExecutor", 0, None,
                                        low_open=True)
        self.gpus_per_job = check_float(gpus_per_job, "gpus_per_job", "RayExecutor", 0, None)
        self.init_options = dict(init_options or {})
        self._started = False

    def _ray(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": True, **self.init_options}
            if self.address is None:
                options["num_cpus"] = self.num_cpus
            ray.init(address=self.address, **options)
            self._started = True
        return ray

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        items = list(items)
        if not items:
            return []
        ray = self._ray()
        remote = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job)(_call)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, item) for item in items]
        results: list[Any] = []
        first: BaseException | None = None
        for ref in refs:
            try:
                results.append(ray.get(ref))
            except Exception as err:  # keep waiting: no task may still write after we return
                results.append(None)
                first = first or err
        if first is not None:
            cause = getattr(first, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from first  # the task's own exception type, as in-process
            raise first
        return results

    def close(self) -> None:
        """Shut down the Ray this executor started (a caller's Ray is left running)."""
        if self._started:
            _import_ray().shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "inprocess": InProcessExecutor,
    "ray": RayExecutor,
}


def make_executor(name: str = "inprocess", **options: Any) -> Executor:
    """An executor by name ("inprocess" or "ray"), e.g. from a study's config or the CLI."""
    if name not in EXECUTORS:
        raise ParameterError(unknown_name("executor", name, EXECUTORS, caller="make_executor"))
    if name == "inprocess" and options:
        raise ParameterError(f"The in-process executor takes no options. Got {sorted(options)}.")
    return EXECUTORS[name](**options)
