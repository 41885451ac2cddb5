"""The run store: content addressing, caching, failure, corrupt files, locking."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gradaudit import DataError, GradauditError, ParameterError, ParameterTypeError
from gradaudit.runs import JobLockedError, RunStore, canonical_json, config_hash
from gradaudit.training import Recipe


def _ok(job):
    (job.path / "artifact.txt").write_text("x")
    return {"value": 1.5, "n": job.config["n"]}


# ----------------------------------------------------------------------------- addressing


def test_same_config_same_directory_different_config_different(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.job("model", {"n": 1, "lr": 0.1, "hidden": (256, 256)})
    b = store.job("model", {"hidden": [256, 256], "lr": 0.1, "n": 1})  # key order, tuple/list
    c = store.job("model", {"n": 2, "lr": 0.1, "hidden": (256, 256)})
    d = store.job("maps", {"n": 1, "lr": 0.1, "hidden": (256, 256)})  # same config, other kind
    assert a.path == b.path == tmp_path / "model" / f"model-{a.hash}"
    assert len(a.hash) == 12 and int(a.hash, 16) >= 0
    assert c.path != a.path and c.hash != a.hash
    assert d.hash != a.hash and d.path.parent.name == "maps"
    assert a.hash == config_hash("model", {"n": 1, "lr": 0.1, "hidden": [256, 256]})
    assert not a.path.exists()  # asking for a job writes nothing


def test_canonical_json_normalises_values_not_types() -> None:
    # float noise below 15 significant digits, integral floats, nesting, sets
    assert canonical_json({"x": 0.1 + 0.2}) == canonical_json({"x": 0.3}) == '{"x":0.3}'
    assert canonical_json({"x": 1.0, "y": -0.0}) == '{"x":1,"y":0}'
    assert canonical_json({"b": {"z": 1, "a": [1, 2]}, "a": {2, 1}}) == '{"a":[1,2],"b":{"a":[1,2],"z":1}}'
    assert canonical_json({"flag": True}) != canonical_json({"flag": 1})
    assert canonical_json({"eps": 16 / 255}) != canonical_json({"eps": 8 / 255})
    assert canonical_json({"x": 1e-7}) != canonical_json({"x": 1.0000001e-7})


def test_job_gets_exact_floats_and_float_noise_reuses_the_job(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    assert store.run("model", {"eps": 16 / 255}, lambda job: job.config["eps"]) == 16 / 255
    assert json.loads(next(tmp_path.glob("model/*/config.json")).read_text())["config"]["eps"] == 16 / 255
    third = store.run("model", {"lr": 0.3}, lambda job: job.config["lr"])
    assert store.run("model", {"lr": 0.1 + 0.2}, lambda job: -1.0) == third == 0.3
    assert store.job("model", {"lr": 0.1 + 0.2}).config == {"lr": 0.3}  # the stored one


def test_pydantic_models_and_dataclasses_hash_like_their_json(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Data:
        name: str
        seed: int

    recipe = Recipe(epochs=3, lr=0.1)
    store = RunStore(tmp_path)
    a = store.job("model", {"recipe": recipe, "data": Data("fmnist", 0)})
    b = store.job("model", {"recipe": recipe.model_dump(mode="json"), "data": {"seed": 0, "name": "fmnist"}})
    c = store.job("model", {"recipe": Recipe(epochs=4, lr=0.1), "data": Data("fmnist", 0)})
    assert a.path == b.path and a.path != c.path
    assert a.config["recipe"]["epochs"] == 3


@pytest.mark.parametrize(("config", "where"), [
    ({"fn": print}, "config.fn"),
    ({"a": [1, {"b": object()}]}, "config.a[1].b"),
    ({"eps": float("nan")}, "config.eps"),
    ({1: "x"}, "config"),
])
def test_unhashable_config_names_the_value(tmp_path: Path, config, where: str) -> None:
    with pytest.raises(ParameterTypeError, match=f"at {re.escape(where)} "):
        RunStore(tmp_path).job("model", config)
    assert not tmp_path.joinpath("model").exists()


@pytest.mark.parametrize(("kind", "name"), [("Model", None), ("a/b", None), ("", None),
                                            ("model", "../x"), ("model", "a b")])
def test_bad_kind_or_name(tmp_path: Path, kind: str, name: str | None) -> None:
    with pytest.raises(ParameterError, match=r"parameter of RunStore\.job must be"):
        RunStore(tmp_path).job(kind, {"n": 1}, name=name)


def test_name_is_a_label_an_existing_job_is_reused_under_another_name(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    first = store.run("model", {"n": 3}, _ok, name="mlp-std")
    calls = []
    again = store.run("model", {"n": 3}, lambda job: calls.append(1) or {}, name="renamed")
    assert again == first and calls == []
    assert [p.name for p in (tmp_path / "model").iterdir()] == [f"mlp-std-{config_hash('model', {'n': 3})}"]


# ------------------------------------------------------------------------- run and cache


def test_finished_job_is_loaded_not_recomputed(tmp_path: Path) -> None:
    calls = []

    def fn(job):
        calls.append(job.path)
        return {"accuracy": 0.875, "curve": (0.1, 0.2), "n": job.config["n"]}

    store = RunStore(tmp_path)
    first = store.run("model", {"n": 7}, fn, name="mlp")
    second = RunStore(tmp_path).run("model", {"n": 7}, fn, name="mlp")
    assert first == second == {"accuracy": 0.875, "curve": [0.1, 0.2], "n": 7}
    assert len(calls) == 1
    job = store.job("model", {"n": 7}, name="mlp")
    assert job.done and job.status == "done" and job.result() == first
    cfg = json.loads((job.path / "config.json").read_text())
    assert cfg["config"] == {"n": 7} and cfg["hash"] == job.hash and cfg["kind"] == "model"
    assert "versions" in cfg["provenance"] and cfg["created"]
    done = json.loads((job.path / "done.json").read_text())
    assert done["status"] == "done" and done["wall_s"] >= 0 and "git" in done["provenance"]
    assert sorted(p.name for p in job.path.iterdir()) == ["config.json", "done.json"]
    stamp = (job.path / "done.json").read_bytes(), (job.path / "done.json").stat().st_mtime_ns
    assert store.run("model", {"n": 7}, fn, name="mlp") == first
    assert stamp == ((job.path / "done.json").read_bytes(), (job.path / "done.json").stat().st_mtime_ns)

    store.run("model", {"n": 8}, fn, name="mlp")
    assert len(calls) == 2


def test_task_decorator_and_map(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    calls = []

    @store.task("model")
    def square(job):
        calls.append(job.config["n"])
        return job.config["n"] ** 2

    assert square({"n": 3}) == 9 and square({"n": 3}) == 9 and calls == [3]
    out = store.map("model", [{"n": 4}, {"n": 3}, {"n": 4}], lambda job: job.config["n"] ** 2,
                    names=["a", "b", "c"])
    assert out == [16, 9, 16]
    assert len(list((tmp_path / "model").iterdir())) == 2
    with pytest.raises(ParameterError, match="one name per config"):
        store.map("model", [{"n": 1}], _ok, names=["a", "b"])


def test_crash_leaves_job_partial_and_propagates(tmp_path: Path) -> None:
    store = RunStore(tmp_path)

    def boom(job):
        (job.path / "half.bin").write_bytes(b"12")
        raise ZeroDivisionError("retrain 3 diverged")

    with pytest.raises(ZeroDivisionError, match="retrain 3 diverged"):
        store.run("model", {"n": 1}, boom)
    job = store.job("model", {"n": 1})
    assert not job.done and job.status == "failed"
    assert not (job.path / "done.json").exists() and not (job.path / "lock").exists()
    assert json.loads((job.path / "error.json").read_text())["error"] == "ZeroDivisionError"
    with pytest.raises(GradauditError, match="is not done"):
        job.result()
    # the rerun sees the half-written files (to resume from) and finishes
    seen = []
    result = store.run("model", {"n": 1}, lambda j: seen.append((j.path / "half.bin").read_bytes()) or {"ok": 1})
    assert seen == [b"12"] and result == {"ok": 1}
    assert job.status == "done" and not (job.path / "error.json").exists()


def test_result_that_is_not_json_leaves_job_unfinished(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    with pytest.raises(ParameterTypeError, match="must be JSON-able"):
        store.run("model", {"n": 1}, lambda job: {"model": object()})
    assert not store.job("model", {"n": 1}).done


def test_finish_needs_the_lock(tmp_path: Path) -> None:
    job = RunStore(tmp_path).job("model", {"n": 1})
    with pytest.raises(GradauditError, match=r"inside `with job\.lock"):
        job.finish({"x": 1})
    with job.lock():
        job.finish({"x": 1})
    assert job.result() == {"x": 1}


# ---------------------------------------------------------------------- corrupt run files


def test_corrupt_done_json_is_a_clear_error_and_is_left_alone(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.run("model", {"n": 1}, _ok)
    done = store.job("model", {"n": 1}).path / "done.json"
    done.write_text('{"status": "done", "resu')
    calls = []
    with pytest.raises(DataError, match=r"done\.json is unreadable or corrupt.*Delete .*done\.json to rerun"):
        store.run("model", {"n": 1}, lambda job: calls.append(1))
    assert calls == [] and done.read_text() == '{"status": "done", "resu'
    assert store.job("model", {"n": 1}).status == "corrupt"
    done.write_text('{"status": "running"}')
    with pytest.raises(DataError, match="no status 'done'"):
        store.job("model", {"n": 1}).result()
    done.unlink()  # the documented fix: the job reruns (and finds its files)
    assert store.run("model", {"n": 1}, _ok) == {"value": 1.5, "n": 1}


def test_corrupt_or_edited_config_json_is_a_clear_error(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.run("model", {"n": 1}, _ok)
    job = store.job("model", {"n": 1})
    cfg = job.path / "config.json"
    before = (job.path / "done.json").read_bytes()
    cfg.write_bytes(b"\x00\xff garbage")
    with pytest.raises(DataError, match=r"config\.json is unreadable or corrupt.*Delete the job directory"):
        store.job("model", {"n": 1})
    cfg.write_text(json.dumps({"kind": "model", "config": {"n": 2}}))
    with pytest.raises(DataError, match="holds another config"):
        store.run("model", {"n": 1}, _ok)
    assert (job.path / "done.json").read_bytes() == before


# ---------------------------------------------------------------------------- locking

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gradaudit.runs import RunStore
    def hold(job):
        Path(sys.argv[2]).write_text("held")
        time.sleep(600)
    RunStore(sys.argv[1]).run("model", {"n": 1}, hold)
""")


