"""Auditing a user's own model (issue 16): any nn.Module via make_model, plain tensors or a
Dataset, the user's own train_fn, inputs in any range; the example run end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from gradaudit import attribution, evaluation, training
from gradaudit._validation import ParameterError, ParameterTypeError
from gradaudit.attribution.integrated import make_baseline
from gradaudit.data import ImageSet, as_imageset
from gradaudit.models import ModelSpec
from gradaudit.models.layers import Normalize

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("own_model_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["own_model_example"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("own_model_example", None)


pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only add overhead


def _data(example, n_train=256, n_test=200):
    x, y = example.make_data(n_train, seed=0)
    xt, yt = example.make_data(n_test, seed=1)
    return (torch.from_numpy(x), torch.from_numpy(y)), (torch.from_numpy(xt), torch.from_numpy(yt))


@pytest.mark.slow
def test_example_diffroar_random_control_and_resume_after_kill(example, tmp_path) -> None:
    """The example (user CNN, numpy data, Adam train_fn) through the public API: grad ranks the
    class patch first, the random control is ~0, and a killed run resumes to the same numbers."""
    full = example.main(["--small", "--out", str(tmp_path / "full")])
    grad, rand = full.attribution.diffroar.mean, full.random.diffroar.mean
    assert full.config["train_fn"] == "own_model_example:train_fn"
    assert full.config["architecture"]["class"] == "TwoConvNet"
    assert grad[0] > 0.05  # k = 0.2: the top-20% of grad holds the label's patch, the bottom does not
    assert all(abs(r) <= 0.05 for r in rand), rand
    assert json.loads((tmp_path / "full" / "result.json").read_text())["curves"]["random"]

    train, test = _data(example)
    torch.manual_seed(0)
    model = example.train_fn(example.make_model(), *train).eval()
    calls = {"n": 0}

    def dying(model, x, y):  # the example's loop, killed after 5 retrains
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt("killed")
        return example.train_fn(model, x, y)

    kw = dict(method="grad", make_model=example.make_model, train_fn=dying, levels=(0.2, 0.5), seeds=2,
              quiet=True, out=tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        evaluation.diffroar(model, train, test, **kw)
    assert len(list((tmp_path / "resumed" / "groups").glob("*.json"))) == 5
    calls["n"] = -100  # no more kills
    resumed = evaluation.diffroar(model, train, test, **kw)
    assert calls["n"] == -100 + 16 - 5  # 2 levels × 2 sides × 2 rankings × 2 seeds, 5 done before
    assert resumed.to_dict()["curves"] == full.to_dict()["curves"]


def _tiny():
    torch.manual_seed(0)
    n = 64
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 4, 4) * 0.5
    x[:, 0, 0, 0] += 0.5 * y
    return x, y


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))


def _sgd_fn(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        for b in torch.randperm(len(x)).split(16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model


def test_tuple_tensordataset_and_imageset_give_identical_numbers() -> None:
    x, y = _tiny()
    forms = [((x[:48], y[:48]), (x[48:], y[48:])),
             (TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:])),
             (ImageSet(x[:48], y[:48], {"bounds": (0.0, 1.0)}), ImageSet(x[48:], y[48:], {"bounds": (0.0, 1.0)}))]
    results = [evaluation.diffroar(None, tr, te, attributions=(x[:48], x[48:]), make_model=_tiny_model,
                                   train_fn=_sgd_fn, levels=(0.25, 0.5), seeds=2, quiet=True).to_dict()["curves"]
               for tr, te in forms]
    assert results[0] == results[1] == results[2]
    assert results[0]["attribution"]["top"]["mean"] != results[0]["attribution"]["bottom"]["mean"]


def test_make_model_with_recipe_matches_spec_free_path() -> None:
    """make_model + recipe (no train_fn) retrains with training.fit, one model at a time; ROAR and
    KAR take the same arguments."""
    x, y = _tiny()
    recipe = training.Recipe(epochs=2, batch_size=16, lr=0.1)
    res = evaluation.kar(None, (x[:48], y[:48]), (x[48:], y[48:]), attributions=(x[:48], x[48:]),
                         make_model=_tiny_model, recipe=recipe, levels=(0.5,), seeds=1, random=False,
                         mask_only=True, quiet=True)
    assert res.config["recipe"]["epochs"] == 2 and res.config["train_fn"] is None
    assert 0.0 <= res.accuracy["attribution"].mean[0] <= 1.0 and "attribution" in res.mask_only


def test_make_model_and_spec_of_different_architectures_raise_before_any_work() -> None:
    x, y = _tiny()

    def never(model, x, y):
        raise AssertionError("no retrain may start")

    spec = ModelSpec(name="mlp", input_shape=(1, 4, 4), num_classes=2)
    with pytest.raises(ParameterError, match="different architectures"):
        evaluation.diffroar(None, (x, y), (x, y), attributions=(x, x), make_model=_tiny_model, spec=spec,
                            train_fn=never, quiet=True)
    # the silent wrong-architecture bug: a user model with a registry spec of another shape
    with pytest.raises(ParameterError, match=r"the audited model \(34 parameters\)"):
        evaluation.diffroar(_tiny_model(), (x, y), (x, y), method="grad", spec=spec, train_fn=never, quiet=True)
    with pytest.raises(ParameterTypeError, match="make_model="):
        evaluation.roar(_tiny_model(), (x, y), (x, y), method="grad", train_fn=never, quiet=True)
    with pytest.raises(ParameterError, match="not both"):
        evaluation.diffroar(None, (x, y), (x, y), attributions=(x, x), make_model=_tiny_model, train_fn=never,
                            recipe=training.Recipe(), quiet=True)


def test_as_imageset_checks_labels_shapes_and_states_bounds() -> None:
    x, y = _tiny()
    measured = as_imageset((x * 4 - 1, y))
    assert measured.meta["bounds_source"] == "measured"
    assert measured.bounds == (float((x * 4 - 1).min()), float((x * 4 - 1).max()))
    assert as_imageset((x[:, 0], y)).input_shape == (1, 4, 4)  # (N, H, W): one channel
    with pytest.raises(ParameterError, match="0 … 1"):
        as_imageset((x, y + 1), num_classes=2)
    with pytest.raises(ParameterError, match="must be 0"):
        as_imageset((x, y - 1))
    with pytest.raises(ParameterError, match="shape \\(64,\\)"):
        as_imageset((x, y[:10]))
    with pytest.raises(ParameterTypeError, match="floats"):
        as_imageset(((x * 255).to(torch.uint8), y))
    with pytest.raises(ParameterError, match="lo < hi"):
        ImageSet(x, y, {"bounds": (1.0, 0.0)})


def test_data_outside_declared_bounds_is_one_clear_error() -> None:
    x, y = _tiny()
    bad = ImageSet(x * 3, y, {"bounds": (0.0, 1.0)})
    with pytest.raises(ParameterError, match=r"outside their declared bounds \[0, 1\]"):
        evaluation.diffroar(None, bad, bad, attributions=(x, x), make_model=_tiny_model, train_fn=_sgd_fn, quiet=True)
    with pytest.raises(ParameterError, match="outside their declared bounds"):
        as_imageset((x * 3, y), bounds=(0, 1))
    with pytest.raises(ParameterError, match=r"outside bounds=\(0, 1\)"):
        training.pgd(_tiny_model(), x * 3 - 1, y, norm="linf", eps=0.1)
    with pytest.raises(ParameterError, match="uniform"):
        attribution.attribute("ig", _tiny_model(), x * 3 - 1, y, baseline="uniform", n_steps=4)


def test_normalize_layer_model_on_standardized_bounds_passes_pgd_and_ig() -> None:
    """Standardized inputs (range −0.42 … 2.82) with bounds declared; a model with a Normalize
    first layer on [0, 1] pixels: PGD stays in the data's box and the eps ball, IG is complete."""
    x, y = _tiny()
    mean, std = 0.1307, 0.3081
    z = as_imageset(((x - mean) / std, y))  # measured bounds
    lo, hi = z.bounds
    assert lo < 0 < 1 < hi
    torch.manual_seed(0)
    net = _sgd_fn(_tiny_model(), z.x, z.y).eval()
    adv = training.pgd(net, z.x, z.y, norm="linf", eps=0.3, steps=5, bounds=z.bounds)
    assert float(adv.min()) >= lo - 1e-6 and float(adv.max()) <= hi + 1e-6
    assert float(adv.max()) > 1.0  # not clamped to [0, 1]
    assert float((adv - z.x).abs().max()) <= 0.3 + 1e-6
    with torch.no_grad():
        assert (net(adv).argmax(1) == y).float().mean() < (net(z.x).argmax(1) == y).float().mean()

    pixel_net = nn.Sequential(Normalize([mean], [std]), net).eval()  # same function on raw pixels
    adv_pix = training.pgd(pixel_net, x, y, norm="linf", eps=0.3 * std, steps=5, bounds=(0.0, 1.0))
    assert float(adv_pix.min()) >= 0.0 and float(adv_pix.max()) <= 1.0
    maps = attribution.attribute("ig", pixel_net, x, y, n_steps=64, baseline="uniform", bounds=(0.0, 1.0))
    base = make_baseline("uniform", x, bounds=(0.0, 1.0))
    with torch.no_grad():
        gap = pixel_net(x).gather(1, y[:, None])[:, 0] - pixel_net(base).gather(1, y[:, None])[:, 0]
    assert torch.allclose(maps.flatten(1).sum(1), gap, atol=1e-4)  # linear model: IG is exact
    zmaps = attribution.attribute("ig", net, z.x, y, n_steps=8, baseline="uniform", bounds=z.bounds)
    assert torch.isfinite(zmaps).all()


def test_executor_and_fit_take_the_same_data_forms() -> None:
    """train_fn retrains mapped over an executor give the in-process numbers; training.fit takes
    an (x, y) pair like every other entry point."""
    from gradaudit.runs import InProcessExecutor

    x, y = _tiny()
    kw = dict(attributions=(x[:48], x[48:]), make_model=_tiny_model, train_fn=_sgd_fn, levels=(0.25,), seeds=2,
              quiet=True)
    plain = evaluation.roar(None, (x[:48], y[:48]), (x[48:], y[48:]), **kw)
    mapped = evaluation.roar(None, (x[:48], y[:48]), (x[48:], y[48:]), executor=InProcessExecutor(), **kw)
    assert plain.to_dict()["accuracy"] == mapped.to_dict()["accuracy"]
    torch.manual_seed(0)
    net = _tiny_model()
    result = training.fit(net, (x, y), training.Recipe(epochs=3, batch_size=16, lr=0.5), quiet=True)
    assert result.history[-1]["train_acc"] > 0.75  # the signal pixel separates the classes; chance is 0.5
    with pytest.raises(ParameterTypeError, match="'train' argument of fit"):
        training.fit(net, x, training.Recipe(epochs=1), quiet=True)
