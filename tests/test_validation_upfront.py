"""Every study config and every command's inputs are checked whole before the first job:
bad values (by the library's own checks), data files and output folders."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradaudit.data.sources import IDX_SETS
from gradaudit.experiments import run_study
from gradaudit.experiments.config import library_check
from gradaudit.runs import RunStore

from .clirun import run_cli

MNIST_FILES = [f for pair in IDX_SETS["mnist"]["files"].values() for f, _ in pair]


def _assert_no_work(out: Path) -> None:
    """Nothing was written: no study folder, so no store and no job."""
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert RunStore(out / "store").jobs() == []


BAD = [
    ("diffroar.levels=[0,0.5]", {"diffroar": {"levels": [0, 0.5]}}, "diffroar.levels must be distinct fractions in (0, 1]"),
    ("leakage_ks=[0,5]", {"leakage_ks": [0, 5]}, "leakage_ks must hold percents in (0, 100]"),
    ("road_percentages=[0.5,1.5]", {"road_percentages": [0.5, 1.5]}, "road_percentages must hold floats in [0, 1]"),
    ("method=gard", {"method": "gard"}, "Did you mean 'grad'?"),
    ("datasets=[blockmnist,mnsit]", {"datasets": ["blockmnist", "mnsit"]}, "Did you mean 'mnist'?"),
]


@pytest.mark.parametrize("override, _, message", BAD, ids=[b[0] for b in BAD])
def test_bad_set_exits_2_at_once_with_no_job(capsys, tmp_path, override, _, message):
    out = tmp_path / "study"
    start = time.perf_counter()
    code, stdout, err = run_cli(capsys, "run", "blockmnist", "--quick", "--set", override, "--out", str(out),
                                "--data-root", str(tmp_path / "no-data"))
    assert time.perf_counter() - start < 10
    assert code == 2 and stdout == "", err
    assert err.startswith("error: Invalid config of study 'blockmnist': ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--set {override.split('=')[0]}=VALUE" in err  # the fix, in the user's words
    _assert_no_work(out)


@pytest.mark.parametrize("_, content, message", BAD, ids=[b[0] for b in BAD])
def test_bad_key_in_config_file_exits_2_with_no_job(capsys, tmp_path, _, content, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(content))  # JSON is YAML
    out = tmp_path / "study"
    code, _, err = run_cli(capsys, "run", "blockmnist", "--quick", "--config", str(cfg), "--out", str(out))
    assert code == 2 and message in err and str(cfg) in err, err
    _assert_no_work(out)


def test_nested_study_keys_and_model_names_are_checked_too(tmp_path):
    from gradaudit import ParameterError

    with pytest.raises(ParameterError, match=r"blockmnist\.diffroar\.levels must be distinct"):
        run_study("main", quick=True, overrides=["blockmnist.diffroar.levels=[0.5,0.5]"], out=tmp_path / "m")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"models": [{"label": "x", "model": "mpl"}]}))
    with pytest.raises(ParameterError, match=r"models\.0\.model: Unknown model: 'mpl'\. Did you mean 'mlp'\?"):
        run_study("blockmnist", quick=True, config=cfg, out=tmp_path / "b")
    _assert_no_work(tmp_path / "m")
    _assert_no_work(tmp_path / "b")


def test_library_check_accepts_what_the_library_accepts():
    from pydantic import BaseModel, ValidationError

    from gradaudit.experiments.config import Fractions, LeakageKs, Levels

    class C(BaseModel):
        levels: Levels = [1.0]
        ks: LeakageKs = [2.5]
        fractions: Fractions = [0.0]

    assert C(levels=[0.05, 1], ks=[100, 0.01], fractions=[0, 1]).levels == [0.05, 1.0]
    for bad in ({"levels": [1.5]}, {"levels": []}, {"ks": [101]}, {"fractions": [0.1, 0.1]}):
        with pytest.raises(ValidationError):
            C(**bad)
    assert library_check(lambda v: None).func(3) == 3


def _data_root(tmp_path: Path, *, drop: str | None = None, corrupt: str | None = None) -> Path:
    """A data root with MNIST's files linked from $GRADAUDIT_DATA, one dropped or corrupted."""
    real = os.environ.get("GRADAUDIT_DATA")
    if not real or not all((Path(real) / "mnist" / f).is_file() for f in MNIST_FILES):
        pytest.skip("MNIST files not found: set GRADAUDIT_DATA to a folder holding mnist/*-ubyte.gz")
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for f in MNIST_FILES:
        if f == drop:
            continue
        if f == corrupt:
            (root / "mnist" / f).write_bytes(gzip.compress(b"not an idx file"))
        else:
            (root / "mnist" / f).symlink_to(Path(real) / "mnist" / f)
    return root


@pytest.mark.parametrize("how", ["drop", "corrupt"])
def test_missing_or_corrupt_data_file_stops_a_study_before_any_job(capsys, tmp_path, monkeypatch, how):
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    labels = "t10k-labels-idx1-ubyte.gz"
    root = _data_root(tmp_path, **{how: labels})
    out = tmp_path / "study"
    code, _, err = run_cli(capsys, "run", "blockmnist", "--quick", "--out", str(out), "--data-root", str(root))
    assert code == 2 and labels in err and "Traceback" not in err, err
    _assert_no_work(out)


