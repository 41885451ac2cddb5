"""The contract every registered attribution method keeps, checked over the whole registry:
shape/dtype/device, chunking and batching invariance, seeding, no side effects, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradaudit import ParameterError, attribution, models
from gradaudit.attribution import METHODS

from toydata import Opaque

SHAPE = (1, 8, 8)
_RELU_FORWARD = nn.ReLU.forward
N = 5
FAST = {  # small budgets keep the registry sweep quick; defaults are exercised elsewhere
    "ig": {"n_steps": 6},
    "sg-ig": {"n_samples": 3, "n_steps": 4},
    "smoothgrad": {"n_samples": 4},
    "smoothgrad-sq": {"n_samples": 4},
    "vargrad": {"n_samples": 4},
    "expected-grad": {"n_samples": 5},
    "pattern-ig": {"n_steps": 6},
}


def _nets() -> dict[str, nn.Module]:
    return {
        "mlp": models.build("mlp", SHAPE, 4, hidden=(16, 16), seed=1),
        "cnn": models.build("cnn", SHAPE, 4, channels=(3, 4), hidden=8, seed=2),
    }


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    return _nets()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((N, *SHAPE), generator=gen)
    y = torch.randint(0, 4, (N,), generator=gen)
    train = torch.rand((40, *SHAPE), generator=gen)
    return x, y, train


@pytest.fixture(scope="module")
def fitted(nets, batch) -> dict[tuple[str, str], dict]:
    _, _, train = batch
    return {(m, k): attribution.fit_options(m, net, train) for m in METHODS for k, net in nets.items()}


def _options(method: str, net_name: str, fitted: dict) -> dict:
    return {**fitted[(method, net_name)], **FAST.get(method, {})}


CASES = [(m, k) for m in METHODS for k in ("mlp", "cnn")]


@pytest.mark.parametrize(("method", "net_name"), CASES)
def test_shape_dtype_device_and_finite(method, net_name, nets, batch, fitted):
    x, y, _ = batch
    a = attribution.attribute(method, nets[net_name], x, y, **_options(method, net_name, fitted))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.isfinite(a).all() and not a.requires_grad
    assert a.abs().sum() > 0


@pytest.mark.parametrize("method", list(METHODS))
def test_float64_in_float64_out(method, nets, batch, fitted):
    x, y, train = batch
    net = copy.deepcopy(nets["mlp"]).double()
    opts = {**attribution.fit_options(method, net, train.double()), **FAST.get(method, {})}
    a = attribution.attribute(method, net, x.double(), y, **opts)
    assert a.dtype == torch.float64 and a.shape == x.shape


@pytest.mark.parametrize(("method", "net_name"), CASES)
def test_chunked_equals_unchunked(method, net_name, nets, batch, fitted):
    x, y, _ = batch
    opts = _options(method, net_name, fitted)
    whole = attribution.attribute(method, nets[net_name], x, y, max_batch=100_000, **opts)
    for rows in (2, 7):
        chunked = attribution.attribute(method, nets[net_name], x, y, max_batch=rows, **opts)
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6 * float(whole.abs().max()))
    by_budget = attribution.attribute(method, nets[net_name], x, y, memory_mb=0.01, **opts)  # a few rows
    torch.testing.assert_close(by_budget, whole, rtol=1e-5, atol=1e-6 * float(whole.abs().max()))


def test_memory_budget_sets_the_rows():
    from gradaudit.attribution._core import rows_for_budget

    cpu = torch.device("cpu")
    assert rows_for_budget(350_000, None, cpu) == 256 * 2**20 // 350_000  # the MNIST CNN: ~770 rows
    assert rows_for_budget(7_000, None, cpu) == 8192  # the MNIST MLP: capped
    assert rows_for_budget(10**9, 1.0, cpu) == 1
    assert rows_for_budget(2**20, 1024.0, torch.device("cuda")) == 1024


def test_probe_of_a_plain_sequential_counts_what_the_hooks_count():
    """A plain Sequential is probed layer by layer without hooks: the same classes and row
    bytes as the hooked probe that other models get (an opaque wrapper of the same net)."""
    from gradaudit.attribution.registry import _probe

    net = models.build("cnn", (1, 28, 28), 10, seed=0).eval()

    x = torch.rand(3, 1, 28, 28)
    fast, hooked = _probe(net, x, "t", True), _probe(Opaque(net), x, "t", True)
    assert fast == hooked and fast[0] == 10 and fast[1] > x[0].numel() * 4
    with pytest.raises(ParameterError, match="differentiable"):
        _probe(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), _Detach()), x, "t", True)


class _Detach(nn.Module):
    def forward(self, z):
        return z.detach()


@pytest.mark.parametrize(("method", "net_name"), [c for c in CASES if c[0] != "random"])
def test_batch_equals_per_example(method, net_name, nets, batch, fitted):
    x, y, _ = batch
    opts = _options(method, net_name, fitted)
    together = attribution.attribute(method, nets[net_name], x, y, seed=7, **opts)
    alone = torch.cat([attribution.attribute(method, nets[net_name], x[i : i + 1], y[i : i + 1], seed=7, **opts)
                       for i in range(N)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6 * float(together.abs().max()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", list(METHODS))
def test_cuda_equals_cpu(method, nets, batch, fitted):
    """Draws come from a CPU generator, so a CUDA run sees the same numbers as a CPU run."""
    x, y, _ = batch
    opts = _options(method, "cnn", fitted)
    on_gpu = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in opts.items()}
    a = attribution.attribute(method, copy.deepcopy(nets["cnn"]).cuda(), x.cuda(), y.cuda(), seed=3, **on_gpu)
    assert a.device.type == "cuda" and a.shape == x.shape
    cpu = attribution.attribute(method, nets["cnn"], x, y, seed=3, **opts)
    torch.testing.assert_close(a.cpu(), cpu, rtol=1e-4, atol=1e-5 * float(cpu.abs().max()))


def test_random_is_independent_per_image(nets, batch):
    x, y, _ = batch
    a = attribution.attribute("random", nets["mlp"], x, y, seed=4)
    ranks = a.abs().flatten(1).argsort(1)
    assert not torch.equal(ranks[0], ranks[1])  # every image gets its own random ranking
    assert abs(float(a.mean())) < 0.2 and abs(float(a.std()) - 1) < 0.15


@pytest.mark.parametrize("method", list(METHODS))
def test_same_seed_same_output(method, nets, batch, fitted):
    x, y, _ = batch
    opts = _options(method, "cnn", fitted)
    first = attribution.attribute(method, nets["cnn"], x, y, seed=11, **opts)
    again = attribution.attribute(method, nets["cnn"], x, y, seed=11, **opts)
    other = attribution.attribute(method, nets["cnn"], x, y, seed=12, **opts)
    assert torch.equal(first, again)
    assert METHODS[method].stochastic == (not torch.equal(first, other))


def _hooks(net: nn.Module) -> list[int]:
    return [len(d) for m in net.modules()
            for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)]


@pytest.mark.parametrize(("method", "net_name"), CASES)
def test_no_side_effects(method, net_name, nets, batch, fitted):
    x0, y0, _ = batch
    net = copy.deepcopy(nets[net_name]).train()
    net[1].eval() if net_name == "cnn" else None  # a mixed mode must come back mixed
    modes = [m.training for m in net.modules()]
    params = list(net.parameters())
    params[0].requires_grad_(False)
    for p in params[1:]:
        p.grad = torch.full_like(p, 0.5)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = x0.clone().requires_grad_(True)
    x.grad = torch.ones_like(x)
    y = y0.clone()
    with torch.no_grad():
        before = copy.deepcopy(net).eval()(x0)
    hooks, rng = _hooks(net), torch.random.get_rng_state()

    attribution.attribute(method, net, x, y, **_options(method, net_name, fitted))

    assert [m.training for m in net.modules()] == modes
    assert _hooks(net) == hooks and torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert params[0].grad is None and not params[0].requires_grad
    assert all(p.requires_grad and torch.equal(p.grad, torch.full_like(p, 0.5)) for p in params[1:])
    assert torch.equal(x.detach(), x0) and x.requires_grad and torch.equal(x.grad, torch.ones_like(x))
    assert torch.equal(y, y0)
    with torch.no_grad():
        assert torch.equal(net.eval()(x0), before)
    assert nn.ReLU.forward is _RELU_FORWARD  # nothing patched for good (PGIG's guided backprop)


# ----- errors: one clear message each, raised before any work starts -----------------------


def test_unknown_method_names_closest(nets, batch):
    x, y, _ = batch
    with pytest.raises(ParameterError, match=r"Unknown attribution method: 'smoothgrd'\. Did you mean 'smoothgrad'\?"):
        attribution.attribute("smoothgrd", nets["mlp"], x, y)


@pytest.mark.parametrize("method", list(METHODS))
def test_option_the_method_does_not_take(method, nets, batch, fitted):
    x, y, _ = batch
    with pytest.raises(ParameterError, match=rf"attribute\('{method}'\).*'n_stepz'"):
        attribution.attribute(method, nets["mlp"], x, y, n_stepz=3, **fitted[(method, "mlp")])


def test_unknown_option_suggests_closest(nets, batch):
    x, y, _ = batch
    with pytest.raises(ParameterError, match=r"Unknown option of attribute\('ig'\): 'n_step'\. Did you mean 'n_steps'\?"):
        attribution.attribute("ig", nets["mlp"], x, y, n_step=3)


@pytest.mark.parametrize("method", list(METHODS))
def test_wrong_target_shape(method, nets, batch, fitted):
    x, y, _ = batch
    with pytest.raises(ParameterError, match=r"'target' argument of attribute.*must have shape \(5,\)\. Got \(5, 1\)"):
        attribution.attribute(method, nets["cnn"], x, y.view(-1, 1), **fitted[(method, "cnn")])


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (torch.tensor([0, 1, 2, 3, 4]), ParameterError, r"classes in \[0, 3\]"),
        (7, ParameterError, r"'target' parameter of attribute\('grad'\) must be an int in \[0, 3\]"),
        (torch.zeros(5), TypeError, r"int64 label tensor"),
        ("argmax", ParameterError, r"'predicted'"),
    ],
)
def test_bad_targets(target, error, message, nets, batch):
    x, _, _ = batch
    with pytest.raises(error, match=message):
        attribution.attribute("grad", nets["mlp"], x, target)


def test_target_forms_agree(nets, batch):
    x, _, _ = batch
    net = nets["cnn"]
    with torch.no_grad():
        pred = net(x).argmax(1)
    by_label = attribution.attribute("grad", net, x, pred)
    torch.testing.assert_close(attribution.attribute("grad", net, x, "predicted"), by_label)
    torch.testing.assert_close(attribution.attribute("grad", net, x, 2), attribution.attribute("grad", net, x, torch.full((N,), 2)))


def test_integer_input_is_refused(nets, batch):
    x, y, _ = batch
    with pytest.raises(TypeError, match=r"'x' argument of attribute\('ig'\) must be a floating-point tensor"):
        attribution.attribute("ig", nets["mlp"], (x * 255).long(), y)


class _Detached(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).detach()


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("random", "pattern-attribution", "pattern-ig")])
def test_model_without_input_gradient(method, nets, batch, fitted):
    x, y, _ = batch
    with pytest.raises(ParameterError, match=r"differentiable in its input"):
        attribution.attribute(method, _Detached(nets["mlp"]), x, y, **fitted[(method, "mlp")])


def test_bad_option_values(nets, batch):
    x, y, _ = batch
    net = nets["mlp"]
    cases = [
        ("ig", {"n_steps": 0}, r"The 'n_steps' parameter of attribute\('ig'\) must be an int in \[1, inf\)\. Got 0\."),
        ("ig", {"rule": "simpson"}, r"'rule' parameter .* must be one of"),
        ("ig", {"rule": "riemann-trapezoid", "n_steps": 1}, r"\[2, inf\) for rule='riemann-trapezoid'"),
        ("ig", {"baseline": "mean"}, r"needs the 'data_mean' option"),
        ("ig", {"baseline": torch.zeros(3, 3)}, r"must broadcast to x's shape"),
        ("smoothgrad", {"noise_level": -0.1}, r"'noise_level' parameter .* must be a float in \[0, inf\)"),
        ("expected-grad", {}, r"needs the 'references' option"),
        ("expected-grad", {"references": torch.zeros(4, 3)}, r"'references' option .* must hold inputs shaped"),
        ("pattern-attribution", {}, r"needs the 'patterns' option"),
    ]
    for method, opts, message in cases:
        with pytest.raises(ParameterError, match=message):
            attribution.attribute(method, net, x, y, **opts)
    with pytest.raises(ParameterError, match=r"'max_batch' parameter .* \[1, inf\)"):
        attribution.attribute("grad", net, x, y, max_batch=0)
    with pytest.raises(ParameterError, match=r"'memory_mb' parameter .* \(0, inf\)"):
        attribution.attribute("grad", net, x, y, memory_mb=0)


def test_not_applicable_methods_say_why(batch):
    x, y, _ = batch
    resnet = models.build("resnet9", SHAPE, 4, width=4)
    ok, why = attribution.applicable("pattern-ig", resnet)
    assert not ok and "not an nn.Sequential" in why
    with pytest.raises(ParameterError, match=r"attribute\('pattern-attribution'\) does not apply to this model"):
        attribution.attribute("pattern-attribution", resnet, x, y, patterns="unused.safetensors")
    soft = models.build("mlp", SHAPE, 4, hidden=(8,), act="softplus")
    assert attribution.applicable("guided-backprop", soft)[0] is False
    assert attribution.applicable("guided-backprop", resnet) == (True, "")
    assert all(attribution.applicable(m, models.build("cnn", SHAPE, 4))[0] for m in METHODS)


def test_empty_batch(nets):
    x = torch.zeros((0, *SHAPE))
    assert attribution.attribute("ig", nets["mlp"], x, torch.zeros(0, dtype=torch.long)).shape == x.shape
