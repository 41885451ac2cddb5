"""The CLI on a user's own model (issue 16): --model file.py:factory or module:factory, --weights,
--data file.npz, --train-fn, for diffroar, attribute, road and perturb."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gradaudit.user_model import load_callable, load_npz, load_user_model

from clirun import run_cli

MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn


    def make_model():
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))


    def make_wide():  # for 8×8 images: does not take the data's 4×4
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 2))


    def train_fn(model, x, y):
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(3):
            for b in torch.randperm(len(x)).split(16):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[b]), y[b]).backward()
                opt.step()
        return model
''')


pytestmark = pytest.mark.usefixtures("one_thread")  # small models: threads only add overhead


@pytest.fixture
def user(tmp_path):
    """A model file, trained weights (safetensors) and an .npz of standardized images."""
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 2, n)
        x = rng.uniform(0, 0.5, (n, 1, 4, 4)).astype(np.float32)
        x[:, 0, 0, 0] += 0.5 * y
        return (x - 0.13) / 0.31, y  # standardized: about −0.42 … 2.8

    x_train, y_train = split(64)
    x_test, y_test = split(32)
    np.savez(tmp_path / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    module = load_callable(f"{tmp_path / 'mymodel.py'}:train_fn", "--train-fn").__globals__
    torch.manual_seed(0)
    net = module["train_fn"](module["make_model"](), torch.from_numpy(x_train), torch.from_numpy(y_train))
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    return tmp_path


@pytest.mark.slow
def test_cli_diffroar_on_a_model_file_and_npz_resumes(user, capsys) -> None:
    args = ["diffroar", "--model", f"{user / 'mymodel.py'}:make_model", "--weights", str(user / "w.safetensors"),
            "--data", str(user / "data.npz"), "--train-fn", f"{user / 'mymodel.py'}:train_fn", "--method", "grad",
            "--levels", "0.25,0.5", "--seeds", "2", "--out", str(user / "audit"), "--json", "-q"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    record = json.loads(out)
    assert record["command"] == "diffroar" and record["model"].endswith("mymodel.py:make_model")
    assert record["bounds_source"] == "measured" and record["bounds"][0] < 0 < 1 < record["bounds"][1]
    assert record["config"]["train_fn"].endswith(":train_fn")
    assert record["config"]["architecture"]["parameters"] == 2 * 9 + 2 + 32 * 2 + 2
    assert record["settings"]["n_train"] == 64 and record["settings"]["n_test"] == 32
    curves = record["curves"]
    assert set(curves) == {"attribution", "random"} and len(curves["random"]["diffroar"]["per_seed"]) == 2
    assert (user / "audit" / "diffroar.json").exists() and (user / "audit" / "diffroar.png").exists()
    retrains = sorted((user / "audit" / "retrains" / "groups").glob("*.json"))
    assert len(retrains) == 16
    stamps = [p.stat().st_mtime_ns for p in retrains]
    code, out2, err = run_cli(capsys, *args)  # a rerun reuses every finished retrain
    assert code == 0, err
    assert json.loads(out2)["curves"] == curves
    assert [p.stat().st_mtime_ns for p in retrains] == stamps


def test_cli_diffroar_recipe_options_and_module_path(user, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(user))
    code, out, err = run_cli(capsys, "diffroar", "--model", "mymodel:make_model", "--weights", str(user / "w.pt"),
                             "--data", str(user / "data.npz"), "--epochs", "1", "--lr", "0.1", "--levels", "0.5",
                             "--seeds", "1", "--no-random", "--out", str(user / "r"), "--json", "-q")
    assert code == 0, err
    record = json.loads(out)
    assert record["config"]["recipe"]["epochs"] == 1 and record["config"]["train_fn"] is None
    assert 0.0 <= record["curves"]["attribution"]["top"]["mean"][0] <= 1.0


def test_cli_attribute_road_perturb_on_own_model(user, capsys) -> None:
    own = ["--model", f"{user / 'mymodel.py'}:make_model", "--weights", str(user / "w.safetensors"),
           "--data", str(user / "data.npz")]
    code, out, err = run_cli(capsys, "attribute", *own, "--method", "ig", "--n", "4",
                             "--save", str(user / "maps.safetensors"), "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 4 and (user / "maps.safetensors").exists()
    code, out, err = run_cli(capsys, "road", *own, "--n", "16", "--percentages", "0.5", "--order", "morf",
                             "--out", str(user / "road.json"), "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["data"].endswith("data.npz")
    code, out, err = run_cli(capsys, "perturb", *own, "--n", "16", "--fractions", "0.25,0.5",
                             "--out", str(user / "perturb.json"), "--json", "-q")
    assert code == 0, err
    assert (user / "perturb.json").exists()


def test_cli_own_model_errors_are_one_line(user, capsys, tmp_path) -> None:
    model = f"{user / 'mymodel.py'}:make_model"
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 1, 4, 4), np.float32), y_train=np.zeros(2, np.int64))
    cases = [
        (["diffroar", "--run", str(user), "--model", model, "--data", str(user / "data.npz")], "not both"),
        (["road", "--model", model], "--data file.npz"),
        (["perturb", "--model", f"{user / 'mymodel.py'}:nothing", "--data", str(user / "data.npz")], "no attribute"),
        (["road", "--model", model, "--data", str(tmp_path / "bad.npz")], "lacks x_test, y_test"),
        (["attribute", "--model", "torch.nn:Linear", "--data", str(user / "data.npz"), "--save", "m.safetensors"],
         "Linear"),
        (["diffroar", "--model", model, "--weights", str(user / "mymodel.py"), "--data", str(user / "data.npz")],
         "--weights"),
        # a method whose options are fitted on the data (pattern): the model is checked first
        (["diffroar", "--model", f"{user / 'mymodel.py'}:make_wide", "--data", str(user / "data.npz"),
          "--method", "pattern-attribution"], "does not take inputs of shape (1, 4, 4)"),
    ]
    for args, needle in cases:
        code, _, err = run_cli(capsys, *args)
        assert code == 2, (args, err)
        assert needle in err and len(err.strip().splitlines()) == 1, (args, err)


def test_loaders(user) -> None:
    train, test = load_npz(user / "data.npz")
    assert train.meta["bounds_source"] == "measured" and train.bounds == test.bounds
    net, make = load_user_model(f"{user / 'mymodel.py'}:make_model", user / "w.safetensors")
    assert not net.training and sum(p.numel() for p in make().parameters()) == 86


def test_guide_commands_and_api_calls_exist() -> None:
    """docs/own-model.md: every flag of its gradaudit command lines is an option of that command,
    and its Python blocks compile and call evaluation.diffroar with real parameter names."""
    import inspect
    import re
    from pathlib import Path

    import typer

    from gradaudit import cli, evaluation

    text = (Path(__file__).resolve().parents[1] / "docs" / "own-model.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    commands = typer.main.get_command(cli.app).commands
    lines = " ".join(body.replace("\\\n", " ") for _, body in blocks).split("gradaudit ")[1:]
    assert len(lines) >= 4
    for line in lines:
        name, *words = line.split()
        if name not in commands:
            continue
        options = {o for p in commands[name].params for o in (*p.opts, *p.secondary_opts)}
        flags = {w for w in words if w.startswith("--")}
        assert flags <= options, (name, flags - options)
    python = [body for lang, body in blocks if lang == "python"]
    assert python
    for body in python:
        compile(body, "own-model.md", "exec")
    params = inspect.signature(evaluation.diffroar).parameters
    call = re.search(r"evaluation\.diffroar\((.*?)\n\)", python[0], re.S).group(1)
    assert {k for k in re.findall(r"(\w+)=", call)} <= set(params)


def test_own_model_diffroar_checks_its_arguments_once(user, capsys, monkeypatch) -> None:
    """The own-model path runs the protocol's one argument check (in evaluation.diffroar), as
    a --run does, and user_model imports no CLI module."""
    import ast
    import importlib
    import inspect

    from gradaudit import user_model

    calls = []
    check = importlib.import_module("gradaudit.evaluation.retrain_setup").check_arguments
    for where in ("gradaudit.evaluation.retrain_setup", "gradaudit.evaluation.diffroar"):
        monkeypatch.setattr(importlib.import_module(where), "check_arguments",
                            lambda *a, **k: calls.append(a[0]) or check(*a, **k))
    code, out, err = run_cli(capsys, "diffroar", "--model", f"{user / 'mymodel.py'}:make_model", "--data",
                             str(user / "data.npz"), "--epochs", "1", "--levels", "0.5", "--seeds", "1",
                             "--no-random", "--out", str(user / "once"), "--json", "-q")
    assert code == 0, err
    assert calls == ["diffroar()"]
    assert "train_is_run_data" not in json.loads(out)["settings"]
    tree = ast.parse(inspect.getsource(user_model))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and ("cli" in m)}, imported
