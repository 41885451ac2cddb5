"""PGD: parity with torchattacks, projections, restarts, purity, seeding, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradaudit import models
from gradaudit._validation import ParameterError, ParameterTypeError
from gradaudit.training import eval_mode, pgd, robust_accuracy


def _net(seed: int = 0) -> nn.Module:
    """A small MLP with BatchNorm (so eval/train mode matters), seeded."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():  # non-trivial BN statistics, so train-mode BN would differ
        net[2].running_mean.uniform_(-0.2, 0.2)
        net[2].running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture(scope="module")
def batch(mnist_test):
    return mnist_test.x[:64].clone(), mnist_test.y[:64].clone()


@pytest.mark.parametrize(("norm", "eps", "alpha"), [("linf", 0.1, 0.01), ("l2", 1.0, 0.2)])
def test_equals_torchattacks_without_random_start(batch, norm, eps, alpha) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    net = _net()
    peer_cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    peer = peer_cls(net, eps=eps, alpha=alpha, steps=10, random_start=False)(x, y)
    ours = pgd(net, x, y, norm=norm, eps=eps, steps=10, step_size=alpha, random_start=False)
    assert (ours - peer).abs().max().item() <= 1e-6
    assert not torch.equal(ours, x)  # the attack moved the inputs
    with torch.no_grad():
        assert (net.eval()(ours).argmax(1) == y).float().mean() < (net(x).argmax(1) == y).float().mean()


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-0.5, 0.7)])
@pytest.mark.parametrize("random_start", [False, True])
def test_l2_stays_in_ball_and_box(batch, bounds, random_start) -> None:
    x, y = batch
    x = x * (bounds[1] - bounds[0]) + bounds[0]
    eps = 2.0
    adv = pgd(_net(), x, y, norm="l2", eps=eps, steps=15, step_size=1.5, random_start=random_start, bounds=bounds)
    dist = (adv - x).flatten(1).norm(dim=1)
    assert dist.max().item() <= eps * (1 + 1e-5)
    assert dist.min().item() > 0.5 * eps  # large steps: the attack reaches the sphere
    assert adv.min().item() >= bounds[0] and adv.max().item() <= bounds[1]


@pytest.mark.parametrize("random_start", [False, True])
def test_linf_stays_in_ball_and_box(batch, random_start) -> None:
    x, y = batch
    adv = pgd(_net(), x, y, norm="linf", eps=0.1, steps=5, step_size=0.05, random_start=random_start)
    assert (adv - x).abs().max().item() <= 0.1 + 1e-6
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
    assert (adv - x).abs().max().item() >= 0.1 - 1e-6


def test_l2_random_start_is_uniform_in_the_ball() -> None:
    from gradaudit.training.attacks import _random_start

    x = torch.zeros(4000, 1, 2, 2)  # d = 4, so the radius law is visible
    gen = torch.Generator().manual_seed(0)
    start = _random_start(x, "l2", 0.5, gen)
    r = start.flatten(1).norm(dim=1) / 0.5
    assert r.max().item() <= 1 + 1e-6
    # uniform in a 4-ball: P(r <= t) = t^4
    for t in (0.5, 0.8, 0.9):
        assert abs((r <= t).float().mean().item() - t**4) < 0.03


def test_restarts_keep_the_highest_loss(batch) -> None:
    x, y = batch
    net = _net().eval()
    kw = dict(norm="linf", eps=0.05, steps=3, step_size=0.01, random_start=True)
    gen = torch.Generator().manual_seed(3)
    best = pgd(net, x, y, restarts=4, generator=gen, **kw)
    gen = torch.Generator().manual_seed(3)  # the same starts, one call per restart
    runs = [pgd(net, x, y, restarts=1, generator=gen, **kw) for _ in range(4)]
    with torch.no_grad():
        losses = torch.stack([F.cross_entropy(net(a), y, reduction="none") for a in runs])
        best_loss = F.cross_entropy(net(best), y, reduction="none")
    assert len({r.sum().item() for r in runs}) == 4  # the restarts differ
    pick = losses.argmax(0)
    expected = torch.stack(runs)[pick, torch.arange(len(y))]
    assert torch.equal(best, expected)
    assert torch.all(best_loss >= losses.max(0).values - 1e-6)


