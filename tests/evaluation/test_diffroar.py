"""DiffROAR / ROAR / KAR: planted signal, random attribution, controls, equality with fit."""

from __future__ import annotations

import json

import pytest
import torch

from gradaudit import data, evaluation
from gradaudit.data import ImageSet
from gradaudit.evaluation.retrain import Arm, GroupInputs, _inputs
from gradaudit.masking.ranking import keep_mask, keep_mask_count, rank_positions
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, accuracy, fit
from gradaudit.training.ensemble import apply_inputs


@pytest.fixture(scope="module")
def blocks() -> tuple[ImageSet, ImageSet]:
    """Simplified BlockMNIST: 10 blocks of 10 coordinates, the label's sign on one block."""
    opts = {"blocks": 10, "block_size": 10, "n_train": 2000, "n_test": 1000}
    return data.load("simplified-blockmnist", "train", **opts), data.load("simplified-blockmnist", "test", **opts)


BLOCK_SPEC = ModelSpec(name="mlp", input_shape=(1, 1, 100), num_classes=2, options={"hidden": [32]})
BLOCK_RECIPE = Recipe(epochs=3, batch_size=64, lr=0.05, momentum=0.9)


def _oracle(train: ImageSet, test: ImageSet, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """|score| 1 on the planted signal block and 0 elsewhere (or the reverse)."""
    maps = [d.per_image["signal_mask"].float() for d in (train, test)]
    return (1 - maps[0], 1 - maps[1]) if reverse else (maps[0], maps[1])


def test_planted_signal_oracle_and_reverse(blocks, one_thread) -> None:
    train, test = blocks
    levels = [0.05, 0.1, 0.2, 1.0]
    good = evaluation.diffroar(None, train, test, attributions=_oracle(train, test), spec=BLOCK_SPEC,
                               recipe=BLOCK_RECIPE, levels=levels, seeds=3, mask_only=True, quiet=True)
    bad = evaluation.diffroar(None, train, test, attributions=_oracle(train, test, reverse=True), spec=BLOCK_SPEC,
                              recipe=BLOCK_RECIPE, levels=levels[:2], seeds=3, random=False, quiet=True)
    for i in range(3):  # small k: the signal block kept (top) vs noise only (bottom)
        assert good.attribution.diffroar.mean[i] > 0.3
        assert good.attribution.top.mean[i] > 0.95 and abs(good.attribution.bottom.mean[i] - 0.5) < 0.1
    assert all(v < -0.3 for v in bad.attribution.diffroar.mean)
    assert good.attribution.diffroar.values[-1] == (0.0, 0.0, 0.0)  # k = 1: identical data and seeds
    assert all(abs(v) < 0.05 for v in good.random.diffroar.mean)  # the computed random control
    assert good.random.top.mean[0] < 0.8 and good.random.top.values[-1] == good.attribution.top.values[-1]
    # The oracle's mask says where the block is, not its sign: mask-only is at chance (no leak).
    mask, mask_random = good.mask_only["attribution"], good.mask_only["random"]
    assert all(abs(v - 0.5) < 0.1 for v in mask.top.mean + mask.bottom.mean + mask_random.top.mean)
    out = json.loads(json.dumps(good.to_dict()))
    assert out["protocol"] == "diffroar" and out["higher_is_better"] is True
    assert out["seeds"] == [0, 1, 2] and out["config"]["target"] == "label"
    assert len(out["curves"]["attribution"]["top"]["per_seed"][0]) == 3
    margin = out["leakage"]["attribution"]["leak_free_margin"]["top"]["mean"][0]
    assert margin == pytest.approx(good.attribution.top.mean[0] - mask.top.mean[0])


def test_stacked_equals_one_at_a_time(blocks, one_thread) -> None:
    """Each retrain equals training.fit of a fresh model on the masked data, same seeds."""
    train, test = blocks
    g = torch.Generator().manual_seed(0)
    maps = _oracle(train, test)
    maps = (maps[0] + 0.3 * torch.rand(maps[0].shape, generator=g),
            maps[1] + 0.3 * torch.rand(maps[1].shape, generator=g))
    res = evaluation.diffroar(None, train, test, attributions=maps, spec=BLOCK_SPEC, recipe=BLOCK_RECIPE,
                              levels=[0.1, 0.5], seeds=2, seed=4, fill="mean", quiet=True)
    mean = train.x.mean((0, 2, 3)).view(1, -1, 1, 1)
    pos_train, pos_test = rank_positions(maps[0], seed=4), rank_positions(maps[1], seed=5)
    for li, level in ((0, 0.1), (1, 0.5)):
        for side, curve in (("top", res.attribution.top), ("bottom", res.attribution.bottom)):
            for si, seed in enumerate((4, 5)):
                keep_tr, keep_te = keep_mask(pos_train, level, side), keep_mask(pos_test, level, side)
                alone = BLOCK_SPEC.build(seed)
                fit(alone, train.with_x(torch.where(keep_tr, train.x, mean)),
                    BLOCK_RECIPE.model_copy(update={"seed": seed}), quiet=True)
                acc = accuracy(alone, torch.where(keep_te, test.x, mean), test.y)
                assert abs(curve.values[li][si] - acc) <= 1e-4


def test_side_by_side_stacks_equal_one_stack(blocks, monkeypatch) -> None:
    """With several torch threads on a CPU, a group trains as side-by-side stacks (one per
    thread): the same accuracies, bitwise, as one stack on one thread; torch's thread count
    is restored. CUDA, one thread and the loop engine keep one stack."""
    from gradaudit.evaluation.retrain import Retrainer

    train, test = blocks
    g = torch.Generator().manual_seed(1)
    maps = (torch.rand(train.x.shape, generator=g), torch.rand(test.x.shape, generator=g))
    kw = {"attributions": maps, "spec": BLOCK_SPEC, "recipe": BLOCK_RECIPE.model_copy(update={"epochs": 1}),
          "levels": [0.1, 0.5], "seeds": 2, "quiet": True}
    stacks: list[int] = []
    fit_part = Retrainer._fit_part
    monkeypatch.setattr(Retrainer, "_fit_part", lambda self, jobs, *a: stacks.append(len(jobs)) or fit_part(self, jobs, *a))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = evaluation.diffroar(None, train, test, **kw).attribution
        assert stacks == [16]  # 2 levels x 2 sides x 2 rankings (with the random control) x 2 seeds
        stacks.clear()
        torch.set_num_threads(3)
        side = evaluation.diffroar(None, train, test, **kw).attribution
        assert sorted(stacks) == [5, 5, 6] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert side.top.values == alone.top.values and side.bottom.values == alone.bottom.values
    r = Retrainer(BLOCK_SPEC, BLOCK_RECIPE, train, test, {}, "zero", "auto", 32, "cuda", True)
    r._engine_used = "bmm"
    assert r._side_by_side(8, 4) == [slice(0, 8)]
    r.device, r._engine_used = "cpu", "loop"
    assert r._side_by_side(8, 4) == [slice(0, 8)]
    r._engine_used = "bmm"
    assert r._side_by_side(8, 1) == [slice(0, 8)] and r._side_by_side(5, 2) == [slice(0, 2), slice(2, 5)]


def test_group_inputs_equal_per_arm_inputs() -> None:
    """The broadcast builder equals each member's own inputs (channel-sum, mean fill, mask
    view, members of different rankings and seeds)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 3, 4, 4, generator=g)
    pa, pb = (rank_positions(torch.randn(50, 3, 4, 4, generator=g), by="channel-sum", seed=i) for i in range(2))
    arms = [Arm("a", "top", 3), Arm("a", "top", 16), Arm("a", "bottom", 5), Arm("b", "top", 0),
            Arm("b", "bottom", 7, "mask"), Arm("a", "top", 2, "mask"), Arm("a", "top", 4)]
    positions = [pa, pa, pa, pb, pb, pa, pb]  # the last one: ranking "a" of another seed
    mean = x.mean((0, 2, 3))
    build = GroupInputs(arms, positions, x, "mean", mean)
    rows = torch.stack([torch.randperm(50, generator=g)[:9] for _ in arms])
    rows[1] = rows[0]
    for r in (rows, rows[:1]):
        got = build(r)
        for m, (arm, pos) in enumerate(zip(arms, positions, strict=True)):
            rr = r[m if len(r) > 1 else 0]
            want = apply_inputs(_inputs(arm, pos, "mean", mean), x)[rr]
            assert torch.equal(got[m], want)


def test_group_inputs_zero_fill_equal_per_arm_inputs_bitwise() -> None:
    """The element-rank zero-fill builder (float keep, flat loops) gives fill_masked's bits,
    signed zeros included, for shared and per-member rows, top and bottom, k = 0 and k = d."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, 3, 3, generator=g)
    pa, pb = (rank_positions(torch.randn(40, 2, 3, 3, generator=g), seed=i) for i in range(2))
    arms = [Arm("a", "top", 0), Arm("a", "top", 5), Arm("a", "top", 18), Arm("a", "bottom", 1),
            Arm("a", "bottom", 17), Arm("b", "bottom", 9), Arm("b", "top", 9, "mask")]
    positions = [pa, pa, pa, pa, pa, pb, pb]
    for seeds in (None, [0, 0, 0, 0, 0, 1, 1]):
        build = GroupInputs(arms, positions, x, "zero", None, seeds)
        rows = torch.stack([torch.randperm(40, generator=g)[:11] for _ in arms])
        if seeds:
            rows[1:5] = rows[0]
            rows[6] = rows[5]
        for r in (rows, rows[:1]):
            got = build(r)
            for m, (arm, pos) in enumerate(zip(arms, positions, strict=True)):
                want = apply_inputs(_inputs(arm, pos, "zero", None), x)[r[m if len(r) > 1 else 0]]
                assert torch.equal(got[m].view(torch.int32), want.view(torch.int32))


def test_group_inputs_share_rows_between_blocks_of_one_seed() -> None:
    """Blocks of one seed that are not adjacent (another seed's block between them, another
    ranking) read their rows from the seed's first member: still each member's own inputs, bitwise."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 1, 4, 4, generator=g)
    pa, pb = (rank_positions(torch.randn(30, 1, 4, 4, generator=g), seed=i) for i in range(2))
    arms = [Arm("a", "top", 3), Arm("a", "bottom", 3), Arm("a", "top", 3), Arm("b", "bottom", 12), Arm("a", "top", 8, "mask")]
    positions = [pa, pa, pa, pb, pa]
    seeds = [0, 0, 1, 0, 1]
    build = GroupInputs(arms, positions, x, "zero", None, seeds)
    first, second = torch.randperm(30, generator=g)[:7], torch.randperm(30, generator=g)[:7]
    rows = torch.stack([first, first, second, first, second])
    got = build(rows)
    for m, (arm, pos) in enumerate(zip(arms, positions, strict=True)):
        want = apply_inputs(_inputs(arm, pos, "zero", None), x)[rows[m]]
        assert torch.equal(got[m].view(torch.int32), want.view(torch.int32))


def test_mask_view_is_the_centred_keep_mask() -> None:
    """Mask-only models see keep − k: values 1 − k (kept) and −k (removed), mean 0 per image."""
    g = torch.Generator().manual_seed(0)
    pos = rank_positions(torch.randn(6, 1, 5, 5, generator=g), seed=0)
    got = apply_inputs(_inputs(Arm("a", "bottom", 20, "mask"), pos, "zero", None), torch.zeros(6, 1, 5, 5))
    keep = keep_mask_count(pos, 20, "bottom")
    assert torch.allclose(got, torch.where(keep, torch.tensor(1 - 0.8), torch.tensor(-0.8)), rtol=0, atol=1e-7)
    assert got.sum((1, 2, 3)).abs().max() < 1e-5


def test_roar_and_kar_are_the_two_sides(blocks, one_thread) -> None:
    """With zero fill, KAR(k) is DiffROAR's top-k and ROAR(1 − k) its bottom-k, model for model."""
    train, test = blocks
    maps = _oracle(train, test)
    common = {"attributions": maps, "spec": BLOCK_SPEC, "recipe": BLOCK_RECIPE, "seeds": 1,
              "random": False, "quiet": True}
    diff = evaluation.diffroar(None, train, test, levels=[0.1, 0.3], **common)
    kar = evaluation.kar(None, train, test, levels=[0.1, 0.3], fill="zero", **common)
    roar = evaluation.roar(None, train, test, levels=[0.7, 0.9], fill="zero", **common)
    assert kar.accuracy["attribution"].values == diff.attribution.top.values
    assert roar.accuracy["attribution"].values[::-1] == diff.attribution.bottom.values
    assert roar.higher_is_better is False and kar.higher_is_better is True
    assert roar.to_dict()["protocol"] == "roar" and kar.to_dict()["levels"] == [0.1, 0.3]
    assert roar.accuracy["attribution"].mean[1] < 0.6  # removing the top 90% removes the signal


def test_method_path_and_run_directory(blocks, tmp_path, one_thread) -> None:
    """method='grad' computes the maps from the audited model (eval mode); a run directory
    supplies model, spec and recipe; both equal passing the maps directly."""
    from gradaudit import attribution

    train, test = blocks
    model = BLOCK_SPEC.build(0)
    fit(model, train, BLOCK_RECIPE, out=tmp_path / "run", spec=BLOCK_SPEC.model_dump(mode="json"), quiet=True)
    model.train()
    grads = [p.grad.clone() for p in model.parameters()]
    common = {"levels": [0.1], "seeds": 1, "random": False, "quiet": True}
    by_method = evaluation.diffroar(model, train, test, method="grad", spec=BLOCK_SPEC,
                                    recipe=BLOCK_RECIPE, target="predicted", **common)
    from_dir = evaluation.diffroar(tmp_path / "run", train, test, method="grad", target="predicted", **common)
    maps = (attribution.attribute("grad", model, train.x, "predicted", seed=0),
            attribution.attribute("grad", model, test.x, "predicted", seed=0))
    given = evaluation.diffroar(None, train, test, attributions=maps, spec=BLOCK_SPEC, recipe=BLOCK_RECIPE,
                                target="predicted", **common)
    assert by_method.attribution == from_dir.attribution == given.attribution
    assert by_method.config["method"] == "grad" and by_method.config["target"] == "predicted"
    assert by_method.config["rank_sha256"] == given.config["rank_sha256"]
    assert model.training  # the audited model is left as found: mode and .grad
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))


