"""Pixel perturbation and patch degradation: Quantus parity, exact counts, the reference bugs
fixed (and reproducible on request), planted-signal sanity, input checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gradaudit import ParameterError
from gradaudit.evaluation.perturbation import (
    DEFAULT_FRACTIONS,
    degradation,
    pixel_perturbation,
    removal_order,
    removal_scores,
)


class Recorder(nn.Module):
    """Wraps a model and keeps every input it is given."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.inner(x)


def mlp(d: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def planted_patches(n: int = 40, side: int = 16, seed: int = 0):
    """A model that reads only 3 of the 16 4×4 patches (through weights that vary inside
    each patch, so a patch mean does not preserve them); labels are its clean predictions.
    The oracle attribution ranks those 3 patches first."""
    g = torch.Generator().manual_seed(seed)
    model = mlp(side * side, seed)
    envelope = torch.zeros(1, side, side)
    for r, c in ((0, 0), (1, 2), (3, 1)):
        envelope[:, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 1
    with torch.no_grad():
        model[1].weight.mul_(envelope.flatten() * 10)
        model[3].weight.mul_(20)  # confident: clean probabilities near 1
    x = torch.rand(n, 1, side, side, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    oracle = envelope.expand(n, 1, side, side) + 0.001 * torch.rand(n, 1, side, side, generator=g)
    return model, x, y, oracle


# ----------------------------------------------------------------------- pixel perturbation


@pytest.mark.slow
@pytest.mark.parametrize("order", ["lerf", "morf"])
def test_pixel_perturbation_equals_quantus_pixel_flipping(order: str) -> None:
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(1)
    model = mlp(144)
    x = torch.rand(24, 1, 12, 12, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    a = torch.randn(x.shape, generator=g)
    score = a.abs()  # our "abs-sum" for one channel
    step = 8
    # Quantus flips the highest values first, `step` features at a time; feeding it
    # (10 − |a|) makes that the least salient first (LeRF). Values stay positive, as it asks.
    metric = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.5, normalise=False,
                                   abs=False, disable_warnings=True)
    a_q = (10 - score.double()) if order == "lerf" else score.double()  # float64: exact order
    theirs = torch.tensor(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                                 a_batch=a_q.numpy(), device="cpu", batch_size=24)).mean(0)
    fractions = [(t + 1) * step / 144 for t in range(144 // step)]
    ours = pixel_perturbation(model, x, y, a, fractions=fractions, order=order, fill="constant", value=0.5)
    assert ours.counts == tuple((t + 1) * step for t in range(144 // step))
    assert max(abs(o - t) for o, t in zip(ours.curve.probability, theirs.tolist(), strict=True)) < 1e-6


def test_pixel_perturbation_of_a_cnn_sees_the_model_and_its_values() -> None:
    """A plain Sequential CNN runs through attribution._fastpath (pool-then-ReLU, channels-last
    pools): every image the model would see is scored with the model's own values."""
    from gradaudit import models

    g = torch.Generator().manual_seed(3)
    net = models.build("cnn", (1, 16, 16), 10, channels=(4, 8), hidden=16, seed=3).eval()
    x = torch.rand(20, 1, 16, 16, generator=g)
    x[:4] = 0.0  # blank images: tied max-pool windows
    with torch.no_grad():
        y = net(x).argmax(1)
    a = torch.randn(x.shape, generator=g)
    fractions = [0.0, 0.1, 0.25, 0.5, 0.9]
    recorder = Recorder(net)  # an opaque wrapper: the model's own forward
    fast = pixel_perturbation(net, x, y, a, fractions=fractions, order="morf")
    plain = pixel_perturbation(recorder, x, y, a, fractions=fractions, order="morf")
    assert len(recorder.seen) == len(fractions)
    assert fast.curve.accuracy == plain.curve.accuracy and fast.curve.accuracy[0] == 1.0
    assert max(abs(p - q) for p, q in zip(fast.curve.probability, plain.curve.probability, strict=True)) < 1e-12
    with torch.no_grad():  # the recorded (perturbed) inputs give the same probabilities through the model
        direct = [float(torch.softmax(net(s).double(), 1).gather(1, y[:, None]).mean()) for s in recorder.seen]
    assert max(abs(p - q) for p, q in zip(fast.curve.probability, direct, strict=True)) < 1e-6


@pytest.mark.parametrize("order", ["lerf", "morf"])
def test_tied_scores_gradaudit_and_quantus_remove_the_same_pixels_at_every_step(order: str) -> None:
    # Scores with four distinct values over 144 pixels (as |gradient| on a black border):
    # ~36 pixels share each value, so each 8-pixel step cuts through tied groups.
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(3)
    x = 0.6 + 0.4 * torch.rand(10, 1, 12, 12, generator=g)  # never equal to the 0.5 fill
    score = torch.randint(4, x.shape, generator=g).float()
    assert all(len(torch.unique(s)) == 4 for s in score)
    inner = mlp(144)
    with torch.no_grad():
        y = inner(x).argmax(1)
    step, d = 8, 144
    fractions = [(t + 1) * step / d for t in range(d // step)]
    ours_rec = Recorder(inner)
    ours = pixel_perturbation(ours_rec, x, y, score, fractions=fractions, order=order, seed=5)
    peer_rec = Recorder(inner).eval()
    metric = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.5, normalise=False,
                                   abs=False, disable_warnings=True)
    a_q = removal_scores(score, order=order, seed=5)
    assert all(len(torch.unique(s)) == d for s in a_q)  # tie-free
    theirs = torch.tensor(metric(model=peer_rec, x_batch=x.numpy(), y_batch=y.numpy(),
                                 a_batch=a_q.numpy(), device="cpu", batch_size=10)).mean(0)
    assert len(ours_rec.seen) == len(peer_rec.seen) == d // step
    sequence = removal_order(score, order=order, seed=5)
    for t, (mine, peer) in enumerate(zip(ours_rec.seen, peer_rec.seen, strict=True)):
        removed = (mine == 0.5).flatten(1)
        assert torch.equal(removed, (peer == 0.5).flatten(1)), f"step {t}"
        assert removed.sum(1).tolist() == [(t + 1) * step] * 10
        # the removed pixels are the first (t + 1)·step of the order, which follows the scores
        assert removed.gather(1, sequence[:, : (t + 1) * step]).all()
    ranked = score.flatten(1).gather(1, sequence)
    assert bool((ranked[:, 1:] >= ranked[:, :-1]).all() if order == "lerf" else (ranked[:, 1:] <= ranked[:, :-1]).all())
    assert max(abs(o - t) for o, t in zip(ours.curve.probability, theirs.tolist(), strict=True)) < 1e-6


def test_removal_order_breaks_ties_by_the_seed_only() -> None:
    score = torch.zeros(2, 1, 6, 6)
    score[:, :, 2:4, 2:4] = 1.0
    a, b = removal_order(score, order="morf", seed=1), removal_order(score, order="morf", seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, removal_order(score, order="morf", seed=2))
    center = {2 * 6 + 2, 2 * 6 + 3, 3 * 6 + 2, 3 * 6 + 3}
    assert all(set(row[:4].tolist()) == center for row in a)  # the 4 high scores first


def test_default_grid_removes_exactly_k_pixels_the_least_salient_first() -> None:
    # The reference removes k − 1 pixels (mask = grad ≥ kth smallest) on 32×32 images.
    g = torch.Generator().manual_seed(2)
    x = 0.6 + 0.4 * torch.rand(3, 3, 32, 32, generator=g)  # never equal to the 0.5 fill
    a = torch.randn(x.shape, generator=g)
    rec = Recorder(mlp(3 * 1024))
    res = pixel_perturbation(rec, x, torch.zeros(3, dtype=torch.long), a)
    assert len(DEFAULT_FRACTIONS) == 25 and DEFAULT_FRACTIONS[0] == pytest.approx(0.01)
    expected = tuple(int(m * 1024) for m in DEFAULT_FRACTIONS)
    assert res.counts == expected and expected[-1] == 1024 and expected[0] == 10
    score = a.abs().sum(1).flatten(1)
    for k, seen in zip(expected, rec.seen, strict=True):
        removed = (seen == 0.5)  # (3, 3, 32, 32)
        assert torch.equal(removed.all(1), removed.any(1))  # all channels of a pixel
        per_image = removed[:, 0].flatten(1)
        assert per_image.sum(1).tolist() == [k, k, k]
        lowest = score.argsort(1)[:, :k]  # the k least salient pixels (scores have no ties)
        assert torch.equal(per_image.gather(1, lowest).all(1), torch.ones(3, dtype=torch.bool))


def test_fraction_zero_gives_clean_accuracy_and_probability() -> None:
    model, x, y, oracle = planted_patches()
    labels = y.clone()
    labels[::4] = (labels[::4] + 3) % 10
    res = pixel_perturbation(model, x, labels, oracle, fractions=[0.0, 0.3])
    with torch.no_grad():
        logits = model(x)
    assert res.curve.accuracy[0] == (logits.argmax(1) == labels).double().mean().item()
    expected = torch.softmax(logits.double(), 1).gather(1, labels.view(-1, 1)).mean().item()
    assert res.curve.probability[0] == pytest.approx(expected, abs=1e-12)
    assert res.counts == (0, 76)


def test_image_mean_and_zero_fills() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 8, 8, generator=g) + torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1)
    a = torch.randn(x.shape, generator=g)
    rec = Recorder(mlp(192))
    pixel_perturbation(rec, x, torch.zeros(2, dtype=torch.long), a, fractions=[1.0], fill="image-mean")
    assert torch.allclose(rec.seen[0], x.mean((2, 3), keepdim=True).expand_as(x))
    rec.seen.clear()
    pixel_perturbation(rec, x, torch.zeros(2, dtype=torch.long), a, fractions=[0.5], fill="zero", order="morf")
    removed = rec.seen[0] == 0
    assert removed[:, 0].flatten(1).sum(1).tolist() == [32, 32]


def test_channel_std_score_ranks_by_the_spread_across_channels() -> None:
    # Pixel 0: channels (+1, −1, 0) → std 1, |a| sum 2. Pixel 1: (3, 3, 3) → std 0, sum 9.
    a = torch.zeros(1, 3, 1, 2)
    a[0, :, 0, 0] = torch.tensor([1.0, -1.0, 0.0])
    a[0, :, 0, 1] = 3.0
    x = torch.ones(1, 3, 1, 2)
    rec = Recorder(mlp(6))
    kw = {"fractions": [0.5], "fill": "zero"}
    pixel_perturbation(rec, x, torch.zeros(1, dtype=torch.long), a, score="channel-std", **kw)
    pixel_perturbation(rec, x, torch.zeros(1, dtype=torch.long), a, score="abs-sum", **kw)
    # LeRF removes the least salient pixel: pixel 1 by std, pixel 0 by |a| sum.
    assert rec.seen[0][0, :, 0].tolist() == [[1.0, 0.0]] * 3
    assert rec.seen[1][0, :, 0].tolist() == [[0.0, 1.0]] * 3


def test_good_attribution_beats_random_in_pixel_perturbation() -> None:
    model, x, y, oracle = planted_patches()
    rand = torch.rand(x.shape, generator=torch.Generator().manual_seed(9))
    fr = [0.1, 0.3, 0.5, 0.7, 0.8]
    good = pixel_perturbation(model, x, y, oracle, fractions=fr)
    chance = pixel_perturbation(model, x, y, rand, fractions=fr)
    assert good.curve.accuracy[:4] == (1.0, 1.0, 1.0, 1.0)  # LeRF keeps the 3 read patches
    assert good.score > chance.score + 0.2
    assert good.higher_is_better and not pixel_perturbation(model, x, y, oracle, fractions=fr, order="morf").higher_is_better
    d = json.loads(json.dumps(good.to_dict()))
    assert d["protocol"] == "pixel-perturbation" and d["counts"] == list(good.counts)


# ------------------------------------------------------------------------------ degradation


def _patch_grid(t: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) → (N, C, H/p, W/p, p, p)."""
    n, c, h, w = t.shape
    return t.view(n, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5)


def test_degradation_step_n_degrades_exactly_the_top_n_patches_on_all_channels() -> None:
    g = torch.Generator().manual_seed(4)
    # channel 0 sits below zero: PGIG's "> 0" rule would leave it untouched
    x = torch.rand(2, 3, 8, 8, generator=g) + torch.tensor([-2.0, 0.0, 1.0]).view(1, 3, 1, 1)
    a = torch.randn(2, 1, 8, 8, generator=g)
    patch_sum = _patch_grid(a, 2).sum((-1, -2)).flatten(1)  # (2, 16), signed sums (PGIG)
    order = patch_sum.argsort(1, descending=True)
    means = _patch_grid(x, 2).mean((-1, -2))  # (2, 3, 4, 4)
    rec = Recorder(mlp(192))
    res = degradation(rec, x, torch.zeros(2, dtype=torch.long), a, patch_size=2, order="morf")
    assert res.steps == tuple(range(17)) and len(rec.seen) == 17
    assert torch.equal(rec.seen[0], x)  # step 0 is the clean image
    for n, seen in enumerate(rec.seen):
        changed = (_patch_grid(seen, 2) != _patch_grid(x, 2)).any(-1).any(-1)  # (2, 3, 4, 4)
        for i in range(2):
            expected = torch.zeros(16, dtype=torch.bool)
            expected[order[i, :n]] = True
            for c in range(3):
                assert torch.equal(changed[i, c].flatten(), expected), (n, i, c)
            got = _patch_grid(seen, 2)[i].flatten(1, 2)[:, expected]  # (3, n, 2, 2)
            want = means[i].flatten(1)[:, expected, None, None].expand_as(got)
            assert torch.allclose(got, want)


def test_reproduce_pgig_restores_both_quirks() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 2, 4, 4, generator=g) + torch.tensor([-2.0, 1.0]).view(1, 2, 1, 1)
    a = torch.randn(1, 1, 4, 4, generator=g)
    first = _patch_grid(a, 2).sum((-1, -2)).flatten(1).argsort(1, descending=True)[0]
    rec = Recorder(mlp(32))
    degradation(rec, x, torch.zeros(1, dtype=torch.long), a, patch_size=2, order="morf", reproduce_pgig=True)
    step1 = (_patch_grid(rec.seen[1], 2) != _patch_grid(x, 2)).any(-1).any(-1).flatten(2)[0]  # (2, 4)
    assert not step1[:, first[0]].any()  # the top patch is skipped
    assert step1[1, first[1]] and not step1[0].any()  # only the channel with mean > 0 changes


def test_random_ordering_gives_a_flatter_degradation_curve() -> None:
    model, x, y, oracle = planted_patches()
    good = degradation(model, x, y, oracle, patch_size=4)
    gaps = [degradation(model, x, y, torch.rand(x.shape, generator=torch.Generator().manual_seed(s)),
                        patch_size=4).gap for s in range(3)]
    assert good.gap > 0.3
    assert max(abs(gp) for gp in gaps) < good.gap / 3
    # MoRF drops at once when the read patches go first; LeRF holds until they are reached
    assert good.morf.probability[3] < good.morf.probability[0] / 2
    assert min(good.lerf.accuracy[:14]) == 1.0
    assert good.morf.probability_area < min(
        degradation(model, x, y, torch.rand(x.shape, generator=torch.Generator().manual_seed(0)),
                    patch_size=4).morf.probability_area, 1.0)


def test_degradation_tracks_the_clean_prediction_and_result_metadata() -> None:
    model, x, y, oracle = planted_patches(n=12)
    labels = (y + 1) % 10  # accuracy 0, but the probability tracks the predicted class
    res = degradation(model, x, labels, oracle, patch_size=8, n_patches=2, order="lerf")
    with torch.no_grad():
        p = torch.softmax(model(x).double(), 1).max(1).values.mean().item()
    assert res.lerf.probability[0] == pytest.approx(p, abs=1e-12) and res.lerf.accuracy[0] == 0.0
    assert res.steps == (0, 1, 2) and res.morf is None and res.gap is None
    d = json.loads(json.dumps(res.to_dict()))
    assert d["protocol"] == "patch-degradation" and d["higher_is_better"] is True


# ------------------------------------------------------------------------------ input checks


class _Explodes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - must not run
        raise AssertionError("the model ran before the arguments were checked")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attributions": torch.rand(4, 3, 8, 9)}, "'attributions' argument of pixel_perturbation"),
        ({"fractions": [0.5, 1.5]}, "'fractions' parameter of pixel_perturbation"),
        ({"order": "both"}, "'order' parameter of pixel_perturbation"),
        ({"fill": "blur"}, "'fill' parameter of pixel_perturbation"),
        ({"score": "max"}, "'score' parameter of pixel_perturbation"),
        ({"seed": -1}, "'seed' parameter of pixel_perturbation"),
    ],
)
def test_pixel_perturbation_bad_inputs_raise_before_any_work(kwargs: dict, match: str) -> None:
    a = kwargs.pop("attributions", torch.rand(4, 3, 8, 8))
    with pytest.raises(ParameterError, match=match):
        pixel_perturbation(_Explodes(), torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), a, **kwargs)


def test_channel_std_needs_channels() -> None:
    with pytest.raises(ParameterError, match="at least 2 channels"):
        pixel_perturbation(_Explodes(), torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long),
                           torch.rand(2, 1, 4, 4), score="channel-std")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_size": 5}, r"must divide the image size 8×8.*\[1, 2, 4, 8\]"),
        ({"n_patches": 5}, "'n_patches' parameter of degradation"),
        ({"order": "up"}, "'order' parameter of degradation"),
        ({"fill": "blur"}, "'fill' parameter of degradation"),
        ({"patch_score": "max"}, "'patch_score' parameter of degradation"),
        ({"reproduce_pgig": True, "fill": "zero"}, "needs fill='patch-mean'"),
    ],
)
def test_degradation_bad_inputs_raise_before_any_work(kwargs: dict, match: str) -> None:
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ParameterError, match=match):
        degradation(_Explodes(), x, torch.zeros(2, dtype=torch.long), torch.rand(2, 1, 8, 8),
                    **{"patch_size": 4, **kwargs})


def test_default_fractions_are_the_papers_grid() -> None:
    expected = [10 ** (-2 + 2 * i / 24) for i in range(25)]
    assert all(math.isclose(a, b) for a, b in zip(DEFAULT_FRACTIONS, expected, strict=True))
    assert math.isclose(DEFAULT_FRACTIONS[-1], 1.0)
