"""Parity with Captum for every method both libraries have, on an MLP and a CNN (real MNIST
images): equal within 1e-5 of the largest attribution. Stochastic methods are given the
same draws: Captum's noise / baseline / α draws are replaced (monkeypatch) by ours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradaudit import attribution, models

captum_attr = pytest.importorskip("captum.attr")
import captum._utils.common as captum_common  # noqa: E402

N = 6
REL = 1e-5


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def setup(request, mnist_slice):
    if request.param == "mlp":
        net = models.build("mlp", (1, 28, 28), 10, hidden=(64, 64), seed=5)
    else:
        net = models.build("cnn", (1, 28, 28), 10, channels=(8, 16), hidden=32, seed=6)
    x = mnist_slice.x[::50][:N].clone()
    return net.eval(), x, mnist_slice.y[::50][:N].clone()


def close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    theirs = theirs.detach()
    scale = float(theirs.abs().max())
    assert scale > 0
    assert float((ours - theirs).abs().max()) <= REL * scale, float((ours - theirs).abs().max()) / scale


def test_saliency(setup):
    net, x, y = setup
    close(attribution.attribute("grad", net, x, y), captum_attr.Saliency(net).attribute(x, target=y, abs=False))


def test_input_x_gradient(setup):
    net, x, y = setup
    close(attribution.attribute("grad-x-input", net, x, y), captum_attr.InputXGradient(net).attribute(x, target=y))


@pytest.mark.parametrize(
    ("rule", "captum_rule"),
    [("gauss-legendre", "gausslegendre"), ("riemann-left", "riemann_left"),
     ("riemann-right", "riemann_right"), ("riemann-middle", "riemann_middle")],
)
def test_integrated_gradients(setup, rule, captum_rule):
    net, x, y = setup
    ours = attribution.attribute("ig", net, x, y, n_steps=16, rule=rule)
    close(ours, captum_attr.IntegratedGradients(net).attribute(x, target=y, n_steps=16, method=captum_rule))


def test_integrated_gradients_baseline_tensor(setup):
    net, x, y = setup
    base = torch.full_like(x[:1], 0.3)
    ours = attribution.attribute("ig", net, x, y, n_steps=16, baseline=base)
    close(ours, captum_attr.IntegratedGradients(net).attribute(x, baselines=base, target=y, n_steps=16))


def test_captum_trapezoid_scales_the_integral_by_n_minus_1_over_n(setup):
    """Captum's riemann_trapezoid weights are 1/n on nodes 1/(n−1) apart (sum (n−1)/n); ours
    sum to 1, so ours = Captum's · n/(n−1), and only ours keeps completeness."""
    net, x, y = setup
    n = 16
    ours = attribution.attribute("ig", net, x, y, n_steps=n, rule="riemann-trapezoid")
    theirs = captum_attr.IntegratedGradients(net).attribute(x, target=y, n_steps=n, method="riemann_trapezoid")
    close(ours * (n - 1) / n, theirs)


def _shared_noise(monkeypatch, x: torch.Tensor, n: int, seed: int, sigma: torch.Tensor) -> None:
    """Make NoiseTunnel add our draws: row i·n + k gets σ_i ε_k, ε from Generator(seed)."""
    eps = torch.randn((n, *x.shape[1:]), generator=torch.Generator().manual_seed(seed))
    noise = (sigma.view(-1, 1, 1, 1, 1) * eps.unsqueeze(0)).reshape(-1, *x.shape[1:])

    def add_noise(inp, stdev, n_partition):
        assert n_partition == n
        return inp.repeat_interleave(n, dim=0) + noise

    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))


@pytest.mark.parametrize(("method", "nt_type"), [("smoothgrad", "smoothgrad"), ("smoothgrad-sq", "smoothgrad_sq"), ("vargrad", "vargrad")])
def test_noise_tunnel(setup, monkeypatch, method, nt_type):
    net, x, y = setup
    n, seed = 8, 3
    ours = attribution.attribute(method, net, x, y, n_samples=n, seed=seed)
    flat = x.flatten(1)
    _shared_noise(monkeypatch, x, n, seed, 0.15 * (flat.amax(1) - flat.amin(1)))
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(net))
    close(ours, tunnel.attribute(x, target=y, nt_type=nt_type, nt_samples=n, stdevs=0.15, abs=False))


def test_noise_tunnel_over_integrated_gradients(setup, monkeypatch):
    net, x, y = setup
    n, seed = 4, 9
    ours = attribution.attribute("sg-ig", net, x, y, n_samples=n, sigma=0.2, n_steps=8, seed=seed)
    _shared_noise(monkeypatch, x, n, seed, torch.full((len(x),), 0.2))
    tunnel = captum_attr.NoiseTunnel(captum_attr.IntegratedGradients(net))
    close(ours, tunnel.attribute(x, target=y, nt_type="smoothgrad", nt_samples=n, stdevs=0.2, n_steps=8))


def test_guided_backprop(setup):
    net, x, y = setup
    close(attribution.attribute("guided-backprop", net, x, y), captum_attr.GuidedBackprop(net).attribute(x, target=y))


def test_gradient_shap_equals_expected_gradients(setup, monkeypatch, mnist_slice):
    net, x, y = setup
    refs = mnist_slice.x[1::7][:30]
    n, seed = 10, 5
    ours = attribution.attribute("expected-grad", net, x, y, references=refs, n_samples=n, seed=seed)
    gen = torch.Generator().manual_seed(seed)  # the draws expected_gradients documents
    index = torch.randint(len(refs), (n,), generator=gen).numpy()
    alphas = torch.rand(n, generator=gen, dtype=torch.float64).numpy()
    monkeypatch.setattr(captum_common.np.random, "choice", lambda r, size: np.tile(index, size // n))
    monkeypatch.setattr(np.random, "uniform", lambda lo, hi, size: np.tile(alphas, size // n))
    theirs = captum_attr.GradientShap(net).attribute(x, baselines=refs, target=y, n_samples=n, stdevs=0.0)
    close(ours, theirs)


def test_from_captum_adapter_matches_and_restores_rngs(setup):
    net, x, y = setup
    spec = attribution.MethodSpec("test-captum-ig", attribution.from_captum(captum_attr.IntegratedGradients, n_steps=16),
                                  {"method": attribution.option("gausslegendre")}, multiplies_input=True)
    attribution.register(spec, replace=True)
    try:
        np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state()
        ours = attribution.attribute("test-captum-ig", net, x, y, max_batch=4, method="riemann_left")
        assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.random.get_rng_state(), torch_state)
        close(ours, attribution.attribute("ig", net, x, y, n_steps=16, rule="riemann-left"))
        tunnel = attribution.from_captum(lambda m: captum_attr.NoiseTunnel(captum_attr.Saliency(m)), nt_samples=3, stdevs=0.1)
        assert torch.equal(tunnel(net, x, y, seed=1), tunnel(net, x, y, seed=1))
        assert not torch.equal(tunnel(net, x, y, seed=1), tunnel(net, x, y, seed=2))
    finally:
        del attribution.registry._REGISTRY["test-captum-ig"]
