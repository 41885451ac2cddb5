"""synthetic-v1 and simplified-blockmnist: exact construction properties."""

from __future__ import annotations

import math

import pytest
import torch

from gradaudit import ParameterError, ParameterTypeError, data


def _sign(s: data.ImageSet) -> torch.Tensor:
    return (2 * s.y - 1).float()


def test_synthetic_v1_exact() -> None:
    s = data.load("synthetic-v1", "train", seed=0)
    n, d = 10_000, 10
    assert s.x.shape == (n, 1, 1, d) and s.x.dtype == torch.float32 and s.y.dtype == torch.int64
    assert s.bounds == (-1.0, 1.0) and s.meta["classes"] == ["-1", "+1"]
    x = s.x.view(n, d)
    j = s.per_image["signal_index"]
    # x = s·e_j exactly: one non-zero coordinate per row, at j, equal to the sign of y.
    assert torch.equal(x, torch.nn.functional.one_hot(j, d).float() * _sign(s)[:, None])
    assert torch.equal(s.per_image["signal_mask"].view(n, d), x != 0)
    # j ~ U{0..9}: each count within 5 standard deviations of n/d, and a chi-square test.
    counts = j.bincount(minlength=d).double()
    sd = math.sqrt(n * 0.1 * 0.9)
    assert ((counts - n / d).abs() < 5 * sd).all()
    chi2 = ((counts - n / d) ** 2 / (n / d)).sum().item()
    assert chi2 < 27.9  # the 0.999 quantile of chi-square with 9 degrees of freedom
    assert abs(s.y.float().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n)
    test = data.load("synthetic-v1", "test", seed=0)
    assert len(test) == 1_000


def test_synthetic_v1_seeds_and_options() -> None:
    a = data.load("synthetic-v1", "test", seed=7)
    assert torch.equal(a.x, data.load("synthetic-v1", "test", seed=7).x)
    assert not torch.equal(a.x, data.load("synthetic-v1", "test", seed=8).x)
    train = data.load("synthetic-v1", "train", seed=7, n_train=1_000)
    assert not torch.equal(a.x, train.x)  # train and test are different draws
    small = data.load("synthetic-v1", "test", seed=0, dim=4, n_test=50)
    assert small.x.shape == (50, 1, 1, 4) and small.per_image["signal_index"].max() < 4
    with pytest.raises(ParameterError, match="'n_test'"):
        data.load("synthetic-v1", "test", n_test=0)
    with pytest.raises(ParameterTypeError, match="'seed'"):
        data.load("synthetic-v1", "test", seed=1.5)


def test_simplified_blockmnist_gaussian_default() -> None:
    s = data.load("simplified-blockmnist", "train", seed=0)
    n, d = 10_000, 10
    assert s.x.shape == (n, 1, 1, d) and s.bounds == (-1.0, 1.0)
    x = s.x.view(n, d)
    j = s.per_image["signal_block"]
    mask = s.per_image["signal_mask"].view(n, d)
    assert torch.equal(mask, torch.nn.functional.one_hot(j, d).bool())
    assert torch.equal(x[mask], _sign(s))  # the signal coordinate equals s exactly
    # j* uniform over the 5 task-relevant blocks only.
    counts = j.bincount(minlength=d)
    assert counts[5:].sum() == 0
    assert ((counts[:5].double() - n / 5).abs() < 5 * math.sqrt(n * 0.2 * 0.8)).all()
    # Noise: every other coordinate ~ N(0, 0.1²).
    noise = x[~mask]
    assert noise.numel() == n * (d - 1)
    assert abs(noise.mean().item()) < 5 * 0.1 / math.sqrt(noise.numel())
    assert abs(noise.std().item() / 0.1 - 1) < 0.02
    kurtosis = ((noise / noise.std()) ** 4).mean().item()
    assert abs(kurtosis - 3) < 0.15
    assert s.meta["block_id"] == list(range(10)) and s.meta["task_relevant_blocks"] == [0, 1, 2, 3, 4]
    assert s.meta["n_clipped"] == 0 and s.meta["noise"] == "gaussian" and s.meta["scale"] == 0.1


def test_simplified_blockmnist_uniform_blocks() -> None:
    s = data.load("simplified-blockmnist", "train", seed=3, blocks=6, block_size=4,
                  noise="uniform", scale=0.2, n_train=4_000)
    n, d = 4_000, 24
    assert s.x.shape == (n, 1, 1, d)
    block_id = torch.tensor(s.meta["block_id"])
    assert torch.equal(block_id, torch.arange(6).repeat_interleave(4))
    x = s.x.view(n, d)
    j = s.per_image["signal_block"]
    mask = s.per_image["signal_mask"].view(n, d)
    assert torch.equal(mask, block_id[None, :] == j[:, None])
    assert torch.equal(x[mask].view(n, 4), _sign(s)[:, None].expand(n, 4))  # s·1 on block j*
    assert set(j.tolist()) == {0, 1, 2}
    noise = x[~mask]
    assert noise.abs().max() <= 0.2 and noise.abs().max() > 0.199
    assert abs(noise.std().item() / (0.2 / math.sqrt(3)) - 1) < 0.02


def test_simplified_blockmnist_clipping_is_counted() -> None:
    s = data.load("simplified-blockmnist", "test", seed=0, scale=1.0, n_test=2_000)
    assert s.x.min() >= -1.0 and s.x.max() <= 1.0
    # P(|N(0,1)| > 1) = 0.3173 on the 9 noise coordinates of each row.
    expected = 0.3173 * 2_000 * 9
    assert abs(s.meta["n_clipped"] - expected) < 5 * math.sqrt(expected)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"blocks": 7}, ParameterError, "must be an even int"),
        ({"blocks": 0}, ParameterError, "'blocks'"),
        ({"block_size": 0}, ParameterError, "'block_size'"),
        ({"noise": "gauss"}, ParameterError, "Did you mean 'gaussian'"),
        ({"scale": 1.5}, ParameterError, r"'scale'.*\[0, 1\]"),
        ({"scale": "big"}, ParameterTypeError, "'scale'"),
        ({"noise_scale": 0.1}, ParameterError, "Valid: block_size, blocks"),
    ],
)
def test_simplified_blockmnist_bad_options(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        data.load("simplified-blockmnist", "train", **options)
