"""Fills: ROAD's noisy linear imputation against an exact sparse solve and Quantus; zero/mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradaudit import ParameterError, ParameterTypeError
from gradaudit.masking.fill import FILLS, fill_masked, linear_imputation

scipy_sparse = pytest.importorskip("scipy.sparse")
spsolve = pytest.importorskip("scipy.sparse.linalg").spsolve

_OFFSETS = [((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
            for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def exact_imputation(plane: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Direct sparse solve of x_i = Σ_j w_ij x_j / Σ_j w_ij on the removed pixels (float64)."""
    h, w = plane.shape
    ids = -np.ones((h, w), dtype=int)
    rows = np.argwhere(removed)
    ids[removed] = np.arange(len(rows))
    mat = scipy_sparse.lil_matrix((len(rows), len(rows)))
    rhs = np.zeros(len(rows))
    for n, (i, j) in enumerate(rows):
        for (dy, dx), wt in _OFFSETS:
            a, b = i + dy, j + dx
            if 0 <= a < h and 0 <= b < w:
                mat[n, n] += wt
                if removed[a, b]:
                    mat[n, ids[a, b]] -= wt
                else:
                    rhs[n] += wt * plane[a, b]
    out = plane.astype(np.float64).copy()
    out[removed] = spsolve(mat.tocsc(), rhs)
    return out


def _exact_batch(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    keep = keep.expand_as(x)
    out = np.empty(x.shape)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[n, c] = exact_imputation(x[n, c].double().numpy(), ~keep[n, c].numpy())
    return torch.from_numpy(out)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 11, 9, generator=g)
    keep = torch.rand(6, 1, 11, 9, generator=g) > torch.linspace(0.1, 0.95, 6).view(6, 1, 1, 1)
    return x, keep


def test_nli_equals_exact_sparse_solve(batch) -> None:
    x, keep = batch
    ref = _exact_batch(x, keep)
    assert (linear_imputation(x, keep).double() - ref).abs().max() < 1e-5
    assert (linear_imputation(x.double(), keep) - ref).abs().max() < 1e-9


def test_nli_per_channel_masks_equal_exact_solve(batch) -> None:
    x, _ = batch
    keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) > 0.6
    assert (linear_imputation(x, keep).double() - _exact_batch(x, keep)).abs().max() < 1e-5


def test_nli_larger_image_with_big_holes_equals_exact_solve() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 56, 28, generator=g)
    keep = torch.ones(2, 1, 56, 28, dtype=torch.bool)
    keep[0, 0, 5:40, 3:25] = False  # one large hole
    keep[1] = torch.rand(1, 56, 28, generator=g) > 0.97  # 97% removed
    assert (linear_imputation(x, keep).double() - _exact_batch(x, keep)).abs().max() < 1e-5


@pytest.mark.slow  # importing quantus takes seconds
def test_nli_equals_quantus_noisy_linear_imputation(batch) -> None:
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    x, keep = batch
    ours = linear_imputation(x.double(), keep)
    for n in range(x.shape[0]):
        idx = np.flatnonzero(~keep[n, 0].numpy().ravel())
        theirs = perturb.noisy_linear_imputation(x[n].double().numpy(), idx, noise=0.0)
        assert np.abs(ours[n].numpy() - theirs).max() < 1e-9


def test_nli_is_batch_invariant() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(30, 1, 16, 16, generator=g)
    keep = torch.rand(30, 1, 16, 16, generator=g) > torch.linspace(0.05, 0.95, 30).view(30, 1, 1, 1)
    full = linear_imputation(x, keep)
    parts = torch.cat([linear_imputation(x[i : i + 7], keep[i : i + 7]) for i in range(0, 30, 7)])
    assert torch.equal(parts, full)


def test_nli_fills_a_constant_image_with_the_constant() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.full((4, 2, 10, 12), 0.37)
    keep = torch.rand(4, 1, 10, 12, generator=g) > torch.tensor([0.2, 0.5, 0.9, 0.99]).view(4, 1, 1, 1)
    keep[:, :, 0, 0] = True  # at least one kept pixel per image
    out = fill_masked(x, keep, "nli", noise=0.0)
    assert (out - 0.37).abs().max() < 1e-5


