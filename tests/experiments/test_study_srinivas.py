"""The srinivas study at --quick scale on real Fashion-MNIST."""

import json

import pytest

from gradaudit.experiments import run_study

from fileformats import small_cifar10_root

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srinivas_run(fmnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("srinivas")
    run_study("srinivas", quick=True, out=out, quiet=True, data_root=fmnist_root)
    return out, json.loads((out / "results.json").read_text())


def test_report_and_results_have_the_issue_keys(srinivas_run):
    out, record = srinivas_run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "GAN-test" in html and "Pixel perturbation" in html and "DiffROAR" in html
    res = record["results"]
    assert [m["model"] for m in res["models"]] == ["baseline", "gradient norm", "score matching",
                                                   "anti-score matching"]
    for m in res["models"]:
        assert {"test_accuracy", "gan_test", "pixel_perturbation_area", "gradient_norm"} <= set(m)
        assert 0.0 <= m["gan_test"] <= 1.0
    assert set(res["perturbation"]) == set(res["diffroar"]) == {m["model"] for m in res["models"]}
    for d in res["diffroar"].values():
        assert d["levels"] == [0.05, 0.2]


def test_regularizers_act_as_intended(srinivas_run):
    rows = {m["model"]: m for m in srinivas_run[1]["results"]["models"]}
    # the regularized models were really trained with a penalty, and it shrank their gradients
    assert rows["gradient norm"]["reg_weight"] > 0 and rows["score matching"]["reg_weight"] > 0
    assert rows["gradient norm"]["gradient_norm"] < rows["baseline"]["gradient_norm"]
    assert rows["score matching"]["gradient_norm"] < rows["baseline"]["gradient_norm"]
    proxy = srinivas_run[1]["results"]["proxy"]
    assert proxy["gan_test_on_real_images"] >= proxy["test_accuracy"] - 0.1


def test_cifar10_quick_on_pickle_batches_uses_softplus_resnets(tmp_path, monkeypatch):
    """--set dataset=cifar10 switches every preset field to CIFAR ResNets (small files in the real format)."""
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    root = small_cifar10_root(tmp_path / "data")
    out = tmp_path / "study"
    run_study("srinivas", quick=True, out=out, quiet=True, data_root=root,
              overrides=["dataset=cifar10", "data_options.verify=false", "n_train=100", "n_test=40",
                         "recipe.batch_size=50", "recipe.epochs=1", "proxy.recipe.batch_size=50",
                         "proxy.recipe.epochs=1", "gan_test.n_samples=8", "gan_test.steps=3",
                         "perturbation_n_test=10", "n_show=4"])
    record = json.loads((out / "results.json").read_text())
    cfg, res = record["config"], record["results"]
    assert cfg["model"] == "resnet9" and cfg["model_options"]["act"] == "softplus"
    assert cfg["proxy"]["model"] == "resnet9" and cfg["proxy"]["recipe"]["attack"] == "l2"
    assert cfg["model_options"]["channels_last"] and cfg["diffroar"]["fill"] == "mean"
    assert [m["model"] for m in res["models"]] == ["baseline", "gradient norm", "score matching",
                                                   "anti-score matching"]
    for m in res["models"]:
        assert 0.0 <= m["gan_test"] <= 1.0 and 0.0 <= m["gan_test_probability"] <= 1.0
    assert isinstance(res["gan_test"]["saturated"], bool) and res["gan_test"]["reason"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "GAN-test" in html and "saturat" in html


def test_saturated_gan_test_is_flagged_in_results_and_findings():
    """The Fashion-MNIST pattern (three models at 100%) sets the flag and the findings say so."""
    from gradaudit.experiments.srinivas import GanTestSettings, _findings, _saturation

    scores = {"baseline": (1.0, 0.97), "gradient norm": (1.0, 0.96), "score matching": (0.955, 0.88),
              "anti-score matching": (1.0, 0.98)}
    rows = [{"model": k, "test_accuracy": 0.89, "gan_test": a, "gan_test_probability": p, "gradient_norm": 1.0,
             "pixel_perturbation_area": 0.5} for k, (a, p) in scores.items()]
    sat = _saturation(rows, GanTestSettings())
    assert sat["saturated"] and sat["score"] == "accuracy" and sat["at_ceiling"] == [
        "baseline", "gradient norm", "anti-score matching"]
    assert not sat["probability"]["saturated"]  # the graded score still has a 10% spread
    results = {"models": rows, "gan_test": sat, "proxy": {"model": "proxy (MLP)", "test_accuracy": 0.82,
                                                          "gan_test_on_real_images": 0.83, "n_real": 200}}
    text = " ".join(_findings(results))
    assert "GAN-test SATURATED: 3 of 4 models score ≥ 99%" in text and "not evidence" in text
    assert "test accuracy 82.0%" in text
    fine = _saturation([r | {"gan_test": a} for r, a in zip(rows, (0.8, 0.6, 0.9, 0.4), strict=True)],
                       GanTestSettings())
    assert not fine["saturated"]
