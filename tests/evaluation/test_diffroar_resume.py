"""A DiffROAR run killed with SIGKILL resumes: finished groups are skipped, same result.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from gradaudit import ParameterError, data, evaluation
from gradaudit.evaluation import retrain
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe

SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from gradaudit import data, evaluation
    from gradaudit.models import ModelSpec
    from gradaudit.training import Recipe

    def run(out):
        opts = {"blocks": 10, "block_size": 10, "n_train": 1500, "n_test": 500}
        train = data.load("simplified-blockmnist", "train", **opts)
        test = data.load("simplified-blockmnist", "test", **opts)
        maps = tuple(d.per_image["signal_mask"].float() for d in (train, test))
        spec = ModelSpec(name="mlp", input_shape=(1, 1, 100), num_classes=2, options={"hidden": [16]})
        recipe = Recipe(epochs=2, batch_size=32, lr=0.05)
        return evaluation.diffroar(None, train, test, attributions=maps, spec=spec, recipe=recipe,
                                   levels=[0.05, 0.1, 0.2, 0.5, 1.0], seeds=3, random=False,
                                   max_stack=3, out=out, quiet=True)

    if __name__ == "__main__":
        run(sys.argv[1])
""")
GROUPS = 9  # 3 seeds × 9 distinct arms (k = 1 is shared by both sides), in stacks of 3


def _load_script(path: Path):
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["run"]


@pytest.mark.slow
def test_kill9_then_rerun_matches_uninterrupted(tmp_path, monkeypatch) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, str(script), str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    groups = out / "groups"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        if groups.is_dir() and len(list(groups.glob("*.json"))) >= 2:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    finished = {p.name: p.stat().st_mtime_ns for p in groups.glob("*.json")}
    assert 2 <= len(finished) < GROUPS and not (out / "result.json").exists()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    calls = []
    real = retrain.fit_stacked
    monkeypatch.setattr(retrain, "fit_stacked", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        run = _load_script(script)
        resumed = run(str(out))
        trained_on_resume = len(calls)
        fresh = run(str(tmp_path / "fresh"))
    finally:
        torch.set_num_threads(threads)
    assert trained_on_resume == GROUPS - len(finished)
    assert {p: (groups / p).stat().st_mtime_ns for p in finished} == finished  # not rewritten
    assert json.loads((out / "result.json").read_text()) == json.loads((tmp_path / "fresh" / "result.json").read_text())
    assert resumed.to_dict() == fresh.to_dict()
    assert resumed.attribution.diffroar.mean[0] > 0.3

    calls.clear()  # a finished run is loaded, not recomputed
    assert run(str(out)).to_dict() == fresh.to_dict() and not calls


def test_directory_of_another_config_is_refused(tmp_path) -> None:
    opts = {"blocks": 4, "block_size": 2, "n_train": 64, "n_test": 32}
    train = data.load("simplified-blockmnist", "train", **opts)
    test = data.load("simplified-blockmnist", "test", **opts)
    maps = tuple(d.per_image["signal_mask"].float() for d in (train, test))
    kw = {"attributions": maps, "spec": ModelSpec(name="linear", input_shape=(1, 1, 8), num_classes=2),
          "recipe": Recipe(epochs=1, batch_size=16), "levels": [0.5], "seeds": 1, "random": False,
          "quiet": True, "out": tmp_path}
    evaluation.diffroar(None, train, test, **kw)
    before = sorted(p.name for p in (tmp_path / "groups").iterdir())
    with pytest.raises(ParameterError, match="another config"):
        evaluation.diffroar(None, train, test, **{**kw, "seeds": 2})
    assert sorted(p.name for p in (tmp_path / "groups").iterdir()) == before
