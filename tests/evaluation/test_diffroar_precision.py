"""The retrains' precision option: checked before work, passed to the stacked engine, recorded."""

from __future__ import annotations

import json

import pytest
import torch

from gradaudit import ParameterError, evaluation
from gradaudit.data import ImageSet
from gradaudit.evaluation import retrain, retrain_setup
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe

SPEC = ModelSpec(name="mlp", input_shape=(1, 4, 4), num_classes=2, options={"hidden": [8]})
RECIPE = Recipe(epochs=1, batch_size=10, lr=0.05)


def _data(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 2, (n,), generator=g),
                    {"name": "tiny", "classes": ["a", "b"]})


TRAIN, TEST = _data(40, 0), _data(20, 1)
MAPS = (torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(2)),
        torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(3)))


@pytest.fixture
def engine_calls(monkeypatch):
    """The precision every fit_stacked call of the retrainer received (the real engine runs)."""
    calls: list[str] = []
    real = retrain.fit_stacked

    def spy(*args, **kwargs):
        calls.append(kwargs["precision"])
        return real(*args, **kwargs)

    monkeypatch.setattr(retrain, "fit_stacked", spy)
    return calls


def _run(tmp_path, **kw):
    return evaluation.diffroar(None, TRAIN, TEST, attributions=MAPS, spec=SPEC, recipe=RECIPE, seeds=1,
                               levels=[0.25, 0.5], random=False, out=tmp_path, quiet=True, **kw)


def test_fp32_is_the_default_and_is_recorded(tmp_path, engine_calls, one_thread) -> None:
    result = _run(tmp_path)
    assert engine_calls == ["fp32"]
    assert result.to_dict()["config"]["precision"] == "fp32"
    assert json.loads((tmp_path / "result.json").read_text())["config"]["precision"] == "fp32"
    groups = [json.loads(p.read_text()) for p in (tmp_path / "groups").glob("*.json")]
    assert groups and all(g["precision"] == "fp32" for g in groups)


def test_bf16_reaches_the_engine_and_the_results(tmp_path, monkeypatch, engine_calls, one_thread) -> None:
    """With a CUDA device (here: the device check told the CPU is one) bf16 goes down to
    fit_stacked and is recorded in result.json and every group; the curve stays close."""
    monkeypatch.setattr(retrain_setup, "_on_cuda", lambda device: True)
    fp32 = _run(tmp_path / "fp32")
    bf16 = _run(tmp_path / "bf16", precision="bf16")
    assert engine_calls == ["fp32", "bf16"]
    saved = json.loads((tmp_path / "bf16" / "result.json").read_text())
    assert saved["config"]["precision"] == "bf16" == bf16.config["precision"]
    groups = [json.loads(p.read_text()) for p in (tmp_path / "bf16" / "groups").glob("*.json")]
    assert groups and all(g["precision"] == "bf16" for g in groups)
    a, b = fp32.attribution.top.mean, bf16.attribution.top.mean
    assert all(abs(x - y) <= 0.15 for x, y in zip(a, b, strict=True))


def test_reduced_precision_refused_on_the_cpu_before_work(tmp_path, engine_calls) -> None:
    for precision in ("bf16", "tf32"):
        with pytest.raises(ParameterError, match=f"precision='{precision}'.*CUDA speed option.*device='cuda'"):
            _run(tmp_path / precision, precision=precision)
        assert not (tmp_path / precision).exists()
    with pytest.raises(ParameterError, match="'precision'"):
        evaluation.roar(None, TRAIN, TEST, attributions=MAPS, spec=SPEC, recipe=RECIPE, precision="half", quiet=True)
    assert engine_calls == []


def test_reduced_precision_needs_the_stacked_retrainer(monkeypatch, engine_calls) -> None:
    """make_model= / train_fn= retrains run one by one in fp32: bf16 there is refused, not ignored."""
    monkeypatch.setattr(retrain_setup, "_on_cuda", lambda device: True)
    with pytest.raises(ParameterError, match=r"precision='bf16'.*make_model= or train_fn="):
        evaluation.diffroar(None, TRAIN, TEST, attributions=MAPS, make_model=lambda: SPEC.build(0), recipe=RECIPE,
                            precision="bf16", device="cuda", quiet=True)
    assert engine_calls == []
