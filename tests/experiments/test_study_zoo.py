"""The zoo study at --quick scale: every (model, method) cell filled or marked not applicable."""

import json
import math

import pytest

from gradaudit import ParameterError, attribution
from gradaudit.experiments import run_study, study_config

from clirun import run_cli
from fileformats import small_cifar10_root

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo_run(mnist_root, fmnist_root, tmp_path_factory):
    assert mnist_root == fmnist_root  # both live under the one data root
    out = tmp_path_factory.mktemp("zoo")
    run_study("zoo", quick=True, out=out, quiet=True, data_root=mnist_root)
    return out, json.loads((out / "results.json").read_text())


def test_every_cell_is_filled_or_not_applicable(zoo_run):
    out, record = zoo_run
    cells = record["results"]["cells"]
    models = {(m["dataset"], m["model"]) for m in record["results"]["models"]}
    assert len(models) == 5
    assert {(c["dataset"], c["model"], c["method"]) for c in cells} == {
        (d, m, meth) for d, m in models for meth in attribution.METHODS}
    for c in cells:
        if not c["applicable"]:
            assert c["reason"]
            continue
        for key in ("DiffROAR mean", "ROAD gap", "pixel perturbation", "seconds_per_1000"):
            assert isinstance(c[key], float) and math.isfinite(c[key]), (c["method"], key)
        if c["dataset"] == "blockmnist":
            assert 0 <= c["null mass"] <= 1
    na = {(c["model"], c["method"]) for c in cells if not c["applicable"]}
    assert ("ResNet9", "pattern-attribution") in na  # PatternAttribution needs a plain feed-forward net
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Leaderboard" in html and "Do the metrics agree?" in html
    assert "blockmnist: attributions of every method" in html  # grids of the data with block masks
    assert "fmnist: attributions" not in html


def test_random_attribution_diffroar_is_near_zero(zoo_run):
    for c in zoo_run[1]["results"]["cells"]:
        if c["method"] == "random":
            assert abs(c["DiffROAR mean"]) <= 0.05, c


def test_method_and_dataset_selection_is_validated():
    cfg = study_config("zoo", quick=True, overrides=["methods=[grad, ig]", "datasets=[fmnist]"])
    assert cfg.method_list() == ["grad", "ig"] and cfg.datasets == ["fmnist"]
    with pytest.raises(ParameterError, match=r"Unknown attribution method: 'gradd'\. Did you mean 'grad'"):
        study_config("zoo", overrides=["methods=[gradd]"])
    with pytest.raises(ParameterError, match="datasets"):
        study_config("zoo", overrides=["datasets=[cifar100]"])
    assert study_config("zoo").datasets == ["blockmnist", "fmnist"]  # CIFAR-10 only when asked for


def test_cli_methods_and_datasets_flags(capsys):
    code, out, _ = run_cli(capsys, "run", "zoo", "--print-config", "--methods", "grad, ig", "--datasets", "fmnist")
    assert code == 0 and "methods:\n- grad\n- ig\n" in out and "datasets:\n- fmnist\n" in out
    code, _, err = run_cli(capsys, "run", "zoo", "--print-config", "--methods", "grad,bogus")
    assert code == 2 and "Unknown attribution method: 'bogus'" in err and err.count("\n") == 1, err


def test_cifar10_column_pair_on_small_files_in_the_real_format(tmp_path, monkeypatch):
    """The CIFAR-10 columns (standard and ℓ2-robust ResNet9): cells filled, no BlockMNIST leakage,
    and every metric finite."""
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    root = small_cifar10_root(tmp_path / "data")
    out = tmp_path / "zoo"
    run_study("zoo", quick=True, out=out, quiet=True, data_root=root,
              overrides=["datasets=[cifar10]", "methods=[grad, ig, random]", "data_options.verify=false"])
    record = json.loads((out / "results.json").read_text())
    models = record["results"]["models"]
    assert [(m["dataset"], m["model"]) for m in models] == [("cifar10", "ResNet9"), ("cifar10", "ResNet9 ℓ2 0.5")]
    assert record["config"]["cifar10"]["models"][1]["recipe"]["attack"] == "l2"
    cells = record["results"]["cells"]
    assert len(cells) == 6 and all(c["applicable"] for c in cells)  # ig: channels-last gradients
    for c in cells:
        assert "null mass" not in c  # no block masks on CIFAR: no leakage columns
        for key in ("DiffROAR mean", "ROAD gap", "pixel perturbation", "seconds_per_1000"):
            assert isinstance(c[key], float) and math.isfinite(c[key]), (c["model"], c["method"], key)
    assert "Leaderboard" in (out / "report.html").read_text(encoding="utf-8")
