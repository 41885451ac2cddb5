"""Exact identities (linear model, σ → 0, completeness) and one regression test per reference
bug that gradaudit fixes (PGIG's SmoothGrad random walk, IG without α = 1, batch-dependent
Expected Gradients, permanently patched ReLUs; VarGrad's cancellation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradaudit import attribution, models
from gradaudit.attribution import RULES


@pytest.fixture(scope="module")
def linear_case():
    net = models.build("linear", (2, 3, 3), 4, seed=3).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((5, 2, 3, 3), generator=gen)
    y = torch.tensor([0, 1, 2, 3, 1])
    return net, x, y, net[1].weight.detach().view(4, 2, 3, 3)


def test_linear_model_gradient_is_the_weight_row(linear_case):
    net, x, y, w = linear_case
    torch.testing.assert_close(attribution.attribute("grad", net, x, y), w[y], rtol=0, atol=1e-7)
    torch.testing.assert_close(attribution.attribute("grad-x-input", net, x, y), x * w[y], rtol=0, atol=1e-7)
    p = F.softmax(net(x), 1).detach()
    expected_loss_grad = torch.einsum("nk,kchw->nchw", p - F.one_hot(y, 4).float(), w)
    torch.testing.assert_close(attribution.attribute("loss-grad", net, x, y), expected_loss_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", list(RULES))
def test_linear_model_ig_is_exact_for_every_rule(linear_case, rule):
    net, x, y, w = linear_case
    base = torch.full_like(x[:1], 0.25)
    a = attribution.attribute("ig", net, x, y, n_steps=5, rule=rule, baseline=base)
    torch.testing.assert_close(a, (x - base) * w[y], rtol=1e-5, atol=1e-6)
    assert float(attribution.completeness_gap(net, x, y, a, base).abs().max()) < 1e-5


def test_smoothgrad_with_sigma_to_zero_is_the_gradient(trained, mnist_slice):
    # (an MLP: in a CNN's flat background the max-pool ties make the gradient at x itself
    # an arbitrary subgradient that any tiny noise changes)
    net, x, y = trained["mlp"], mnist_slice.x[:8], mnist_slice.y[:8]
    grad = attribution.attribute("grad", net, x, y)
    torch.testing.assert_close(attribution.attribute("smoothgrad", net, x, y, sigma=0.0, n_samples=3), grad)
    tiny = attribution.attribute("smoothgrad", net, x, y, noise_level=1e-7, n_samples=3)
    torch.testing.assert_close(tiny, grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()))
    var = attribution.attribute("vargrad", net, x, y, sigma=0.0, n_samples=3)
    assert float(var.abs().max()) < 1e-10 * float(grad.abs().max()) ** 2  # rounding of the mean only


@pytest.mark.parametrize("net_name", ["mlp", "cnn"])
@pytest.mark.parametrize("rule", ["gauss-legendre", "riemann-trapezoid", "riemann-middle"])
def test_ig_completeness_within_one_percent_at_64_steps(trained, mnist_slice, net_name, rule):
    net, x, y = trained[net_name], mnist_slice.x[::30], mnist_slice.y[::30]
    a = attribution.attribute("ig", net, x, y, n_steps=64, rule=rule)
    with torch.no_grad():
        delta = net(x).gather(1, y[:, None]).squeeze(1) - net(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1)
    assert float(delta.abs().min()) > 1.0  # a meaningful prediction change to attribute
    gap = attribution.completeness_gap(net, x, y, a)
    assert float((gap.abs() / delta.abs()).max()) < 0.01


def test_ig_baselines(trained, mnist_slice):
    net, x, y = trained["mlp"], mnist_slice.x[:4], mnist_slice.y[:4]
    mean = mnist_slice.x.mean((0, 2, 3)).view(1, 1, 1)
    for baseline, base in [("mean", mean.expand_as(x)), ("zero", torch.zeros_like(x))]:
        a = attribution.attribute("ig", net, x, y, baseline=baseline, data_mean=mean)
        assert float((attribution.completeness_gap(net, x, y, a, base) / a.sum((1, 2, 3))).abs().max()) < 0.01
    blur = attribution.attribute("ig", net, x, y, baseline="blur", blur_sigma=2.0)
    assert torch.isfinite(blur).all() and not torch.equal(blur, a)
    uniform = attribution.attribute("ig", net, x, y, baseline="uniform", seed=1)
    noise = torch.rand((1, 28, 28), generator=torch.Generator().manual_seed(1))  # the documented draw
    torch.testing.assert_close(uniform, attribution.attribute("ig", net, x, y, baseline=noise), rtol=1e-5, atol=1e-7)


def test_smoothgrad_noise_is_independent_per_sample_not_a_random_walk(trained, mnist_slice):
    """PGIG adds each draw to the already-noised input (sample k sees x + Σ_{j≤k} ε_j) and
    overwrites the caller's tensor; here sample k is x + σ ε_k and x is untouched."""
    net, x, y = trained["mlp"], mnist_slice.x[:3].clone(), mnist_slice.y[:3]
    x0 = x.clone()
    n, seed = 6, 2
    a = attribution.attribute("smoothgrad", net, x, y, n_samples=n, seed=seed)
    assert torch.equal(x, x0)
    eps = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))
    sigma = 0.15 * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    grads = [attribution.attribute("grad", net, x + sigma.view(-1, 1, 1, 1) * eps[k], y) for k in range(n)]
    torch.testing.assert_close(a, torch.stack(grads).mean(0), rtol=1e-5, atol=1e-7)
    walk = [attribution.attribute("grad", net, x + sigma.view(-1, 1, 1, 1) * eps[: k + 1].sum(0), y) for k in range(n)]
    assert float((a - torch.stack(walk).mean(0)).abs().max()) > 1e-3 * float(a.abs().max())


