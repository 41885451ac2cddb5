"""Progress without a terminal: one log line per finished step on stderr (issue 13, item 7)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradaudit import _progress, data, models, training
from gradaudit.runs import RunStore

LINE = re.compile(r"^\d\d:\d\d:\d\d ")  # every log line starts with the time of day


@pytest.fixture
def log_on():
    """The CLI's log handler (stderr, INFO), removed after the test."""
    _progress.configure_log(quiet=False)
    yield
    for handler in list(_progress.LOGGER.handlers):
        _progress.LOGGER.removeHandler(handler)
    _progress.LOGGER.setLevel(logging.NOTSET)


def _toy() -> data.ImageSet:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (96,), generator=g)
    return data.ImageSet(torch.rand(96, 1, 4, 4, generator=g), y, {"name": "toy", "split": "train", "classes": [0, 1]})


def _lines(err: str) -> list[str]:
    lines = err.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    return [line[9:] for line in lines]


def test_store_jobs_log_done_cached_and_resumed(capsys, tmp_path, log_on):
    store = RunStore(tmp_path)
    store.run("model", {"a": 1}, lambda job: {"ok": 1}, name="mlp-a")
    store.run("model", {"a": 1}, lambda job: {"ok": 1}, name="mlp-a")
    lines = _lines(capsys.readouterr().err)
    assert re.fullmatch(r"model mlp-a: done in \d+\.\d s", lines[0]), lines
    assert lines[1].startswith("model mlp-a: already done (") and len(lines) == 2

    def crash(job):
        (job.path / "checkpoint").write_text("epoch 1")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.run("model", {"a": 2}, crash, name="mlp-b")
    capsys.readouterr()
    store.run("model", {"a": 2}, lambda job: {"ok": 2}, name="mlp-b")
    lines = _lines(capsys.readouterr().err)
    assert lines[0].startswith("model mlp-b: resuming from ") and str(tmp_path) in lines[0]
    assert lines[1].startswith("model mlp-b: done in ")


def test_the_library_is_silent_until_the_cli_configures_the_log(capsys, tmp_path):
    RunStore(tmp_path).run("model", {"a": 1}, lambda job: {"ok": 1})
    assert capsys.readouterr().err == ""


def test_fit_logs_one_line_per_epoch_without_a_terminal_and_says_it_resumes(capsys, tmp_path, log_on):
    net = models.build("mlp", (1, 4, 4), 2, seed=0, hidden=(8,))
    recipe = training.Recipe(epochs=3, batch_size=32, val_fraction=0.25)

    def crash(epoch, entry):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.fit(net, _toy(), recipe, out=tmp_path / "run", on_epoch_end=crash, spec={"name": "mlp"})
    lines = _lines(capsys.readouterr().err)  # capsys: stderr is not a TTY, so no bars
    assert [re.sub(r"\d\.\d{4}", "X", line) for line in lines] == [
        f"mlp in {tmp_path / 'run'}: epoch 1/3, loss X, train acc X, val acc X in " + lines[0].rsplit(" in ", 1)[1],
        f"mlp in {tmp_path / 'run'}: epoch 2/3, loss X, train acc X, val acc X in " + lines[1].rsplit(" in ", 1)[1],
    ]
    training.fit(models.build("mlp", (1, 4, 4), 2, seed=0, hidden=(8,)), _toy(), recipe, out=tmp_path / "run",
                 spec={"name": "mlp"})
    lines = _lines(capsys.readouterr().err)
    assert lines[0] == f"mlp in {tmp_path / 'run'}: resuming from {tmp_path / 'run' / 'checkpoint.safetensors'} at epoch 3/3"
    assert lines[1].startswith(f"mlp in {tmp_path / 'run'}: epoch 3/3, ") and len(lines) == 2
    training.fit(models.build("mlp", (1, 4, 4), 2, seed=0, hidden=(8,)), _toy(), recipe, out=tmp_path / "q",
                 quiet=True)
    assert capsys.readouterr().err == ""


def test_quiet_silences_the_log(capsys, tmp_path):
    """What `-q` sets up (cli.main: configure_log(quiet=True)) lets no step line through."""
    try:
        for quiet in (True, False):
            _progress.configure_log(quiet=quiet)
            RunStore(tmp_path).run("model", {"quiet": quiet}, lambda job: {"ok": 1})
            err = capsys.readouterr().err
            assert (err == "") == quiet, err
    finally:
        _progress.LOGGER.handlers.clear()
        _progress.LOGGER.setLevel(logging.NOTSET)


@pytest.mark.slow
def test_a_background_study_log_shows_one_line_per_finished_step(tmp_path, mnist_root):
    """`gradaudit run blockmnist ... 2> log`: stderr is a file, and the log shows every step."""
    cfg = tmp_path / "small.yaml"
    cfg.write_text(json.dumps({
        "datasets": ["blockmnist"], "n_train": 200, "n_test": 100, "diffroar_models": ["MLP"],
        "models": [{"label": "MLP", "model": "mlp", "model_options": {"hidden": [16]},
                    "recipe": {"epochs": 2, "batch_size": 64}}],
        "diffroar": {"levels": [0.5, 1.0], "seeds": 1, "mask_only": False}, "road_percentages": [0.5]}))
    exe = Path(sys.executable).parent / "gradaudit"
    args = [str(exe), "run", "blockmnist", "--config", str(cfg), "--out", str(tmp_path / "study"),
            "--data-root", str(mnist_root)]
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=log, timeout=600)
    text = (tmp_path / "log").read_text()
    assert proc.returncode == 0, text
    lines = _lines(text)
    steps = [line.split(":")[0] for line in lines if re.search(r": done in \d", line)]
    assert steps == ["model blockmnist-0", "maps grad-test-blockmnist-0", "maps grad-train-blockmnist-0",
                     "road road-grad"] + [s for s in steps[4:] if s.startswith("diffroar")], lines
    assert len(steps) == 5 and steps[4].startswith("diffroar "), lines
    epochs = [line for line in lines if re.search(r"^mlp in .*model/blockmnist-0-\w+: epoch \d/2, loss", line)]
    assert len(epochs) == 2, lines
    # a rerun finds every job done and says so, one line each
    with open(tmp_path / "log2", "w") as log:
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=log, timeout=600, check=True)
    again = _lines((tmp_path / "log2").read_text())
    assert sum(": already done (" in line for line in again) == 5 and not any("done in" in x for x in again), again
