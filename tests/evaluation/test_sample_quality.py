"""Activation maximization and GAN-test: exact oracles on toy models, behaviour on models
trained on real Fashion-MNIST, the reference's bugs fixed, and argument errors."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from gradaudit import models, training
from gradaudit._validation import GradauditError, ParameterError
from gradaudit.evaluation.sample_quality import (
    ActivationSamples,
    activation_maximization,
    gan_test,
    gan_test_saturation,
    gan_test_score,
    gan_test_targets,
    sample_grid,
)
from gradaudit.training import Recipe, fit

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small models: on a shared CPU, intra-op thread hand-offs cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real(fmnist_train, fmnist_test):
    """A ReLU proxy and a Softplus(10) model trained separately on 4096 Fashion-MNIST images,
    and 1000 test images."""
    train = fmnist_train.subset(slice(0, 4096))
    nets = {}
    for act, seed in (("relu", 1), ("softplus", 2)):
        net = models.build("mlp", SHAPE, 10, hidden=(128,), act=act, seed=seed)
        fit(net, train, Recipe(epochs=3, batch_size=64, lr=0.05, seed=seed), quiet=True)
        nets[act] = net
    return nets["relu"], nets["softplus"], fmnist_test.subset(slice(0, 1000))


# ---------------------------------------------------------------- GAN-test


@pytest.mark.slow  # shares a ~5-10 s fixture: two models trained on real data
def test_gan_test_of_real_test_images_is_the_proxys_test_accuracy(real):
    proxy, _, test = real
    acc = training.accuracy(proxy, test.x, test.y)
    assert acc > 0.7  # a usable proxy
    oracle = (proxy(test.x).argmax(1) == test.y).sum().item() / len(test.y)  # one batch, by hand, exact
    for batch_size in (1000, 256, 7):  # no per-batch re-division (reference bug)
        score = gan_test(proxy, test.x, test.y, batch_size=batch_size)
        assert score >= acc - 0.01
        assert score == pytest.approx(oracle, abs=1e-12)


@pytest.mark.slow  # shares a ~5-10 s fixture: two models trained on real data
def test_gan_test_scores_the_targets_not_just_the_images(real):
    proxy, _, test = real
    right = gan_test(proxy, test.x, test.y)
    wrong = gan_test(proxy, test.x, (test.y + 1) % 10)
    assert wrong <= 1 - right + 1e-12  # a hit for y cannot be a hit for y + 1
    noise = (0.5 + 0.2 * torch.randn(1000, *SHAPE, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert gan_test(proxy, noise, test.y) < 0.35  # noise is not recognised as its target


@pytest.mark.slow  # shares a ~5-10 s fixture: two models trained on real data
def test_activation_maximization_raises_the_target_logit_monotonically(real):
    _, model, test = real
    targets = test.y[:64]
    out = activation_maximization(model, targets, shape=SHAPE, steps=30, seed=0)
    traj = torch.tensor(out.trajectory)
    assert len(traj) == 31
    assert (traj[1:21] > traj[:20]).all(), out.trajectory[:21]
    assert traj[-1] > traj[0] + 1.0
    with torch.no_grad():  # the trajectory's last entry is the returned samples' mean logit
        final = model(out.x).gather(1, out.target.view(-1, 1)).mean().item()
    assert final == pytest.approx(out.trajectory[-1], rel=1e-5)


@pytest.mark.slow  # shares a ~5-10 s fixture: two models trained on real data
def test_gan_test_score_of_a_models_own_samples_is_near_perfect(real):
    proxy, model, test = real
    targets = gan_test_targets(50, labels=test.y)
    own = gan_test_score(proxy, proxy, targets, shape=SHAPE)  # the reference: 500 steps
    assert own.accuracy >= 0.95  # ascent on the proxy's own logits fools the proxy
    assert set(own.per_class) == {int(c) for c in targets.unique()}
    other = gan_test_score(model, proxy, targets, shape=SHAPE, steps=50)
    assert 0.0 <= other.accuracy <= 1.0 and torch.equal(other.samples.target, targets)
    assert other.to_dict()["sampling"]["steps"] == 50
    # the graded score: the proxy's mean softmax probability of the target, by hand
    with torch.no_grad():
        p = proxy(other.samples.x).softmax(1).gather(1, targets.view(-1, 1)).mean().item()
    assert other.target_probability == pytest.approx(p, rel=1e-5)
    assert own.target_probability > other.target_probability
    assert other.to_dict()["target_probability"] == other.target_probability


# ---------------------------------------------------------------- saturation


def test_saturation_flags_the_fashion_mnist_pattern_and_passes_a_spread():
    fmnist = {"baseline": 1.0, "gradient norm": 1.0, "score matching": 0.955, "anti-score matching": 1.0}
    sat = gan_test_saturation(fmnist)
    assert sat.saturated and sat.at_ceiling == ("baseline", "gradient norm", "anti-score matching")
    assert "3 of 4 models" in sat.reason and sat.spread == pytest.approx(0.045)
    one_at_top = {"baseline": 0.8, "gradient norm": 0.815, "score matching": 1.0, "anti-score matching": 0.775}
    ok = gan_test_saturation(one_at_top)
    assert not ok.saturated and ok.at_ceiling == ("score matching",) and ok.spread == pytest.approx(0.225)
    flat = gan_test_saturation({"a": 0.41, "b": 0.43, "c": 0.44})  # nobody at the ceiling, but no spread
    assert flat.saturated and "differ by 3.0%" in flat.reason
    assert not gan_test_saturation({"a": 0.41, "b": 0.43}, min_spread=0.01).saturated
    assert gan_test_saturation(one_at_top, min_at_ceiling=1).saturated
    assert sat.to_dict()["ceiling"] == 0.99 and sat.to_dict()["saturated"] is True


@pytest.mark.parametrize(("scores", "kwargs", "needle"), [
    ({"a": 1.0}, {}, "at least two"),
    ({"a": 1.0, "b": 1.2}, {}, r"scores\['b'\]"),
    ({"a": 1.0, "b": 0.5}, {"ceiling": 1.5}, "'ceiling'"),
    ({"a": 1.0, "b": 0.5}, {"min_at_ceiling": 0}, "'min_at_ceiling'"),
])
def test_saturation_rejects_bad_input(scores, kwargs, needle):
    with pytest.raises(ParameterError, match=needle):
        gan_test_saturation(scores, **kwargs)


# ---------------------------------------------------------------- exact oracles on toy models


class ZeroLogits(nn.Module):
    """Logits identically 0 (zero gradient): only the pull toward the centre moves x."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)[:, :4]) * 0.0


