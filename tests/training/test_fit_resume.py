"""fit's run directories: bit-identical resume (callback crash and kill -9), reuse, refusal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from gradaudit import data, models, training
from gradaudit._io import read_json, save_tensors
from gradaudit._validation import DataError, ParameterError
from gradaudit.training.checkpoint import read_metadata
from gradaudit.training.fit import CHECKPOINT, RUN_JSON, WEIGHTS


def toy(n: int = 600, seed: int = 0) -> data.ImageSet:
    """Four classes of 1x8x8 images in [0, 1]: a class-specific quadrant is bright, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 0.6
    return data.ImageSet(x.clamp(0, 1), y, {"name": "toy", "split": "train", "classes": list(range(4))})


# every source of randomness fit has: shuffling, split, augmentation, PGD starts, schedule
RECIPE = training.Recipe(epochs=3, batch_size=64, lr=0.05, schedule="onecycle", augment="flip",
                         val_fraction=0.1, attack="linf", eps=0.05, attack_steps=2, seed=3)


def _net(seed: int = 0) -> torch.nn.Module:
    return models.build("mlp", (1, 8, 8), 4, seed=seed, hidden=(32,))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")} for h in history]


class Crash(Exception):
    pass


def _crash_after_first_epoch(epoch: int, entry: dict) -> None:
    if epoch == 0:
        raise Crash


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[torch.nn.Module, Path, training.FitResult]:
    """One uninterrupted run with a run directory."""
    out = tmp_path_factory.mktemp("ref") / "run"
    net = _net()
    result = training.fit(net, toy(), RECIPE, out=out, quiet=True, spec={"name": "mlp"})
    return net, out, result


def test_run_directory_contents(reference) -> None:
    net, out, result = reference
    assert sorted(p.name for p in out.iterdir()) == [WEIGHTS, RUN_JSON]
    info = read_json(out / RUN_JSON)
    assert info["status"] == "complete"
    assert info["recipe"] == RECIPE.model_dump(mode="json")
    assert info["data"]["n"] == 600 and info["data"]["name"] == "toy"
    assert info["versions"]["torch"] == torch.__version__
    assert "commit" in info["git"]
    meta = read_metadata(out / WEIGHTS)  # the weights file describes itself too
    assert meta["recipe"] == info["recipe"] and meta["spec"] == {"name": "mlp"} and "git" in meta
    assert _without_time(info["history"]) == _without_time(result.history)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert all(0 <= h["val_acc"] <= 1 for h in result.history)
    assert not net.training


def test_same_seed_gives_bit_identical_weights(reference) -> None:
    net, _, result = reference
    again = _net()
    state = torch.get_rng_state()
    rerun = training.fit(again, toy(), RECIPE, quiet=True)  # in memory, no run directory
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never drawn from
    assert _same_weights(net, again)
    assert _without_time(rerun.history) == _without_time(result.history)
    other = _net()
    training.fit(other, toy(), RECIPE.model_copy(update={"seed": 4}), quiet=True)
    assert not _same_weights(net, other)


def test_crash_after_epoch_one_resumes_to_identical_weights(reference, tmp_path) -> None:
    net, _, result = reference
    out = tmp_path / "run"
    with pytest.raises(Crash):
        training.fit(_net(), toy(), RECIPE, out=out, quiet=True, spec={"name": "mlp"},
                     on_epoch_end=_crash_after_first_epoch)
    assert (out / CHECKPOINT).exists() and not (out / RUN_JSON).exists()
    assert read_metadata(out / CHECKPOINT)["epoch"] == 1
    seen = []
    resumed_net = _net(seed=99)  # the weights must come from the checkpoint, not the init
    resumed = training.fit(resumed_net, toy(), RECIPE, out=out, quiet=True, spec={"name": "mlp"},
                           on_epoch_end=lambda e, h: seen.append(e))
    assert seen == [1, 2]  # only the remaining epochs were trained
    assert _same_weights(net, resumed_net)
    assert _without_time(resumed.history) == _without_time(result.history)
    assert not (out / CHECKPOINT).exists()


def test_adam_resume_is_bit_identical(tmp_path) -> None:
    recipe = training.Recipe(epochs=3, batch_size=50, optimizer="adam", lr=1e-3, weight_decay=1e-4, seed=1)
    whole = _net()
    training.fit(whole, toy(300), recipe, quiet=True)
    out = tmp_path / "adam"
    with pytest.raises(Crash):
        training.fit(_net(), toy(300), recipe, out=out, quiet=True, on_epoch_end=_crash_after_first_epoch)
    resumed = _net()
    training.fit(resumed, toy(300), recipe, out=out, quiet=True)
    assert _same_weights(whole, resumed)


