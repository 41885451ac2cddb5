"""The faster CPU run of plain Sequential models (attribution/_fastpath.py): the model's own
forward values bit for bit, its input gradient up to float rounding, hooks respected."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradaudit import attribution, models
from gradaudit.attribution import _fastpath as fastpath
from gradaudit.attribution._fastpath import exact_conv, sequential_runner, small_conv
from gradaudit.attribution._paths import ModelGradient

from toydata import Opaque


def _input_grad(forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(forward(z).gather(1, y[:, None]).sum(), z)
    return g


def _nets() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    strided = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2),
                            nn.Flatten(), nn.LazyLinear(4))
    torch.manual_seed(0)
    strided(torch.zeros(1, 3, 15, 13))  # materialise the lazy layer
    return {
        "mnist-cnn": (models.build("cnn", (1, 28, 28), 10, seed=0), (1, 28, 28)),
        "cifar-cnn": (models.build("cnn", (3, 32, 32), 10, seed=1, normalize=((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))), (3, 32, 32)),
        "odd-strided": (strided, (3, 15, 13)),
    }


@pytest.mark.parametrize("name", ["mnist-cnn", "cifar-cnn", "odd-strided"])
def test_same_forward_bit_for_bit_and_same_gradient(name, monkeypatch):
    net, shape = _nets()[name]
    net.eval()
    run = sequential_runner(net)
    assert run is not None
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((37, *shape), generator=gen)
    x[:5] = 0.0  # blank images: exact ties in every max-pool window
    x[5:9] = (x[5:9] > 0.5).float()  # binary images: ties inside strokes too
    y = torch.randint(int(net(x[:1]).shape[1]), (37,), generator=gen)
    calls = []
    monkeypatch.setattr(fastpath, "small_conv", lambda m, h: calls.append(len(h)) or small_conv(m, h))
    with torch.no_grad():
        assert torch.equal(run(x), net(x))
        first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
        same = torch.equal(small_conv(first, x[:16]), first(x[:16]))
    # the product runs where it gives the layer's bits (on a 2-core AMD EPYC: the 1-channel
    # MNIST conv, not the 3-channel ones, whose oneDNN kernel sums in another order)
    assert (37 in calls) == same
    plain, fast = _input_grad(net, x, y), _input_grad(run, x, y)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6 * float(plain.abs().max()))
    assert fast.is_contiguous()


@pytest.mark.parametrize("conv", [nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(3, 6, (3, 2), stride=2, padding=(2, 1), dilation=2),
                                  nn.Conv2d(2, 4, 3, bias=False)], ids=["mnist", "strided-dilated", "no-bias"])
def test_small_conv_is_the_layer_and_its_input_gradient(conv):
    x = torch.rand(9, conv.in_channels, 15, 13, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = conv(x)
        torch.testing.assert_close(small_conv(conv, x), ref, rtol=1e-6, atol=1e-6)  # bitwise where checked at run time
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    z1, z2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (a,) = torch.autograd.grad(small_conv(conv, z1), z1, g)
    (b,) = torch.autograd.grad(conv(z2), z2, g)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert conv.weight.grad is None  # no weight gradient is computed or accumulated


@pytest.mark.parametrize("conv", [nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(6, 5, (3, 2), stride=2, padding=(2, 1), dilation=2),
                                  nn.Conv2d(8, 4, 3, bias=False)], ids=["mnist-conv2", "strided-dilated", "no-bias"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_exact_conv_is_the_layer_bit_for_bit_and_its_input_gradient(conv, layout):
    x = torch.rand(9, conv.in_channels, 15, 13, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=layout)
    with torch.no_grad():
        ref, out = conv(x.contiguous()), exact_conv(conv, x)
    assert torch.equal(out, ref) and out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    z1, z2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (a,) = torch.autograd.grad(exact_conv(conv, z1), z1, g)
    (b,) = torch.autograd.grad(conv(z2), z2, g)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert a.is_contiguous(memory_format=layout)  # the gradient comes back in the input's layout
    assert conv.weight.grad is None


def test_the_cnn_runs_its_second_conv_exactly(monkeypatch):
    net = models.build("cnn", (1, 28, 28), 10, seed=0).eval()
    calls = []
    monkeypatch.setattr(fastpath, "exact_conv", lambda m, h: calls.append(m) or exact_conv(m, h))
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    g = ModelGradient(net)(x, torch.arange(5))
    assert calls == [net[3]]  # conv 32→64 (the 1-channel first conv is a product)
    torch.testing.assert_close(g, _input_grad(net, x, torch.arange(5)), rtol=1e-5, atol=1e-7)
    # forward-only metrics (keep_layout) let oneDNN run channels-last instead
    calls.clear()
    with torch.no_grad():
        sequential_runner(net, keep_layout=True)(x)
    assert calls == []


def test_guided_backprop_and_hooks_keep_their_meaning():
    net = models.build("cnn", (1, 28, 28), 10, channels=(4, 8), hidden=16, seed=2).eval()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    y = torch.arange(6)
    guided = attribution.attribute("guided-backprop", net, x, y)
    # the same net behind a custom forward takes the plain autograd route
    plain = attribution.attribute("guided-backprop", Opaque(net), x, y)
    torch.testing.assert_close(guided, plain, rtol=1e-5, atol=1e-6 * float(plain.abs().max()))
    assert not torch.allclose(guided, attribution.attribute("grad", net, x, y))
    # a user's hook on a max-pool sees what it sees in the model's own forward (no ReLU swap)
    seen = []
    handle = net[2].register_forward_hook(lambda m, inp, out: seen.append(float(inp[0].detach().min())))
    try:
        assert ModelGradient(net).forward is not net
        attribution.attribute("grad", net, x, y)
    finally:
        handle.remove()
    assert seen and min(seen) >= 0.0  # the pool's input is the ReLU's output


def test_models_without_a_layer_to_speed_up_take_the_model():
    mlp = models.build("mlp", (1, 28, 28), 10, seed=0)
    assert sequential_runner(mlp) is None and ModelGradient(mlp).forward is mlp
    assert sequential_runner(models.build("resnet9", (3, 32, 32), 10, seed=0)) is None


def test_relu_mlp_gradient_is_autograds_bit_for_bit():
    """A ReLU MLP's logit gradient (and its gradient after the first layer, for the factored
    IG / SmoothGrad route) is computed without autograd, with autograd's values exactly."""
    net = models.build("mlp", (1, 28, 28), 10, seed=0).eval()
    x = torch.rand(33, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    x[:4] = 0.0  # blank rows: ReLU inputs exactly at biases, zero masks
    y = torch.randint(10, (33,), generator=torch.Generator().manual_seed(6))
    grad = ModelGradient(net)
    assert grad.mlp is not None and grad.mlp_tail is not None
    assert torch.equal(grad(x, y), _input_grad(net, x, y))
    h = torch.randn(33, net[1].out_features, generator=torch.Generator().manual_seed(7))
    hh = h.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(net[2:](hh).gather(1, y[:, None]).sum(), hh)
    assert torch.equal(grad.tail_gradient(h, y), ref)


def test_relu_mlp_route_only_where_it_is_the_same_computation():
    mlp = models.build("mlp", (1, 28, 28), 10, seed=0)
    assert ModelGradient(mlp, "prob").mlp is None and ModelGradient(mlp, "loss").mlp is None
    assert fastpath.relu_mlp(list(models.build("mlp", (1, 28, 28), 10, act="softplus", seed=0))) is None
    assert fastpath.relu_mlp(list(nn.Sequential(nn.Flatten(0), nn.Linear(784, 10)))) is None
    assert fastpath.relu_mlp(list(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))) is None  # must end in a Linear
    hooked = models.build("mlp", (1, 28, 28), 10, seed=0)
    handle = hooked[2].register_forward_hook(lambda m, i, o: o * 2)
    try:
        assert ModelGradient(hooked).mlp is None  # a hook (e.g. guided backprop's) takes autograd
        x, y = torch.rand(3, 1, 28, 28), torch.arange(3)
        torch.testing.assert_close(ModelGradient(hooked)(x, y), _input_grad(hooked, x, y))
    finally:
        handle.remove()
