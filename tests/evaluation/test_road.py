"""ROAD: parity with Quantus, batch/seed invariance, planted-signal sanity, input checks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gradaudit import ParameterError
from gradaudit.evaluation.road import RoadResult, road


def planted(n: int = 48, side: int = 16, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """An MLP that only looks at a 6×6 corner; labels are its own clean predictions.

    Returns the model (eval mode), x (n,1,side,side), y, and the oracle attribution (1 on
    the corner, 0 elsewhere, plus a little noise so the order inside each part is random).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 64), nn.ReLU(), nn.Linear(64, 10))
    envelope = torch.zeros(1, side, side)
    envelope[:, :6, :6] = 1
    with torch.no_grad():
        model[1].weight.mul_(envelope.flatten() * 8)
    model.eval()
    x = torch.rand(n, 1, side, side, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    oracle = envelope.expand(n, 1, side, side) + 0.01 * torch.rand(n, 1, side, side, generator=g)
    return model, x, y, oracle


@pytest.fixture(scope="module")
def setup():
    return planted()


@pytest.mark.slow
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_equals_quantus(setup, order: str) -> None:
    quantus = pytest.importorskip("quantus")
    model, x, y, _ = setup
    x, y = x[:32], y[:32]
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    percents = [1, 10, 25, 50, 75, 99]
    # Quantus removes the highest attributions first (MoRF); -a turns that into LeRF.
    metric = quantus.ROAD(percentages=percents, noise=0.0, normalise=False, abs=False, disable_warnings=True)
    theirs = metric(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(),
        a_batch=(a if order == "morf" else -a).numpy(), device="cpu", batch_size=len(x),
    )
    ours = road(model, x, y, a, percentages=[p / 100 for p in percents], order=order, noise=0.0)
    curve = ours.morf if order == "morf" else ours.lerf
    assert len(set(curve.accuracy)) > 3  # the curve moves, so the comparison means something
    for p, acc in zip(percents, curve.accuracy, strict=True):
        assert abs(acc - float(theirs[p])) <= 1e-4, (p, acc, theirs[p])
    assert ours.counts == tuple(int(256 * p / 100) for p in percents)


def test_fraction_zero_gives_clean_accuracy(setup) -> None:
    model, x, y, oracle = setup
    labels = y.clone()
    labels[::3] = (labels[::3] + 1) % 10  # clean accuracy 2/3, not 1
    res = road(model, x, labels, oracle, percentages=[0.0, 0.5], noise=0.3, seed=2)
    clean = (model(x).argmax(1) == labels).double().mean().item()
    assert res.morf.accuracy[0] == clean and res.lerf.accuracy[0] == clean
    probs = torch.softmax(model(x).double(), 1).gather(1, labels.view(-1, 1)).mean().item()
    assert abs(res.morf.probability[0] - probs) < 1e-9


def test_oracle_beats_random_and_its_reverse(setup) -> None:
    model, x, y, oracle = setup
    pcts = [0.1, 0.3, 0.5, 0.7, 0.9]
    good = road(model, x, y, oracle, percentages=pcts, seed=0)
    bad = road(model, x, y, -oracle, percentages=pcts, seed=0)
    rand = road(model, x, y, torch.rand(x.shape, generator=torch.Generator().manual_seed(5)), percentages=pcts)
    assert good.gap > 0.4
    assert bad.gap < -0.4
    assert good.gap > rand.gap + 0.3
    assert good.lerf.accuracy[:3] == (1.0, 1.0, 1.0)  # the corner (14% of pixels) survives


def test_batch_size_and_order_subset_do_not_change_results(setup) -> None:
    model, x, y, oracle = setup
    pcts = [0.2, 0.6]
    full = road(model, x, y, oracle, percentages=pcts, noise=0.2, seed=4, batch_size=64)
    small = road(model, x, y, oracle, percentages=pcts, noise=0.2, seed=4, batch_size=7)
    morf = road(model, x, y, oracle, percentages=[0.6], order="morf", noise=0.2, seed=4, batch_size=5)
    # The imputation is batch-invariant bit for bit; the model's float32 GEMM may round
    # differently for another batch size, hence the 1e-6 on probabilities.
    for a, b in ((full.morf, small.morf), (full.lerf, small.lerf)):
        assert a.accuracy == b.accuracy
        assert a.probability == pytest.approx(b.probability, abs=1e-6)
    assert morf.morf.accuracy[0] == full.morf.accuracy[1]
    assert morf.morf.probability[0] == pytest.approx(full.morf.probability[1], abs=1e-6)
    assert morf.lerf is None and morf.gap is None


def test_rank_element_and_absolute_options(setup) -> None:
    model, x, y, oracle = setup
    x3, a3 = x.repeat(1, 3, 1, 1) / 3, oracle.repeat(1, 3, 1, 1)
    model3 = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), model).eval()
    nn.init.ones_(model3[0].weight)
    by_pixel = road(model3, x3, y, a3, percentages=[0.3], rank="channel-sum", noise=0.0)
    by_element = road(model3, x3, y, a3, percentages=[0.3], rank="element", noise=0.0)
    assert by_pixel.counts == (76,) and by_element.counts == (230,)
    flipped = road(model, x, y, -oracle, percentages=[0.1, 0.5], absolute=True, noise=0.0)
    same = road(model, x, y, oracle, percentages=[0.1, 0.5], noise=0.0)
    assert flipped.gap == same.gap  # |−a| ranks like a


