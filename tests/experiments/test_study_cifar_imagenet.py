"""cifar10 and imagenet10 studies at --quick scale, on small files in the real formats."""

import json

import pytest

from gradaudit.experiments import run_study

from fileformats import cifar_files, make_imagenet_tree, write_cifar_folder

pytestmark = pytest.mark.slow

KEYS = {"models", "diffroar", "road", "findings"}


def _check(out, models):
    record = json.loads((out / "results.json").read_text())
    res = record["results"]
    assert set(res) >= KEYS and (out / "report.html").is_file()
    assert [m["model"] for m in res["models"]] == models
    for label in models:
        d = res["diffroar"]["label"][label]
        assert d["levels"] == [0.1, 1.0] and "leakage" in d  # mask-only control ran
        assert res["diffroar"]["label"][label]["curves"]["attribution"]["diffroar"]["mean"][-1] == 0.0
        assert {"morf", "lerf", "score"} <= set(res["road"][label])
    return record


def test_cifar10_quick_on_pickle_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    files, _ = cifar_files("cifar10", n=60)
    write_cifar_folder(tmp_path / "data", "cifar10", files)
    out = tmp_path / "study"
    run_study("cifar10", quick=True, out=out, quiet=True, data_root=tmp_path / "data",
              overrides=["data_options.verify=false"])
    record = _check(out, ["ResNet9", "ResNet9 ℓ∞ 8/255"])
    assert record["config"]["diffroar"]["fill"] == "mean"  # 0 in the normalised space of the paper


def test_imagenet10_quick_on_an_image_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    tree = make_imagenet_tree(tmp_path, per_class=4)
    out = tmp_path / "study"
    run_study("imagenet10", quick=True, out=out, quiet=True, data_root=tree["root"])
    _check(out, ["ResNet18"])