@pytest.mark.slow
def test_random_attribution_is_zero_and_its_mask_is_chance(mnist_train, mnist_test, one_thread) -> None:
    """On MNIST, the DiffROAR of seeded random attributions (a fresh one per retrain seed, as
    the built-in control draws them) is within ±0.02 of 0 at every level, exactly 0 at k = 1
    (identical data and seeds), and models trained on the keep-masks alone are at chance."""
    train, test = mnist_train.subset(slice(0, 5000)), mnist_test
    spec = ModelSpec(name="mlp", input_shape=train.input_shape, num_classes=10, options={"hidden": [64]})
    recipe = Recipe(epochs=3, batch_size=128, lr=0.1, momentum=0.9, schedule="onecycle")
    runs = []
    for seed in range(3):
        g = torch.Generator().manual_seed(1000 + seed)
        maps = (torch.randn(train.x.shape, generator=g), torch.randn(test.x.shape, generator=g))
        runs.append(evaluation.diffroar(None, train, test, attributions=maps, spec=spec, recipe=recipe,
                                        seeds=1, seed=seed, random=False, mask_only=seed == 0, quiet=True))
    assert runs[0].levels == evaluation.LEVELS
    diffs = [sum(r.attribution.diffroar.mean[i] for r in runs) / 3 for i in range(len(evaluation.LEVELS))]
    assert all(abs(v) <= 0.02 for v in diffs)
    assert all(r.attribution.diffroar.values[-1] == (0.0,) for r in runs)
    assert runs[0].attribution.top.mean[0] < runs[0].attribution.top.mean[-1] - 0.3  # masking bites
    mask = runs[0].mask_only["attribution"]
    assert all(v < 0.15 for v in mask.top.mean + mask.bottom.mean)
    alone = spec.build(0)  # k = 1 is plain training: equal to fit on the unmasked data
    fit(alone, train, recipe.model_copy(update={"seed": 0}), quiet=True)
    assert abs(runs[0].attribution.top.values[-1][0] - accuracy(alone, test.x, test.y)) <= 1e-4