def test_leaves_model_grads_modes_and_inputs_untouched(batch) -> None:
    x, y = batch
    net = _net()
    net.train()
    net[2].eval()  # a mixed state must come back as it was
    net[1].weight.grad = torch.full_like(net[1].weight, 0.5)
    net[4].weight.requires_grad_(False)
    x_in = x.clone().requires_grad_(True)
    modes = [m.training for m in net.modules()]
    adv = pgd(net, x_in, y, norm="l2", eps=1.0, steps=3)
    assert [m.training for m in net.modules()] == modes
    assert torch.equal(net[1].weight.grad, torch.full_like(net[1].weight, 0.5))
    assert net[1].bias.grad is None and net[4].bias.grad is None
    assert not net[4].weight.requires_grad and net[1].weight.requires_grad
    assert x_in.grad is None and x_in.requires_grad and torch.equal(x_in.detach(), x)
    assert not adv.requires_grad


def test_attack_uses_eval_mode(batch) -> None:
    x, y = batch
    net = _net()
    in_train = pgd(net.train(), x, y, norm="linf", eps=0.1, steps=3, random_start=False)
    in_eval = pgd(net.eval(), x, y, norm="linf", eps=0.1, steps=3, random_start=False)
    assert torch.equal(in_train, in_eval)


def test_seeded_runs_repeat_and_leave_the_global_rng(batch) -> None:
    x, y = batch
    net = _net()
    state = torch.get_rng_state()
    a = pgd(net, x, y, norm="linf", eps=0.1, steps=2, seed=1)
    b = pgd(net, x, y, norm="linf", eps=0.1, steps=2, seed=1)
    c = pgd(net, x, y, norm="linf", eps=0.1, steps=2, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_works_inside_no_grad_and_eps_zero_copies(batch) -> None:
    x, y = batch
    net = _net()
    with torch.no_grad():
        adv = pgd(net, x, y, norm="linf", eps=0.1, steps=2, random_start=False)
    assert (adv - x).abs().max() > 0.05
    same = pgd(net, x, y, norm="l2", eps=0.0)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()


def test_robust_accuracy_consistency(batch) -> None:
    x, y = batch
    net = _net()
    with torch.no_grad():
        clean = (net.eval()(x).argmax(1) == y).float().mean().item()
    many = robust_accuracy(net, x, y, norm="linf", eps=[0, 0.05, 0.1], steps=5)
    one = robust_accuracy(net, x, y, norm="linf", eps=[0.1], steps=5)
    assert many[0.0] == pytest.approx(clean)
    assert many[0.1] == one[0.1]  # a radius' result does not depend on the others listed
    assert many[0.1] <= many[0.05] <= many[0.0]
    chunked = robust_accuracy(net, x, y, norm="linf", eps=[0.05], steps=5, random_start=False, batch_size=10)
    whole = robust_accuracy(net, x, y, norm="linf", eps=[0.05], steps=5, random_start=False)
    assert chunked == whole


def test_eval_mode_restores_modes_even_on_error() -> None:
    net = _net().train()
    net[2].eval()
    modes = [m.training for m in net.modules()]
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == modes
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == modes


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"norm": "l1", "eps": 0.1}, ParameterError, r"'norm' parameter of pgd must be one of 'linf', 'l2'\. Got 'l1'"),
        ({"norm": "linf", "eps": -0.1}, ParameterError, r"'eps' parameter of pgd must be a float in \[0, inf\)"),
        ({"norm": "linf", "eps": 0.1, "steps": 0}, ParameterError, r"'steps' parameter of pgd"),
        ({"norm": "linf", "eps": 0.1, "restarts": 0}, ParameterError, r"'restarts' parameter of pgd"),
        ({"norm": "linf", "eps": 0.1, "bounds": (1.0, 0.0)}, ParameterError, r"'bounds' parameter of pgd"),
        ({"norm": "linf", "eps": "0.1"}, ParameterTypeError, r"'eps' parameter of pgd must be a float"),
    ],
)
def test_bad_arguments_raise(batch, kwargs, error, match) -> None:
    x, y = batch
    with pytest.raises(error, match=match):
        pgd(_net(), x, y, **kwargs)


def test_bad_labels_raise(batch) -> None:
    x, y = batch
    with pytest.raises(ParameterError, match=r"'y' argument of pgd must be an int64 tensor of shape \(64,\)"):
        pgd(_net(), x, y[:10], norm="linf", eps=0.1)
    with pytest.raises(ParameterError, match=r"'eps' parameter of robust_accuracy must list"):
        robust_accuracy(_net(), x, y, norm="linf", eps=[])


def test_pgd_training_model_is_untouched_by_attack_on_cnn(batch) -> None:
    """A model built by the registry: the attack changes no parameter or buffer."""
    x, y = batch
    net = models.build("resnet9", (1, 28, 28), 10, seed=0, width=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pgd(net, x[:8], y[:8], norm="linf", eps=0.1, steps=2)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
