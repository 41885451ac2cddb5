"""GPU jobs on Ray: tasks that ask for GPUs run only where a node declares them, and
``jobs_per_gpu=k`` runs k jobs at once on one GPU. On a local two-node cluster whose second
node declares one GPU (Ray schedules by declared resources; no real GPU is needed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import raycluster
from gradaudit import ParameterError, ParameterTypeError
from gradaudit.runs import RayExecutor


def test_jobs_per_gpu_is_a_share_of_one_gpu() -> None:
    assert RayExecutor(jobs_per_gpu=4).gpus_per_job == 0.25
    assert RayExecutor(jobs_per_gpu=1).gpus_per_job == 1
    assert RayExecutor(gpus_per_job=0.5, jobs_per_gpu=2).gpus_per_job == 0.5  # the same thing twice
    assert RayExecutor(gpus_per_job=2).gpus_per_job == 2
    with pytest.raises(ParameterError, match=r"'jobs_per_gpu' parameter of RayExecutor must be an int in \[1, 1000\]"):
        RayExecutor(jobs_per_gpu=0)
    with pytest.raises(ParameterTypeError, match=r"'jobs_per_gpu'.*Got 2\.5"):
        RayExecutor(jobs_per_gpu=2.5)
    with pytest.raises(ParameterError, match=r"gpus_per_job=1 and jobs_per_gpu=3: give one of the two"):
        RayExecutor(gpus_per_job=1, jobs_per_gpu=3)
    with pytest.raises(ParameterError, match=r"whole number of GPUs or a fraction of one.*Got 1.5"):
        RayExecutor(gpus_per_job=1.5)


@pytest.fixture(scope="module")
def gpu_cluster():
    """Head: 1 CPU, no GPU. Second node: 2 CPUs and one declared GPU."""
    with raycluster.two_node_cluster(worker={"num_cpus": 2, "num_gpus": 1}) as c:
        yield c


def _holder(root: Path, want: int, hold_s: float):
    """A job that marks itself running in ``root``, stays until it has seen ``want`` running
    jobs (at most 60 s) and ``hold_s`` have passed, and returns what it saw and its GPU."""

    def job(i: int) -> dict[str, object]:
        import ray

        mine = root / f"running-{i}"
        mine.touch()
        seen, start = 0, time.monotonic()
        while time.monotonic() - start < 60:
            seen = max(seen, len(list(root.glob("running-*"))))
            if seen >= want and time.monotonic() - start >= hold_s:
                break
            time.sleep(0.02)
        mine.unlink()
        return {"seen": seen, "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}

    return job


@pytest.mark.slow
def test_gpu_jobs_run_on_the_gpu_node_and_k_share_one_gpu(gpu_cluster, tmp_path: Path) -> None:
    import ray

    alive = [n for n in ray.nodes() if n["Alive"]]
    gpu_nodes = {n["NodeID"] for n in alive if n["Resources"].get("GPU", 0) > 0}
    assert len(alive) == 2 and len(gpu_nodes) == 1

    # k = 2: two jobs at a time share the one GPU (each waits until it has seen the other)
    shared = tmp_path / "shared"
    shared.mkdir()
    ex = RayExecutor(jobs_per_gpu=2, cpus_per_job=0.5)
    out = ex.map(_holder(shared, want=2, hold_s=0.3), range(4))
    assert set(ex.task_nodes) == gpu_nodes  # never on the head, which has a CPU free but no GPU
    assert [o["seen"] for o in out] == [2, 2, 2, 2]  # concurrent, and never more than k
    assert all(o["gpu_ids"] == ["0"] and o["visible"] == "0" for o in out)  # the same GPU

    # k = 1: the same node, CPUs for four, still runs one job at a time: the GPU is the limit
    alone = tmp_path / "alone"
    alone.mkdir()
    ex = RayExecutor(jobs_per_gpu=1, cpus_per_job=0.5)
    out = ex.map(_holder(alone, want=1, hold_s=1.0), range(3))
    assert set(ex.task_nodes) == gpu_nodes
    assert [o["seen"] for o in out] == [1, 1, 1]

    # jobs that ask for no GPU may run on either node (the head too)
    cpu_ex = RayExecutor(cpus_per_job=1)
    cpu_ex.map(_holder(tmp_path, want=1, hold_s=0.5), range(6))
    assert len(set(cpu_ex.task_nodes)) == 2
