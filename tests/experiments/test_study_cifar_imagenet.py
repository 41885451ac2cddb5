"""cifar10 and imagenet10 studies at --quick scale, on small files in the real formats, and
cifar10 on the real CIFAR-10 files (binary version) at a smaller scale still."""

import json
import math
import os
from pathlib import Path

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
              overrides=["data_options.verify=false", "diffroar.seeds=1"])
    record = _check(out, ["ResNet9", "ResNet9 ℓ∞ 8/255"])
    assert record["config"]["diffroar"]["fill"] == "mean"  # 0 in the normalised space of the paper


def test_cifar10_models_train_on_more_images_than_diffroar_retrains_on(tmp_path, monkeypatch):
    """n_model_train: the audited models see more images than DiffROAR attributes and
    retrains on; retrain_epochs sets the retrains' epochs; models that differ only in their
    attack (the quick ℓ∞ model's PGD steps) share one random control."""
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    files, _ = cifar_files("cifar10", n=60)
    write_cifar_folder(tmp_path / "data", "cifar10", files)
    out = tmp_path / "study"
    run_study("cifar10", quick=True, out=out, quiet=True, data_root=tmp_path / "data",
              overrides=["data_options.verify=false", "diffroar.seeds=1", "n_model_train=50", "n_train=30",
                         "diffroar.retrain_epochs=1", "road_percentages=[0.5]"])
    _check(out, ["ResNet9", "ResNet9 ℓ∞ 8/255"])
    store = out / "store"
    models = [json.loads(p.read_text())["config"] for p in sorted((store / "model").glob("*/config.json"))]
    assert len(models) == 2 and all(m["data"]["n_train"] == 50 for m in models)
    curves = [json.loads(p.read_text())["config"] for p in sorted((store / "diffroar").glob("*/config.json"))]
    assert len(curves) == 2 and all(c["data"]["n_train"] == 30 for c in curves)
    assert sorted(c["random"] for c in curves) == [False, True]  # one random control for both models
    retrains = [json.loads(p.read_text())["config"] for p in (store / "diffroar").glob("*/retrains/config.json")]
    assert len(retrains) == 2 and all(r["recipe"]["epochs"] == 1 and r["train"]["n"] == 30 for r in retrains)


def test_imagenet10_quick_on_an_image_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    tree = make_imagenet_tree(tmp_path, per_class=4)
    out = tmp_path / "study"
    run_study("imagenet10", quick=True, out=out, quiet=True, data_root=tree["root"])
    _check(out, ["ResNet18"])


_ONE_MODEL = ("models=[{label: ResNet9, model: resnet9, normalize: true, "
              "model_options: {width: 16, stem_pool: 2}, "
              "recipe: {epochs: 2, lr: 0.1, momentum: 0.9, weight_decay: 0.0005, schedule: onecycle}}]")


def test_cifar10_on_the_real_binary_files(tmp_path):
    """The quick settings, cut to one model, 1,000 images and one seed, on real CIFAR-10:
    DiffROAR, the random control and the mask-only control for the model."""
    from gradaudit.data.cifar import CIFAR_BIN_SETS

    layout = CIFAR_BIN_SETS["cifar10"]
    root = os.environ.get("GRADAUDIT_DATA")
    names = [s.name for specs in layout.batches.values() for s in specs]
    if not root or not all((Path(root) / layout.folder / n).is_file() for n in names):
        pytest.skip(f"CIFAR-10 binary files not found: set GRADAUDIT_DATA to a folder holding "
                    f"{layout.folder}/ (CI points it at ../shared/data).")
    out = tmp_path / "study"
    run_study("cifar10", quick=True, out=out, quiet=True, data_root=root,
              overrides=["n_train=1000", "n_test=1000", "diffroar.seeds=1", _ONE_MODEL])
    record = _check(out, ["ResNet9"])
    res = record["results"]
    assert res["models"][0]["test_accuracy"] > 0.2  # real images and labels: well above chance (0.1)
    d = res["diffroar"]["label"]["ResNet9"]
    for ranking in ("attribution", "random"):
        values = d["curves"][ranking]["diffroar"]["mean"]
        assert len(values) == 2 and all(math.isfinite(v) for v in values)
        mask_only = d["leakage"][ranking]["mask_only_diffroar"]["mean"]
        assert len(mask_only) == 2 and all(math.isfinite(v) for v in mask_only)
    assert d["curves"]["random"]["diffroar"]["mean"][-1] == 0.0
