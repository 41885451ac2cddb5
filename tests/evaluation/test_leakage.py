"""BlockMNIST leakage metrics on hand-built maps and masks."""

from __future__ import annotations

import json

import pytest
import torch

from gradaudit import ParameterError, ParameterTypeError
from gradaudit.evaluation.leakage import DEFAULT_KS, leakage


def blocks(n: int, null_on_top: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 56, 28) null / signal masks: one 28×28 block each, top or bottom."""
    top = torch.zeros(n, 1, 56, 28, dtype=torch.bool)
    top[:, :, :28] = True
    flip = torch.zeros(n, dtype=torch.bool) if null_on_top is None else ~null_on_top
    null = torch.where(flip.view(n, 1, 1, 1), ~top, top)
    return null, ~null


def test_all_attribution_on_the_null_block_gives_one() -> None:
    g = torch.Generator().manual_seed(0)
    null, signal = blocks(10, torch.rand(10, generator=g) > 0.5)
    a = torch.randn(10, 1, 56, 28, generator=g) * null
    res = leakage(a, null, signal)
    assert res.ks == DEFAULT_KS
    assert res.topk_null_mean == (1.0,) * 7 and res.topk_null_std == (0.0,) * 7
    assert res.topk_signal_mean == (0.0,) * 7
    assert res.mass_null_mean == 1.0 and res.mass_null_std == 0.0
    assert res.null_area_share == 0.5


def test_no_attribution_on_the_null_block_gives_zero() -> None:
    g = torch.Generator().manual_seed(1)
    null, signal = blocks(10, torch.rand(10, generator=g) > 0.5)
    a = torch.randn(10, 1, 56, 28, generator=g) * signal
    res = leakage(a, null[:, 0], signal[:, 0])  # (N, H, W) masks are accepted
    assert res.topk_null_mean == (0.0,) * 7 and res.mass_null_mean == 0.0
    assert res.topk_signal_mean == (1.0,) * 7


def test_uniform_maps_give_the_null_area_share() -> None:
    # A null block of 10×10 = 100 of 1568 pixels; a constant map has no preference, so the
    # seeded tie-break must spread the top-k% at random (mass share: exactly the area share).
    n = 400
    null = torch.zeros(n, 1, 56, 28, dtype=torch.bool)
    null[:, :, 37:47, 9:19] = True
    share = 100 / 1568
    res = leakage(torch.full((n, 1, 56, 28), 0.3), null, ks=(2.5, 10, 30))
    assert res.mass_null_mean == pytest.approx(share, abs=1e-12)
    assert res.null_area_share == pytest.approx(share)
    for m in res.topk_null_mean:
        assert abs(m - share) < 0.01, res.topk_null_mean
    assert res.topk_null_std[0] > 0  # it is a random draw per image, not a fixed choice


def test_hand_computed_shares() -> None:
    # one image, 1×2×4: |a| = [8 7 6 5 / 4 3 2 1]; null = the two centre columns
    a = torch.tensor([[[[8.0, -7.0, 6.0, 5.0], [4.0, 3.0, -2.0, 1.0]]]])
    null = torch.zeros(1, 1, 2, 4, dtype=torch.bool)
    null[..., 1:3] = True
    res = leakage(a, null, ks=(25, 50, 100))
    # top 2: {8, 7} → 1 null; top 4: {8, 7, 6, 5} → 2 null; all 8 → 4 null
    assert res.topk_null_mean == (0.5, 0.5, 0.5)
    assert res.mass_null_mean == pytest.approx((7 + 6 + 3 + 2) / 36)
    res = leakage(a, null, ks=(12.5,))
    assert res.topk_null_mean == (0.0,)


def test_mean_and_std_over_images_and_multichannel_maps() -> None:
    a = torch.zeros(2, 3, 2, 2)
    a[0, :, 0, :] = 1.0  # image 0: all mass on row 0 (the null row)
    a[1, :, 0, :] = 1.0  # image 1: row 0 = 1, row 1 = 3 → top half is row 1
    a[1, :, 1, :] = 3.0
    null = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    null[:, :, 0, :] = True  # null = row 0, on all channels
    res = leakage(a, null, ks=(50,))
    assert res.topk_null_mean == (0.5,) and res.topk_null_std == (0.5,)
    assert res.mass_null_mean == pytest.approx(0.625) and res.mass_null_std == pytest.approx(0.375)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["higher_is_better"] is False and d["protocol"] == "blockmnist-leakage"


def test_zero_maps_are_left_out_of_the_mass_share() -> None:
    null, _ = blocks(3)
    a = torch.zeros(3, 1, 56, 28)
    a[0] = null[0].float()
    res = leakage(a, null, ks=(5,))
    assert res.n_zero_maps == 2 and res.mass_null_mean == 1.0


def test_same_seed_same_result_other_seed_other_tie_break() -> None:
    null, _ = blocks(50, torch.arange(50) % 2 == 0)
    a = torch.ones(50, 1, 56, 28)
    assert leakage(a, null, seed=3).topk_null_mean == leakage(a, null, seed=3).topk_null_mean
    assert leakage(a, null, seed=3).topk_null_mean != leakage(a, null, seed=4).topk_null_mean


@pytest.mark.parametrize(
    ("args", "match", "error"),
    [
        ({"null_mask": torch.zeros(4, 1, 8, 7, dtype=torch.bool)}, "'null_mask' argument of leakage must have shape", ParameterError),
        ({"null_mask": torch.zeros(4, 1, 8, 8)}, "bool tensor", ParameterTypeError),
        ({"ks": (0, 5)}, r"percents in \(0, 100\]", ParameterError),
        ({"ks": (150,)}, r"percents in \(0, 100\]", ParameterError),
        ({"ks": (0.5,)}, "is no coordinate", ParameterError),
        ({"signal_mask": torch.ones(4, 1, 8, 8, dtype=torch.bool)}, "overlap", ParameterError),
        ({"attributions": torch.rand(4, 8, 8)}, "'attributions' argument of leakage", ParameterError),
    ],
)
def test_bad_inputs_raise(args: dict, match: str, error: type) -> None:
    null = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    null[..., :2] = True
    kw = {"attributions": torch.rand(4, 1, 8, 8), "null_mask": null, **args}
    with pytest.raises(error, match=match):
        leakage(kw.pop("attributions"), kw.pop("null_mask"), **kw)


def test_empty_null_block_raises() -> None:
    with pytest.raises(ParameterError, match="empty for some image"):
        leakage(torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.bool), ks=(50,))


def test_blockmnist_masks_from_the_data_set(mnist_root) -> None:
    from gradaudit import data

    test = data.load("blockmnist", "test", root=mnist_root, seed=0).subset(slice(0, 300))
    null, signal = test.per_image["null_mask"], test.per_image["signal_mask"]
    on_signal = leakage((test.x + 1) * signal, null, signal)  # every signal pixel nonzero
    on_null = leakage((test.x + 1) * null, null, signal)
    assert on_signal.topk_null_mean == (0.0,) * 7 and on_signal.mass_null_mean == 0.0
    assert on_null.topk_null_mean == (1.0,) * 7 and on_null.mass_null_mean == 1.0
    assert on_signal.null_area_share == 0.5
