"""Stacked training equals training each member alone with training.fit."""

from __future__ import annotations

import pytest
import torch

from gradaudit import ParameterError
from gradaudit.data import ImageSet
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, accuracy, fit
from gradaudit.training.ensemble import Member, apply_inputs, fit_stacked, stackable

from toydata import flat_weights


def _toy(n: int, seed: int) -> ImageSet:
    """Two-class blobs on 1×6×6 images with some label noise (so training is not trivial)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.randn(3, 1, 6, 6, generator=g)
    x = centers[y] + 1.5 * torch.randn(n, 1, 6, 6, generator=g)
    return ImageSet(x.clamp(-3, 3), y, {"name": "toy", "classes": ["a", "b", "c"], "bounds": (-3, 3)})


def _masker(seed: int):
    """A row-wise input transform: a fixed random keep-mask per row, drawn from ``seed``."""
    keep = torch.rand(400, 1, 6, 6, generator=torch.Generator().manual_seed(seed)) < 0.6

    def fn(xb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return xb * keep[rows]

    return fn


_weights = flat_weights


RECIPES = {
    "sgd-onecycle-wd": Recipe(epochs=3, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4,
                              schedule="onecycle"),
    "adam-val-flip": Recipe(epochs=2, batch_size=50, optimizer="adam", lr=1e-3, val_fraction=0.2,
                            augment="flip"),
    "nesterov-cosine": Recipe(epochs=2, batch_size=64, lr=0.05, nesterov=True, schedule="cosine"),
}
SPECS = {
    "mlp-relu": ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3, options={"hidden": [32, 16]}),
    "mlp-softplus-normalize": ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3,
                                        options={"hidden": [24], "act": "softplus"},
                                        normalize=((0.1,), (1.3,))),
    "linear": ModelSpec(name="linear", input_shape=(1, 6, 6), num_classes=3),
}


CASES = [("mlp-relu", "sgd-onecycle-wd"), ("mlp-softplus-normalize", "adam-val-flip")]


@pytest.mark.parametrize(("spec_name", "recipe_name"), CASES)
def test_stacked_equals_fit_alone(spec_name: str, recipe_name: str) -> None:
    """Default threads: multi-threaded BLAS may round differently; accuracies still agree."""
    train, test = _toy(400, 0), _toy(300, 1)
    spec, recipe = SPECS[spec_name], RECIPES[recipe_name]
    members = [Member(init_seed=10 + i, data_seed=i, inputs=_masker(i) if i % 2 else None) for i in range(4)]
    stacked = fit_stacked(spec, train, recipe, members, quiet=True)
    assert stacked.engine == "bmm"
    for member, net in zip(members, stacked.models, strict=True):
        alone = spec.build(member.init_seed)
        data = train.with_x(apply_inputs(member.inputs, train.x))
        fit(alone, data, member.recipe(recipe), quiet=True)
        test_x = apply_inputs(member.inputs, test.x)
        assert abs(accuracy(net, test_x, test.y) - accuracy(alone, test_x, test.y)) <= 1e-4
        torch.testing.assert_close(_weights(net), _weights(alone), rtol=1e-4, atol=1e-5)
        assert not net.training


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("recipe_name", list(RECIPES))
def test_single_thread_is_bitwise(spec_name: str, recipe_name: str, one_thread: None) -> None:
    """With one BLAS thread the stacked products are exactly nn.Linear's: equal weights.

    Softplus is the one exception: PyTorch's CPU kernel computes exp in SIMD lanes and the
    leftover elements of a tensor with a scalar exp, so an element's last bit depends on
    where it falls in the (M, B, H) stack versus the (B, H) batch and on the CPU's vector
    width (seen on an AVX2 machine: 1.5e-8 after 2 Adam epochs). There the weights agree
    to within float32 rounding instead.
    """
    train, spec, recipe = _toy(400, 0), SPECS[spec_name], RECIPES[recipe_name]
    members = [Member(3, 7, _masker(7)), Member(4, 8), Member(5, 9, _masker(9))]
    stacked = fit_stacked(spec, train, recipe, members, quiet=True)
    for member, net in zip(members, stacked.models, strict=True):
        alone = spec.build(member.init_seed)
        fit(alone, train.with_x(apply_inputs(member.inputs, train.x)), member.recipe(recipe), quiet=True)
        if "softplus" in spec_name:
            torch.testing.assert_close(_weights(net), _weights(alone), rtol=0, atol=1e-6)
        else:
            assert torch.equal(_weights(net), _weights(alone))


def test_stacked_does_not_depend_on_the_thread_count() -> None:
    """Grouped products run each member single-threaded: 1 and 2 threads give equal weights."""
    train, spec, recipe = _toy(400, 0), SPECS["mlp-relu"], RECIPES["sgd-onecycle-wd"]
    members = [Member(3, 7, _masker(7)), Member(4, 8), Member(5, 9)]
    threads, runs = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append([_weights(m) for m in fit_stacked(spec, train, recipe, members, quiet=True).models])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_members_differ_and_seeds_matter(one_thread: None) -> None:
    train, spec, recipe = _toy(400, 0), SPECS["mlp-relu"], RECIPES["nesterov-cosine"]
    out = fit_stacked(spec, train, recipe, [Member(0, 0), Member(0, 1), Member(1, 0), Member(0, 0)], quiet=True)
    w = [_weights(m) for m in out.models]
    assert torch.equal(w[0], w[3])
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])
    assert out.flops == pytest.approx(  # 2 products for the first layer, 3 after, ×2 FLOPs
        4 * 2 * recipe.epochs * 400 * (2 * 36 * 32 + 3 * 32 * 16 + 3 * 16 * 3))
    assert len(out.history) == recipe.epochs and len(out.history[-1]["train_loss"]) == 4


def test_loop_engine_for_cnn_equals_fit(one_thread: None) -> None:
    train = _toy(200, 0)
    spec = ModelSpec(name="cnn", input_shape=(1, 6, 6), num_classes=3, options={"channels": [4], "hidden": 8})
    recipe = Recipe(epochs=1, batch_size=50, lr=0.05)
    assert not stackable(spec.build(0))[0]
    members = [Member(1, 2, _masker(1)), Member(2, 3)]
    out = fit_stacked(spec, train, recipe, members, quiet=True)
    assert out.engine == "loop" and out.flops is None
    for member, net in zip(members, out.models, strict=True):
        alone = spec.build(member.init_seed)
        fit(alone, train.with_x(apply_inputs(member.inputs, train.x)), member.recipe(recipe), quiet=True)
        assert torch.equal(_weights(net), _weights(alone))


def test_errors_before_work() -> None:
    train, spec = _toy(100, 0), SPECS["mlp-relu"]
    cnn = ModelSpec(name="cnn", input_shape=(1, 6, 6), num_classes=3)
    with pytest.raises(ParameterError, match="needs a smooth model"):
        fit_stacked(spec, train, Recipe(regularizer="score-matching", reg_weight=0.1), [Member(0, 0)])
    with pytest.raises(ParameterError, match="eps > 0"):
        fit_stacked(spec, train, Recipe(), [Member(0, 0, attack={"attack": "linf"})])
    with pytest.raises(ParameterError, match="may set only"):
        fit_stacked(spec, train, Recipe(), [Member(0, 0, attack={"lr": 1.0})])
    with pytest.raises(ParameterError, match="non-empty"):
        fit_stacked(spec, train, Recipe(), [])
    with pytest.raises(ParameterError, match="engine='loop'"):
        fit_stacked(cnn, train, Recipe(), [Member(0, 0)], engine="bmm")
    with pytest.raises(ParameterError, match="'engine'"):
        fit_stacked(spec, train, Recipe(), [Member(0, 0)], engine="grouped")