def test_weight_decay_contracts_toward_the_box_centre_geometrically():
    eta, wd, steps = 0.1, 0.5, 10
    start = activation_maximization(ZeroLogits(), [0, 1, 2], shape=(1, 2, 2), steps=0, seed=3)
    out = activation_maximization(ZeroLogits(), [0, 1, 2], shape=(1, 2, 2), steps=steps,
                                  step_size=eta, weight_decay=wd, seed=3)
    expected = 0.5 + (1 - eta * wd) ** steps * (start.x - 0.5)
    assert torch.allclose(out.x, expected, atol=1e-6)
    assert out.trajectory == (0.0,) * (steps + 1)


def test_linear_model_ascent_follows_the_class_weights_and_stays_in_the_box():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        lin[1].weight.copy_(torch.tensor([[1.0] * 4 + [-1.0] * 4, [-1.0] * 8]))
    out = activation_maximization(lin, [0, 1], shape=(2, 2, 2), steps=200, step_size=0.1,
                                  weight_decay=0.0, bounds=(-1.0, 2.0))
    x = out.x.flatten(1)
    assert torch.equal(x[0], torch.tensor([2.0] * 4 + [-1.0] * 4))  # pushed to the box corner
    assert torch.equal(x[1], torch.full((8,), -1.0))
    assert out.config["center"] == 0.5 and out.config["init_std"] == pytest.approx(0.6)


