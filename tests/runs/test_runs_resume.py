"""A job killed with kill -9 mid-way resumes on rerun and ends as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradaudit._io import load_tensors
from gradaudit.runs import RunStore

HELPER = Path(__file__).with_name("runs_jobs.py")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"job script exited early:\n{proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("job script never reached its pause point")
        time.sleep(0.05)


@pytest.mark.slow
def test_kill9_job_resumes_and_matches_uninterrupted_run(jobs, tmp_path: Path, one_thread) -> None:
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, str(HELPER), str(killed_root), "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    # the uninterrupted run, in this process, while the subprocess starts up
    clean = RunStore(clean_root).run("model", jobs.CONFIG, jobs.train_job, name="toy")
    _wait_for(killed_root / "paused", proc)
    job = RunStore(killed_root).job("model", jobs.CONFIG, name="toy")
    assert job.status == "running"  # the live process holds the lock
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    assert job.status == "partial" and not job.done
    assert not (job.path / "done.json").exists()
    assert (job.path / "fit" / "checkpoint.safetensors").exists()
    assert (job.path / "lock").exists()  # left by the killed process, taken over below

    calls = []

    def resume(j):
        calls.append(j.path)
        return jobs.train_job(j)

    resumed = RunStore(killed_root).run("model", jobs.CONFIG, resume, name="toy")
    clean_job = RunStore(clean_root).job("model", jobs.CONFIG, name="toy")

    assert calls == [job.path]
    assert job.path.name == clean_job.path.name  # same config, same directory name
    # the resumed attempt trained epochs 3, 4, 5 only; the clean run trained 0..5
    assert (job.path / "epochs.log").read_text().split() == ["0", "1", "2", "3", "4", "5"]
    assert resumed == clean
    assert resumed["accuracy"] > 0.8
    a = load_tensors(job.path / "fit" / "model.safetensors")
    b = load_tensors(clean_job.path / "fit" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert not (job.path / "lock").exists()
    # a finished job is loaded, not recomputed
    assert RunStore(killed_root).run("model", jobs.CONFIG, resume, name="toy") == resumed
    assert len(calls) == 1
