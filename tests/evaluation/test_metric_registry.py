"""The metric registry: a contract over every registered metric (options validated,
``higher_is_better`` set and reported, a result on a tiny model and data set, JSON round
trip), and a toy metric registered in one place that the CLI then lists."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from gradaudit import evaluation, models
from gradaudit._validation import GradauditError, ParameterError
from gradaudit.data import ImageSet
from gradaudit.evaluation import METRICS, MetricSpec, Subject
from gradaudit.evaluation.registry import NEEDS, register
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe

from clirun import run_cli

SHAPE = (1, 8, 8)
SPEC = ModelSpec(name="mlp", input_shape=SHAPE, num_classes=2, options={"hidden": [8]})

# the smallest settings that still exercise each metric's whole path
TINY: dict[str, dict[str, Any]] = {
    "diffroar": {"levels": [0.5], "seeds": 1},
    "roar": {"levels": [0.5], "seeds": 1},
    "kar": {"levels": [0.5], "seeds": 1},
    "road": {"percentages": [0.5]},
    "pixel-perturbation": {"fractions": [0.5]},
    "degradation": {"patch_size": 4},
    "leakage": {"ks": [10.0]},
    "gan-test": {"n": 8, "steps": 2},
}
# one invalid value per metric, and the words its error must hold
BAD: dict[str, tuple[str, Any]] = {
    "diffroar": ("levels", [0.0]),
    "roar": ("seeds", 0),
    "kar": ("fill", "zeros"),
    "road": ("order", "up"),
    "pixel-perturbation": ("order", "both"),
    "degradation": ("patch_size", 0),
    "leakage": ("ks", "10"),
    "gan-test": ("steps", 0),
}


def _blocks(n: int, seed: int) -> ImageSet:
    """Two 4-row blocks; the label is the sign of the signal block's mean, the other block is noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    top = torch.randint(0, 2, (n,), generator=g).bool()
    x = torch.rand(n, *SHAPE, generator=g) * 0.5
    signal = torch.zeros(n, *SHAPE[1:], dtype=torch.bool)
    signal[top, :4] = True
    signal[~top, 4:] = True
    x = torch.where(signal[:, None], x + 0.5 * y.view(-1, 1, 1, 1), x)
    return ImageSet(x, y, meta={"name": "tiny-blocks", "bounds": (0.0, 1.0)},
                    per_image={"signal_mask": signal, "null_mask": ~signal})


@pytest.fixture(scope="module")
def subject() -> Subject:
    train, test = _blocks(48, 0), _blocks(24, 1)
    model = SPEC.build(seed=0).eval()
    maps = [torch.randn(len(d), *SHAPE, generator=torch.Generator().manual_seed(i)) for i, d in enumerate((train, test))]
    return Subject(test=test, model=model, maps=maps[1], train=train, train_maps=maps[0], spec=SPEC,
                   recipe=Recipe(epochs=1, batch_size=16, lr=0.05), proxy=models.build("mlp", SHAPE, 2, seed=1))


def test_every_evaluation_is_registered() -> None:
    assert set(TINY) == set(METRICS) == set(BAD)


RETRAINS = ("diffroar", "roar", "kar")  # a retrain each: seconds, not milliseconds


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in RETRAINS else n for n in sorted(TINY)])
def test_metric_contract(name: str, subject: Subject) -> None:
    spec = METRICS[name]
    assert isinstance(spec.higher_is_better, bool) and spec.summary and spec.source
    assert spec.needs and spec.needs <= set(NEEDS)
    for key, opt in spec.options.items():  # every default passes its own check
        assert opt.check(opt.default, key, "t") == opt.default or opt.default is None
    # bad input: one error before any work, naming the option (and the closest valid one)
    key, value = BAD[name]
    with pytest.raises(GradauditError, match=rf"'{key}' parameter of evaluate\('{name}'\)"):
        evaluation.evaluate(name, subject, **{**TINY[name], key: value})
    with pytest.raises(ParameterError, match=rf"Unknown option of evaluate\('{name}'\): 'sede'"):
        evaluation.evaluate(name, subject, sede=1, **TINY[name])
    # a missing input is named
    with pytest.raises(ParameterError, match="needs"):
        evaluation.evaluate(name, Subject(test=subject.test), **TINY[name])
    result = evaluation.evaluate(name, subject, **TINY[name])
    record = result.to_dict()
    assert record["higher_is_better"] is spec.higher_is_better
    text = json.dumps(record)
    assert json.loads(text) == json.loads(json.dumps(json.loads(text)))  # stable JSON round trip
    again = evaluation.evaluate(name, subject, **TINY[name])  # same seed, same numbers
    assert json.dumps(again.to_dict()) == text