def test_activation_maximization_is_seeded_chunk_invariant_and_side_effect_free():
    net = models.build("cnn", (1, 8, 8), 4, channels=(4,), hidden=8, act="softplus", seed=0)
    net.train()
    targets = torch.tensor([0, 1, 2, 3, 1])
    a = activation_maximization(net, targets, shape=(1, 8, 8), steps=5, seed=1, batch_size=5)
    b = activation_maximization(net, targets, shape=(1, 8, 8), steps=5, seed=1, batch_size=2)
    c = activation_maximization(net, targets, shape=(1, 8, 8), steps=5, seed=2)
    assert torch.allclose(a.x, b.x, atol=1e-6)
    assert a.trajectory == pytest.approx(b.trajectory, rel=1e-5)
    assert not torch.allclose(a.x, c.x)
    assert net.training and all(p.grad is None and p.requires_grad for p in net.parameters())
    assert a.x.shape == (5, 1, 8, 8) and a.x.min() >= 0 and a.x.max() <= 1
    assert torch.equal(a.target, targets)


# ---------------------------------------------------------------- targets (reference bugs)


def test_gan_test_targets_take_exactly_n_labels_and_reach_every_class():
    labels = torch.arange(10000) % 7
    first = gan_test_targets(1000, labels=labels)
    assert torch.equal(first, labels[:1000])  # exactly n (the reference rounds up to 1024)
    drawn = gan_test_targets(5000, num_classes=100, seed=0)
    assert drawn.min() == 0 and drawn.max() == 99  # randint(0, 99) never drew class 99
    assert torch.equal(drawn, gan_test_targets(5000, num_classes=100, seed=0))
    with pytest.raises(ParameterError, match="exactly one"):
        gan_test_targets(10)
    with pytest.raises(ParameterError, match="'n'"):
        gan_test_targets(10001, labels=labels)


# ---------------------------------------------------------------- figure and errors


def test_sample_grid_is_a_figure_with_one_titled_image_per_sample():
    out = activation_maximization(ZeroLogits(), [0, 1, 2, 0, 1], shape=(1, 2, 2), steps=1)
    fig = sample_grid(out, ncols=2, title="samples")
    assert isinstance(fig, Figure)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 5 and [ax.get_title() for ax in images] == ["0", "1", "2", "0", "1"]
    assert isinstance(out, ActivationSamples) and out.to_dict()["n"] == 5


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"targets": [0, 3]}, r"classes in \[0, 2\]"),
        ({"targets": [0.5]}, "class indices"),
        ({"targets": []}, "non-empty"),
        ({"targets": [-1]}, "≥ 0"),
        ({"steps": -1}, "'steps'"),
        ({"step_size": 0.0}, "'step_size'"),
        ({"weight_decay": -1.0}, "'weight_decay'"),
        ({"bounds": (1.0, 0.0)}, "'bounds"),
        ({"shape": (2, 2)}, "'shape'"),
        ({"batch_size": 0}, "'batch_size'"),
    ],
)
def test_bad_arguments_raise_before_any_step(kwargs, needle):
    args = {"targets": [0, 1], "shape": (1, 2, 2), "steps": 3, **kwargs}
    with pytest.raises(GradauditError, match=needle):
        activation_maximization(ZeroLogits(), args.pop("targets"), **args)


def test_gan_test_rejects_mismatched_shapes_and_unknown_sampling_options():
    with pytest.raises(ParameterError, match="match"):
        gan_test(ZeroLogits(), torch.zeros(3, 1, 2, 2), [0, 1])
    with pytest.raises(ParameterError, match="Did you mean 'steps'"):
        gan_test_score(ZeroLogits(), ZeroLogits(), [0], shape=(1, 2, 2), step=3)
