"""The vmap engine: stacked CNNs and ResNets (BatchNorm buffers per member) equal fit alone;
engine="auto" follows the measured engine table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradaudit import ParameterError
from gradaudit.data import ImageSet
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, fit, stacked_vmap
from gradaudit.training.ensemble import Member, apply_inputs, fit_stacked


def _cifar_like(n: int, side: int, seed: int) -> ImageSet:
    """CIFAR-shaped (3 channels) random images with labels that depend on the images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    centers = torch.rand(4, 3, side, side, generator=g)
    x = (centers[y] + 0.3 * torch.randn(n, 3, side, side, generator=g)).clamp(0, 1)
    return ImageSet(x, y, {"name": "cifar-like", "classes": list("abcd"), "bounds": (0.0, 1.0)})


def _masker(seed: int, n: int, side: int):
    keep = torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) < 0.7

    def fn(xb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return xb * keep[rows]

    return fn


def _state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


CASES = {
    "cnn": (ModelSpec(name="cnn", input_shape=(3, 8, 8), num_classes=4, options={"channels": [4, 8], "hidden": 16}),
            Recipe(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4, augment="flip")),
    "resnet9": (ModelSpec(name="resnet9", input_shape=(3, 16, 16), num_classes=4,
                          options={"width": 4, "stem_pool": 4}, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))),
                Recipe(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True,
                       val_fraction=0.2, schedule="cosine")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_stack_equals_fit_alone(name: str, one_thread: None) -> None:
    """Weights and BatchNorm running statistics (and batch counts) of each member equal
    ``fit`` of that member alone with the same seeds, to float rounding."""
    spec, recipe = CASES[name]
    side = spec.input_shape[1]
    train = _cifar_like(60, side, 0)  # resnet9: 48 training rows, 3 full batches (no BatchNorm of 2 rows)
    members = [Member(init_seed=10 + i, data_seed=i, inputs=_masker(i, 60, side) if i == 1 else None)
               for i in range(3)]
    stacked = fit_stacked(spec, train, recipe, members, engine="vmap", quiet=True)
    assert stacked.engine == "vmap" and len(stacked.history) == recipe.epochs
    for i, (member, net) in enumerate(zip(members, stacked.models, strict=True)):
        alone = spec.build(member.init_seed)
        before = _state(alone)
        result = fit(alone, train.with_x(apply_inputs(member.inputs, train.x)), member.recipe(recipe), quiet=True)
        got, want = _state(net), _state(alone)
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=2e-5, msg=key)
            if "running_var" in key or key.endswith(".weight"):
                assert not torch.equal(want[key], before[key]), key  # it trained: the check has teeth
        for e, entry in enumerate(result.history):
            assert stacked.history[e]["train_loss"][i] == pytest.approx(entry["train_loss"], rel=1e-4)
        assert not net.training
    if name == "resnet9":
        counts = [_state(n)["1.stem.1.num_batches_tracked"].item() for n in stacked.models]
        assert counts == [2 * 3] * 3  # 48 training rows, batch 16: 3 steps an epoch, per member
    first = [next(m.parameters()).detach() for m in stacked.models]
    assert not torch.equal(first[0], first[2])  # each member its own weights, not a shared copy


def test_vmap_refuses_attacks_and_regularizers() -> None:
    spec, recipe = CASES["cnn"]
    train = _cifar_like(16, 8, 0)
    members = [Member(0, 0), Member(1, 1, attack={"attack": "linf", "eps": 0.03})]
    with pytest.raises(ParameterError, match="engine='loop'"):
        fit_stacked(spec, train, recipe, members, engine="vmap", quiet=True)
    # auto never hands such a recipe to the vmap engine, whatever the table says
    table = {"cpu": {"cnn": {"engine": "vmap"}}}
    assert stacked_vmap.auto_engine(spec, False, recipe, members, torch.device("cpu"), table) == "loop"


def test_auto_follows_the_engine_table(monkeypatch: pytest.MonkeyPatch) -> None:
    spec, recipe = CASES["cnn"]
    train = _cifar_like(16, 8, 0)
    members = [Member(0, 0), Member(1, 1)]
    shipped = stacked_vmap.engine_table()
    assert shipped["cpu"]["cnn"]["engine"] == "loop"  # measured: vmap does not pay on a CPU
    assert fit_stacked(spec, train, recipe.model_copy(update={"epochs": 1}), members, quiet=True).engine == "loop"
    monkeypatch.setattr(stacked_vmap, "engine_table", lambda path=None: {"cpu": {"cnn": {"engine": "vmap"}}})
    assert fit_stacked(spec, train, recipe.model_copy(update={"epochs": 1}), members, quiet=True).engine == "vmap"
    mlp = ModelSpec(name="mlp", input_shape=(3, 8, 8), num_classes=4, options={"hidden": [8]})
    assert stacked_vmap.model_family(mlp, True) == "mlp"
    assert stacked_vmap.auto_engine(mlp, True, recipe, members, torch.device("cpu"), {}) == "bmm"
    assert stacked_vmap.auto_engine(spec, False, recipe, members, torch.device("cuda"),
                                    {"cuda": {"cnn": {"engine": "vmap"}}}) == "vmap"
    resnet = CASES["resnet9"][0]
    assert stacked_vmap.model_family(resnet, False) == "resnet"
    assert stacked_vmap.auto_engine(resnet, False, recipe, members, torch.device("cpu"), {}) == "loop"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_vmap_on_cuda_matches_cpu() -> None:
    spec, recipe = CASES["resnet9"]
    train = _cifar_like(60, 16, 0)
    members = [Member(init_seed=10 + i, data_seed=i) for i in range(3)]
    cpu = fit_stacked(spec, train, recipe, members, engine="vmap", quiet=True)
    gpu = fit_stacked(spec, train, recipe, members, engine="vmap", quiet=True, device="cuda")
    for a, b in zip(cpu.models, gpu.models, strict=True):
        for key, value in _state(a).items():
            torch.testing.assert_close(_state(b)[key], value, rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.slow
def test_benchmark_records_the_engine_table(tmp_path: Path) -> None:
    """bench/train_throughput.py --stacked --record writes the fastest engine per family (the
    loop unless a stacked engine beats it by the margin) into a table that auto reads."""
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"cuda": {"cnn": {"engine": "vmap"}}}))  # other devices are kept
    script = Path(__file__).resolve().parents[2] / "bench" / "train_throughput.py"
    done = subprocess.run(
        [sys.executable, str(script), "--stacked", "--small", "--families", "mlp,cnn", "--members", "2",
         "--repeats", "1", "--threads", "1", "--record", "--table", str(table), "--note", "test"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    written = stacked_vmap.engine_table(table)
    assert written["cuda"] == {"cnn": {"engine": "vmap"}}
    for family, engines in (("mlp", {"loop", "bmm", "vmap"}), ("cnn", {"loop", "vmap"})):
        entry = written["cpu"][family]
        assert set(entry["measured"]) == engines and entry["note"] == "test"
        loop, fastest = entry["measured"]["loop"], min(entry["measured"], key=entry["measured"].get)
        want = fastest if entry["measured"][fastest] * entry["margin"] < loop else "loop"
        assert entry["engine"] == want
        assert entry["ratio"] == pytest.approx(loop / entry["measured"][want], rel=1e-2)
    spec = CASES["cnn"][0]
    chosen = stacked_vmap.auto_engine(spec, False, CASES["cnn"][1], [Member(0, 0)], torch.device("cpu"), written)
    assert chosen == written["cpu"]["cnn"]["engine"]