def test_nli_keeps_kept_pixels_and_adds_seeded_noise(batch) -> None:
    x, keep = batch
    clean = fill_masked(x, keep, "nli", noise=0.0)
    a = fill_masked(x, keep, "nli", noise=0.05, generator=torch.Generator().manual_seed(1))
    b = fill_masked(x, keep, "nli", noise=0.05, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    kept = keep.expand_as(x)
    assert torch.equal(a[kept], x[kept])
    diff = (a - clean)[~kept]
    assert diff.numel() > 500
    assert abs(diff.std().item() - 0.05) < 0.005 and abs(diff.mean().item()) < 0.005


def test_nli_region_without_kept_neighbours_gets_zero_not_nan() -> None:
    x = torch.rand(2, 1, 6, 6)
    keep = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    keep[1, 0, :, :3] = True  # image 1 keeps its left half; image 0 keeps nothing
    out = linear_imputation(x, keep)
    assert torch.equal(out[0], torch.zeros(1, 6, 6))
    assert torch.isfinite(out).all()
    assert (out[1].double() - _exact_batch(x[1:], keep[1:])[0]).abs().max() < 1e-5


def test_zero_and_mean_fills() -> None:
    x = torch.rand(2, 3, 4, 4) + 1
    keep = torch.rand(2, 1, 4, 4) > 0.5
    mean = torch.tensor([0.1, 0.2, 0.3])
    k = keep.expand_as(x)
    assert torch.equal(fill_masked(x, keep, "zero")[~k], torch.zeros(int((~k).sum())))
    filled = fill_masked(x, keep, "mean", mean=mean)
    assert torch.equal(filled[k], x[k])
    assert torch.equal(filled[~k], mean.view(1, 3, 1, 1).expand_as(x)[~k])
    assert set(FILLS) == {"zero", "mean", "nli"}


def test_bounds_clamp_filled_coordinates_only_and_exactly() -> None:
    g = torch.Generator().manual_seed(8)
    x = torch.rand(3, 2, 6, 5, generator=g) * 3 - 1  # values in [-1, 2], outside the box
    keep = torch.rand(3, 1, 6, 5, generator=g) > 0.5
    k = keep.expand_as(x)
    for fill, kwargs in (("zero", {}), ("mean", {"mean": torch.tensor([-0.5, 1.5])}),
                         ("nli", {"noise": 0.5, "generator": torch.Generator().manual_seed(2)})):
        free = fill_masked(x, keep, fill, **kwargs)
        if fill == "nli":
            kwargs["generator"] = torch.Generator().manual_seed(2)
        boxed = fill_masked(x, keep, fill, bounds=(0.2, 0.8), **kwargs)
        assert torch.equal(boxed[k], x[k])  # kept coordinates untouched, even outside the box
        assert torch.equal(boxed[~k], free[~k].clamp(0.2, 0.8))
        assert ((free[~k] < 0.2) | (free[~k] > 0.8)).any()  # the clamp had work to do


def test_bad_fill_arguments_raise() -> None:
    x = torch.rand(2, 1, 5, 5)
    keep = torch.rand(2, 1, 5, 5) > 0.5
    with pytest.raises(ParameterError, match="'fill' parameter of fill_masked"):
        fill_masked(x, keep, "nearest")
    with pytest.raises(ParameterError, match="generator"):
        fill_masked(x, keep, "nli", noise=0.01)
    with pytest.raises(ParameterError, match="mean"):
        fill_masked(x, keep, "mean")
    with pytest.raises(ParameterTypeError, match="bool"):
        linear_imputation(x, keep.float())
    with pytest.raises(ParameterError, match=r"broadcast to x's shape \(2, 1, 5, 5\)"):
        linear_imputation(x, torch.ones(2, 1, 4, 5, dtype=torch.bool))
    with pytest.raises(ParameterError, match="noise"):
        fill_masked(x, keep, "nli", noise=-1.0)
