"""PatternAttribution / PGIG: Kindermans' a₊ estimator against the PGIG notebook's synthetic
examples (seed-methods §B.6), a brute-force oracle for conv layers, streaming, saving, and the
attribution passes against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradaudit import DataError, ParameterError, attribution, models
from gradaudit.attribution import Patterns, fit_patterns


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray]:
    """The notebook's data: z = arange(-2, 2, 0.01), x = z·(1, 0) + ε·(1, 1), ε ~ N(0, 0.3²)
    from np.random.seed(42) (legacy RandomState semantics)."""
    z = np.arange(-2, 2, 0.01)
    eps = np.random.RandomState(42).normal(0, 0.3, len(z))
    return z, np.stack([z + eps, eps], 1)


def _saturating() -> nn.Sequential:
    """f(x) = 1 − ReLU(1 − wᵀx), w = (1, −1): Linear(−w, bias 1), ReLU, Linear(−1, bias 1)."""
    net = nn.Sequential(nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-1.0, 1.0]]))
        net[0].bias.fill_(1.0)
        net[2].weight.fill_(-1.0)
        net[2].bias.fill_(1.0)
    return net


def test_linear_example_gives_the_published_pattern(synthetic):
    _, x = synthetic
    net = nn.Sequential(nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
    a = fit_patterns(net, torch.from_numpy(x)).tensors["0"]
    torch.testing.assert_close(a, torch.tensor([[1.01835493, 0.01835493]], dtype=torch.float64), rtol=0, atol=1e-8)
    assert float((a - torch.tensor([[1.018, 0.018]], dtype=torch.float64)).abs().max()) < 0.01


def _notebook_bug_pattern(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The notebook's compute_pattern on an (N, 1, 1) output: x_plus * y_plus broadcasts to an
    outer product, so its E₊[xy] is E₊[x]·E₊[y]."""
    pos = y > 0
    ex = x[pos].mean(0)
    num = ex * y[pos].mean() - ex * y.mean()
    return num / (w @ num)


def test_saturating_example_patterns(synthetic):
    _, x = synthetic
    net = _saturating()
    pats = fit_patterns(net, torch.from_numpy(x)).tensors
    torch.testing.assert_close(pats["2"], torch.tensor([[-1.0]], dtype=torch.float64))  # published [-1, 0]
    w = np.array([-1.0, 1.0])
    y = np.maximum(x @ w + 1, 0)
    pos = y > 0
    num = (x[pos] * y[pos, None]).mean(0) - x[pos].mean(0) * y.mean()  # a₊ in float64 numpy
    torch.testing.assert_close(pats["0"], torch.from_numpy(num / (w @ num)).view(1, 2), rtol=0, atol=1e-10)
    assert np.allclose(pats["0"].numpy(), [[-1.01707, -0.01707]], atol=1e-5)
    # The published [-1.0033, -0.0033] is the notebook's broadcasting slip on this same data:
    assert np.allclose(_notebook_bug_pattern(x, w, y), [-1.00329617, -0.00329617], atol=1e-8)


def _stress(net: nn.Sequential, x: torch.Tensor, z: np.ndarray, pats: Patterns) -> dict[str, tuple[float, ...]]:
    """mean|a| on the signal and distractor dims, mean signal attribution on the plateau
    (z ≥ 1), and max |Σa − f(x)|, for IG / PA / PGIG as in the notebook (zero baseline, 100
    right-Riemann steps, PA seeded with y, PGIG seeded with 1)."""
    plateau = torch.from_numpy(z >= 1)
    fx = net(x).detach().squeeze(1)
    maps = {
        "IG": attribution.attribute("ig", net, x, 0, n_steps=100, rule="riemann-right"),
        "PA": attribution.attribute("pattern-attribution", net, x, 0, patterns=pats),
        "PGIG": attribution.attribute("pattern-ig", net, x, 0, patterns=pats, n_steps=100, rule="riemann-right"),
    }
    return {k: (float(a[:, 0].abs().mean()), float(a[:, 1].abs().mean()), float(a[plateau, 0].mean()),
                float((a.sum(1) - fx).abs().max())) for k, a in maps.items()}