def test_finished_run_is_loaded_not_retrained(reference) -> None:
    net, out, result = reference
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    fresh = _net(seed=5)
    calls = []
    again = training.fit(fresh, toy(), RECIPE, out=out, quiet=True, spec={"name": "mlp"},
                         on_epoch_end=lambda e, h: calls.append(e))
    assert again.loaded and calls == [] and again.seconds == 0.0
    assert _same_weights(net, fresh)
    assert _without_time(again.history) == _without_time(result.history)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"recipe": RECIPE.model_copy(update={"epochs": 4})}, r"recipe\.epochs is 3 there, 4 here"),
        ({"recipe": RECIPE.model_copy(update={"lr": 0.1})}, r"recipe\.lr is 0\.05 there, 0\.1 here"),
        ({"train": toy(seed=1)}, r"data\.fingerprint is '[0-9a-f]{8}' there"),
        ({"spec": {"name": "cnn"}}, r"spec\.name is 'mlp' there, 'cnn' here"),
    ],
)
def test_a_directory_of_another_run_is_refused_and_left_alone(reference, change, match) -> None:
    _, out, _ = reference
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    kwargs = {"recipe": RECIPE, "train": toy(), "spec": {"name": "mlp"}} | change
    with pytest.raises(ParameterError, match=match) as err:
        training.fit(_net(), kwargs["train"], kwargs["recipe"], out=out, quiet=True, spec=kwargs["spec"])
    assert "Use another --out" in str(err.value) and "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_a_killed_run_of_another_recipe_is_refused(tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(Crash):
        training.fit(_net(), toy(), RECIPE, out=out, quiet=True, on_epoch_end=_crash_after_first_epoch)
    ckpt = (out / CHECKPOINT).read_bytes()
    with pytest.raises(ParameterError, match=r"recipe\.seed is 3 there, 4 here"):
        training.fit(_net(), toy(), RECIPE.model_copy(update={"seed": 4}), out=out, quiet=True)
    assert (out / CHECKPOINT).read_bytes() == ckpt
    with pytest.raises(ParameterError, match=r"do not fit this model"):
        training.fit(models.build("mlp", (1, 8, 8), 4, hidden=(16,)), toy(), RECIPE, out=out, quiet=True)
    assert (out / CHECKPOINT).read_bytes() == ckpt


def test_progress_bars_for_epochs_and_batches(monkeypatch) -> None:
    import contextlib
    import importlib

    fit_module = importlib.import_module("gradaudit.training.fit")  # the module, not the function

    calls: list[tuple] = []

    class Recorder:
        def add_task(self, name, total, completed=0):
            calls.append(("add", name, total, completed))
            return name

        def advance(self, task):
            calls.append(("advance", task))

        def remove_task(self, task):
            calls.append(("remove", task))

    @contextlib.contextmanager
    def fake_progress(quiet):
        calls.append(("quiet", quiet))
        yield Recorder()

    monkeypatch.setattr(fit_module, "progress", fake_progress)
    recipe = RECIPE.model_copy(update={"epochs": 2, "val_fraction": 0.0})
    training.fit(_net(), toy(), recipe, quiet=True)
    steps = -(-600 // 64)
    assert calls[0] == ("quiet", True)
    # the epoch bar names what it trains (the model's class here: no run folder)
    assert calls[1] == ("add", "training Sequential", 2, 0)
    assert calls.count(("advance", "epoch 1")) == steps and calls.count(("advance", "epoch 2")) == steps
    assert calls.count(("advance", "training Sequential")) == 2
    assert ("add", "epoch 2", steps, 0) in calls and ("remove", "epoch 2") in calls


def test_model_and_data_mismatch_raise_before_training() -> None:
    with pytest.raises(ParameterError, match=r"does not take inputs of shape \(1, 8, 8\)"):
        training.fit(models.build("mlp", (1, 28, 28), 4), toy(), RECIPE, quiet=True)
    with pytest.raises(ParameterError, match=r"labels need 4 classes"):
        training.fit(models.build("mlp", (1, 8, 8), 3), toy(), RECIPE, quiet=True)


@pytest.mark.parametrize("name", [CHECKPOINT, RUN_JSON])
def test_a_corrupt_run_file_is_a_clear_error(tmp_path, name) -> None:
    out = tmp_path / "run"
    if name == CHECKPOINT:
        with pytest.raises(Crash):
            training.fit(_net(), toy(), RECIPE, out=out, quiet=True, on_epoch_end=_crash_after_first_epoch)
    else:
        training.fit(_net(), toy(), RECIPE.model_copy(update={"epochs": 1}), out=out, quiet=True)
    (out / name).write_bytes((out / name).read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match=rf"The run file .*{name} is unreadable.*Delete it"):
        training.fit(_net(), toy(), RECIPE, out=out, quiet=True)
    if name == RUN_JSON:
        with pytest.raises(DataError, match="unreadable"):
            training.load_run(out)


def test_non_contiguous_inputs_train_like_contiguous_ones() -> None:
    base = toy()
    strided = data.ImageSet(base.x.transpose(2, 3).contiguous().transpose(2, 3), base.y, dict(base.meta))
    assert not strided.x.is_contiguous() and torch.equal(strided.x, base.x)
    a, b = _net(), _net()
    training.fit(a, base, RECIPE, quiet=True)
    training.fit(b, strided, RECIPE, quiet=True)
    assert _same_weights(a, b)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    from gradaudit import data, models, training
    from gradaudit._io import load_tensors
    data_path, recipe_json, threads, out = sys.argv[1:5]
    torch.set_num_threads(int(threads))
    t = load_tensors(data_path)
    train = data.ImageSet(t["x"], t["y"], {"name": "toy", "split": "train", "classes": [0, 1, 2, 3]})
    net = models.build("mlp", (1, 8, 8), 4, seed=0, hidden=(32,))
    recipe = training.Recipe.model_validate_json(recipe_json)
    # a pause after each saved epoch leaves a window in which the run is surely unfinished
    training.fit(net, train, recipe, out=out, quiet=True, on_epoch_end=lambda e, h: time.sleep(1.0))
    """
)


@pytest.mark.slow
def test_kill_9_after_first_checkpoint_then_resume(reference, tmp_path) -> None:
    net, _, _ = reference
    train = toy()
    save_tensors(tmp_path / "toy.safetensors", {"x": train.x, "y": train.y})
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "toy.safetensors"), RECIPE.model_dump_json(),
         str(torch.get_num_threads()), str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (out / RUN_JSON).exists()
    resumed = _net(seed=42)
    result = training.fit(resumed, train, RECIPE, out=out, quiet=True)
    assert not result.loaded and len(result.history) == 3
    assert _same_weights(net, resumed)
