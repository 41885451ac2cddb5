"""`gradaudit attribute`: the grid figure, the saved maps, the method list in --help, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradaudit import attribution, training
from gradaudit._io import load_tensors
from gradaudit.attribution import METHODS
from gradaudit.models import ModelSpec

from clirun import run_cli as cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_slice) -> Path:
    """A finished run: a small CNN trained one epoch on the 300-image MNIST slice."""
    out = tmp_path_factory.mktemp("run")
    spec = ModelSpec(name="cnn", input_shape=(1, 28, 28), num_classes=10, options={"channels": [4, 8], "hidden": 16})
    recipe = training.Recipe(epochs=1, batch_size=100, lr=0.05, val_fraction=0.0)
    training.fit(spec.build(seed=0), mnist_slice, recipe, out=out, quiet=True, spec=spec.model_dump(mode="json"))
    return out


def test_help_lists_every_method_with_its_options(capsys):
    code, out, _ = cli(capsys, "attribute", "--help")
    text = " ".join(out.split())  # rich wraps lines
    assert code == 0
    for name, spec in METHODS.items():
        assert f"{name}:" in text
        for key, opt in spec.options.items():
            assert f"{key}={opt.shown()}" in text


def test_grid_and_saved_maps(capsys, run_dir, mnist_root, tmp_path):
    code, out, err = cli(capsys, "attribute", "--run", str(run_dir), "--method", "ig", "--n", "4", "-o", "n_steps=8",
                         "-o", "rule='riemann-middle'", "--out", str(tmp_path / "maps.png"),
                         "--save", str(tmp_path / "maps.safetensors"), "--data-root", str(mnist_root))
    assert code == 0, err
    assert "ig on 4 mnist test images" in out
    assert (tmp_path / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = load_tensors(tmp_path / "maps.safetensors")
    assert saved["x"].shape == saved["attributions"].shape == (4, 1, 28, 28)
    net, _ = training.load_run(run_dir)
    expected = attribution.attribute("ig", net, saved["x"], saved["target"], n_steps=8, rule="riemann-middle")
    torch.testing.assert_close(saved["attributions"], expected)


def test_fitted_method_and_predicted_target(capsys, run_dir, mnist_root, tmp_path):
    code, out, err = cli(capsys, "attribute", "--run", str(run_dir), "--method", "pattern-attribution", "--n", "3",
                         "--target", "predicted", "--fit-n", "64", "--save", str(tmp_path / "pa.safetensors"),
                         "--data-root", str(mnist_root), "--json")
    assert code == 0, err
    assert '"method": "pattern-attribution"' in out
    saved = load_tensors(tmp_path / "pa.safetensors")
    net, _ = training.load_run(run_dir)
    assert torch.equal(saved["target"], net(saved["x"]).argmax(1))
    assert torch.isfinite(saved["attributions"]).all() and saved["attributions"].abs().sum() > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "igg"], "Unknown attribution method: 'igg'. Did you mean 'ig'?"),
        (["--method", "ig", "-o", "n_steps"], "--option must be name=value"),
        (["--method", "ig", "-o", "n_step=3"], "Unknown option of attribute('ig'): 'n_step'. Did you mean 'n_steps'?"),
        (["--method", "ig", "--target", "truth"], "--target must be one of"),
    ],
)
def test_user_errors_are_one_line(capsys, run_dir, mnist_root, tmp_path, args, message):
    code, _, err = cli(capsys, "attribute", "--run", str(run_dir), *args, "--n", "2", "--save",
                       str(tmp_path / "m.safetensors"), "--data-root", str(mnist_root))
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "m.safetensors").exists()
