"""The fmnist study at --quick scale on real Fashion-MNIST, with the class-leakage control."""

import json

import pytest

from gradaudit.experiments import run_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fmnist_run(fmnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fmnist")
    run_study("fmnist", quick=True, out=out, quiet=True, data_root=fmnist_root)
    return out, json.loads((out / "results.json").read_text())


def test_results_carry_mask_only_numbers_for_every_model_and_level(fmnist_run):
    res = fmnist_run[1]["results"]
    assert set(res["diffroar"]) == {"label", "predicted"}
    assert set(res["diffroar"]["label"]) == {"MLP", "MLP ℓ∞ 16/255", "linear"}
    assert set(res["diffroar"]["predicted"]) == {"MLP"}
    for by_model in res["diffroar"].values():
        for d in by_model.values():
            n = len(d["levels"])
            leak = d["leakage"]["attribution"]
            for key in ("top", "bottom"):
                assert len(leak["mask_only"][key]["mean"]) == n
                assert len(leak["leak_free_margin"][key]["mean"]) == n
            assert len(leak["mask_only_diffroar"]["mean"]) == n
            assert len(leak["diffroar_minus_mask_only"]["mean"]) == n
    html = (fmnist_run[0] / "report.html").read_text(encoding="utf-8")
    assert "Leak-aware summary" in html and "ROAD" in html and "survive" in html


def test_label_gradient_masks_leak_the_class_and_random_masks_do_not(fmnist_run):
    d = fmnist_run[1]["results"]["diffroar"]["label"]["MLP"]
    assert d["levels"][0] == 0.05
    top5 = d["leakage"]["attribution"]["mask_only"]["top"]["mean"][0]
    assert top5 > 0.5  # the keep-mask of true-label gradients alone encodes the class
    random_top = d["leakage"]["random"]["mask_only"]["top"]["mean"]
    assert max(random_top) < 0.15  # chance is 0.1


def test_random_attribution_diffroar_is_near_zero(fmnist_run):
    d = fmnist_run[1]["results"]["diffroar"]["label"]["MLP"]["curves"]["random"]["diffroar"]["mean"]
    assert max(abs(v) for v in d) < 0.05
