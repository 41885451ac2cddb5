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

import functools
import importlib
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from .._validation import GradauditError, ParameterError, check_float, check_int, unknown_name

__all__ = ["EXECUTORS", "MAX_JOBS_PER_GPU", "Executor", "InProcessExecutor", "RayExecutor", "make_executor", "wait_all"]

T = TypeVar("T")
R = TypeVar("R")

RAY_HINT = "pip install 'gradaudit[ray]'"


class Executor(Protocol):
    """Runs ``fn`` over ``items``; returns the results in order, or raises the error of the
    first item (in item order) that failed."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]: ...


def wait_all(waits: Iterable[Callable[[], R]]) -> tuple[list[R | None], BaseException | None]:
    """Call each ``wait`` (a future's ``result``, a Ray ``get``) in item order, all of them
    even after one raised, so no task still writes when the caller returns or raises.

    Returns:
        (the results, None where the wait raised; the first error in item order, or None).
    """
    results: list[R | None] = []
    first: BaseException | None = None
    for wait in waits:
        try:
            results.append(wait())
        except Exception as err:  # keep waiting for the others
            results.append(None)
            first = first or err
    return results, first


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


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise GradauditError(f"RayExecutor needs Ray, which is not installed: {RAY_HINT}. "
                             "Or use the in-process executor.") from None


def _ray_call(fn: Callable[[Any], Any], item: Any) -> tuple[str, Any]:
    """Run one item in a Ray worker; return (the id of the node that ran it, the result)."""
    import ray

    return ray.get_runtime_context().get_node_id(), fn(item)


def _probe_target(address: str) -> tuple[str, int] | None:
    """The (host, port) to probe for a Ray address, or None when there is none to probe
    (``auto`` and ``local`` are resolved by Ray itself)."""
    bare = address.strip()
    if bare in ("", "auto", "local"):
        return None
    if "://" in bare:
        bare = bare.split("://", 1)[1]
    host, sep, port = bare.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise GradauditError(f"The Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379, "
                             "ray://10.0.0.5:10001, or auto). Fix --address/RAY_ADDRESS.")
    return host, int(port)


MAX_JOBS_PER_GPU = 1000  # the most jobs that may share one GPU (jobs_per_gpu)


def _gpu_share(gpus_per_job: float, jobs_per_gpu: int | None) -> float:
    """The GPUs one task asks Ray for, from ``gpus_per_job`` or ``jobs_per_gpu`` (checked)."""
    gpus = check_float(gpus_per_job, "gpus_per_job", "RayExecutor", 0, None)
    if jobs_per_gpu is not None:
        k = check_int(jobs_per_gpu, "jobs_per_gpu", "RayExecutor", 1, MAX_JOBS_PER_GPU)
        if gpus not in (0, 1 / k):
            raise ParameterError(
                f"RayExecutor got gpus_per_job={gpus_per_job!r} and jobs_per_gpu={jobs_per_gpu!r}: "
                f"give one of the two (jobs_per_gpu={k} means gpus_per_job=1/{k}).")
        return 1 / k
    if gpus > 1 and not float(gpus).is_integer():
        raise ParameterError(
            f"The 'gpus_per_job' parameter of RayExecutor must be a whole number of GPUs or a "
            f"fraction of one (Ray cannot split a task over {gpus_per_job!r} GPUs). Got "
            f"{gpus_per_job!r}; use e.g. {int(gpus)} or {int(gpus) + 1}, or jobs_per_gpu=k to share a GPU.")
    return gpus


class RayExecutor:
    """Runs each item as a Ray task, on a local Ray or a cluster.

    If Ray is not initialised yet, it is started with ``ray.init(address=address,
    num_cpus=num_cpus)`` (``address=None`` starts a local Ray on this machine unless
    ``RAY_ADDRESS`` names a cluster; ``"auto"``, ``"host:6379"`` or ``"ray://host:10001"``
    join one) on entering a ``with`` block or at the first map, and shut down by
    :meth:`close` (or at the end of the ``with`` block). A Ray already initialised by the
    caller is used as is and left running.

    Checked then, before any work: Ray is installed; a cluster address answers within
    ``connect_timeout_s`` (instead of Ray's long reconnect loop); some live node of the
    cluster has the CPUs and GPUs one job asks for (a job that no node can host would wait
    forever). Each failure is one :class:`GradauditError` that says how to fix it.

    Tasks that write into a :class:`RunStore` must see the same store root: on a cluster,
    put the root on a filesystem every node mounts at the same path. All tasks are awaited
    before an error is raised, so no task is left writing when the call returns. A task
    whose worker process or node dies is retried by Ray up to ``max_retries`` times; a
    :class:`RunStore` job resumes from its checkpoints on the retry (its ``done.json`` is
    written only when it finished), so a lost worker costs only the work since its last
    checkpoint.

    Args:
        address: Ray cluster address, or None for a local Ray (or ``RAY_ADDRESS``).
        num_cpus: CPUs of a local Ray (None: all of this machine's).
        cpus_per_job: CPUs reserved by each task (Ray sets the task's thread count to it).
        gpus_per_job: GPUs reserved by each task: a whole number, or a fraction of one GPU
            (0.25: four jobs share a GPU). Ray places such tasks only on nodes that declare
            GPUs and gives each the id of the GPU it shares (``CUDA_VISIBLE_DEVICES``).
        jobs_per_gpu: Many jobs on one GPU: ``k`` runs up to k jobs at once on each GPU
            (each task asks for 1/k GPU); small models that cannot fill a card alone then
            share it. Replaces ``gpus_per_job`` (give one of the two).
        max_retries: How many times Ray reruns a task whose worker died (0: never).
        connect_timeout_s: How long a cluster address may take to answer.
        check_resources: Refuse jobs that no node can host (set False on an autoscaling
            cluster that adds such nodes on demand).
        init_options: More keyword arguments for ``ray.init`` (e.g. ``runtime_env``).

    Attributes:
        task_nodes: The Ray node id that ran each task, over every map of this executor.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 cpus_per_job: float = 1, gpus_per_job: float = 0, max_retries: int = 3,
                 connect_timeout_s: float = 5.0, check_resources: bool = True,
                 init_options: Mapping[str, Any] | None = None, jobs_per_gpu: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_job = check_float(cpus_per_job, "cpus_per_job", "RayExecutor", 0, None,
                                        low_open=True)
        self.gpus_per_job = _gpu_share(gpus_per_job, jobs_per_gpu)
        self.max_retries = check_int(max_retries, "max_retries", "RayExecutor", 0)
        self.connect_timeout_s = check_float(connect_timeout_s, "connect_timeout_s", "RayExecutor",
                                             0, None, low_open=True)
        self.check_resources = bool(check_resources)
        self.init_options = dict(init_options or {})
        self.task_nodes: list[str] = []
        self._started = False

    def _target(self) -> tuple[str, str]:
        """(the cluster address Ray will use, where it came from), '' for a local Ray."""
        if self.address is not None:
            return self.address, "the address"
        return os.environ.get("RAY_ADDRESS", ""), "RAY_ADDRESS"

    def check(self) -> None:
        """Raise one clear error now if Ray is missing or the cluster address does not answer."""
        ray = _import_ray()
        if ray.is_initialized():
            return
        address, origin = self._target()
        target = _probe_target(address)
        if target is None:
            return
        try:
            socket.create_connection(target, timeout=self.connect_timeout_s).close()
        except OSError as err:
            reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
            raise GradauditError(
                f"Cannot reach the Ray cluster at {address} ({origin}): {reason} within "
                f"{self.connect_timeout_s:g} s. Start it (`ray start --head`), fix or unset "
                "RAY_ADDRESS, or run with the in-process executor.") from None

    def _ray(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            self.check()
            options = {"include_dashboard": False, "log_to_driver": True, **self.init_options}
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                options["num_cpus"] = self.num_cpus
            try:
                ray.init(address=self.address, **options)
            except ConnectionError as err:
                address, origin = self._target()
                raise GradauditError(f"Cannot connect to the Ray cluster at {address or 'auto'} "
                                     f"({origin}): {err}") from None
            self._started = True
        if self.check_resources:
            try:
                self._check_fits(ray)
            except GradauditError:
                self.close()  # a Ray started here for nothing does not outlive the error
                raise
        return ray

    def _check_fits(self, ray: Any) -> None:
        """Raise if no live node has the CPUs and GPUs one job asks for."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        for name, need, fix in (
            ("GPU", self.gpus_per_job, "add nodes with GPUs (`ray start --num-gpus N ...`), or ask "
             "for none (gpus_per_job=0, --device cpu)"),
            ("CPU", self.cpus_per_job, "lower cpus_per_job, or add larger nodes"),
        ):
            largest = max((r.get(name, 0.0) for r in nodes), default=0.0)
            if need > largest:
                total = sum(r.get(name, 0.0) for r in nodes)
                raise GradauditError(
                    f"Each job asks for {need:g} {name}(s), but no node of the Ray cluster has "
                    f"that many ({len(nodes)} node(s), {total:g} {name}(s) in all, at most "
                    f"{largest:g} on one): the jobs could never start. Fix: {fix}. (On an "
                    "autoscaling cluster, pass check_resources=False.)")

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        items = list(items)
        if not items:
            return []
        ray = self._ray()
        remote = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                            max_retries=self.max_retries)(_ray_call)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, item) for item in items]
        done, first = wait_all(functools.partial(ray.get, ref) for ref in refs)
        self.task_nodes.extend(pair[0] for pair in done if pair is not None)
        if first is not None:
            cause = getattr(first, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from first  # the task's own exception type, as in-process
            died = tuple(getattr(ray.exceptions, name) for name in
                         ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError")
                         if hasattr(ray.exceptions, name))
            if isinstance(first, died):
                raise GradauditError(
                    f"A Ray worker died while running a job ({type(first).__name__}, after "
                    f"{self.max_retries} retries). The jobs that finished are in the run store; "
                    "the others stay unfinished with their checkpoints: run again to resume "
                    "them.") from first
            raise first
        return [pair[1] for pair in done]  # type: ignore[index]  (no failure: every pair is set)

    def close(self) -> None:
        """Shut down the Ray this executor started (a caller's Ray is left running)."""
        if self._started:
            _import_ray().shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        self._ray()
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