def test_stress_tests_reproduce_the_published_table_with_the_published_patterns(synthetic):
    z, x = synthetic
    net = _saturating()
    published = Patterns({"0": torch.tensor([[-1.00329617, -0.00329617]], dtype=torch.float64),
                          "2": torch.tensor([[-1.0]], dtype=torch.float64)}, 400)
    got = _stress(net, torch.from_numpy(x), z, published)
    table = {"IG": (0.908, 0.211, 1.016, 0.017), "PA": (0.628, 0.0021, 0.000, 1.000), "PGIG": (0.911, 0.0007, 1.019, 1.156)}
    for method, row in table.items():
        assert np.allclose(got[method], row, atol=1.5e-3, rtol=1e-3), (method, got[method])


def test_pgig_passes_both_stress_tests_with_fitted_patterns(synthetic):
    z, x = synthetic
    net = _saturating()
    got = _stress(net, torch.from_numpy(x), z, fit_patterns(net, torch.from_numpy(x)))
    assert got["IG"][1] > 0.2  # IG attributes the distractor (fails the noise test)
    assert got["PA"][2] == 0.0  # PA starves on the plateau (fails the saturation test)
    assert got["PGIG"][1] < 0.02 * got["IG"][1]  # PGIG: near-zero attribution on the distractor
    assert abs(got["PGIG"][2] - 1.019) < 0.02  # ... and keeps the signal attribution on the plateau


def _brute_force_conv_pattern(conv: nn.Conv2d, x: torch.Tensor, relu_after: bool) -> torch.Tensor:
    """a₊ by explicit loops over images and output positions (float64)."""
    k, p = conv.kernel_size[0], conv.padding[0]
    xp = torch.nn.functional.pad(x, (p, p, p, p))
    w = conv.weight.detach().flatten(1)
    rows = [xp[n, :, i : i + k, j : j + k].reshape(-1) for n in range(len(x))
            for i in range(xp.shape[2] - k + 1) for j in range(xp.shape[3] - k + 1)]
    patches = torch.stack(rows)  # (samples, in)
    y = patches @ w.T + conv.bias.detach()  # (samples, out)
    out = torch.zeros_like(w)
    for j in range(w.shape[0]):
        pos = y[:, j] > 0
        mean_y = (y[:, j].clamp(min=0) if relu_after else y[:, j]).mean()
        cov = (patches[pos] * y[pos, j, None]).mean(0) - patches[pos].mean(0) * mean_y
        out[j] = cov / (w[j] @ cov)
    return out.view_as(conv.weight)