def test_cnn_retrains_one_after_another_and_equal_fit(one_thread) -> None:
    """Models without a stacked form (here a small CNN) retrain through training.fit itself."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (300,), generator=g)
    x = 0.3 * torch.rand(300, 1, 8, 8, generator=g)
    x[:, 0, 1, 1:3] += y.float().view(-1, 1)  # the label, written into two pixels
    train, test = ImageSet(x[:200], y[:200]), ImageSet(x[200:], y[200:])
    maps = (x[:200].clone(), x[200:].clone())
    spec = ModelSpec(name="cnn", input_shape=(1, 8, 8), num_classes=2, options={"channels": [4], "hidden": 8})
    recipe = Recipe(epochs=2, batch_size=25, lr=0.05)
    res = evaluation.diffroar(None, train, test, attributions=maps, spec=spec, recipe=recipe, levels=[0.25],
                              seeds=1, random=False, quiet=True)
    keep_tr, keep_te = (keep_mask(rank_positions(m, seed=s), 0.25, "top") for m, s in zip(maps, (0, 1), strict=True))
    alone = spec.build(0)
    fit(alone, train.with_x(train.x * keep_tr), recipe, quiet=True)
    assert res.attribution.top.values[0][0] == accuracy(alone, test.x * keep_te, test.y)


@pytest.mark.slow
def test_label_gradient_masks_leak_the_class(fmnist_train, fmnist_test, one_thread) -> None:
    """Issue 9: on Fashion-MNIST the top-5% masks of true-label input gradients alone let a
    retrained MLP classify far above chance; the mask-only control measures it."""
    train, test = fmnist_train.subset(slice(0, 6000)), fmnist_test.subset(slice(0, 2000))
    spec = ModelSpec(name="mlp", input_shape=train.input_shape, num_classes=10, options={"hidden": [64]})
    recipe = Recipe(epochs=2, batch_size=128, lr=0.1, momentum=0.9, schedule="onecycle")
    model = spec.build(0)
    fit(model, train, recipe, quiet=True)
    res = evaluation.diffroar(model, train, test, method="grad", spec=spec, recipe=recipe, levels=[0.05, 0.9],
                              seeds=1, mask_only=True, quiet=True)
    leak = res.mask_only["attribution"].top.mean[0]
    assert leak > 0.5 and res.mask_only["random"].top.mean[0] < 0.15
    # at k = 0.9 the mask still encodes the class; the raw {0, 1} mask (706 constant ones)
    # made these retrains diverge to chance (0.095), the centred mask trains (measured 0.9995)
    assert res.mask_only["attribution"].top.mean[1] > 0.5
    assert max(res.mask_only["random"].top.mean + res.mask_only["random"].bottom.mean) < 0.15
    margin = res.to_dict()["leakage"]["attribution"]["leak_free_margin"]["top"]["mean"][0]
    assert margin == pytest.approx(res.attribution.top.mean[0] - leak)
