"""Adding a metric is its function and one registration: a toy metric registered in one place
(the ``register`` call of the fixture below) is listed by ``gradaudit --help``, has a working
command of its own (options, table, result file) and is computed by a study that names it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gradaudit import attribution, data, models, training
from gradaudit._io import read_json
from gradaudit._validation import check_int
from gradaudit.evaluation import METRICS, MetricSpec, Subject
from gradaudit.evaluation.registry import MetricOption, register

from clirun import run_cli

NAME = "toy-accuracy"


class _ToyResult:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)


def _toy(s: Subject, o: dict[str, Any], seed: int, device: Any, quiet: bool) -> _ToyResult:
    """The model's accuracy on the audited images, and the mean |attribution| rounded to
    ``decimals``: a metric that needs a model and its maps, and has one option."""
    acc = training.accuracy(s.model, s.test.x, s.test.y, device=device)
    mass = round(float(s.maps.abs().mean()), o["decimals"])
    return _ToyResult({"protocol": NAME, "higher_is_better": True, "score": acc, "mean_abs": mass,
                       "n": len(s.test)})


@pytest.fixture
def toy() -> MetricSpec:
    """The one registration (removed after the test)."""
    spec = register(MetricSpec(
        NAME, _toy, _toy, {"decimals": MetricOption(4, lambda v, n, c: check_int(v, n, c, 0, 8), "digits of mean_abs")},
        higher_is_better=True, needs=frozenset({"model", "maps"}), source="tests/test_toy_metric.py",
        summary="the model's accuracy on the audited images (a toy)"))
    yield spec
    del METRICS[NAME]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, mnist_root) -> Path:
    """An MLP 784-8-10 trained for one epoch on 300 MNIST images, as a run directory."""
    out = tmp_path_factory.mktemp("toy") / "run"
    images = data.load("mnist", "train", root=mnist_root).subset(slice(0, 300))
    spec = models.ModelSpec(name="mlp", input_shape=images.input_shape, num_classes=10, options={"hidden": [8]})
    recipe = training.Recipe(epochs=1, batch_size=50, val_fraction=0.0)
    training.fit(spec.build(seed=1), images, recipe, out=out, quiet=True, spec=spec.model_dump(mode="json"))
    return out


@pytest.mark.slow  # (the module's run: loading MNIST and a one-epoch fit, ~8 s on a loaded core)
def test_the_toy_is_in_help_and_has_a_working_command(toy, small_run, mnist_root, tmp_path, capsys) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    commands = out.split("Commands:")[1].split("Metrics")[0]
    assert f"  {NAME}  " in commands and f"{NAME}: the model's accuracy" in out
    code, out, _ = run_cli(capsys, NAME, "--help")
    assert code == 0 and "--decimals <int>" in out and "Digits of mean_abs.  [default: 4]" in out, out

    path = tmp_path / "toy.json"
    args = [NAME, "--run", str(small_run), "--n", "40", "--decimals", "3", "--seed", "1", "--out", str(path),
            "--data-root", str(mnist_root), "-q"]
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    record = read_json(path)
    net, _ = training.load_run(small_run)
    test = data.load("mnist", "test", root=mnist_root).subset(slice(0, 40))
    maps = attribution.attribute("grad", net, test.x, test.y, seed=1)
    expected_acc = (net(test.x).argmax(1) == test.y).double().mean().item()
    assert record["command"] == NAME and record["n"] == 40 and record["settings"]["method"] == "grad"
    assert record["score"] == pytest.approx(expected_acc, abs=1e-12)
    assert record["mean_abs"] == round(float(maps.abs().mean()), 3)
    # the printed table is the result's scalars (the registry's default table)
    assert f"{NAME} of grad (label) on 40 mnist test images" in text
    for key in ("score", "mean_abs"):
        assert re.search(rf"^{key} +{record[key]:.4f}$", text, re.M), text
    # the option's check is the registration's, in the command line's words
    code, _, err = run_cli(capsys, *args, "--decimals", "9")  # (the last --decimals counts)
    assert code == 2 and err.startswith("error: --decimals must be an int in [0, 8]"), err


def test_an_unregistered_toy_has_no_command(capsys) -> None:
    assert NAME not in METRICS
    code, _, err = run_cli(capsys, NAME, "--help")
    assert code == 2 and "No such command" in err


@pytest.mark.slow
def test_the_toy_is_in_a_studys_results(toy, mnist_root, tmp_path) -> None:
    """The blockmnist study computes the metrics its config names: the toy's accuracy is
    the study's own test accuracy of the same model."""
    from gradaudit.experiments import run_study

    tiny = ["datasets=[blockmnist]", "diffroar_models=[]", "n_train=200", "n_test=100",
            "models=[{label: MLP, model: mlp, model_options: {hidden: [16]}, recipe: {epochs: 1, batch_size: 50}}]",
            f"metrics={{{NAME}: {{decimals: 6}}}}"]
    run_study("blockmnist", quick=True, overrides=tiny, out=tmp_path / "study", quiet=True, data_root=mnist_root)
    res = json.loads((tmp_path / "study" / "results.json").read_text())["results"]
    [row], [model] = res["metrics"], res["models"]
    assert (row["dataset"], row["model"]) == ("blockmnist", "MLP") == (model["dataset"], model["model"])
    assert row[NAME]["score"] == model["test_accuracy"] and row[NAME]["n"] == 100
    assert row[NAME]["mean_abs"] == round(row[NAME]["mean_abs"], 6) > 0
