"""The device-resident training loop gives the numbers of the host loop it replaced.

``_reference_fit`` is a frozen copy of ``training.fit``'s step loop before issue 15 (batches
gathered on the host and moved per step, loss and accuracy read with ``.item()`` / ``int``
every step). It was checked against ``fit`` at that revision (same weights, bitwise); the
device-resident ``fit`` must still match it bitwise, weights and history alike.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradaudit.data import ImageSet
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, accuracy, fit, lr_at, make_optimizer, predict
from gradaudit.training.attacks import pgd
from gradaudit.training.augment import augment_batch
from gradaudit.training.regularizers import regularization

from toydata import prototypes


def _toy(n: int, seed: int) -> ImageSet:
    return prototypes(n, seed, noise=0.3)


def _reference_fit(model: torch.nn.Module, train: ImageSet, recipe: Recipe) -> list[tuple[float, float, float | None]]:
    """The pre-issue-15 loop; returns per epoch (train_loss, train_acc, val_acc)."""
    data, val = (train, None)
    if recipe.val_fraction > 0:
        data, val = train.split(recipe.val_fraction, seed=recipe.seed)
    optimizer = make_optimizer(model.parameters(), recipe)
    cpu, dev = torch.Generator().manual_seed(recipe.seed), torch.Generator().manual_seed(recipe.seed + 1)
    n, size = len(data), recipe.batch_size
    steps = (n + size - 1) // size
    history = []
    for epoch in range(recipe.epochs):
        perm = torch.randperm(n, generator=cpu)
        loss_sum, correct = 0.0, 0
        model.train()
        for step in range(steps):
            idx = perm[step * size : (step + 1) * size]
            xb = augment_batch(data.x[idx], recipe.augment, cpu)
            yb = data.y[idx]
            if recipe.attack is not None:
                xb = pgd(model, xb, yb, norm=recipe.attack, eps=recipe.eps, steps=recipe.attack_steps,
                         step_size=recipe.step_size, random_start=recipe.attack_random_start,
                         bounds=data.bounds, generator=dev)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if recipe.regularizer is not None:
                loss = loss + recipe.reg_weight * regularization(recipe.regularizer, model, xb, yb,
                                                                  dict(recipe.reg_options), dev)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(recipe, epoch, step, steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        val_acc = None
        if val is not None:
            model.eval()
            val_acc = int((predict(model, val.x) == val.y).sum()) / len(val)
        history.append((loss_sum / n, correct / n, val_acc))
    model.eval()
    return history


SPEC = ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3, options={"hidden": [16, 8], "act": "softplus"})
RECIPES = {
    "sgd-onecycle-val-flip": Recipe(epochs=2, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4,
                                    schedule="onecycle", val_fraction=0.2, augment="flip"),
    "adam-linf-pgd": Recipe(epochs=2, batch_size=50, optimizer="adam", lr=1e-3, attack="linf", eps=8 / 255,
                            attack_steps=3),
    "sgd-l2-pgd": Recipe(epochs=1, batch_size=40, lr=0.05, attack="l2", eps=0.5, attack_steps=2, seed=3),
    "gradnorm": Recipe(epochs=1, batch_size=40, lr=0.05, regularizer="gradnorm", reg_weight=0.1),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_fit_is_bitwise_the_host_loop(name: str) -> None:
    train, recipe = _toy(240, 0), RECIPES[name]
    ours, ref = SPEC.build(5), SPEC.build(5)
    result = fit(ours, train, recipe, quiet=True)
    expected = _reference_fit(ref, train, recipe)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
    got = [(h["train_loss"], h["train_acc"], h.get("val_acc")) for h in result.history]
    assert got == expected  # exact: the device sum adds the same float64 terms in order
    assert 0.0 < expected[-1][0] < 5.0 and 0.0 < expected[-1][1] <= 1.0


def test_metrics_count_exactly() -> None:
    data = _toy(2500, 1)
    net = SPEC.build(0).eval()
    pred = predict(net, data.x, batch_size=700)
    with torch.no_grad():
        direct = net(data.x).argmax(1)
    assert torch.equal(pred, direct)
    assert accuracy(net, data.x, data.y, batch_size=700) == int((direct == data.y).sum()) / 2500


@pytest.mark.slow
def test_precision_option_of_stacked_training() -> None:
    """fp32 is the default; tf32 is fp32 on the CPU; bf16 products train close to fp32."""
    from gradaudit import ParameterError
    from gradaudit.training.ensemble import Member, fit_stacked

    train, test = _toy(300, 2), _toy(300, 3)
    spec = ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3, options={"hidden": [16]})
    recipe = Recipe(epochs=1, batch_size=50, lr=0.05, momentum=0.9, attack_steps=2)
    members = [Member(0, 0), Member(1, 1, attack={"attack": "linf", "eps": 4 / 255})]
    runs = {p: fit_stacked(spec, train, recipe, members, quiet=True, precision=p) for p in ("fp32", "tf32", "bf16")}
    assert [runs[p].precision for p in runs] == ["fp32", "tf32", "bf16"]
    for a, b, c in zip(*(runs[p].models for p in runs), strict=True):
        wa, wb, wc = (torch.cat([q.detach().flatten() for q in m.parameters()]) for m in (a, b, c))
        assert torch.equal(wa, wb) and wc.dtype == torch.float32
        assert not torch.equal(wa, wc) and (wa - wc).abs().max() < 0.05
        assert abs(accuracy(a, test.x, test.y) - accuracy(c, test.x, test.y)) <= 0.03
    with pytest.raises(ParameterError, match="'precision'"):
        fit_stacked(spec, train, recipe, members, precision="fp16")