def test_unknown_metric_and_option_defaults() -> None:
    with pytest.raises(ParameterError, match=r"Unknown metric: 'difroar'\. Did you mean 'diffroar'\?"):
        evaluation.get_metric("difroar")
    # defaults are read from the functions' signatures, so they cannot drift
    assert METRICS["diffroar"].options["levels"].default == evaluation.LEVELS
    assert METRICS["roar"].options["levels"].default == evaluation.ROAR_LEVELS


def _null_share(s: Subject, o: dict[str, Any], seed: int, device: Any, quiet: bool) -> Any:
    """Per image, the share of |a| on the null block; averaged (leakage's mass_null)."""
    a = s.maps.abs().flatten(1)
    null = s.test.per_image["null_mask"].flatten(1).to(a.dtype)
    share = ((a * null).sum(1) / a.sum(1)).mean()

    class Result:
        def to_dict(self) -> dict[str, Any]:
            return {"protocol": "toy-null-share", "higher_is_better": False, "score": round(float(share), o["digits"])}

    return Result()


TOY = MetricSpec("toy-null-share", _null_share, _null_share,
                 {"digits": evaluation.registry.Option(3, lambda v, n, c: int(v), "rounding")},
                 higher_is_better=False, needs=frozenset({"maps", "block_masks"}),
                 summary="share of |a| on the null block", source="this test")


@pytest.fixture
def toy_metric():
    """The toy metric, registered in one place (and removed after the test)."""
    register(TOY)
    yield TOY
    del METRICS["toy-null-share"]


def test_a_toy_metric_registered_once_is_in_the_cli(toy_metric: MetricSpec, subject: Subject, capsys) -> None:
    with pytest.raises(ParameterError, match="already registered"):
        register(toy_metric)
    record = evaluation.evaluate("toy-null-share", subject).to_dict()
    a = subject.maps.abs()
    expected = float(((a * subject.test.per_image["null_mask"][:, None]).sum((1, 2, 3)) / a.sum((1, 2, 3))).mean())
    assert record["score"] == round(expected, 3) and 0.3 < expected < 0.7
    for argv, needle in ((["--help"], "toy-null-share: share of |a| on the null block"),
                         (["metrics"], "toy-null-share (lower is better; needs block_masks, maps)")):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0 and needle in out, out
    code, out, _ = run_cli(capsys, "metrics", "--json")
    listed = json.loads(out)
    assert listed["toy-null-share"]["options"] == {"digits": "3"}
    assert listed["roar"]["higher_is_better"] is False


@pytest.mark.slow
def test_a_toy_metric_registered_once_is_in_a_studys_results(toy_metric: MetricSpec, mnist_root, tmp_path) -> None:
    """The blockmnist study computes any registered metric named in its config: the toy's
    per-image null share equals the study's own leakage mass_null for the same maps."""
    from gradaudit._validation import GradauditError
    from gradaudit.experiments import run_study

    tiny = ["datasets=[blockmnist]", "diffroar_models=[]", "n_train=200", "n_test=100",
            "models=[{label: MLP, model: mlp, model_options: {hidden: [16]}, recipe: {epochs: 1, batch_size: 50}}]"]
    with pytest.raises((GradauditError, ValueError), match="Unknown option of evaluate\\('toy-null-share'\\): 'digit'"):
        run_study("blockmnist", quick=True, overrides=[*tiny, "metrics={toy-null-share: {digit: 6}}"],
                  out=tmp_path / "bad", quiet=True, data_root=mnist_root)
    with pytest.raises((GradauditError, ValueError), match="needs retraining"):
        run_study("blockmnist", quick=True, overrides=[*tiny, "metrics={diffroar: {}}"],
                  out=tmp_path / "bad", quiet=True, data_root=mnist_root)
    run_study("blockmnist", quick=True, overrides=[*tiny, "metrics={toy-null-share: {digits: 6}}"],
              out=tmp_path / "run", quiet=True, data_root=mnist_root)
    res = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    [row] = res["metrics"]
    [leak] = res["leakage"]
    assert (row["dataset"], row["model"]) == ("blockmnist", "MLP")
    assert row["toy-null-share"]["score"] == pytest.approx(leak["mass_null_mean"], abs=2e-6)
