"""CUDA checks of the device-resident training paths (issue 15). Skipped without a GPU;
the CPU tests (tests/training/test_device_resident.py, test_stacked_adversarial.py) run the
same code paths on the CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from gradaudit.evaluation.retrain import Arm, GroupInputs
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, accuracy, fit, make_optimizer
from gradaudit.training.ensemble import Member, fit_stacked

from toydata import flat_weights, prototypes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")

SPEC = ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3, options={"hidden": [32, 16]})


_toy, _weights = prototypes, flat_weights


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Any synchronising CUDA call inside the block raises."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


class _Bar:
    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def advance(self, *args: object) -> None:
        pass

    def remove_task(self, *args: object) -> None:
        pass


def test_fit_on_cuda_matches_cpu() -> None:
    train, test = _toy(400, 0), _toy(200, 1)
    recipe = Recipe(epochs=2, batch_size=40, lr=0.05, momentum=0.9, val_fraction=0.1)
    cpu, gpu = SPEC.build(3), SPEC.build(3)
    fit(cpu, train, recipe, quiet=True)
    fit(gpu, train, recipe, quiet=True, device="cuda")
    torch.testing.assert_close(_weights(gpu), _weights(cpu), rtol=1e-4, atol=1e-5)
    assert abs(accuracy(gpu, test.x, test.y) - accuracy(cpu, test.x, test.y)) <= 1e-2


def test_stacked_on_cuda_matches_cpu_and_fit() -> None:
    train = _toy(400, 2)
    keep = (torch.rand(400, 1, 6, 6, generator=torch.Generator().manual_seed(0)) < 0.6).cuda()
    recipe = Recipe(epochs=2, batch_size=40, lr=0.05, momentum=0.9)
    members = [Member(0, 0), Member(1, 1, lambda xb, rows: xb * keep[rows.to(keep.device)].to(xb.device))]
    gpu = fit_stacked(SPEC, train, recipe, members, quiet=True, device="cuda")
    cpu_members = [Member(0, 0), Member(1, 1, lambda xb, rows: xb * keep.cpu()[rows])]
    cpu = fit_stacked(SPEC, train, recipe, cpu_members, quiet=True)
    for a, b in zip(gpu.models, cpu.models, strict=True):
        torch.testing.assert_close(_weights(a), _weights(b), rtol=1e-4, atol=1e-5)
    # stacked PGD on the GPU equals fit of each member alone on the GPU (same device generators)
    threats = [{"attack": "linf", "eps": 4 / 255}, {"attack": "linf", "eps": 16 / 255}, {"attack": "l2", "eps": 0.5}]
    adv_members = [Member(10 + i, i, attack=t) for i, t in enumerate(threats)]
    adv = fit_stacked(SPEC, train, recipe.model_copy(update={"attack_steps": 3}), adv_members, quiet=True,
                      device="cuda")
    for member, net in zip(adv_members, adv.models, strict=True):
        alone = SPEC.build(member.init_seed)
        fit(alone, train, member.recipe(recipe.model_copy(update={"attack_steps": 3})), quiet=True, device="cuda")
        torch.testing.assert_close(_weights(net), _weights(alone), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("attack", [None, "linf", "l2"])
def test_fit_epoch_has_no_host_sync(attack: str | None) -> None:
    from gradaudit.training.fit import _epoch_steps, _resident

    device = torch.device("cuda")
    data = _resident(_toy(400, 3), device)
    recipe = Recipe(epochs=1, batch_size=40, lr=0.05, momentum=0.9, attack=attack, eps=0.1 if attack else 0.0)
    model = SPEC.build(0).to(device)
    optimizer = make_optimizer(model.parameters(), recipe)
    gens = {"cpu": torch.Generator().manual_seed(0), "device": torch.Generator(device=device).manual_seed(1)}
    with no_host_sync():
        loss_sum, correct, _ = _epoch_steps(model, data, recipe, optimizer, gens, 0, device, _Bar())
    assert loss_sum.item() > 0 and 0 <= int(correct) <= 400


def test_stacked_epoch_has_no_host_sync() -> None:
    from gradaudit.training.ensemble import _Epoch, _Stack, _StackedPGD

    device = torch.device("cuda")
    train = _toy(400, 4).to(device)
    positions = torch.argsort(torch.rand(400, 36, generator=torch.Generator().manual_seed(0)), 1).view(400, 1, 6, 6)
    positions = positions.to(torch.int16).to(device)
    arms = [Arm("attribution", side, k) for side in ("top", "bottom") for k in (4, 18)]
    inputs = GroupInputs(arms, [positions] * 4, train.x, "zero", None, seeds=[0, 0, 0, 0])
    recipe = Recipe(epochs=1, batch_size=40, lr=0.05, momentum=0.9)
    members = [Member(0, 0), Member(1, 0), Member(2, 0, attack={"attack": "l2", "eps": 0.5}), Member(3, 0)]
    recipes = [m.recipe(recipe) for m in members]
    stack = _Stack([SPEC.build(m.init_seed) for m in members], device)
    optimizer = make_optimizer(stack.parameters(), recipe)
    loop = _Epoch(stack, optimizer, recipe, inputs, train.y, [torch.Generator().manual_seed(0)] * 4,
                  [torch.Generator(device=device).manual_seed(1) for _ in members],
                  _StackedPGD(recipes, train.bounds, device), _Bar())
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0)).expand(4, -1).contiguous().to(device)
    with no_host_sync():
        loss_sum, correct = loop(0, order)
    assert (loss_sum > 0).all() and (correct <= 400).all()


def test_bf16_retraining_stays_close_to_fp32() -> None:
    train, test = _toy(800, 5), _toy(400, 6)
    recipe = Recipe(epochs=3, batch_size=50, lr=0.05, momentum=0.9)
    members = [Member(i, i) for i in range(3)]
    runs = {p: fit_stacked(SPEC, train, recipe, members, quiet=True, device="cuda", precision=p)
            for p in ("fp32", "bf16")}
    accs = {p: [accuracy(m, test.x, test.y) for m in runs[p].models] for p in runs}
    spread = max(accs["fp32"]) - min(accs["fp32"])  # the seed-to-seed spread of fp32
    assert abs(sum(accs["bf16"]) - sum(accs["fp32"])) / 3 <= max(spread, 0.02)


def test_stacked_regularizers_on_cuda_equal_fit() -> None:
    """Stacked gradnorm / score matching on the GPU = fit of each member alone on the GPU,
    and a regularized stacked epoch reads nothing back to the host."""
    from gradaudit.training.ensemble import _Epoch, _Stack, _StackedPGD, _StackedRegularizer

    smooth = ModelSpec(name="mlp", input_shape=(1, 6, 6), num_classes=3, options={"hidden": [16], "act": "softplus"})
    train = _toy(400, 7)
    base = Recipe(epochs=2, batch_size=40, lr=0.05, momentum=0.9)
    members = [Member(0, 0), Member(1, 1)]
    for fields in ({"regularizer": "gradnorm", "reg_weight": 0.5},
                   {"regularizer": "score-matching", "reg_weight": 1e-3, "reg_options": {"sigma": 0.1}}):
        recipe = base.model_copy(update=fields)
        stacked = fit_stacked(smooth, train, recipe, members, quiet=True, device="cuda")
        for member, net in zip(members, stacked.models, strict=True):
            alone = smooth.build(member.init_seed)
            fit(alone, train, member.recipe(recipe), quiet=True, device="cuda")
            torch.testing.assert_close(_weights(net), _weights(alone), rtol=1e-3, atol=1e-4)
    device = torch.device("cuda")
    data = train.to(device)
    stack = _Stack([smooth.build(m.init_seed) for m in members], device)
    loop = _Epoch(stack, make_optimizer(stack.parameters(), recipe), recipe,
                  lambda rows: data.x[rows], data.y, [torch.Generator().manual_seed(0)] * 2,
                  [torch.Generator(device=device).manual_seed(1) for _ in members],
                  _StackedPGD([m.recipe(recipe) for m in members], data.bounds, device), _Bar(),
                  _StackedRegularizer(recipe))
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0)).expand(2, -1).contiguous().to(device)
    with no_host_sync():
        loss_sum, _ = loop(0, order)
    assert (loss_sum > 0).all()


def test_diffroar_bf16_on_cuda_is_recorded(tmp_path) -> None:
    from gradaudit import evaluation

    train, test = _toy(300, 8), _toy(120, 9)
    maps = (torch.rand(300, 1, 6, 6), torch.rand(120, 1, 6, 6))
    recipe = Recipe(epochs=1, batch_size=50, lr=0.05, momentum=0.9)
    res = evaluation.diffroar(None, train, test, attributions=maps, spec=SPEC, recipe=recipe, seeds=1,
                              levels=[0.25, 0.5], random=False, device="cuda", precision="bf16", out=tmp_path,
                              quiet=True)
    assert res.to_dict()["config"]["precision"] == "bf16"
    assert all(0.0 <= a <= 1.0 for a in res.attribution.top.mean)
