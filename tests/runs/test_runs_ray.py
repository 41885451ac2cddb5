"""The Ray executor where a cluster user relies on it (needs gradaudit[ray], which `make test`
installs): jobs spread over a two-node local cluster with one shared store give the in-process
results; a worker killed mid-job leaves the store consistent and the job resumes; jobs that no
node can host are refused at once; a missing Ray or an unreachable cluster is one clear line."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import raycluster
from gradaudit import GradauditError
from gradaudit.runs import RayExecutor, RunStore

from clirun import run_cli

# --- before any cluster is up: the executor must not find a Ray running -------------------


def test_cli_without_ray_says_how_to_install_it(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, _, err = run_cli(capsys, "run", "synthetic", "--quick", "--executor", "ray",
                           "--out", str(tmp_path / "s"))
    assert code == 2
    assert err.strip().count("\n") == 0  # one line
    assert err.startswith("error: RayExecutor needs Ray, which is not installed: "
                          "pip install 'gradaudit[ray]'.")
    assert not (tmp_path / "s" / "results.json").exists()


def test_cli_unreachable_ray_address_fails_fast(monkeypatch, capsys, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # loopback, a port nothing listens on
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, "run", "synthetic", "--quick", "--executor", "ray",
                           "--out", str(tmp_path / "s"))
    seconds = time.perf_counter() - t0
    assert code == 2
    assert seconds < 15, f"took {seconds:.1f} s"
    assert err.strip().count("\n") == 0  # one line, no traceback
    assert err.startswith("error: Cannot reach the Ray cluster at 127.0.0.1:1 (RAY_ADDRESS): ")
    assert "unset RAY_ADDRESS" in err
    assert not ray.is_initialized()
    assert not (tmp_path / "s" / "results.json").exists()


def test_bad_ray_address_is_a_clear_error() -> None:
    pytest.importorskip("ray")
    with pytest.raises(GradauditError, match=r"The Ray address 'head-node' is not host:port"), \
            RayExecutor(address="head-node"):
        pass


class FakeRay:
    """Stands in for the ray module: a local Ray of one node with 2 CPUs, no GPU."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.up = False

    def is_initialized(self) -> bool:
        return self.up

    def init(self, address=None, **options) -> None:
        self.calls.append(f"init {address} {options.get('num_cpus')}")
        self.up = True

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"GPU": 8.0}}]

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        self.up = False


def test_a_ray_started_for_jobs_it_cannot_host_is_shut_down(monkeypatch) -> None:
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # the dead node's GPUs do not count
    with pytest.raises(GradauditError, match=r"asks for 1 GPU\(s\).*\(1 node\(s\), 0 GPU\(s\) in all"), \
            RayExecutor(num_cpus=2, gpus_per_job=1):
        pass
    assert fake.calls == ["init None 2", "shutdown"]
    fake.calls.clear()
    with RayExecutor(num_cpus=2, cpus_per_job=2) as ex:  # fits: kept until the block ends
        assert fake.calls == ["init None 2"]
        assert ex.map(str, []) == []
    assert fake.calls == ["init None 2", "shutdown"]


# --- on a local two-node cluster (1 CPU each, no GPU), shared by the tests below -----------


@pytest.fixture(scope="module")
def cluster():
    with raycluster.two_node_cluster() as c:
        yield c


def _node_ids(ray) -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


@pytest.mark.slow
def test_jobs_spread_over_two_nodes_give_in_process_results(cluster, jobs, tmp_path: Path) -> None:
    import ray

    configs = [{"seed": s, "n": 16, "sleep": 0.5} for s in range(4)]
    expected = RunStore(tmp_path / "local").map("draw", configs, jobs.seeded_job)
    store = RunStore(tmp_path / "shared")
    with RayExecutor() as ex:
        got = store.map("draw", configs, jobs.seeded_job, executor=ex)
    assert ray.is_initialized()  # the caller's cluster connection is left as it was
    assert got == expected
    # 4 jobs of 0.5 s on two 1-CPU nodes: both nodes ran some
    assert len(ex.task_nodes) == 4
    assert set(ex.task_nodes) == _node_ids(ray)
    assert len(_node_ids(ray)) == 2
    # every result landed in the one store, and loads in-process without running again
    assert all(j.status == "done" for j in store.jobs("draw")) and len(store.jobs("draw")) == 4
    assert os.getpid() not in {int((j.path / "pid").read_text()) for j in store.jobs("draw")}
    assert [store.run("draw", c, lambda job: 1 / 0) for c in configs] == expected


