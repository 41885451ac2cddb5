"""Bad arguments of diffroar / roar / kar: one clear error, before any work starts."""

from __future__ import annotations

import importlib

import pytest
import torch

from gradaudit import GradauditError, ParameterError, ParameterTypeError, evaluation
from gradaudit.data import ImageSet
from gradaudit.evaluation import retrain
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe

SPEC = ModelSpec(name="linear", input_shape=(1, 2, 3), num_classes=2)
RECIPE = Recipe(epochs=1, batch_size=4)


def _data(n: int) -> ImageSet:
    g = torch.Generator().manual_seed(n)
    return ImageSet(torch.rand(n, 1, 2, 3, generator=g), torch.randint(0, 2, (n,), generator=g),
                    {"name": "tiny", "classes": ["a", "b"]})


TRAIN, TEST = _data(12), _data(8)
GOOD = {"attributions": (torch.rand(12, 1, 2, 3), torch.rand(8, 1, 2, 3)), "spec": SPEC, "recipe": RECIPE}

CASES = {
    "level zero": ({"levels": [0.0, 0.5]}, ParameterError, "'levels'.*\\(0, 1\\]"),
    "level above one": ({"levels": [0.5, 1.5]}, ParameterError, "'levels'"),
    "negative level": ({"levels": [-0.1]}, ParameterError, "'levels'"),
    "no levels": ({"levels": []}, ParameterError, "'levels'"),
    "duplicate levels": ({"levels": [0.1, 0.1]}, ParameterError, "distinct"),
    "string levels": ({"levels": "0.5"}, ParameterError, "'levels'"),
    "zero seeds": ({"seeds": 0}, ParameterError, "'seeds'.*3 is the protocol minimum"),
    "negative seeds": ({"seeds": -2}, ParameterError, "'seeds'"),
    "float seeds": ({"seeds": 2.0}, ParameterError, "'seeds'"),
    "train maps shape": ({"attributions": (torch.rand(12, 1, 3, 2), torch.rand(8, 1, 2, 3))},
                         ParameterError, "attributions\\[0\\].*\\(12, 1, 2, 3\\).*\\(12, 1, 3, 2\\)"),
    "test maps count": ({"attributions": (torch.rand(12, 1, 2, 3), torch.rand(7, 1, 2, 3))},
                        ParameterError, "attributions\\[1\\]"),
    "maps not a pair": ({"attributions": torch.rand(12, 1, 2, 3)}, ParameterTypeError, "pair"),
    "no maps no method": ({"attributions": None}, ParameterError, "exactly one of"),
    "both maps and method": ({"method": "grad"}, ParameterError, "exactly one of"),
    "nli fill": ({"fill": "nli"}, ParameterError, "not supported for retraining"),
    "unknown fill": ({"fill": "median"}, ParameterError, "'fill'"),
    "unknown rank": ({"rank": "channel"}, ParameterError, "'rank'.*channel-sum"),
    "unknown target": ({"target": "true"}, ParameterError, "'target'"),
    "unknown engine": ({"engine": "grouped"}, ParameterError, "'engine'"),
    "zero max_stack": ({"max_stack": 0}, ParameterError, "'max_stack'"),
    "negative seed": ({"seed": -1}, ParameterError, "'seed'"),
    "unknown precision": ({"precision": "fp16"}, ParameterError, "'precision'"),
    "bf16 on the cpu": ({"precision": "bf16"}, ParameterError, "precision='bf16'.*CUDA.*'cpu'.*precision='fp32'"),
    "tf32 on the cpu": ({"precision": "tf32"}, ParameterError, "precision='tf32'.*CUDA"),
    "non-bool control": ({"mask_only": "yes"}, ParameterTypeError, "'mask_only'"),
    "no spec": ({"spec": None}, ParameterTypeError, "spec=models.ModelSpec"),
    "no recipe": ({"recipe": {"epochs": 1}}, ParameterTypeError, "recipe=training.Recipe"),
    "spec with too few classes": ({"spec": ModelSpec(name="linear", input_shape=(1, 2, 3), num_classes=1)},
                                  ParameterError, "1 classes, the labels go up to 1"),
    "spec of other inputs": ({"spec": ModelSpec(name="linear", input_shape=(1, 3, 2), num_classes=2)},
                             ParameterError, "takes inputs"),
}


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if any retraining or attribution starts."""
    def boom(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(retrain, "fit_stacked", boom)
    monkeypatch.setattr(importlib.import_module("gradaudit.evaluation.retrain_setup"), "rank_positions", boom)


@pytest.mark.parametrize("protocol", ["diffroar", "roar", "kar"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_arguments_fail_before_work(case: str, protocol: str, tmp_path, no_work) -> None:
    change, error, pattern = CASES[case]
    with pytest.raises(error, match=pattern) as info:
        getattr(evaluation, protocol)(None, TRAIN, TEST, **{**GOOD, **change}, out=tmp_path / "out", quiet=True)
    assert isinstance(info.value, GradauditError)
    assert not (tmp_path / "out").exists()


def test_method_needs_a_model_and_a_known_name(no_work) -> None:
    kw = {"spec": SPEC, "recipe": RECIPE, "quiet": True}
    with pytest.raises(ParameterError, match="needs the audited model"):
        evaluation.diffroar(None, TRAIN, TEST, method="grad", **kw)
    with pytest.raises(ParameterError, match=r"Unknown attribution method.*'grad'"):
        evaluation.diffroar(SPEC.build(0), TRAIN, TEST, method="grda", **kw)
    with pytest.raises(ParameterTypeError, match="'model'"):
        evaluation.diffroar(42, TRAIN, TEST, method="grad", **kw)
    with pytest.raises(ParameterError, match="not a finished training run"):
        evaluation.diffroar("/nonexistent/run", TRAIN, TEST, method="grad", **kw)


def test_train_and_test_must_match(no_work) -> None:
    other = ImageSet(torch.rand(8, 1, 3, 2), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ParameterError, match="one shape"):
        evaluation.diffroar(None, TRAIN, other, **GOOD, quiet=True)
    with pytest.raises(ParameterTypeError, match="'test'"):
        evaluation.diffroar(None, TRAIN, TEST.x, **GOOD, quiet=True)
