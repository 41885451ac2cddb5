"""The blockmnist study at --quick scale on real MNIST digits."""

import json
from html.parser import HTMLParser

import pytest

from gradaudit import ParameterError
from gradaudit.experiments import run_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def blockmnist_run(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("blockmnist")
    run_study("blockmnist", quick=True, out=out, quiet=True, data_root=mnist_root)
    return out, json.loads((out / "results.json").read_text())


def test_report_and_results_hold_every_model(blockmnist_run):
    out, record = blockmnist_run
    html = (out / "report.html").read_text(encoding="utf-8")
    HTMLParser().feed(html)
    assert "DiffROAR" in html and "ROAD" in html and "Leakage" in html
    res = record["results"]
    cells = {(r["dataset"], r["model"]) for r in res["leakage"]}
    assert cells == {(d, m) for d in ("blockmnist", "blockmnist-top") for m in ("MLP", "MLP ℓ2 ε=2", "ResNet9")}
    for row in res["leakage"]:
        assert len(row["topk_null_mean"]) == 7 and 0 <= row["mass_null_mean"] <= 1
    for label in ("MLP", "MLP ℓ2 ε=2"):
        d = res["diffroar"][label]
        assert d["levels"] == [0.05, 1.0] and "leakage" in d
        assert {"morf", "lerf", "score"} <= set(res["road"][label])
    assert "random" in res["diffroar"]["MLP"]["curves"]  # computed once per architecture


def test_robust_model_leaks_less_than_standard(blockmnist_run):
    leak = {(r["dataset"], r["model"]): r for r in blockmnist_run[1]["results"]["leakage"]}
    std, rob = leak[("blockmnist", "MLP")], leak[("blockmnist", "MLP ℓ2 ε=2")]
    assert rob["topk_null_mean"][1] < std["topk_null_mean"][1] - 0.1  # top-5%
    assert rob["mass_null_mean"] < std["mass_null_mean"]
    # with the digit always on top, the standard MLP's top-5% gradients stay off the null block
    assert leak[("blockmnist-top", "MLP")]["topk_null_mean"][1] < std["topk_null_mean"][1]


def test_diffroar_at_k1_is_zero_up_to_noise(blockmnist_run):
    d = blockmnist_run[1]["results"]["diffroar"]["MLP"]["curves"]["attribution"]["diffroar"]["mean"]
    assert abs(d[-1]) < 0.02


def test_unknown_diffroar_model_is_rejected_before_work(tmp_path, mnist_root):
    with pytest.raises(ParameterError, match="diffroar_models"):
        run_study("blockmnist", quick=True, overrides=["diffroar_models=[nope]"], out=tmp_path / "x",
                  data_root=mnist_root)
    assert not (tmp_path / "x").exists()
