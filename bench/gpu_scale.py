"""Paper scale on one GPU (issue 15): gradaudit's training paths against plain PyTorch loops.

Every case runs in one process, each against a plain PyTorch loop whose data are already on
the GPU (the fastest a user's own loop gets without extra work), median of ``--repeats``:

(a) ``training.fit`` of the MLP 784-256-256-10, one epoch of 60,000 images: standard and
    l-inf PGD-10 (floor: ``fit`` ≤ 1.1× the plain loop);
(b) ``fit_stacked`` of 8 / 32 / 64 MLPs (one epoch each) against 64 plain sequential loops
    (floor: 64 stacked MLP epochs ≥ 5× faster than 64 plain loops);
(c) ResNet18 and ResNet9 on CIFAR-shaped data (10,000 images, one epoch): ``fit`` single,
    and ``fit_stacked`` of 4 (the engine ``engine="auto"`` picks) against 4 plain loops;
(d) achieved TFLOP/s of the stacked MLP epochs (FLOPs counted from the layer shapes) against
    the card's dense peak (``--peak-tflops``; default from the device name), for fp32, tf32
    and bf16 (``fit_stacked(precision=...)``);
(e) the wall time of ``gradaudit run fmnist --device cuda`` at its paper-size default,
    whole, in a fresh folder (floor: ≤ 5 min on one H100 or H200; ``--skip-run`` skips it);
(f) stacked regularized training: ``fit_stacked`` of 8 softplus MLPs (gradient norm, then
    score matching, the paper's λ/S/σ/τ; one epoch) against 8 ``training.fit`` calls.

Data: Fashion-MNIST from ``$GRADAUDIT_DATA`` when present, else random images of its shape
(timings do not depend on the pixel values). On a machine without CUDA it says so and exits 0.

Usage:
    python bench/gpu_scale.py [--repeats 3] [--skip-run] [--peak-tflops X] [--run-timeout 900]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gradaudit._provenance import git_revision, versions
from gradaudit.data import ImageSet
from gradaudit.models import ModelSpec
from gradaudit.training import Recipe, fit, lr_at, make_optimizer
from gradaudit.training.attacks import pgd
from gradaudit.training.ensemble import Member, fit_stacked
from gradaudit.training.regularizers import recipe_fields

# Dense peaks in TFLOP/s (fp32 / tf32 / bf16, tensor cores without sparsity), by device name.
PEAKS = {"H100": (67.0, 494.0, 989.0), "H200": (67.0, 494.0, 989.0), "A100": (19.5, 156.0, 312.0)}


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn`` (CUDA synchronised around each call), after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_fmnist() -> ImageSet:
    try:
        from gradaudit import data

        return data.load("fmnist", "train")
    except Exception as err:  # any failure to find the files means: synthesise
        print(f"# Fashion-MNIST not loaded ({type(err).__name__}); random images of its shape")
        g = torch.Generator().manual_seed(0)
        return ImageSet(torch.rand(60000, 1, 28, 28, generator=g), torch.randint(0, 10, (60000,), generator=g),
                        {"name": "random-fmnist", "classes": [str(i) for i in range(10)], "bounds": (0.0, 1.0)})


def plain_loop(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int,
               attack: str | None = None) -> torch.nn.Module:
    """The reference: a plain loop over GPU-resident data (randperm on the GPU)."""
    model = spec.build(seed).cuda()
    opt = make_optimizer(model.parameters(), recipe)
    n, size = len(x), recipe.batch_size
    steps = (n + size - 1) // size
    for epoch in range(recipe.epochs):
        perm = torch.randperm(n, device="cuda")
        for step in range(steps):
            idx = perm[step * size : (step + 1) * size]
            xb, yb = x[idx], y[idx]
            if attack is not None:
                xb = pgd(model, xb, yb, norm=attack, eps=recipe.eps, steps=recipe.attack_steps)
            loss = F.cross_entropy(model(xb), yb)
            for g in opt.param_groups:
                g["lr"] = lr_at(recipe, epoch, step, steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model


def case_a(train: ImageSet, repeats: int) -> None:
    spec = ModelSpec(name="mlp", input_shape=(1, 28, 28), num_classes=10, options={"hidden": [256, 256]})
    x, y = train.x.cuda(), train.y.cuda()
    for name, recipe in (("standard", Recipe(epochs=1, batch_size=128, lr=0.1, momentum=0.9)),
                         ("linf PGD-10", Recipe(epochs=1, batch_size=128, lr=0.1, momentum=0.9, attack="linf",
                                                eps=8 / 255, attack_steps=10))):
        ours = timed(lambda r=recipe: fit(spec.build(0), train, r, device="cuda", quiet=True), repeats)
        peer = timed(lambda r=recipe: plain_loop(spec, x, y, r, 0, r.attack), repeats)
        print(f"(a) fit MLP {name}, 1 epoch of {len(train)} | ours {ours:.2f} s | plain GPU loop {peer:.2f} s | "
              f"ours/plain {ours / peer:.2f} (floor ≤ 1.10)")


def case_b(train: ImageSet, repeats: int) -> None:
    spec = ModelSpec(name="mlp", input_shape=(1, 28, 28), num_classes=10, options={"hidden": [256, 256]})
    recipe = Recipe(epochs=1, batch_size=128, lr=0.1, momentum=0.9)
    x, y = train.x.cuda(), train.y.cuda()
    one = timed(lambda: plain_loop(spec, x, y, recipe, 0), repeats)
    print(f"(b) one plain GPU loop: {one:.2f} s; 64 plain sequential loops ≈ {64 * one:.1f} s (measured once below)")
    t0 = time.perf_counter()
    for s in range(64):
        plain_loop(spec, x, y, recipe, s)
    torch.cuda.synchronize()
    plain64 = time.perf_counter() - t0
    for m in (8, 32, 64):
        members = [Member(i, i) for i in range(m)]
        ours = timed(lambda ms=members: fit_stacked(spec, train, recipe, ms, device="cuda", quiet=True), repeats)
        print(f"(b) fit_stacked {m} MLPs × 1 epoch {ours:.2f} s ({ours / m:.3f} s a model) | 64 plain loops "
              f"{plain64:.1f} s | per-model speed-up {plain64 / 64 / (ours / m):.1f}× (floor at 64: ≥ 5×)")


def case_c(repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    cifar = ImageSet(torch.rand(10000, 3, 32, 32, generator=g), torch.randint(0, 10, (10000,), generator=g),
                     {"name": "random-cifar", "classes": [str(i) for i in range(10)], "bounds": (0.0, 1.0)})
    recipe = Recipe(epochs=1, batch_size=128, lr=0.1, momentum=0.9)
    x, y = cifar.x.cuda(), cifar.y.cuda()
    for arch in ("resnet18", "resnet9"):
        spec = ModelSpec(name=arch, input_shape=(3, 32, 32), num_classes=10)
        ours = timed(lambda s=spec: fit(s.build(0), cifar, recipe, device="cuda", quiet=True), repeats)
        peer = timed(lambda s=spec: plain_loop(s, x, y, recipe, 0), repeats)
        members = [Member(i, i) for i in range(4)]
        stacked = timed(lambda s=spec, ms=members: fit_stacked(s, cifar, recipe, ms, device="cuda", quiet=True), 1)
        engine = fit_stacked(spec, cifar.subset(slice(0, 256)), recipe, members[:1], device="cuda", quiet=True).engine
        print(f"(c) {arch} 1 epoch of 10000 | fit {ours:.2f} s | plain {peer:.2f} s | fit/plain {ours / peer:.2f} | "
              f"fit_stacked ×4 ({engine}) {stacked:.2f} s vs 4 plain {4 * peer:.2f} s")


def case_d(train: ImageSet, peak: tuple[float, float, float]) -> None:
    spec = ModelSpec(name="mlp", input_shape=(1, 28, 28), num_classes=10, options={"hidden": [256, 256]})
    recipe = Recipe(epochs=1, batch_size=128, lr=0.1, momentum=0.9)
    members = [Member(i, i) for i in range(64)]
    for precision, top in zip(("fp32", "tf32", "bf16"), peak, strict=True):
        fit_stacked(spec, train, recipe, members[:2], device="cuda", quiet=True, precision=precision)
        out = fit_stacked(spec, train, recipe, members, device="cuda", quiet=True, precision=precision)
        tflops = (out.flops or 0.0) / out.seconds / 1e12
        print(f"(d) 64 stacked MLP epochs, {precision}: {out.seconds:.2f} s, {tflops:.2f} TFLOP/s = "
              f"{100 * tflops / top:.1f}% of the {top:.0f} TFLOP/s dense peak")


def case_e(timeout: int) -> None:
    out = tempfile.mkdtemp(prefix="gpu-scale-fmnist-")
    cli = Path(sys.executable).with_name("gradaudit")
    cmd = [str(cli) if cli.exists() else "gradaudit", "run", "fmnist", "--device", "cuda", "--out", out, "-q"]
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(cmd, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        rc = None
    seconds = time.perf_counter() - t0
    state = f"exit {rc}" if rc is not None else f"killed after the {timeout} s timeout"
    print(f"(e) gradaudit run fmnist --device cuda (paper-size default, whole): {seconds:.0f} s = "
          f"{seconds / 60:.2f} min ({state}; floor ≤ 5 min, aim ≤ 3 min); out {out}")


def case_f(train: ImageSet, repeats: int, device: str = "cuda") -> None:
    spec = ModelSpec(name="mlp", input_shape=(1, 28, 28), num_classes=10,
                     options={"hidden": [256, 256], "act": "softplus"})
    members = [Member(i, i) for i in range(8)]
    for reg in ("gradnorm", "score-matching"):
        recipe = Recipe(epochs=1, batch_size=128, lr=0.05, momentum=0.9, **recipe_fields(reg))
        ours = timed(lambda r=recipe: fit_stacked(spec, train, r, members, device=device, quiet=True), repeats)
        peer = timed(lambda r=recipe: [fit(spec.build(m.init_seed), train, m.recipe(r), device=device, quiet=True)
                                       for m in members], repeats)
        print(f"(f) {reg}: fit_stacked 8 softplus MLPs × 1 epoch of {len(train)} {ours:.2f} s | 8 fit calls "
              f"{peer:.2f} s | speed-up {peer / ours:.1f}×")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-run", action="store_true", help="skip (e), the whole fmnist study")
    p.add_argument("--run-timeout", type=int, default=900)
    p.add_argument("--peak-tflops", type=float, nargs=3, default=None, metavar=("FP32", "TF32", "BF16"))
    p.add_argument("--cases", default="abcdef", help="which cases to run, e.g. 'ab'")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: bench/gpu_scale.py measures CUDA training only; nothing was run.")
        return 0
    name = torch.cuda.get_device_name(0)
    peak = tuple(args.peak_tflops) if args.peak_tflops else next(
        (v for k, v in PEAKS.items() if k in name), (float("nan"),) * 3)
    v, g = versions(), git_revision()
    print(f"# device: {name}; torch {v['torch']} (CUDA {torch.version.cuda}); gradaudit {v['gradaudit']}; "
          f"git {g['commit']} (dirty: {g['dirty']}); CPU threads {torch.get_num_threads()}, {os.cpu_count()} cores")
    train = load_fmnist()
    if "a" in args.cases:
        case_a(train, args.repeats)
    if "b" in args.cases:
        case_b(train, args.repeats)
    if "c" in args.cases:
        case_c(args.repeats)
    if "d" in args.cases:
        case_d(train, peak)  # type: ignore[arg-type]
    if "f" in args.cases:
        case_f(train, args.repeats)
    if "e" in args.cases and not args.skip_run:
        case_e(args.run_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