@pytest.fixture(scope="module")
def tiny_cnn() -> tuple[nn.Sequential, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Sequential(nn.Flatten(), nn.Linear(3 * 3 * 3, 4))).double()
    x = torch.rand((7, 2, 6, 6), generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.3
    return net, x


def test_conv_patterns_equal_a_brute_force_oracle(tiny_cnn):
    net, x = tiny_cnn
    pats = fit_patterns(net, x, batch_size=3)
    assert set(pats.tensors) == {"0", "3.1"} and pats.n_samples == 7
    torch.testing.assert_close(pats.tensors["0"], _brute_force_conv_pattern(net[0], x, True), rtol=1e-9, atol=1e-12)


def test_streaming_over_batches_and_loaders_equals_one_pass(tiny_cnn):
    net, x = tiny_cnn
    one = fit_patterns(net, x, batch_size=100)
    loader = [(x[i : i + 2], torch.zeros(len(x[i : i + 2]))) for i in range(0, len(x), 2)]
    for other in (fit_patterns(net, x, batch_size=1), fit_patterns(net, loader)):
        for name, a in one.tensors.items():
            torch.testing.assert_close(other.tensors[name], a, rtol=1e-10, atol=1e-12)


def test_save_load_and_model_checks(tiny_cnn, tmp_path):
    net, x = tiny_cnn
    pats = fit_patterns(net, x)
    pats.save(tmp_path / "p.safetensors")
    loaded = Patterns.load(tmp_path / "p.safetensors")
    assert loaded.n_samples == 7 and all(torch.equal(loaded.tensors[k], v) for k, v in pats.tensors.items())
    by_path = attribution.attribute("pattern-attribution", net, x, 1, patterns=str(tmp_path / "p.safetensors"))
    torch.testing.assert_close(by_path, attribution.attribute("pattern-attribution", net, x, 1, patterns=pats))
    other = models.build("cnn", (1, 8, 8), 4, channels=(3, 4), hidden=8)
    with pytest.raises(ParameterError, match=r"no entry for layer|has shape"):
        attribution.attribute("pattern-ig", other, torch.rand(2, 1, 8, 8), 0, patterns=pats)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(DataError, match="Cannot read patterns"):
        Patterns.load(tmp_path / "bad.safetensors")
    with pytest.raises(ParameterError, match=r"not an nn\.Sequential"):
        fit_patterns(models.build("resnet9", (1, 8, 8), 4, width=4), x)


def test_pattern_attribution_of_a_linear_model_is_closed_form():
    net = models.build("linear", (1, 3, 3), 4, seed=2).double().eval()
    x = torch.rand((6, 1, 3, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pats = fit_patterns(net, torch.rand((50, 1, 3, 3), generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    a, w = pats.tensors["1"].view(4, 1, 3, 3), net[1].weight.detach().view(4, 1, 3, 3)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    f_t = net(x).detach().gather(1, y[:, None]).view(-1, 1, 1, 1)
    torch.testing.assert_close(attribution.attribute("pattern-attribution", net, x, y, patterns=pats), f_t * (w * a)[y])
    torch.testing.assert_close(attribution.attribute("pattern-attribution", net, x, y, patterns=pats, variant="net"), f_t * a[y])
    torch.testing.assert_close(attribution.attribute("pattern-attribution", net, x, y, patterns=pats, scale="one"), (w * a)[y])
    dots = (a.flatten(1) * net[1].weight.detach()).sum(1)
    fired = a.flatten(1).abs().sum(1) > 0  # a class logit that is never positive gets a zero pattern
    assert fired.sum() >= 2 and float((dots[fired] - 1).abs().max()) < 1e-9  # wᵀa₊ = 1


def test_unit_patterns_reduce_to_gradient_methods(trained, mnist_slice):
    """With a₊ = 1 everywhere W ⊙ a₊ = W: PatternAttribution is y_t·∇f_t and PGIG is IG, which
    checks the replayed conv/linear backward against autograd on a trained CNN."""
    net, x, y = trained["cnn"], mnist_slice.x[:4], mnist_slice.y[:4]
    ones = Patterns({name.removesuffix(".weight"): torch.ones_like(p) for name, p in net.named_parameters() if name.endswith("weight")}, 1)
    f_t = net(x).detach().gather(1, y[:, None]).view(-1, 1, 1, 1)
    grad = attribution.attribute("grad", net, x, y)
    torch.testing.assert_close(attribution.attribute("pattern-attribution", net, x, y, patterns=ones), f_t * grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attribution.attribute("pattern-ig", net, x, y, patterns=ones, n_steps=8),
                               attribution.attribute("ig", net, x, y, n_steps=8), rtol=1e-5, atol=1e-6)
    prob = attribution.attribute("pattern-attribution", net, x, y, patterns=ones, output="prob")
    p_t = torch.softmax(net(x).detach(), 1).gather(1, y[:, None]).view(-1, 1, 1, 1)
    torch.testing.assert_close(prob, p_t * attribution.attribute("grad", net, x, y, output="prob"), rtol=1e-5, atol=1e-7)


def test_fitted_patterns_on_mnist_cnn(trained, mnist_slice):
    net = trained["cnn"]
    opts = attribution.fit_options("pattern-ig", net, mnist_slice)
    assert set(opts) == {"patterns", "data_mean"} and opts["patterns"].n_samples == len(mnist_slice)
    for name, a in opts["patterns"].tensors.items():  # wᵀa₊ = 1 for every neuron that fired
        w = dict(net.named_modules())[name].weight.detach().flatten(1)
        dots = (w * a.flatten(1)).sum(1)
        fired = a.flatten(1).abs().sum(1) > 0
        assert fired.float().mean() > 0.5 and float((dots[fired] - 1).abs().max()) < 1e-3
    maps = attribution.attribute("pattern-ig", net, mnist_slice.x[:4], mnist_slice.y[:4], **opts)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