@pytest.mark.slow
def test_live_lock_is_an_error_naming_the_pid_and_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    root, flag = tmp_path / "store", tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root), str(flag)],
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < end, "holder never started"
            time.sleep(0.05)
        store = RunStore(root)
        job = store.job("model", {"n": 1})
        assert job.status == "running"
        with pytest.raises(JobLockedError, match=f"being written by process {proc.pid} on "):
            store.run("model", {"n": 1}, _ok)
        with pytest.raises(JobLockedError), job.lock():
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert json.loads((job.path / "lock").read_text())["pid"] == proc.pid  # stale file left
    assert job.status == "partial"
    assert store.run("model", {"n": 1}, _ok) == {"value": 1.5, "n": 1}
    assert not (job.path / "lock").exists()


def test_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    job = RunStore(tmp_path).job("model", {"n": 1})
    with job.lock():
        assert job.status == "running"
        other = RunStore(tmp_path).job("model", {"n": 1})
        with pytest.raises(JobLockedError, match=f"process {os.getpid()}"), other.lock():
            pass
    assert job.status == "partial"


def test_wait_for_a_holder_then_load_its_result(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    job = store.job("model", {"n": 1})
    release = threading.Event()

    def holder():
        with job.lock():
            release.wait(10)
            job.finish({"by": "holder"})

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        while job.status != "running":
            time.sleep(0.01)
        with pytest.raises(JobLockedError):
            store.run("model", {"n": 1}, _ok, wait=0.1)
        threading.Timer(0.3, release.set).start()
        calls = []
        assert store.run("model", {"n": 1}, lambda j: calls.append(1), wait=10) == {"by": "holder"}
        assert calls == []
    finally:
        release.set()
        thread.join()


def test_lock_error_inside_the_job_is_not_retried(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    inner = store.job("maps", {"n": 1})
    calls = []

    def outer(job):
        calls.append(1)
        return store.run("maps", {"n": 1}, _ok)  # held below: fails at once

    with inner.lock(), pytest.raises(JobLockedError, match="maps/maps-"):
        store.run("study", {"n": 1}, outer, wait=5)
    assert calls == [1]


# ----------------------------------------------------------------------------- caller-named folders


def test_run_folder_parts_resume_and_a_part_of_another_config_is_not_loaded(tmp_path: Path) -> None:
    from gradaudit.runs import RunFolder

    assert RunFolder(None, {"n": 1}).load("g") is None  # no folder: nothing written, nothing found
    folder = RunFolder(tmp_path / "out", {"n": 1, "lr": 0.1})
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["config_hash"] == folder.hash and config["config"] == {"n": 1, "lr": 0.1}
    folder.save("g0", {"acc": [0.5, 0.25]})
    assert RunFolder(tmp_path / "out", {"lr": 0.1, "n": 1}).load("g0")["acc"] == [0.5, 0.25]  # key order
    part = tmp_path / "out" / "groups" / "g0.json"
    part.write_text(json.dumps({**json.loads(part.read_text()), "config_hash": "0" * 16}))
    assert folder.load("g0") is None  # written under another config: redone, not trusted


def test_check_same_names_the_first_four_differences(tmp_path: Path) -> None:
    from gradaudit.runs import check_same

    found = {"recipe": {"lr": 0.1, "epochs": 3, "seed": 0}, "data": {"n": 10, "name": "a"}}
    wanted = {"recipe": {"lr": 0.2, "epochs": 4, "seed": 0}, "data": {"n": 11, "name": "b"}}
    check_same(tmp_path, found, found, what="a run", fix="Fix it.")
    with pytest.raises(ParameterError) as err:
        check_same(tmp_path, found, wanted, what="a training run", fix="Use another --out.")
    assert str(err.value) == (f"The directory {tmp_path} holds a training run with another config (recipe.lr is "
                              "0.1 there, 0.2 here; recipe.epochs is 3 there, 4 here; data.n is 10 there, 11 here; "
                              "data.name is 'a' there, 'b' here). Use another --out.")
    with pytest.raises(ParameterError, match=r"data\.name is 'a' there, 'b' here; \.\.\.\)"):
        check_same(tmp_path, found, {**wanted, "spec": {"name": "mlp"}}, what="a run", fix="")
