"""`gradaudit train` and `gradaudit robustness`: run directories, tables, one-line errors."""

from __future__ import annotations

import sys

import pytest

from gradaudit import cli, data
from gradaudit._io import read_json
from gradaudit.training import load_run


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run the console entry point in-process; return (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["gradaudit", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SYNTH = ["train", "--dataset", "synthetic-v1", "--model", "mlp", "--hidden", "32", "--epochs", "2",
         "--optimizer", "adam", "--lr", "0.01", "--quiet"]


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(sys, "argv", ["gradaudit", *SYNTH, "--out", str(out)])
        cli.main()
    finally:
        mp.undo()
    return out


def test_train_writes_config_metrics_and_checkpoint(synth_run) -> None:
    names = sorted(p.name for p in synth_run.iterdir())
    assert names == ["model.safetensors", "run.json"]
    info = read_json(synth_run / "run.json")
    assert info["recipe"]["epochs"] == 2 and info["recipe"]["optimizer"] == "adam"
    assert info["recipe"]["val_fraction"] == 0.1 and info["recipe"]["seed"] == 0
    assert info["spec"] == {"name": "mlp", "input_shape": [1, 1, 10], "num_classes": 2,
                            "options": {"hidden": [32]}, "normalize": None}
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    assert all({"train_loss", "train_acc", "val_acc", "lr", "seconds"} <= set(h) for h in info["history"])
    assert info["test_accuracy"] > 0.9
    assert info["git"]["commit"] is None or len(info["git"]["commit"]) == 40
    net, _ = load_run(synth_run)
    test = data.load("synthetic-v1", "test")
    assert (net(test.x).argmax(1) == test.y).float().mean().item() == pytest.approx(info["test_accuracy"])


def test_train_again_loads_the_finished_run(synth_run, monkeypatch, capsys) -> None:
    weights = (synth_run / "model.safetensors").read_bytes()
    code, out, _ = run_cli([*SYNTH, "--out", str(synth_run)], monkeypatch, capsys)
    assert code == 0 and out.startswith("loaded mlp on synthetic-v1")
    assert (synth_run / "model.safetensors").read_bytes() == weights


def test_train_refuses_a_directory_of_another_recipe(synth_run, monkeypatch, capsys) -> None:
    files = {p.name: p.read_bytes() for p in synth_run.iterdir()}
    code, _, err = run_cli([*SYNTH, "--epochs", "3", "--out", str(synth_run)], monkeypatch, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "recipe.epochs is 2 there, 3 here" in err
    assert {p.name: p.read_bytes() for p in synth_run.iterdir()} == files


def test_robustness_prints_and_saves_a_table(synth_run, monkeypatch, capsys) -> None:
    code, out, _ = run_cli(["robustness", "--run", str(synth_run), "--eps", "0,0.05,0.1", "--n", "200",
                            "--steps", "10"], monkeypatch, capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["eps", "accuracy"]
    table = read_json(synth_run / "robustness.json")
    assert table["n"] == 200 and table["norm"] == "linf" and table["steps"] == 10
    accs = [float(v) for v in table["accuracy"].values()]
    assert [float(k) for k in table["accuracy"]] == [0.0, 0.05, 0.1]
    for line, (eps, acc) in zip(lines[1:], table["accuracy"].items(), strict=True):
        assert line.split() == [f"{float(eps):g}", f"{acc:.4f}"]
    assert accs[0] >= accs[1] >= accs[2]
    assert "versions" in table and "git" in table


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([*SYNTH, "--optimizer", "rmsprop"], "optimizer: Input should be 'sgd' or 'adam'"),
        ([*SYNTH, "--schedule", "linear"], "'constant', 'onecycle', 'multistep', 'step' or 'cosine'"),
        ([*SYNTH, "--augment", "crop"], "'none', 'flip' or 'crop-flip'"),
        ([*SYNTH, "--attack", "l1", "--eps", "0.1"], "attack: Input should be 'linf' or 'l2'"),
        ([*SYNTH, "--attack", "linf"], "needs eps > 0"),
        ([*SYNTH, "--model", "mpl"], "Unknown model: 'mpl'. Did you mean 'mlp'? Valid: cnn, linear, mlp"),
        ([*SYNTH, "--hidden", "32,x"], "--hidden must be comma-separated integers"),
        ([*SYNTH, "--act", "tanh"], "Unknown activation: 'tanh'"),
        ([*SYNTH, "--dataset", "mnistt"], "Unknown dataset: 'mnistt'. Did you mean 'mnist'?"),
        ([*SYNTH, "--regularizer", "grad"], "Unknown regularizer: 'grad'"),
        ([*SYNTH, "--device", "tpu"], "--device must be 'cpu' or 'cuda'"),
        (["robustness", "--run", "no/such/run"], "is not a finished training run"),
    ],
)
def test_invalid_values_give_one_line_and_exit_2(args, needle, tmp_path, monkeypatch, capsys) -> None:
    code, out, err = run_cli([*args, "--out", str(tmp_path / "x")] if args[0] == "train" else args,
                             monkeypatch, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err
    assert out == ""
    assert not (tmp_path / "x" / "run.json").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--eps", "0,a"], "--eps must be comma-separated numbers"),
        (["--norm", "l1"], "--norm must be one of 'linf', 'l2'"),
        (["--steps", "0"], "--steps must be"),
    ],
)
def test_robustness_invalid_values(synth_run, args, needle, monkeypatch, capsys) -> None:
    code, _, err = run_cli(["robustness", "--run", str(synth_run), "--n", "10", *args], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err, err


@pytest.mark.slow
def test_train_and_attack_mnist_mlp(mnist_root, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "mnist"
    code, text, _ = run_cli(["train", "--dataset", "mnist", "--data-root", str(mnist_root), "--epochs", "1",
                             "--optimizer", "adam", "--lr", "0.002", "--hidden", "128,128",
                             "--out", str(out), "--quiet"], monkeypatch, capsys)
    assert code == 0, text
    info = read_json(out / "run.json")
    assert info["data"]["n"] == 60_000 and info["test_accuracy"] > 0.95
    code, text, _ = run_cli(["robustness", "--run", str(out), "--data-root", str(mnist_root),
                             "--eps", "0,0.05,0.1", "--n", "300", "--steps", "20"], monkeypatch, capsys)
    assert code == 0
    accs = read_json(out / "robustness.json")["accuracy"]
    assert accs["0.0"] > 0.9 and accs["0.1"] < accs["0.0"]
    print(text)
