"""The process executor: local worker processes, results in item order, errors after all items."""

import math

import pytest

from gradaudit import ParameterError, ParameterTypeError
from gradaudit.runs import ProcessExecutor, make_executor


@pytest.mark.slow  # spawns two workers that import torch
def test_results_come_back_in_item_order_from_two_workers():
    ex = make_executor("process", workers=2, threads=1)
    assert isinstance(ex, ProcessExecutor)
    assert ex.map(math.sqrt, [16.0, 9.0, 4.0, 1.0]) == [4.0, 3.0, 2.0, 1.0]


@pytest.mark.slow
def test_first_error_in_item_order_is_raised_once_every_item_ran():
    with pytest.raises(ValueError, match="math domain error"):
        ProcessExecutor(workers=2, threads=1).map(math.sqrt, [4.0, -1.0, 9.0])


def test_one_item_runs_in_this_process_and_bad_options_fail_early():
    seen = []
    assert ProcessExecutor(workers=2).map(lambda v: seen.append(v) or v, [3]) == [3]  # a lambda: no pickling
    assert seen == [3]
    with pytest.raises(ParameterError, match=r"'workers' parameter of ProcessExecutor must be an int in \[1, inf\)\. Got 0"):
        ProcessExecutor(workers=0)
    with pytest.raises(ParameterTypeError, match=r"'threads' parameter of ProcessExecutor must be an int .* Got 1\.5"):
        ProcessExecutor(threads=1.5)


def test_finished_store_jobs_start_no_worker(tmp_path):
    from gradaudit.runs import RunStore

    store = RunStore(tmp_path / "store")
    calls = []

    def job(j):  # a closure: it cannot be pickled, so it must run in this process
        calls.append(j.config["x"])
        return {"y": 2 * j.config["x"]}

    assert store.map("double", [{"x": 1}], job) == [{"y": 2}]
    out = store.map("double", [{"x": 1}, {"x": 5}], job, executor=ProcessExecutor(workers=2, threads=1))
    assert out == [{"y": 2}, {"y": 10}] and calls == [1, 5]  # x=1 was read back, not recomputed


@pytest.mark.slow
def test_workers_log_their_steps_when_the_cli_does(capfd):
    """Under the CLI's step log, each worker writes its own step lines to the same stderr."""
    from functools import partial

    from gradaudit import _progress

    step = partial(_progress.log_step, seconds=0.5)
    _progress.configure_log()
    try:
        ProcessExecutor(workers=2, threads=1).map(step, ["model a", "model b"])
    finally:
        _progress.reset_log()
    err = capfd.readouterr().err
    assert "model a: done" not in err  # log_step words the line as given
    assert sum(line.endswith(("model a in 0.5 s", "model b in 0.5 s")) for line in err.splitlines()) == 2, err
    ProcessExecutor(workers=2, threads=1).map(step, ["model c", "model d"])  # library call: silent
    assert "model c" not in capfd.readouterr().err
