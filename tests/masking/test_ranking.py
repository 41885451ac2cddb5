"""Rank positions, the seeded tie-break and keep-masks."""

from __future__ import annotations

import pytest
import torch

from gradaudit import ParameterError
from gradaudit.masking.ranking import keep_count, keep_mask, keep_mask_count, rank_positions, scores


def test_positions_follow_decreasing_magnitude() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 2, 5, 5, generator=g)
    pos = rank_positions(a, seed=3)
    assert pos.dtype == torch.int16 and pos.shape == a.shape
    flat_pos, flat_mag = pos.flatten(1).long(), a.abs().flatten(1)
    for i in range(7):
        assert torch.equal(flat_pos[i].sort().values, torch.arange(50))  # a permutation
        order = torch.argsort(flat_pos[i])  # coordinates from rank 0 upwards
        assert torch.all(flat_mag[i, order][:-1] >= flat_mag[i, order][1:])


def test_int32_for_large_images_and_tie_free_batching() -> None:
    a = torch.randn(3, 3, 110, 110, generator=torch.Generator().manual_seed(1))
    pos = rank_positions(a, seed=0)
    assert pos.dtype == torch.int32
    small = torch.randn(10, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(rank_positions(small, seed=5, batch_size=3), rank_positions(small, seed=5))


def test_channel_sum_ranks_pixels() -> None:
    a = torch.zeros(1, 3, 2, 2)
    a[0, :, 0, 1] = torch.tensor([1.0, -1.0, 1.0])  # |.| sums to 3: the top pixel
    a[0, 0, 1, 1] = 2.5  # one strong channel, sum 2.5: second
    pos = rank_positions(a, by="channel-sum", seed=0)
    assert pos.shape == (1, 1, 2, 2)
    assert pos[0, 0, 0, 1] == 0 and pos[0, 0, 1, 1] == 1
    assert torch.equal(scores(a, "channel-sum")[0, 0], torch.tensor([[0.0, 3.0], [0.0, 2.5]]))


def test_ties_are_seeded_and_uniform() -> None:
    a = torch.ones(4000, 1, 1, 4)  # every coordinate tied
    p0, p0b, p1 = rank_positions(a, seed=0), rank_positions(a, seed=0), rank_positions(a, seed=1)
    assert torch.equal(p0, p0b) and not torch.equal(p0, p1)
    first = (p0.view(4000, 4) == 0).float().mean(0)  # how often each coordinate ranks first
    assert torch.all((first - 0.25).abs() < 0.03)


def test_keep_masks_count_and_sides() -> None:
    pos = rank_positions(torch.randn(5, 1, 4, 5, generator=torch.Generator().manual_seed(3)), seed=0)
    for fraction in (0.0, 0.05, 0.1, 0.5, 1.0):
        k = keep_count(fraction, 20)
        top, bottom = keep_mask(pos, fraction, "top"), keep_mask(pos, fraction, "bottom")
        assert torch.all(top.flatten(1).sum(1) == k) and torch.all(bottom.flatten(1).sum(1) == k)
        assert torch.equal(top, keep_mask_count(pos, k, "top"))
        if 2 * k <= 20:  # top-k and bottom-k are disjoint up to one half
            assert not torch.any(top & bottom)
    assert keep_count(0.05, 10) == 0 and keep_count(0.15, 10) == 2  # Python's round(), as the reference


def test_keep_mask_errors() -> None:
    pos = rank_positions(torch.randn(2, 1, 2, 2), seed=0)
    with pytest.raises(ParameterError, match="'count'"):
        keep_mask_count(pos, 5, "top")
    with pytest.raises(ParameterError, match="'side'"):
        keep_mask_count(pos, 1, "middle")
    with pytest.raises(ParameterError, match="'fraction'"):
        keep_mask(pos, 1.5)


def _two_sorts(attributions: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    """rank_positions written as the shuffle + stable sort of every row (no tie-free shortcut)."""
    s = attributions.abs().float().flatten(1)
    gen, out = torch.Generator().manual_seed(seed), torch.empty(s.shape, dtype=torch.int16)
    for i in range(0, len(s), batch_size):
        block = s[i : i + batch_size]
        perm = torch.argsort(torch.rand(block.shape, generator=gen), dim=1)
        order = perm.gather(1, torch.argsort(block.gather(1, perm), dim=1, descending=True, stable=True))
        out[i : i + batch_size].scatter_(1, order, torch.arange(s.shape[1], dtype=torch.int16).expand_as(order))
    return out.view(attributions.shape)


def test_tie_free_rows_take_one_sort_with_the_same_positions() -> None:
    """Rows without ties skip the shuffle; every row (tied, tie-free, NaN) equals the two-sort path."""
    maps = torch.randn(50, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    maps[::3] = maps[::3].round()  # many ties
    maps[1, 0, 0, 0] = float("nan")
    maps[4] = 0.0
    for seed in (0, 7):
        assert torch.equal(rank_positions(maps, seed=seed, batch_size=16), _two_sorts(maps, seed, 16))
    big = torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    big[::5, :, :4] = big[::5, :, :4].round(decimals=1)  # ties in every fifth row
    assert torch.equal(rank_positions(big, seed=3, batch_size=128), _two_sorts(big, 3, 128))


def test_positions_do_not_depend_on_the_worker_threads() -> None:
    """Row chunks sorted on 1, 2 or 3 threads (uneven chunks, ties, NaN) give the two-sort positions."""
    maps = torch.randn(101, 1, 7, 7, generator=torch.Generator().manual_seed(5))
    maps[::4] = maps[::4].round()  # ties
    maps[2, 0, 3, 3] = float("nan")
    expected = _two_sorts(maps, 2, 40)
    for workers in (1, 2, 3):
        assert torch.equal(rank_positions(maps, seed=2, batch_size=40, workers=workers), expected)
    with pytest.raises(ParameterError, match="workers"):
        rank_positions(maps, workers=0)


def test_infinities_zeros_and_nan_rank_as_the_two_sorts() -> None:
    """The 64-bit key sort (scores' bits over their column) sends rows with ties, NaN (either
    sign) or tied infinities to the shuffle; a single inf, zeros and -0.0 keep their order."""
    maps = torch.randn(24, 1, 5, 5, generator=torch.Generator().manual_seed(6))
    maps[0, 0, 0, 0] = float("inf")
    maps[1, 0, 0, :2] = float("-inf")  # |-inf| twice: a tie
    maps[2, 0, 1, 1] = -float("nan")
    maps[3, 0, 2] = 0.0
    maps[4, 0, 2, 2] = -0.0
    maps[5] = torch.arange(25.0).view(5, 5) * 2**-140  # subnormals: order as their bits too
    assert torch.equal(rank_positions(maps, seed=4, batch_size=10), _two_sorts(maps, 4, 10))