class _Steep(nn.Module):
    """f(x) = 1000 Σx + ½ Σx²: gradient 1000 + x, so under noise the variance (σ²) is tiny
    next to the squared mean (10⁶)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return (1000 * flat.sum(1) + 0.5 * (flat**2).sum(1)).unsqueeze(1)


def test_vargrad_has_no_catastrophic_cancellation():
    x = torch.rand((2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    n, sigma = 16, 0.01
    ours = attribution.attribute("vargrad", _Steep(), x, 0, n_samples=n, sigma=sigma, seed=3)
    eps = torch.randn((n, 1, 4, 4), generator=torch.Generator().manual_seed(3)).double()
    g = 1000 + x.double().unsqueeze(0) + sigma * eps.unsqueeze(1)  # exact gradients, float64
    truth = g.var(0, unbiased=False)
    g32 = g.float()
    naive = (g32**2).mean(0) - g32.mean(0) ** 2  # E[g²] − E[g]² (Captum, PGIG) in float32
    assert float(((ours.double() - truth) / truth).abs().max()) < 0.05
    assert float(((naive.double() - truth) / truth).abs().max()) > 1.0


def test_ig_includes_the_endpoint_unlike_pgig(linear_case):
    """PGIG's IG averages 24 points α = k/25 and divides by 25 (α = 1 missing): for a linear
    model it returns 24/25 of the exact attribution. Every rule here is exact."""
    net, x, y, w = linear_case
    exact = x * w[y]
    pgig = x * sum(attribution.attribute("grad", net, x * (k / 25), y) for k in range(1, 25)) / 25
    torch.testing.assert_close(pgig, exact * 24 / 25, rtol=1e-5, atol=1e-6)
    for rule in RULES:
        torch.testing.assert_close(attribution.attribute("ig", net, x, y, n_steps=25, rule=rule), exact, rtol=1e-5, atol=1e-6)


def test_expected_gradients_works_on_one_image_and_matches_its_draws(trained, mnist_slice):
    """PGIG's EG takes baselines from the same batch and fails for batches of ≤ 49 images."""
    net, refs = trained["cnn"], mnist_slice.x[100:160]
    x, y = mnist_slice.x[:1], mnist_slice.y[:1]
    n, seed = 7, 4
    a = attribution.attribute("expected-grad", net, x, y, references=refs, n_samples=n, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    index, alphas = torch.randint(len(refs), (n,), generator=gen), torch.rand(n, generator=gen, dtype=torch.float64)
    terms = [(x - refs[i]) * attribution.attribute("grad", net, refs[i] + float(al) * (x - refs[i]), y)
             for i, al in zip(index, alphas, strict=True)]
    torch.testing.assert_close(a, torch.stack(terms).mean(0), rtol=1e-4, atol=1e-6)


class _FailsLater(nn.Module):
    """A ReLU net whose forward raises from its third call on (after the probe and target)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 2:
            raise RuntimeError("boom")
        return self.net(x)


def test_guided_backprop_leaves_no_hook_even_when_the_model_fails():
    model = _FailsLater().train()
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(RuntimeError, match="boom"):
        attribution.attribute("guided-backprop", model, x, "predicted")
    assert all(not m._forward_hooks for m in model.modules())
    assert all(m.training for m in model.modules())


def test_guided_backprop_does_not_change_later_gradients(trained, mnist_slice):
    """PGIG patches nn.ReLU.forward for good: every later method silently runs guided."""
    net, x, y = trained["cnn"], mnist_slice.x[:4], mnist_slice.y[:4]
    before = attribution.attribute("grad", net, x, y)
    guided = attribution.attribute("guided-backprop", net, x, y)
    after = attribution.attribute("grad", net, x, y)
    assert torch.equal(before, after) and not torch.allclose(guided, before)


def test_output_options(trained, mnist_slice):
    net, x, y = trained["mlp"], mnist_slice.x[:4], mnist_slice.y[:4]
    p = F.softmax(net(x).detach(), 1)
    p_y = p.gather(1, y[:, None]).view(-1, 1, 1, 1)
    col = {c: attribution.attribute("grad", net, x, c) for c in range(10)}
    # ∂p_y/∂x = Σ_c p_y (δ_cy − p_c) ∂f_c/∂x
    expected = sum(p_y * ((y == c).float() - p[:, c]).view(-1, 1, 1, 1) * col[c] for c in range(10))
    torch.testing.assert_close(attribution.attribute("grad", net, x, y, output="prob"), expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(attribution.attribute("grad", net, x, y, output="loss"),
                               attribution.attribute("loss-grad", net, x, y))


class _Opaque(nn.Module):
    """The same network behind a custom forward: no affine head can be split off."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("net_name", ["mlp", "normalized"])
def test_factored_first_layer_equals_the_plain_computation(trained, mnist_slice, net_name):
    """IG and SmoothGrad factor an MLP's first Linear layer out (_paths.py); an opaque wrapper
    of the same network takes the plain route, and both must agree."""
    from gradaudit.attribution._paths import affine_split
    from gradaudit.models import Normalize

    net = nn.Sequential(Normalize([0.13], [0.31]), trained["mlp"]) if net_name == "normalized" else trained[net_name]
    assert affine_split(net) is not None and affine_split(_Opaque(net)) is None
    assert affine_split(trained["cnn"]) is None  # conv heads keep the plain route
    x, y = mnist_slice.x[:5], mnist_slice.y[:5]
    for method, opts in [("ig", {"n_steps": 12, "baseline": "uniform"}), ("smoothgrad", {"n_samples": 6}),
                         ("sg-ig", {"n_samples": 2, "n_steps": 4})]:
        fused = attribution.attribute(method, net, x, y, max_batch=7, **opts)
        plain = attribution.attribute(method, _Opaque(net), x, y, max_batch=7, **opts)
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5 * float(plain.abs().max()))
