"""Files are written with the process umask (0644 under 022), atomically: results.json,
report.html and checkpoints can be read by colleagues and by workers running as another user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from gradaudit import data, models, training
from gradaudit._io import file_mode, write_text
from gradaudit.experiments import base
from gradaudit.experiments.config import StudyConfig
from gradaudit.report import Report
from gradaudit.runs import RunStore
from gradaudit.training.fit import CHECKPOINT, RUN_JSON, WEIGHTS


@pytest.fixture
def umask():
    """Set the process umask for a test; put the old one back after."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _toy() -> data.ImageSet:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.rand(64, 1, 4, 4, generator=g)
    return data.ImageSet(x, y, {"name": "toy", "split": "train", "classes": [0, 1]})


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert file_mode() == expected
    write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == expected
    assert not list(tmp_path.glob(".*.tmp"))  # still atomic: no temp file left


def test_study_results_report_and_checkpoints_are_0644_under_umask_022(tmp_path, umask, monkeypatch):
    umask(0o022)
    net = models.build("mlp", (1, 4, 4), 2, seed=0, hidden=(8,))
    recipe = training.Recipe(epochs=1, batch_size=32, val_fraction=0.0)
    training.fit(net, _toy(), recipe, out=tmp_path / "run", quiet=True)
    for name in (WEIGHTS, RUN_JSON):
        assert _mode(tmp_path / "run" / name) == 0o644, name
    assert not (tmp_path / "run" / CHECKPOINT).exists() or _mode(tmp_path / "run" / CHECKPOINT) == 0o644

    study = base.Study("modes", "file modes", StudyConfig, run=lambda cfg, ctx: {"answer": 42},
                       report=lambda record, ctx: Report("modes"))
    monkeypatch.setitem(base.STUDIES, "modes", study)
    out = tmp_path / "study"
    report = base.execute(study, StudyConfig(), base.Context(out=out, store=RunStore(out / "store"), quiet=True))
    for path in (out / "results.json", report):
        assert _mode(path) == 0o644, path
    job = RunStore(tmp_path / "store")
    job.run("model", {"a": 1}, lambda j: {"ok": 1})
    for f in (job.root / "model").glob("*/*.json"):
        assert _mode(f) == 0o644, f