def _kill_when_paused(root: Path, future) -> int:
    """Wait until the job in ``root`` reports its pid (paused mid-training), SIGKILL it."""
    end = time.monotonic() + 120
    while not (root / "paused").exists():
        if future.done():
            future.result()  # raise what went wrong
            raise AssertionError("the job finished without pausing")
        assert time.monotonic() < end, "the Ray job never reached its pause point"
        time.sleep(0.05)
    time.sleep(0.1)  # the pid is written before the file is visible: read it whole
    pid = int((root / "paused").read_text())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.slow
def test_killed_worker_leaves_store_consistent_and_rerun_resumes(cluster, jobs, tmp_path: Path,
                                                                  one_thread) -> None:
    clean = RunStore(tmp_path / "clean").run("model", jobs.CONFIG, jobs.train_job, name="toy")
    # a job that pauses after epoch 3 of 6 (it has checkpointed epochs 0-2) until killed
    pausing = functools.partial(jobs.train_job, pause_after=3)

    # 1. no retries: the map reports the dead worker; the store holds an unfinished job
    root = tmp_path / "store"
    store = RunStore(root)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(store.map, "model", [jobs.CONFIG], pausing, ["toy"],
                             RayExecutor(max_retries=0))
        job = store.job("model", jobs.CONFIG, name="toy")
        _kill_when_paused(root, future)
        with pytest.raises(GradauditError, match=r"A Ray worker died while running a job "
                           r"\(WorkerCrashedError, after 0 retries\).*run again to resume"):
            future.result(timeout=120)
    assert job.status == "partial" and not job.done
    assert sorted(p.name for p in job.path.iterdir()) == ["config.json", "epochs.log", "fit", "lock"]
    assert (job.path / "fit" / "checkpoint.safetensors").exists()
    assert (job.path / "epochs.log").read_text().split() == ["0", "1", "2"]
    # the rerun resumes from the checkpoint (epochs 3-5 only) to the uninterrupted result
    with RayExecutor() as ex:
        assert store.map("model", [jobs.CONFIG], pausing, ["toy"], executor=ex) == [clean]
    assert (job.path / "epochs.log").read_text().split() == ["0", "1", "2", "3", "4", "5"]
    assert json.loads((job.path / "done.json").read_text())["result"] == clean

    # 2. with Ray's retries (the default): the same kill is invisible to the caller
    root = tmp_path / "retried"
    store = RunStore(root)
    with ThreadPoolExecutor(1) as pool, RayExecutor() as ex:
        future = pool.submit(store.map, "model", [jobs.CONFIG], pausing, ["toy"], ex)
        _kill_when_paused(root, future)
        assert future.result(timeout=120) == [clean]
    job = store.job("model", jobs.CONFIG, name="toy")
    assert job.done and (job.path / "epochs.log").read_text().split() == ["0", "1", "2", "3", "4", "5"]


@pytest.mark.slow
def test_jobs_no_node_can_host_are_refused_at_once(cluster, jobs, tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(GradauditError, match=r"Each job asks for 1 GPU\(s\), but no node of the Ray "
                       r"cluster has that many \(2 node\(s\), 0 GPU\(s\) in all, at most 0 on one\)"
                       r".*ray start --num-gpus"):
        store.map("draw", [{"seed": 1, "n": 4}], jobs.seeded_job,
                  executor=RayExecutor(gpus_per_job=1))
    with pytest.raises(GradauditError, match=r"Each job asks for 2 CPU\(s\).*2 CPU\(s\) in all, "
                       r"at most 1 on one"):
        store.map("draw", [{"seed": 1, "n": 4}], jobs.seeded_job,
                  executor=RayExecutor(cpus_per_job=2))
    assert time.perf_counter() - t0 < 10  # refused, not queued forever
    assert not (tmp_path / "draw").exists()  # nothing was submitted
    # a fraction of a GPU too, before the function is sent anywhere
    with pytest.raises(GradauditError, match=r"asks for 0.5 GPU"):
        RayExecutor(gpus_per_job=0.5).map(jobs.seeded_job, [None])