@pytest.mark.parametrize("how", ["drop", "corrupt"])
def test_missing_or_corrupt_test_labels_stop_train_before_the_first_epoch(capsys, tmp_path, monkeypatch, how):
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    labels = "t10k-labels-idx1-ubyte.gz"
    root = _data_root(tmp_path, **{how: labels})
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--dataset", "mnist", "--epochs", "1", "--out", str(run),
                           "--data-root", str(root), "-q")
    assert code == 2 and labels in err and "Traceback" not in err, err
    assert not (run / "run.json").exists() and not (run / "checkpoint.safetensors").exists()


def test_out_folder_of_another_study_or_a_file_is_refused_before_work(capsys, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"study": "synthetic"}))
    code, _, err = run_cli(capsys, "run", "blockmnist", "--quick", "--out", str(other))
    assert code == 2 and "holds the results of study 'synthetic'" in err and "another --out" in err, err
    assert sorted(p.name for p in other.iterdir()) == ["results.json"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run_cli(capsys, "run", "blockmnist", "--quick", "--out", str(afile))
    assert code == 2 and "--out" in err and "is a file" in err, err
    code, _, err = run_cli(capsys, "run", "blockmnist", "--quick", "--out", str(tmp_path / "s"),
                           "--store", str(afile))
    assert code == 2 and "--store" in err and "is a file" in err, err
    _assert_no_work(tmp_path / "s")


@pytest.mark.slow
def test_the_console_command_exits_2_within_10_seconds(tmp_path):
    """The issue's must-show, as a user runs it (a fresh interpreter, torch import included)."""
    out = tmp_path / "study"
    exe = Path(sys.executable).parent / "gradaudit"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([str(exe), "run", "blockmnist", "--quick", "--set", "diffroar.levels=[0,0.5]",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 2 and "diffroar.levels" in proc.stderr, proc.stderr
    # CPU seconds, not wall time: a loaded CI machine stretches the wall clock, not the work
    # (about 3 s of CPU, mostly importing torch; the late failure took 25 s of training).
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 10, cpu
    _assert_no_work(out)


OTHER_STUDIES = [
    ("zoo", "road_percentages=[0.5,1.5]", "road_percentages must hold floats in [0, 1]"),
    ("zoo", "leakage_ks=[0,5]", "leakage_ks must hold percents in (0, 100]"),
    ("zoo", "methods=[gradd]", "Did you mean 'grad'?"),
    ("zoo", "diffroar.levels=[0,0.5]", "diffroar.levels must be distinct fractions in (0, 1]"),
    ("fmnist", "road_percentages=[0.5,1.5]", "road_percentages must hold floats in [0, 1]"),
    ("cifar10", "diffroar.levels=[0,0.5]", "diffroar.levels must be distinct fractions in (0, 1]"),
    ("srinivas", "diffroar.levels=[0,0.5]", "diffroar.levels must be distinct fractions in (0, 1]"),
    ("srinivas", "dataset=cifar1O", "Did you mean 'cifar10'?"),
]


@pytest.mark.parametrize("study, override, message", OTHER_STUDIES, ids=[f"{s}-{o}" for s, o, _ in OTHER_STUDIES])
def test_every_study_checks_its_config_before_any_job(capsys, tmp_path, study, override, message):
    out = tmp_path / "study"
    code, stdout, err = run_cli(capsys, "run", study, "--quick", "--set", override, "--out", str(out),
                                "--data-root", str(tmp_path / "no-data"))
    assert code == 2 and stdout == "", err
    assert err.startswith(f"error: Invalid config of study '{study}': ") and message in err, err
    _assert_no_work(out)


@pytest.mark.parametrize("args, message", [
    (("--jobs-per-gpu", "2"), "jobs_per_gpu=2 shares GPUs between Ray tasks"),
    (("--jobs-per-gpu", "0"), "--jobs-per-gpu must be an int in [1, 1000]. Got 0."),
], ids=["not-on-ray", "zero"])
def test_jobs_per_gpu_is_checked_before_any_job(capsys, tmp_path, args, message):
    out = tmp_path / "study"
    code, stdout, err = run_cli(capsys, "run", "blockmnist", "--quick", *args, "--out", str(out),
                                "--data-root", str(tmp_path / "no-data"))
    assert code == 2 and stdout == "" and message in err and "Traceback" not in err, err
    _assert_no_work(out)


def test_cuda_only_precision_on_a_cpu_study_is_refused_before_any_job(capsys, tmp_path):
    out = tmp_path / "study"
    code, stdout, err = run_cli(capsys, "run", "fmnist", "--quick", "--set", "diffroar.precision=bf16",
                                "--out", str(out), "--data-root", str(tmp_path / "no-data"))
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    assert "diffroar.precision=bf16 is a CUDA speed option" in err and "--set diffroar.precision=fp32" in err, err
    _assert_no_work(out)
