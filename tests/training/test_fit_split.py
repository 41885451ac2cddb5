"""fit trains on the training split only; the held-out split is carved from train, seeded."""

from __future__ import annotations

import pytest
import torch

from gradaudit import data, models, training
from gradaudit._validation import ParameterError


def _unique_toy(n: int = 400) -> data.ImageSet:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 1, 6, 6, generator=g)
    x[:, 0, 0, 0] = y.float() / 2  # a learnable cue
    return data.ImageSet(x, y, {"name": "toy", "split": "train", "classes": [0, 1, 2]})


def test_training_sees_exactly_the_rest_split_each_epoch() -> None:
    train = _unique_toy()
    recipe = training.Recipe(epochs=2, batch_size=32, val_fraction=0.25, seed=7)
    rest, held = train.split(0.25, seed=7)
    assert len(held) == 100 and len(rest) == 300
    key = {bytes(x.numpy().tobytes()): i for i, x in enumerate(train.x)}
    rest_rows = {key[bytes(x.numpy().tobytes())] for x in rest.x}
    held_rows = {key[bytes(x.numpy().tobytes())] for x in held.x}
    assert not rest_rows & held_rows

    net = models.build("mlp", (1, 6, 6), 3, seed=0, hidden=(16,))
    seen: list[list[int]] = [[], []]
    epoch = {"now": 0}

    def record(module, args):
        if module.training:
            seen[epoch["now"]].extend(key[bytes(x.numpy().tobytes())] for x in args[0])

    handle = net.register_forward_pre_hook(record)
    result = training.fit(net, train, recipe, quiet=True,
                          on_epoch_end=lambda e, h: epoch.update(now=min(e + 1, 1)))
    handle.remove()
    for rows in seen:
        assert sorted(rows) == sorted(rest_rows)  # every training row once, no held-out row
    assert seen[0] != seen[1]  # reshuffled each epoch
    # val_acc is the accuracy on the held-out split of the last epoch's model
    assert result.history[-1]["val_acc"] == training.accuracy(net, held.x, held.y)
    assert "val_acc" not in training.fit(
        models.build("mlp", (1, 6, 6), 3, seed=0, hidden=(16,)), train,
        recipe.model_copy(update={"val_fraction": 0.0, "epochs": 1}), quiet=True).history[0]


def test_accuracy_and_predict() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten())  # no parameters: logits are the pixels
    x = torch.zeros(5, 1, 1, 3)
    x[torch.arange(5), 0, 0, torch.tensor([0, 1, 2, 2, 0])] = 1.0
    y = torch.tensor([0, 1, 2, 0, 0])
    assert training.predict(net, x, batch_size=2).tolist() == [0, 1, 2, 2, 0]
    assert training.accuracy(net, x, y, batch_size=3) == 0.8  # exact: count / n, not a float32 mean
    with pytest.raises(ParameterError, match=r"'y' argument of accuracy must have shape \(5,\)"):
        training.accuracy(net, x, y[:4])
