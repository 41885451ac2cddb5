"""`gradaudit diffroar|road|perturb|leakage`: tables, result JSON, agreement with the library,
resumed retrains, one-line errors that write nothing."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from gradaudit import attribution, cli, data, evaluation, training
from gradaudit._io import read_json
from gradaudit.evaluation import retrain
from gradaudit.models import ModelSpec

from clirun import run_cli


def _train(out: Path, root: Path, dataset: str, hidden: str) -> Path:
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(sys, "argv", ["gradaudit", "train", "--dataset", dataset, "--epochs", "1", "--hidden", hidden,
                                 "--optimizer", "adam", "--lr", "0.002", "--data-root", str(root), "--quiet",
                                 "--out", str(out)])
        cli.main()
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist_root) -> Path:
    """A one-epoch MLP 784-32-10 trained by `gradaudit train` on the MNIST train split."""
    return _train(tmp_path_factory.mktemp("cli_eval") / "mnist", mnist_root, "mnist", "32")


@pytest.fixture(scope="module")
def block_run(tmp_path_factory, mnist_root) -> Path:
    """A one-epoch MLP 1568-16-2 trained by `gradaudit train` on BlockMNIST (seed 0)."""
    return _train(tmp_path_factory.mktemp("cli_eval") / "block", mnist_root, "blockmnist", "16")


def _table(out: str, header: list[str]) -> list[list[str]]:
    """The rows of the table whose header line reads ``header`` (split on 2+ spaces)."""
    import re

    lines = out.splitlines()
    split = [re.split(r"\s{2,}", line.strip()) for line in lines]
    start = split.index(header)
    rows = []
    for cells in split[start + 1:]:
        if len(cells) != len(header):
            break
        rows.append(cells)
    return rows


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _provenance_ok(record: dict) -> None:
    assert set(record["provenance"]) >= {"versions", "git"}
    assert record["provenance"]["versions"]["torch"] == torch.__version__


@pytest.mark.slow
def test_diffroar_table_json_plot_library_and_resume(capsys, mnist_run, mnist_root, tmp_path, monkeypatch):
    out = tmp_path / "dr"
    args = ["diffroar", "--run", str(mnist_run), "--levels", "0.1,0.5", "--seeds", "2", "--n-train", "500",
            "--n-test", "200", "--mask-only", "--out", str(out), "--data-root", str(mnist_root), "--quiet"]
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    record = read_json(out / "diffroar.json")
    assert {"command", "run", "dataset", "data_seed", "seed", "settings", "levels", "seeds", "curves",
            "leakage", "config", "provenance"} <= set(record)
    assert record["command"] == "diffroar" and record["dataset"] == "mnist" and record["seed"] == 0
    assert record["run"] == str(mnist_run.resolve()) and record["data_seed"] == 0
    assert record["settings"] == {"method": "grad", "method_options": {}, "fitted_options": [], "fit_n": None,
                                  "target": "label", "n_test": 200, "n_train": 500, "train_is_run_data": True}
    assert record["levels"] == [0.1, 0.5] and record["seeds"] == [0, 1]
    assert record["config"]["controls"] == {"random": True, "mask_only": True}
    _provenance_ok(record)
    assert (out / "diffroar.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The printed table is the saved numbers.
    cur, rnd = record["curves"]["attribution"], record["curves"]["random"]
    mask = record["leakage"]["attribution"]["mask_only"]
    rows = _table(text, ["k", "top-k acc", "bottom-k acc", "DiffROAR", "random DiffROAR", "mask-only top acc",
                         "mask-only DiffROAR"])
    assert [r[0] for r in rows] == ["0.1", "0.5"]
    for i, row in enumerate(rows):
        assert row[1] == f"{cur['top']['mean'][i]:.4f} ± {cur['top']['std'][i]:.4f}"
        assert row[3] == f"{cur['diffroar']['mean'][i]:+.4f} ± {cur['diffroar']['std'][i]:.4f}"
        assert row[4].startswith(f"{rnd['diffroar']['mean'][i]:+.4f}")
        assert row[6].startswith(f"{mask['diffroar']['mean'][i]:+.4f}")
    # Label gradients of a trained MLP rank predictive pixels first; random rankings do not.
    assert min(cur["diffroar"]["mean"]) > 0.1 > max(abs(v) for v in rnd["diffroar"]["mean"])

    # The library on the same inputs gives the same numbers.
    net, info = training.load_run(mnist_run)
    train = data.load("mnist", "train", root=mnist_root).subset(slice(0, 500))
    test = data.load("mnist", "test", root=mnist_root).subset(slice(0, 200))
    direct = evaluation.diffroar(net, train, test, method="grad", spec=ModelSpec(**info["spec"]),
                                 recipe=training.Recipe(**info["recipe"]), levels=[0.1, 0.5], seeds=2,
                                 mask_only=True, quiet=True).to_dict()
    assert direct["curves"] == record["curves"] and direct["leakage"] == record["leakage"]

    # A rerun trains nothing: every retrain group is read back.
    groups = _snapshot(out / "retrains" / "groups")

    def no_training(*_a, **_k):
        raise AssertionError("a finished retrain group was trained again")

    monkeypatch.setattr(retrain.Retrainer, "_train_group", no_training)
    start = time.perf_counter()
    code, text, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    assert time.perf_counter() - start < 30
    again = json.loads(text)
    assert again["curves"] == record["curves"] and again == read_json(out / "diffroar.json")
    assert _snapshot(out / "retrains" / "groups") == groups


def test_road_matches_the_library(capsys, mnist_run, mnist_root, tmp_path):
    path = tmp_path / "road.json"
    # fill zero: the noisy linear imputation (the default) has its own tests and is slow on a busy CPU.
    code, text, err = run_cli(capsys, "road", "--run", str(mnist_run), "--n", "24", "--percentages", "0.2,0.5,0.8",
                              "--fill", "zero", "--out", str(path), "--data-root", str(mnist_root), "--quiet",
                              "--seed", "3")
    assert code == 0, err
    record = read_json(path)
    assert record["command"] == "road" and record["seed"] == 3 and record["protocol"] == "ROAD"
    assert record["settings"]["n_images"] == 24 and record["config"]["seed"] == 3 and record["config"]["fill"] == "zero"
    _provenance_ok(record)
    net, _ = training.load_run(mnist_run)
    test = data.load("mnist", "test", root=mnist_root).subset(slice(0, 24))
    maps = attribution.attribute("grad", net, test.x, test.y, seed=3)
    direct = evaluation.road(net, test.x, test.y, maps, percentages=[0.2, 0.5, 0.8], fill="zero", seed=3)
    assert record["morf"]["accuracy"] == list(direct.morf.accuracy)
    assert record["lerf"]["accuracy"] == list(direct.lerf.accuracy)
    assert record["score"] == pytest.approx(direct.gap, abs=1e-12)
    rows = _table(text, ["fraction", "removed", "MoRF acc", "LeRF acc"])
    assert rows == [[f"{p:g}", str(k), f"{m:.4f}", f"{le:.4f}"] for p, k, m, le in
                    zip(direct.percentages, direct.counts, direct.morf.accuracy, direct.lerf.accuracy, strict=True)]
    assert f"gap (LeRF − MoRF, higher is better) {direct.gap:.4f}" in text


def test_pixel_perturbation_with_fitted_patterns(capsys, mnist_run, mnist_root, tmp_path):
    path = tmp_path / "pix.json"
    code, text, err = run_cli(capsys, "perturb", "--run", str(mnist_run), "--method", "pattern-attribution",
                              "--fit-n", "200", "--n", "50", "--fractions", "0.1,0.5,1", "--order", "morf",
                              "--out", str(path), "--data-root", str(mnist_root), "--json")
    assert code == 0, err
    record = json.loads(text)
    assert record == read_json(path)
    assert record["settings"]["fitted_options"] == ["patterns"] and record["settings"]["fit_n"] == 200
    assert record["settings"]["kind"] == "pixel" and record["order"] == "morf"
    _provenance_ok(record)
    net, _ = training.load_run(mnist_run)
    train = data.load("mnist", "train", root=mnist_root).subset(slice(0, 200))
    test = data.load("mnist", "test", root=mnist_root).subset(slice(0, 50))
    opts = attribution.fit_options("pattern-attribution", net, train.x)
    maps = attribution.attribute("pattern-attribution", net, test.x, test.y, **opts)
    direct = evaluation.pixel_perturbation(net, test.x, test.y, maps, fractions=[0.1, 0.5, 1], order="morf")
    assert record["curve"]["accuracy"] == list(direct.curve.accuracy)
    assert record["curve"]["probability"] == pytest.approx(list(direct.curve.probability), abs=1e-12)
    assert record["counts"] == [78, 392, 784]


def test_degradation_table(capsys, mnist_run, mnist_root, tmp_path):
    path = tmp_path / "deg.json"
    code, text, err = run_cli(capsys, "perturb", "--run", str(mnist_run), "--kind", "degradation", "--patch-size",
                              "7", "--n", "40", "--method", "grad-x-input", "--out", str(path),
                              "--data-root", str(mnist_root), "--quiet")
    assert code == 0, err
    record = read_json(path)
    assert record["protocol"] == "patch-degradation" and record["patch_size"] == 7 and record["steps"] == list(range(17))
    net, _ = training.load_run(mnist_run)
    test = data.load("mnist", "test", root=mnist_root).subset(slice(0, 40))
    maps = attribution.attribute("grad-x-input", net, test.x, test.y)
    direct = evaluation.degradation(net, test.x, test.y, maps, patch_size=7)
    rows = _table(text, ["patches", "MoRF prob", "MoRF acc", "LeRF prob", "LeRF acc"])
    assert rows == [[str(s), f"{direct.morf.probability[i]:.4f}", f"{direct.morf.accuracy[i]:.4f}",
                     f"{direct.lerf.probability[i]:.4f}", f"{direct.lerf.accuracy[i]:.4f}"]
                    for i, s in enumerate(direct.steps)]
    assert record["score"] == pytest.approx(direct.gap, abs=1e-12)


def test_leakage_with_yaml_options(capsys, block_run, mnist_root):
    code, text, err = run_cli(capsys, "leakage", "--run", str(block_run), "--method", "ig", "-o", "n_steps=4",
                              "-o", "bounds=[0, 1]", "-o", "rule=riemann-middle", "--ks", "5,10", "--n", "100",
                              "--target", "predicted", "--data-root", str(mnist_root))
    assert code == 0, err
    record = read_json(block_run / "leakage-ig-predicted.json")
    assert record["dataset"] == "blockmnist" and record["data_seed"] == 0 and record["ks"] == [5.0, 10.0]
    assert record["settings"]["method_options"] == {"n_steps": 4, "bounds": [0, 1], "rule": "riemann-middle"}
    _provenance_ok(record)
    net, _ = training.load_run(block_run)
    test = data.load("blockmnist", "test", root=mnist_root, seed=0).subset(slice(0, 100))
    maps = attribution.attribute("ig", net, test.x, "predicted", n_steps=4, bounds=(0, 1), rule="riemann-middle")
    direct = evaluation.leakage(maps, test.per_image["null_mask"], test.per_image["signal_mask"], ks=[5, 10])
    assert record["topk_null_mean"] == list(direct.topk_null_mean)
    assert record["mass_null_mean"] == pytest.approx(direct.mass_null_mean, abs=1e-12)
    rows = _table(text, ["k %", "null share", "signal share"])
    assert [r[0] for r in rows] == ["5", "10"]
    assert rows[0][1] == f"{direct.topk_null_mean[0]:.4f} ± {direct.topk_null_std[0]:.4f}"
    # Null and signal blocks split each top-k set: the shares add up to 1.
    for m_null, m_signal in zip(record["topk_null_mean"], record["topk_signal_mean"], strict=True):
        assert m_null + m_signal == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diffroar", "--method", "gard"], "Unknown attribution method: 'gard'. Did you mean 'grad'?"),
        (["diffroar", "--levels", "0,2"], "--levels must be distinct fractions in (0, 1]"),
        (["diffroar", "--seeds", "0"], "--seeds must be an int in [1, inf)"),
        (["diffroar", "--levels", "0.1,x"], "--levels must be comma-separated numbers"),
        (["diffroar", "--n-train", "0"], "--n-train must be an int in [1, inf)"),
        (["road", "--percentages", "0.5,2"], "--percentages must hold floats in [0, 1]"),
        (["road", "--order", "up"], "--order must be one of"),
        (["road", "--method", "ig", "-o", "n_step=3"],
         "Unknown option of attribute('ig'): 'n_step'. Did you mean 'n_steps'?"),
        (["road", "--method", "ig", "-o", "n_steps=0"], "-o n_steps must be an int in [1, inf)"),
        (["road", "-o", "output=[1"], "--option output: cannot read '[1' as a YAML value"),
        (["road", "-o", "output=prob", "-o", "output=logit"], "--option output is given twice"),
        (["road", "--target", "truth"], "--target must be one of"),
        (["road", "--n", "0"], "--n must be an int in [1, inf)"),
        (["perturb", "--patch-size", "4"], "--patch-size does not apply to --kind pixel; only to --kind degradation"),
        (["perturb", "--kind", "degradation", "--patch-size", "3"], "must divide the image size 28×28"),
        (["perturb", "--kind", "pixels"], "--kind must be one of"),
        (["leakage"], "gradaudit leakage needs a run trained on blockmnist or blockmnist-top"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(capsys, mnist_run, mnist_root, args, message):
    before = _snapshot(mnist_run)
    code, out, err = run_cli(capsys, args[0], "--run", str(mnist_run), *args[1:], "--data-root", str(mnist_root),
                             "--quiet")
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert out == ""
    assert _snapshot(mnist_run) == before


def test_leakage_error_names_the_dataset(capsys, mnist_run, mnist_root):
    code, _, err = run_cli(capsys, "leakage", "--run", str(mnist_run), "--data-root", str(mnist_root))
    assert code == 2 and "was trained on 'mnist'" in err and "--dataset blockmnist" in err


@pytest.mark.parametrize("command", ["diffroar", "road", "perturb", "leakage"])
def test_a_folder_that_is_not_a_run(capsys, tmp_path, command):
    code, out, err = run_cli(capsys, command, "--run", str(tmp_path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{tmp_path} is not a finished training run (no run.json)" in err
    assert list(tmp_path.iterdir()) == []


def test_perturb_options_reach_the_kind_given(capsys, mnist_run, mnist_root, tmp_path):
    """--order lerf is the pixel metric's default, but asked of --kind degradation it is
    degradation's order (LeRF only), not dropped as "unchanged"."""
    path = tmp_path / "deg-lerf.json"
    code, text, err = run_cli(capsys, "perturb", "--run", str(mnist_run), "--kind", "degradation", "--order", "lerf",
                              "--patch-size", "7", "--n", "10", "--out", str(path), "--data-root", str(mnist_root), "-q")
    assert code == 0, err
    record = read_json(path)
    assert record["settings"]["kind"] == "degradation" and record["morf"] is None and record["lerf"] is not None
    assert _table(text, ["patches", "LeRF prob", "LeRF acc"])
