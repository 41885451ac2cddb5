"""Score and anti-score matching share the trace estimator's noise options (declared once, on
hessian_trace_estimate), and the reference code's defaults are the paper's with its changes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gradaudit.training.regularizers import (
    CODE_DEFAULTS,
    PAPER_DEFAULTS,
    anti_score_matching,
    hessian_trace_estimate,
    score_matching,
    target_logit_gradient,
)


def _net_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(9, 6), nn.Softplus(beta=10), nn.Linear(6, 3))
    gen = torch.Generator().manual_seed(1)
    return net, torch.rand((5, 1, 3, 3), generator=gen), torch.randint(0, 3, (5,), generator=gen)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


def test_default_noise_options_are_the_estimators():
    net, x, y = _net_and_batch()
    paper = {k: v for k, v in PAPER_DEFAULTS["score-matching"].items() if k in ("samples", "sigma", "antithetic")}
    assert paper == {"samples": 1, "sigma": 0.01, "antithetic": False}
    assert torch.equal(hessian_trace_estimate(net, x, y, generator=_gen()),
                       hessian_trace_estimate(net, x, y, generator=_gen(), **paper))
    assert torch.equal(score_matching(net, x, y, generator=_gen()),
                       score_matching(net, x, y, generator=_gen(), tau=1e-3, **paper))
    assert torch.equal(anti_score_matching(net, x, y, generator=_gen()),
                       anti_score_matching(net, x, y, generator=_gen(), threshold=1000.0, **paper))
    with pytest.raises(TypeError, match="generator"):
        score_matching(net, x, y)


@pytest.mark.parametrize("trace", [{"samples": 3, "sigma": 0.1}, {"samples": 2, "sigma": 0.05, "antithetic": True}])
def test_both_regularizers_are_functions_of_the_one_trace_estimate(trace):
    net, x, y = _net_and_batch()
    fy, grad = target_logit_gradient(net, x, y)
    h = hessian_trace_estimate(net, x, y, generator=_gen(), fy=fy, **trace)
    sm = score_matching(net, x, y, generator=_gen(), tau=0.5, **trace)
    assert torch.equal(sm, h.mean() + 0.5 * grad.flatten(1).pow(2).sum(1).mean() + 0.5 * h.pow(2).mean())
    h_alone = hessian_trace_estimate(net, x, y, generator=_gen(), **trace)
    cap = float(h_alone.detach().median())
    assert torch.equal(anti_score_matching(net, x, y, generator=_gen(), threshold=cap, **trace),
                       -torch.clamp(h_alone, max=cap).mean())
    assert h_alone.max() > cap  # the cap binds for some rows


def test_code_defaults_are_the_reference_training_values_in_the_papers_key_order():
    assert json.dumps(CODE_DEFAULTS) == json.dumps({
        "gradnorm": {"reg_weight": 1e-5},
        "score-matching": {"reg_weight": 1e-5, "samples": 1, "sigma": 0.01, "tau": 1e-3, "antithetic": False},
        "anti-score-matching": {"reg_weight": 1e-5, "samples": 1, "sigma": 0.001, "threshold": 1e4,
                                "antithetic": False},
    })
    assert all(list(CODE_DEFAULTS[k]) == list(PAPER_DEFAULTS[k]) for k in PAPER_DEFAULTS)
