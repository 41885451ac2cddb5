"""Methods built from one another: gradient × input and Guided Backprop are gradient() (its
options declared once), IG and PGIG are integrate() of their gradient function, and the
smoothed methods are named and documented by one helper. Equalities are exact (same bits)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from gradaudit import models
from gradaudit.attribution import fit_patterns
from gradaudit.attribution._paths import ModelGradient
from gradaudit.attribution.gradients import gradient, gradient_times_input, guided_backprop
from gradaudit.attribution.integrated import integrate, integrated_gradients, make_baseline
from gradaudit.attribution.pattern_methods import (
    pattern_attribution,
    pattern_gradient,
    pattern_integrated_gradients,
)
from gradaudit.attribution.smoothing import (
    smoothgrad,
    smoothgrad_integrated_gradients,
    smoothgrad_squared,
    vargrad,
)

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return torch.rand((4, *SHAPE), generator=gen), torch.randint(0, 3, (4,), generator=gen)


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return models.build("cnn", SHAPE, 3, channels=(3, 4), hidden=8, seed=5).eval()


@pytest.mark.parametrize("output", ["logit", "prob", "loss"])
def test_gradient_times_input_is_x_times_gradient(cnn, data, output):
    x, y = data
    got = gradient_times_input(cnn, x, y, output=output, max_batch=3)
    assert torch.equal(got, x * gradient(cnn, x, y, output=output, max_batch=3))
    assert not torch.equal(got, gradient(cnn, x, y, output=output, max_batch=3))


def test_guided_backprop_is_gradient_under_guided_relus(cnn, data):
    x, y = data
    smooth_net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    # no ReLU to guide: exactly the gradient; with ReLUs: a different map
    assert torch.equal(guided_backprop(smooth_net, x, y, output="prob"), gradient(smooth_net, x, y, output="prob"))
    assert not torch.equal(guided_backprop(cnn, x, y), gradient(cnn, x, y))
    with pytest.raises(TypeError, match="unexpected keyword argument 'steps'"):
        guided_backprop(cnn, x, y, steps=3)


def test_integrated_gradients_is_integrate_of_the_model_gradient(cnn, data):
    x, y = data
    opts = {"n_steps": 5, "rule": "riemann-middle", "baseline": "uniform", "seed": 3, "max_batch": 7}
    got = integrated_gradients(cnn, x, y, output="prob", **opts)
    assert torch.equal(got, integrate(ModelGradient(cnn, "prob"), x, y, **opts))
    # the defaults live in integrate(): 64 Gauss-Legendre nodes from the zero baseline
    assert torch.equal(integrated_gradients(cnn, x, y),
                       integrate(ModelGradient(cnn), x, y, n_steps=64, rule="gauss-legendre", baseline="zero"))
    base = make_baseline("uniform", x, seed=3)
    assert not torch.equal(base, torch.zeros_like(x)) and torch.equal(base[0], base[-1])


def test_pattern_methods_share_integrate_and_pattern_gradient(cnn, data):
    x, y = data
    patterns = fit_patterns(cnn, torch.rand((30, *SHAPE), generator=torch.Generator().manual_seed(2)))
    pgig = pattern_integrated_gradients(cnn, x, y, patterns=patterns, n_steps=6, max_batch=5)
    assert torch.equal(pgig, integrate(pattern_gradient(cnn, patterns, "logit", "one"), x, y, n_steps=6, max_batch=5))
    pa = pattern_attribution(cnn, x, y, patterns=patterns, variant="net", output="prob")
    fn = pattern_gradient(cnn, patterns, output="prob", scale="output", variant="net")
    assert torch.equal(pa, fn(x, y))
    assert not torch.equal(pa, pattern_attribution(cnn, x, y, patterns=patterns))


def test_smoothed_methods_keep_their_names_and_full_docstrings():
    for fn, name, explainer in ((smoothgrad, "smoothgrad", "SmoothGradExplainer"),
                                (smoothgrad_squared, "smoothgrad_squared", "SmoothGrad2Explainer"),
                                (vargrad, "vargrad", "VarGradExplainer"),
                                (smoothgrad_integrated_gradients, "smoothgrad_integrated_gradients",
                                 "SmoothGradIGExplainer (sg_ig)")):
        assert fn.__name__ == name
        doc = fn.__doc__
        assert f"(``{explainer}``)" in doc and "Formula: a(x) = (1/n)" in doc
        assert doc.rstrip().endswith("Attributions shaped like ``x``.")
        assert "Σ_{j≤k} ε_j" in doc and not re.search(r"\{(formula|source|pgig|extra|inner)\}", doc)
