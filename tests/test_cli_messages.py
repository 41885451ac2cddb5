"""Errors and help in the command line's words: the option, the file, the fix (issue 13, item 8)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from gradaudit import data, models, training

from .clirun import run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_root) -> Path:
    """An MLP 784-8-10 fitted for one epoch on 500 MNIST training images (run.json names mnist)."""
    out = tmp_path_factory.mktemp("messages") / "run"
    train = data.load("mnist", "train", root=mnist_root).subset(slice(0, 500))
    spec = models.ModelSpec(name="mlp", input_shape=train.input_shape, num_classes=10, options={"hidden": [8]})
    training.fit(spec.build(seed=0), train, training.Recipe(epochs=1, val_fraction=0.0), out=out, quiet=True,
                 spec=spec.model_dump(mode="json"))
    return out


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("args", "says", "not_says"),
    [
        # was: "The 'eps' parameter of robust_accuracy must be a float in [0, inf)"
        (["robustness", "--eps=0,-1"], "error: --eps must be a float in [0, inf). Got -1.0.", "robust_accuracy"),
        # was: "The 'fmt' parameter of figure_bytes() must be one of ..."
        (["attribute", "--out", "m.jpg"], "error: --out must end in .png, .pdf or .svg (the figure's format). "
                                          "Got 'm.jpg'.", "figure_bytes"),
        # was: "The 'n_steps' parameter of attribute('ig') must be an int ..."
        (["road", "--method", "ig", "-o", "n_steps=0"], "error: -o n_steps must be an int in [1, inf). Got 0.",
         "parameter of"),
        (["diffroar", "--n-train", "0"], "error: --n-train must be an int in [1, inf). Got 0.", "parameter of"),
    ],
    ids=["robustness-eps", "attribute-out-format", "method-option", "n-train"],
)
def test_library_checks_name_the_cli_option(capsys, tiny_run, mnist_root, args, says, not_says):
    before = _files(tiny_run)
    code, out, err = run_cli(capsys, args[0], "--run", str(tiny_run), *args[1:], "--data-root", str(mnist_root), "-q")
    assert code == 2 and out == "", err
    assert err == says + "\n"
    assert not_says not in err
    assert _files(tiny_run) == before


def test_a_retrain_folder_of_other_settings_names_out(capsys, tiny_run, mnist_root, tmp_path):
    folder = tmp_path / "dr"
    (folder / "retrains").mkdir(parents=True)
    (folder / "retrains" / "config.json").write_text(json.dumps({"config_hash": "0" * 16}))
    code, _, err = run_cli(capsys, "diffroar", "--run", str(tiny_run), "--out", str(folder), "--levels", "0.5",
                           "--seeds", "1", "--n-train", "100", "--n-test", "50", "--data-root", str(mnist_root), "-q")
    assert code == 2 and "Write to another folder (--out of gradaudit diffroar" in err, err
    assert "'out'" not in err


def test_a_corrupt_data_file_says_the_fix_the_cli_has(capsys, tmp_path, monkeypatch, mnist_root):
    monkeypatch.setenv("GRADAUDIT_OFFLINE", "1")
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for f in (mnist_root / "mnist").iterdir():
        (root / "mnist" / f.name).symlink_to(f)
    labels = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.unlink()
    labels.write_bytes(gzip.compress(b"not an idx file"))
    code, _, err = run_cli(capsys, "train", "--dataset", "mnist", "--out", str(tmp_path / "run"),
                           "--data-root", str(root), "-q")
    assert code == 2 and f"Corrupt data file {labels}" in err and "Delete it and put a fresh copy" in err, err
    assert "verify=False" not in err  # a Python argument no command has


@pytest.mark.parametrize("command", ["diffroar", "road", "train", "run", "attribute", "robustness", "leakage"])
def test_help_shows_flags_without_types_and_whole_defaults(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert "<bool>" not in out and "…" not in out and "list[str]" not in out
    assert re.search(r"--quiet\s+No progress bars", out) or re.search(r"-q, --quiet\s+No progress", out), out
    if command == "diffroar":
        text = "".join(out.split())
        assert "[default:0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1]" in text  # whole, not cut to "…"
        assert re.search(r"--mask-only\s+Also retrain", out) and "NAME=VALUE" in out


@pytest.mark.parametrize(("text", "value"), [
    ("n_steps=32", 32), ("sigma=None", None), ("sigma=null", None), ("lr=1e-3", 0.001), ("bounds=[0, 1]", [0, 1]),
    ("rule=riemann-middle", "riemann-middle"), ("baseline=mean", "mean"), ("flag=True", True), ("name=", ""),
    ("name='None'", "None"),
])
def test_the_one_option_parser(text, value):
    """A Python literal where the value is one, else YAML; the type is part of the answer."""
    from gradaudit._cli_options import parse_option

    key, got = parse_option(text)
    assert key == text.split("=")[0] and got == value and type(got) is type(value)


def test_every_command_reads_an_option_the_same(capsys, tiny_run, mnist_root, tmp_path):
    """`-o sigma=None` is None in `attribute` and in `road` alike (road read it as the string
    'None', which smoothgrad refused): both record the same options and use the same maps."""
    import torch
    from safetensors import safe_open

    from gradaudit import attribution, evaluation
    from gradaudit._io import load_tensors, read_json

    maps_file, road_file = tmp_path / "maps.safetensors", tmp_path / "road.json"
    same = ["--run", str(tiny_run), "--method", "smoothgrad", "-o", "sigma=None", "-o", "n_samples=3", "--n", "8",
            "--seed", "2", "--data-root", str(mnist_root), "-q"]
    code, _, err = run_cli(capsys, "attribute", *same, "--save", str(maps_file))
    assert code == 0, err
    code, _, err = run_cli(capsys, "road", *same, "--percentages", "0.5", "--fill", "zero", "--out", str(road_file))
    assert code == 0, err
    with safe_open(str(maps_file), "pt") as f:
        saved_options = json.loads(f.metadata()["options"])
    record = read_json(road_file)
    assert saved_options == record["settings"]["method_options"] == {"sigma": None, "n_samples": 3}
    net, _ = training.load_run(tiny_run)
    test = data.load("mnist", "test", root=mnist_root).subset(slice(0, 8))
    direct = attribution.attribute("smoothgrad", net, test.x, test.y, sigma=None, n_samples=3, seed=2)
    assert torch.equal(load_tensors(maps_file)["attributions"], direct)
    road = evaluation.road(net, test.x, test.y, direct, percentages=[0.5], fill="zero", seed=2)
    assert record["morf"]["accuracy"] == list(road.morf.accuracy) and record["score"] == road.gap
