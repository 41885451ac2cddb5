"""Report sentences average only the levels that mean something (k < 1, issue 13)."""

import math

import pytest

from gradaudit.experiments import narrative


def _curve(values):
    return {"mean": list(values), "std": [0.0] * len(values)}


def _result(levels, diffroar, mask_top, mask_diffroar):
    minus = [d - m for d, m in zip(diffroar, mask_diffroar, strict=True)]
    return {"levels": levels,
            "curves": {"attribution": {"diffroar": _curve(diffroar)}},
            "leakage": {"attribution": {"mask_only": {"top": _curve(mask_top)},
                                        "mask_only_diffroar": _curve(mask_diffroar),
                                        "diffroar_minus_mask_only": _curve(minus)}}}


LEVELS = [0.05, 0.5, 1.0]


def test_mean_below_one_drops_k_equal_one():
    assert narrative.mean_below_one(LEVELS, [0.2, 0.4, 0.0]) == pytest.approx(0.3)
    assert math.isnan(narrative.mean_below_one([1.0], [0.5]))


def test_mask_only_sentence_ignores_the_constant_mask_at_k_one():
    # at k = 1 the keep-mask is constant: mask-only accuracy is the majority rate (0.537)
    by_model = {"MLP": _result(LEVELS, [0.08, 0.01, 0.0], [0.998, 0.996, 0.537], [0.05, 0.004, 0.0]),
                "MLP l2": _result(LEVELS, [0.06, 0.02, 0.0], [0.990, 0.992, 0.537], [0.01, 0.002, 0.0])}
    text = narrative.leakage_control_sentence(by_model)
    assert "up to 99.7% accuracy" in text  # mean of 0.998 and 0.996; with k = 1 it would be 84%
    assert "84" not in text and "k = 1 the mask is constant" in text
    # ordering by mean DiffROAR over k < 1: MLP 0.045 > MLP l2 0.040; minus mask-only: MLP l2 0.034 > MLP 0.018
    assert "Ordered by mean DiffROAR (k < 1): MLP, MLP l2" in text
    assert "mask-only DiffROAR: MLP l2, MLP" in text and "does NOT survive" in text


def test_single_model_sentence_and_only_k_one():
    one = {"MLP": _result(LEVELS, [0.08, 0.02, 0.0], [0.9, 0.8, 0.537], [0.02, 0.0, 0.0])}
    text = narrative.leakage_control_sentence(one)
    assert "Mean DiffROAR (k < 1) +0.050, +0.040" in text and "sign survives" in text
    only_one = {"MLP": _result([1.0], [0.0], [0.537], [0.0])}
    assert "measures nothing" in narrative.leakage_control_sentence(only_one)


def test_blockmnist_mean_over_levels_below_one():
    leak = {"dataset": "blockmnist", "model": "MLP", "ks": [2.5, 5], "topk_null_mean": [0.4, 0.43],
            "null_area_share": 0.5, "mass_null_mean": 0.48}
    res = {"leakage": [leak], "diffroar": {"MLP": {"levels": LEVELS,
                                                   "curves": {"attribution": {"diffroar": _curve([0.076, 0.01, 0.0])}}}}}
    lines = narrative.blockmnist_findings(res)
    assert "DiffROAR of MLP on BlockMNIST: +0.076 at k = 0.05, mean +0.043 over the levels k < 1." in lines
