"""Executors: in-process and Ray give the same results, into the same store."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

from gradaudit import GradauditError, ParameterError, ParameterTypeError
from gradaudit.runs import InProcessExecutor, RayExecutor, RunStore, make_executor


def test_in_process_map_keeps_order_and_stops_at_first_error() -> None:
    seen = []

    def fn(x):
        seen.append(x)
        if x == 3:
            raise KeyError(x)
        return x * 10

    ex = InProcessExecutor()
    assert ex.map(fn, [2, 1, 0]) == [20, 10, 0]
    seen.clear()
    with pytest.raises(KeyError):
        ex.map(fn, [1, 3, 4])
    assert seen == [1, 3]


class CountingExecutor:
    """Any object with map(fn, items) is an executor; this one records the items."""

    def __init__(self) -> None:
        self.items: list = []

    def map(self, fn, items):
        items = list(items)
        self.items += items
        return [fn(item) for item in reversed(items)][::-1]


def test_store_map_runs_unique_jobs_on_the_executor(jobs, tmp_path: Path) -> None:
    ex = CountingExecutor()
    configs = [{"seed": 1, "n": 8}, {"seed": 2, "n": 8}, {"seed": 1, "n": 8}]
    out = RunStore(tmp_path).map("draw", configs, jobs.seeded_job, executor=ex)
    assert len(ex.items) == 2  # the repeated config ran once
    assert out[0] == out[2] != out[1]
    assert out == [RunStore(tmp_path).run("draw", c, jobs.seeded_job) for c in configs]
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 8, generator=g, dtype=torch.float64)
    assert out[1] == {"seed": 2, "trace": (w @ w.T).trace().item(), "first": w[0, 0].item()}


def test_make_executor() -> None:
    assert isinstance(make_executor(), InProcessExecutor)
    assert isinstance(make_executor("ray", num_cpus=2), RayExecutor)  # Ray not started yet
    with pytest.raises(ParameterError, match=r"Unknown executor .*'rya'.*Did you mean 'ray'"):
        make_executor("rya")
    with pytest.raises(ParameterError, match="takes no options"):
        make_executor("inprocess", num_cpus=2)
    with pytest.raises(ParameterError, match="'cpus_per_job' parameter of RayExecutor"):
        RayExecutor(cpus_per_job=0)


def test_ray_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, jobs, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(GradauditError, match=r"pip install 'gradaudit\[ray\]'"):
        RunStore(tmp_path).map("draw", [{"seed": 1, "n": 2}], jobs.seeded_job,
                               executor=RayExecutor())
    assert not tmp_path.joinpath("draw").exists() or not any(tmp_path.joinpath("draw").iterdir())


@pytest.mark.slow
def test_ray_matches_in_process(jobs, tmp_path: Path, one_thread) -> None:
    ray = pytest.importorskip("ray")
    draws = [{"seed": 1, "n": 16}, {"seed": 2, "n": 16}]
    local = RunStore(tmp_path / "local")
    expected_draws = local.map("draw", draws, jobs.seeded_job)
    expected_model = local.run("model", jobs.CONFIG, jobs.train_job, name="toy")

    shared = RunStore(tmp_path / "ray")
    t0 = time.perf_counter()
    with RayExecutor(num_cpus=2) as ex:
        got_draws = shared.map("draw", draws, jobs.seeded_job, executor=ex)
        got_model = shared.map("model", [jobs.CONFIG], jobs.train_job, names=["toy"], executor=ex)[0]
        with pytest.raises(ValueError, match="seed 3 diverged"):
            shared.map("fail", [{"seed": 2}, {"seed": 3}], jobs.failing_job, executor=ex)
        assert ray.is_initialized()
    assert not ray.is_initialized()  # the executor shut down the Ray it started
    print(f"ray part: {time.perf_counter() - t0:.1f}s")

    assert got_draws == expected_draws
    assert got_model == expected_model
    pids = {int(shared.job("draw", c).path.joinpath("pid").read_text()) for c in draws}
    assert os.getpid() not in pids  # they really ran in Ray workers
    # results landed in the shared store: rerunning in-process loads them
    calls = []
    assert shared.run("model", jobs.CONFIG, lambda job: calls.append(1), name="toy") == expected_model
    assert calls == []
    statuses = {j.config["seed"]: j.status for j in shared.jobs("fail")}
    assert statuses == {2: "done", 3: "failed"}


def test_wait_all_waits_for_every_task_then_gives_the_first_error() -> None:
    """The one 'wait for every task, then raise the first error' loop of the process and Ray executors."""
    from gradaudit.runs.executors import wait_all

    called = []

    def task(i: int):
        def wait():
            called.append(i)
            if i in (1, 3):
                raise ValueError(f"task {i}")
            return 10 * i
        return wait

    results, first = wait_all(task(i) for i in range(5))
    assert called == [0, 1, 2, 3, 4]  # the failures did not stop the waits after them
    assert results == [0, None, 20, None, 40]
    assert isinstance(first, ValueError) and str(first) == "task 1"
    assert wait_all(task(i) for i in (0, 2)) == ([0, 20], None)
    with pytest.raises(ParameterTypeError, match=r"'max_retries' parameter of RayExecutor must be an int in \[0, inf\)"):
        RayExecutor(max_retries=1.0)
    with pytest.raises(ParameterError, match=r"'max_retries' parameter of RayExecutor .* Got -1"):
        RayExecutor(max_retries=-1)
