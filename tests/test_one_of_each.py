"""One of each: one seed module, one mode/device helper module, one mask view; the old
import paths still work and name the same objects, and derived seeds are unchanged."""

from __future__ import annotations

import torch

from gradaudit import _seeding, _torch_utils
from gradaudit.attribution import _core
from gradaudit.data._seeding import split_generator
from gradaudit.evaluation import _curves, retrain, retrain_setup
from gradaudit.masking import fill
from gradaudit.training import attacks, eval_mode


def test_old_paths_name_the_one_helper() -> None:
    assert _core.derive_seed is retrain_setup.derive_seed is _seeding.derive_seed
    assert _curves.stream_seed is _seeding.stream_seed
    assert eval_mode is attacks.eval_mode is _torch_utils.eval_mode
    assert _curves.model_device is _torch_utils.model_device
    assert retrain.MASK_VIEW is fill.MASK_VIEW


def test_derived_seeds_are_unchanged() -> None:
    """Values computed by the separate copies before they were merged (bit-identical results)."""
    assert _seeding.derive_seed(0, "inner") == 25510714494987180
    assert _seeding.derive_seed(7, "random-train") == 7033974782494028
    assert _seeding.stream_seed(3, "road-noise", "morf", 0.5) == 3004178378974085398
    assert split_generator(1, "blockmnist", "test").initial_seed() == 8140896518130695871


def test_model_device_and_eval_mode() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    assert _torch_utils.model_device(net) == torch.device("cpu")
    assert _torch_utils.model_device(torch.nn.ReLU(), default="meta") == torch.device("meta")
    assert _torch_utils.model_device(net, "meta") == torch.device("meta")
    net[1].train()
    net[0].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net] == [False, True]
