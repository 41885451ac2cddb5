"""A full DiffROAR curve on Fashion-MNIST, timed: stacked retraining against its peak.

The 2-layer MLP 784-256-256-10 is trained (SGD momentum 0.9, OneCycle max lr 0.1, batch 128,
8 epochs), its input gradients (true label) are taken on every train and test image, and
DiffROAR is computed at the 11 default levels × top/bottom × 3 seeds (66 retrains, of which
63 differ: at k = 1 top and bottom see the same data), each a fresh MLP trained with the same
recipe on the masked data, all stacked (``training.ensemble.fit_stacked``, grouped matrix
products). Printed:

* total wall time of the curve (attributions, ranking, retraining, masked-test evaluation);
* achieved GFLOP/s during retraining (forward + backward FLOPs counted from the layer shapes,
  over the time spent in ``fit_stacked``), against the fp32 peak (2 cores × 2.45 GHz × 32
  FLOP/cycle = 157 GFLOP/s on the development machine; ``--peak`` to change) and against a
  2048² sgemm measured in the same process (what the machine delivers right now);
* the single-process FLOP count, so the run can be compared on another machine;
* ``--vs-plain``: ``evaluation.diffroar`` (levels 0.05, 0.2, 0.5; 1 seed; ``--epochs``; no
  random control; attributions given) against a plain sequential PyTorch loop doing the same 6
  retrains (and masked-test evaluations) on pre-masked data, alternating, in one process;
  prints the median times and the ratio plain / diffroar (the issue-15 "CPU path does not
  slow down" check). With ``--threads T`` > 1 diffroar trains its 6 retrains as min(T, 6)
  side-by-side stacks, one Python thread each (``evaluation.retrain``), and the plain loop
  uses T threads in each op; with one thread both do the same FLOPs, so the ratio is near 1;
* stacked vs sequential (``training.fit`` of each member alone, on pre-masked copies) on a
  subset, after checking that both give the same models (bitwise, against ``fit`` run with
  one thread): median of ``--repeats`` alternating runs, ratio sequential / stacked, and the
  stacked GFLOP/s against a 2048² sgemm timed between the runs (the share of the machine's
  BLAS speed at that moment, a load-independent efficiency).

``OMP_WAIT_POLICY`` defaults to PASSIVE here (set it to ACTIVE to override): on a shared,
oversubscribed machine spinning OpenMP threads that lose their core made the multi-threaded
small products of this benchmark ~18× slower (8 stacked MLPs, 2 threads, load average ≈ 6:
1.2 GFLOP/s with ACTIVE, 22 GFLOP/s with PASSIVE).

Usage:
    python bench/diffroar_fmnist.py [--threads N] [--epochs 8] [--seeds 3]
        [--max-stack 32] [--random] [--mask-only] [--ratio-members 8] [--ratio-rows 12800]
        [--repeats 5] [--skip-curve] [--out DIR] [--vs-plain]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gradaudit import data, evaluation
from gradaudit._allocator import tune_malloc
from gradaudit._provenance import git_revision, versions
from gradaudit.masking.fill import fill_masked
from gradaudit.masking.ranking import keep_mask_count, rank_positions
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, accuracy, fit, lr_at
from gradaudit.training.ensemble import Member, fit_stacked

PEAK = 157.0  # GFLOP/s fp32: 2 cores × 2.45 GHz × 2 FMA units × 8 lanes × 2


def header(args: argparse.Namespace) -> None:
    v, g = versions(), git_revision()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    print(f"# device: cpu ({cpu}, {os.cpu_count()} cores), torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"# torch {v['torch']}, numpy {v['numpy']}, python {v['python']}, gradaudit {v['gradaudit']}")
    print(f"# git {g['commit']} (dirty: {g['dirty']})")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# config: epochs {args.epochs}, seeds {args.seeds}, max_stack {args.max_stack}, "
          f"random {args.random}, mask_only {args.mask_only}")


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def flops_per_sample(spec: ModelSpec) -> float:
    """Training FLOPs per sample: 2·in·out per Linear for the forward, the weight gradient and
    (except the first layer) the input gradient."""
    widths = [784, *spec.options.get("hidden", (256, 256)), spec.num_classes]
    return sum((2 if i == 0 else 3) * 2.0 * a * b for i, (a, b) in enumerate(itertools.pairwise(widths)))


def curve(args, spec, recipe, train, test) -> None:
    t0 = time.perf_counter()
    model = spec.build(0)
    fit(model, train, recipe, quiet=True)
    print(f"audited model: {accuracy(model, test.x, test.y):.4f} test accuracy, trained in {time.perf_counter() - t0:.1f} s")
    out = Path(args.out or tempfile.mkdtemp(prefix="diffroar-bench-"))
    t0 = time.perf_counter()
    res = evaluation.diffroar(model, train, test, method="grad", spec=spec, recipe=recipe, seeds=args.seeds,
                              random=args.random, mask_only=args.mask_only, max_stack=args.max_stack, out=out,
                              quiet=args.quiet)
    total = time.perf_counter() - t0
    groups = [json.loads(p.read_text()) for p in sorted((out / "groups").glob("*.json"))]
    flops, seconds = sum(g["flops"] for g in groups), sum(g["seconds"] for g in groups)
    members = sum(len(g["members"]) for g in groups)
    print("level  top-k acc        bottom-k acc     DiffROAR")
    c = res.attribution
    for i, k in enumerate(res.levels):
        print(f"{k:5.2f}  {c.top.mean[i]:.4f}±{c.top.std[i]:.4f}  {c.bottom.mean[i]:.4f}±{c.bottom.std[i]:.4f}"
              f"  {c.diffroar.mean[i]:+.4f}±{c.diffroar.std[i]:.4f}")
    per_retrain = flops_per_sample(spec) * len(train) * recipe.epochs
    print(f"retrains: {members} trained ({len(groups)} groups); {per_retrain / 1e9:.1f} GFLOP per retrain, "
          f"{flops / 1e12:.2f} TFLOP counted in total")
    print(f"total wall time {total:.1f} s ({total / 60:.2f} min); retraining {seconds:.1f} s "
          f"at {flops / seconds / 1e9:.1f} GFLOP/s = {100 * flops / seconds / 1e9 / args.peak:.0f}% of the "
          f"{args.peak:.0f} GFLOP/s peak")
    print(f"at the peak the retraining FLOPs take {flops / args.peak / 1e9:.0f} s")


def _masked_members(train, maps, count):
    pos = rank_positions(maps, seed=0)
    levels = [round(f * 784) for f in (0.05, 0.2, 0.5, 1.0)]
    arms = [(lv, side) for lv in levels for side in ("top", "bottom")][:count]

    def inputs(k, side):
        return lambda xb, rows: fill_masked(xb, keep_mask_count(pos[rows], k, side), "zero")

    return [Member(i % 3, i % 3, inputs(k, side)) for i, (k, side) in enumerate(arms)]


def ratio(args, spec, recipe, train) -> None:
    sub = train.subset(slice(0, args.ratio_rows))
    maps = torch.rand(sub.x.shape, generator=torch.Generator().manual_seed(0))
    members = _masked_members(sub, maps, args.ratio_members)
    one = recipe.model_copy(update={"epochs": 1})
    copies = [sub.with_x(m.inputs(sub.x, torch.arange(len(sub)))) for m in members]

    def stacked():
        return fit_stacked(spec, sub, one, members, quiet=True).models

    def sequential():
        nets = []
        for m, data_m in zip(members, copies, strict=True):
            net = spec.build(m.init_seed)
            fit(net, data_m, m.recipe(one), quiet=True)
            nets.append(net)
        return nets

    # Both sides must agree: stacked members equal fit run with one thread, bitwise (fit with
    # more threads rounds differently, see training.ensemble); this also warms both up.
    threads = torch.get_num_threads()
    a = stacked()
    torch.set_num_threads(1)
    b = sequential()
    torch.set_num_threads(threads)
    for na, nb in zip(a, b, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(na.parameters(), nb.parameters(), strict=True)), "stacked != fit"
    sequential()
    times: dict[str, list[float]] = {"stacked": [], "sequential": [], "sgemm": []}
    for _ in range(args.repeats):
        for name, fn in (("stacked", stacked), ("sequential", sequential), ("sgemm", sgemm_gflops)):
            t0 = time.perf_counter()
            value = fn()
            times[name].append(value if name == "sgemm" else time.perf_counter() - t0)
    flops = flops_per_sample(spec) * len(sub) * len(members)
    ours, peer = statistics.median(times["stacked"]), statistics.median(times["sequential"])
    gemm = statistics.median(times["sgemm"])
    print(f"case: {len(members)} MLPs × 1 epoch on {len(sub)} masked images | ours (stacked) {ours:.2f} s | "
          f"peer (sequential fit) {peer:.2f} s | ratio peer/ours {peer / ours:.2f}")
    print(f"stacked training {flops / ours / 1e9:.1f} GFLOP/s = {100 * flops / ours / 1e9 / gemm:.0f}% of a "
          f"2048² sgemm timed between the runs ({gemm:.1f} GFLOP/s), "
          f"{100 * flops / ours / 1e9 / args.peak:.0f}% of the {args.peak:.0f} GFLOP/s peak")


def input_gradients(model, x, y, rows: int = 1000) -> torch.Tensor:
    out = []
    for i in range(0, len(x), rows):
        xb = x[i : i + rows].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xb), y[i : i + rows], reduction="sum")
        out.append(torch.autograd.grad(loss, xb)[0])
    return torch.cat(out)


def vs_plain(args, spec, recipe, train, test) -> None:
    """diffroar (3 levels × top/bottom, 1 seed, no random control) against a plain loop."""
    model = spec.build(0)
    fit(model, train, recipe, quiet=True)
    maps = (input_gradients(model, train.x, train.y), input_gradients(model, test.x, test.y))
    levels = (0.05, 0.2, 0.5)
    pos = (rank_positions(maps[0], seed=0), rank_positions(maps[1], seed=0))
    arms = [(round(k * 784), side) for k in levels for side in ("top", "bottom")]
    masked = [tuple(fill_masked(s.x, keep_mask_count(p, c, side), "zero") for s, p in zip((train, test), pos, strict=True))
              for c, side in arms]

    def ours() -> list[float]:
        res = evaluation.diffroar(model, train, test, attributions=maps, spec=spec, recipe=recipe, seeds=1,
                                  levels=levels, random=False, quiet=True)
        return [*res.attribution.top.mean, *res.attribution.bottom.mean]

    def plain() -> list[float]:
        accs = []
        n, size = len(train), recipe.batch_size
        steps = (n + size - 1) // size
        for xtr, xte in masked:
            net = spec.build(0)
            opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum)
            gen = torch.Generator().manual_seed(0)
            for epoch in range(recipe.epochs):
                perm = torch.randperm(n, generator=gen)
                for step in range(steps):
                    idx = perm[step * size : (step + 1) * size]
                    loss = torch.nn.functional.cross_entropy(net(xtr[idx]), train.y[idx])
                    for g in opt.param_groups:
                        g["lr"] = lr_at(recipe, epoch, step, steps)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            accs.append(accuracy(net, xte, test.y))
        return accs

    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("plain", plain)):
            t0 = time.perf_counter()
            accs = fn()
            times[name].append(time.perf_counter() - t0)
            print(f"  {name}: {times[name][-1]:.1f} s, accuracies {' '.join(f'{a:.4f}' for a in accs)}")
    o, p = statistics.median(times["ours"]), statistics.median(times["plain"])
    print(f"case: diffroar fmnist MLP, levels {levels}, 1 seed, {recipe.epochs} epochs, no random control | "
          f"ours (evaluation.diffroar) {o:.1f} s | plain sequential loop {p:.1f} s | ratio plain/ours {p / o:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-stack", type=int, default=32)
    p.add_argument("--random", action="store_true", help="also retrain the random control")
    p.add_argument("--mask-only", action="store_true", help="also retrain the mask-only control")
    p.add_argument("--ratio-members", type=int, default=8)
    p.add_argument("--ratio-rows", type=int, default=12800)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak", type=float, default=PEAK)
    p.add_argument("--skip-curve", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--vs-plain", action="store_true", help="only the diffroar-vs-plain-loop ratio")
    p.add_argument("--rows", type=int, default=None,
                   help="--vs-plain on the first ROWS training and ROWS // 6 test images (a quick check)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_malloc()
    header(args)
    print(f"sgemm 2048² now: {sgemm_gflops():.1f} GFLOP/s")
    train, test = data.load("fmnist", "train"), data.load("fmnist", "test")
    spec = ModelSpec(name="mlp", input_shape=train.input_shape, num_classes=10, options={"hidden": [256, 256]})
    recipe = Recipe(epochs=args.epochs, batch_size=128, lr=0.1, momentum=0.9, schedule="onecycle")
    if args.vs_plain:
        if args.rows:
            train, test = train.subset(slice(0, args.rows)), test.subset(slice(0, max(1, args.rows // 6)))
        vs_plain(args, spec, recipe, train, test)
        return
    if not args.skip_curve:
        curve(args, spec, recipe, train, test)
    ratio(args, spec, recipe, train)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