def test_model_mode_and_arguments_left_as_found(setup) -> None:
    model, x, y, oracle = setup
    model.train()
    x0, a0 = x.clone(), oracle.clone()
    try:
        road(model, x, y, oracle, percentages=[0.5])
        assert model.training and all(m.training for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(x, x0) and torch.equal(oracle, a0)
    finally:
        model.eval()


def test_result_to_dict_is_json_with_metadata(setup) -> None:
    model, x, y, oracle = setup
    res = road(model, x, y, oracle, percentages=[0.25, 0.75], seed=3)
    assert isinstance(res, RoadResult)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["protocol"] == "ROAD" and d["higher_is_better"] is True
    assert d["score"] == pytest.approx(res.lerf.accuracy_area - res.morf.accuracy_area)
    assert d["config"]["seed"] == 3 and "versions" in d["provenance"]
    # normalised trapezoid over the percentages = mean of the two end points here
    assert res.morf.accuracy_area == pytest.approx(sum(res.morf.accuracy) / 2)


class _Explodes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - must not run
        raise AssertionError("the model ran before the arguments were checked")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attributions": torch.rand(4, 1, 8, 7)}, "'attributions' argument of road"),
        ({"percentages": [10, 50]}, "fractions, not percents"),
        ({"percentages": [0.5, -0.1]}, "'percentages' parameter of road"),
        ({"percentages": []}, "non-empty"),
        ({"order": "forward"}, "'order' parameter of road"),
        ({"fill": "blur"}, "'fill' parameter of road"),
        ({"rank": "pixel"}, "'rank' parameter of road"),
        ({"y": torch.zeros(3, dtype=torch.long)}, "'y' argument of road"),
        ({"fill": "mean"}, "per-channel dataset mean"),
        ({"batch_size": 0}, "'batch_size' parameter of road"),
        ({"noise": -0.1}, "'noise' parameter of road"),
    ],
)
def test_bad_inputs_raise_before_any_work(kwargs: dict, match: str) -> None:
    args = {"x": torch.rand(4, 1, 8, 8), "y": torch.zeros(4, dtype=torch.long),
            "attributions": torch.rand(4, 1, 8, 8)}
    args.update(kwargs)
    rest = {k: v for k, v in args.items() if k not in ("x", "y", "attributions")}
    with pytest.raises(ParameterError, match=match):
        road(_Explodes(), args["x"], args["y"], args["attributions"], **rest)


def test_bounds_keep_imputed_inputs_inside_the_data_box() -> None:
    """With ``bounds``, noisy imputation never hands the model a value outside the box."""
    seen: list[tuple[float, float]] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((float(x.min()), float(x.max())))
            return self.lin(x.flatten(1))

    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(8, 1, 4, 4, generator=g)  # the data live in [0.2, 0.8]
    y, a = torch.randint(0, 2, (8,), generator=g), torch.randn(8, 1, 4, 4, generator=g)
    model = Spy()
    road(model, x, y, a, percentages=[0.5], noise=1.0, fill="nli")
    assert min(lo for lo, _ in seen) < 0.2 or max(hi for _, hi in seen) > 0.8  # noise leaves the box
    seen.clear()
    road(model, x, y, a, percentages=[0.5], noise=1.0, fill="nli", bounds=(0.2, 0.8))
    assert min(lo for lo, _ in seen) >= 0.2 - 1e-7 and max(hi for _, hi in seen) <= 0.8 + 1e-7  # float32 box
    with pytest.raises(ParameterError, match="bounds"):
        road(model, x, y, a, percentages=[0.5], bounds=(1.0, 0.0))


def test_percentages_solved_together_give_the_results_of_one_at_a_time(setup, monkeypatch) -> None:
    """A few percentages share one imputation solve and forward (GROUP_VALUES); every plane's
    solve and every noise stream is its own, so grouping changes no result."""
    import importlib

    road_module = importlib.import_module("gradaudit.evaluation.road")
    model, x, y, oracle = setup
    pcts = [0.1, 0.3, 0.5, 0.7, 0.9]
    grouped = road(model, x, y, oracle, percentages=pcts, noise=0.2, seed=3, batch_size=16)
    assert road_module._fraction_group(len(pcts), 16 * 2 * x[0].numel(), 0) > 1  # really grouped
    monkeypatch.setattr(road_module, "GROUP_VALUES", 1)
    alone = road(model, x, y, oracle, percentages=pcts, noise=0.2, seed=3, batch_size=16)
    for a, b in ((grouped.morf, alone.morf), (grouped.lerf, alone.lerf)):
        assert a.accuracy == b.accuracy
        assert a.probability == pytest.approx(b.probability, abs=1e-6)
