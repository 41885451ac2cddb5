"""`gradaudit runs ls | show | gc`: output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradaudit.runs import RunStore

from clirun import run_cli as cli


def _boom(job):
    (job.path / "part.bin").write_bytes(b"0" * 2048)
    raise RuntimeError("diverged")


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    """A store with 2 done jobs, 1 failed, 1 partial (killed: no error.json), one stray temp."""
    s = RunStore(tmp_path / "runs")
    s.run("model", {"n": 1}, lambda job: {"acc": 0.9}, name="mlp-std")
    s.run("maps", {"method": "grad"}, lambda job: {"n_maps": 10})
    with pytest.raises(RuntimeError):
        s.run("model", {"n": 2}, _boom, name="mlp-bad")
    partial = s.job("model", {"n": 3}, name="mlp-killed")
    with partial.lock():
        (partial.path / "checkpoint.bin").write_bytes(b"1" * 100)
    (s.job("model", {"n": 1}, name="mlp-std").path / ".weights.bin.abc.tmp").write_bytes(b"x")
    return s


def _statuses(store: RunStore) -> dict[str, str]:
    return {job.path.name: job.status for job in store.jobs()}


def test_ls_table_and_json(store: RunStore, capsys) -> None:
    code, out, err = cli(capsys, "runs", "ls", "--root", str(store.root))
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["KIND", "NAME", "HASH", "STATUS", "SIZE", "AGE", "WALL"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {"maps", "mlp-std", "mlp-bad", "mlp-killed"}
    assert rows["mlp-std"][3] == "done" and rows["mlp-std"][6].endswith("s")
    assert rows["mlp-bad"][3] == "failed" and rows["mlp-bad"][6] == "-"
    assert rows["mlp-killed"][3] == "partial"
    assert rows["mlp-std"][2] == store.job("model", {"n": 1}).hash

    code, out, _ = cli(capsys, "runs", "ls", "--root", str(store.root), "--kind", "model", "--json")
    table = json.loads(out)
    assert code == 0 and {r["kind"] for r in table} == {"model"} and len(table) == 3
    bad = next(r for r in table if r["name"] == "mlp-bad")
    assert bad["size"] >= 2048 and bad["status"] == "failed"


def test_ls_errors_and_empty(tmp_path: Path, capsys) -> None:
    code, out, err = cli(capsys, "runs", "ls", "--root", str(tmp_path / "nope"))
    assert code == 2 and out == "" and "No run store at" in err and "--root" in err
    code, out, _ = cli(capsys, "runs", "ls", "--root", str(tmp_path))
    assert code == 0 and out.strip() == f"no jobs under {tmp_path}"


def test_show_by_hash_prefix_and_path(store: RunStore, capsys) -> None:
    job = store.job("model", {"n": 1})
    code, out, _ = cli(capsys, "runs", "show", job.hash[:6], "--root", str(store.root))
    assert code == 0
    assert out.startswith(f"model/mlp-std-{job.hash}  [done]")
    assert '"n": 1' in out and '"acc": 0.9' in out
    code, out, _ = cli(capsys, "runs", "show", str(job.path), "--json")
    info = json.loads(out)
    assert code == 0 and info["result"] == {"acc": 0.9} and info["config"] == {"n": 1}

    failed = store.job("model", {"n": 2})
    code, out, _ = cli(capsys, "runs", "show", failed.hash, "--root", str(store.root))
    assert code == 0 and "[failed]" in out and "last error: RuntimeError: diverged" in out


def test_show_unknown_or_ambiguous(store: RunStore, capsys) -> None:
    code, out, err = cli(capsys, "runs", "show", "zzzz", "--root", str(store.root))
    assert code == 2 and out == "" and "No job matches 'zzzz'" in err and "gradaudit runs ls" in err
    code, _, err = cli(capsys, "runs", "show", "mlp", "--root", str(store.root))
    assert code == 2 and "matches 3 jobs" in err


def test_gc_keeps_done_jobs_by_default(store: RunStore, capsys) -> None:
    before = _statuses(store)
    code, out, _ = cli(capsys, "runs", "gc", "--root", str(store.root), "--dry-run")
    assert code == 0 and _statuses(store) == before
    assert "would delete model/mlp-bad-" in out and "would delete model/mlp-killed-" in out
    assert "would delete 2 job(s)" in out and "and 1 leftover(s)" in out
    assert f"leftover {store.job('model', {'n': 1}).path}/.weights.bin.abc.tmp" in out
    assert "delete model/mlp-std" not in out
    assert (store.job("model", {"n": 1}).path / ".weights.bin.abc.tmp").exists()

    code, out, _ = cli(capsys, "runs", "gc", "--root", str(store.root))
    assert code == 0 and "deleted 2 job(s)" in out and "deleted model/mlp-std" not in out
    assert sorted(_statuses(store).values()) == ["done", "done"]
    done = store.job("model", {"n": 1})
    assert not (done.path / ".weights.bin.abc.tmp").exists()
    assert done.result() == {"acc": 0.9}
    assert not list(store.root.glob("*/.trash-*"))

    code, out, _ = cli(capsys, "runs", "gc", "--root", str(store.root))
    assert code == 0 and out.strip() == "nothing to delete"
    code, out, _ = cli(capsys, "runs", "gc", "--root", str(store.root), "--done", "--kind", "maps")
    assert code == 0 and "deleted maps/maps-" in out
    assert list(_statuses(store)) == [done.path.name]


def test_gc_older_than(store: RunStore, capsys) -> None:
    code, out, _ = cli(capsys, "runs", "gc", "--root", str(store.root), "--older-than", "1h")
    assert code == 0 and "job(s)" not in out and "deleted 1 leftover(s)" in out
    old = time.time() - 2 * 3600
    killed = store.job("model", {"n": 3})
    for path in [killed.path, *killed.path.rglob("*")]:
        os.utime(path, (old, old))
    code, out, _ = cli(capsys, "runs", "gc", "--root", str(store.root), "--older-than", "1h")
    assert code == 0 and "deleted model/mlp-killed-" in out and "mlp-bad" not in out
    code, _, err = cli(capsys, "runs", "gc", "--root", str(store.root), "--older-than", "soon")
    assert code == 2 and "--older-than must be a duration like 30m" in err


def test_gc_never_deletes_a_running_job(store: RunStore, capsys) -> None:
    job = store.job("model", {"n": 3})
    with job.lock():
        code, out, _ = cli(capsys, "runs", "gc", "--root", str(store.root), "--done")
        assert code == 0 and job.path.exists()
        assert "mlp-killed" not in out
    assert job.status == "partial"


def test_gc_corrupt_only_when_asked(store: RunStore, capsys) -> None:
    done = store.job("model", {"n": 1})
    (done.path / "done.json").write_text("{")
    cli(capsys, "runs", "gc", "--root", str(store.root))
    assert done.path.exists()
    code, out, _ = cli(capsys, "runs", "gc", "--root", str(store.root), "--corrupt")
    assert code == 0 and "(corrupt" in out and not done.path.exists()


@pytest.mark.slow
def test_console_script_exit_codes(store: RunStore) -> None:
    exe = Path(sys.executable).with_name("gradaudit")
    ok = subprocess.run([str(exe), "runs", "ls", "--root", str(store.root)], capture_output=True, text=True)
    assert ok.returncode == 0 and "mlp-std" in ok.stdout
    bad = subprocess.run([str(exe), "runs", "show", "ffff0000", "--root", str(store.root)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: No job matches")
