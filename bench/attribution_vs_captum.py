"""gradaudit's attribution methods against Captum's, on 256 MNIST images.

For each method both libraries have, on the MNIST MLP (784-256-256-10) and the small CNN
(conv32-conv64-fc128), the script first checks that both sides agree (stochastic methods are
given the same draws, as in tests/attribution/test_attribution_captum.py), then times them
alternately in the same process: one warm-up each, then ``--repeats`` rounds (each timing
repeats a fast call until it spans ~0.25 s), reporting the median wall time of each side, the
ratio Captum / gradaudit (> 1: gradaudit is faster) and the same ratio in process CPU time.

Captum runs with its defaults (one batch of all rows), except where that batch would take
several GB (the CNN's IG, NoiseTunnel and GradientShap rows), where its own batching option is
set as shown in the ``captum settings`` column; gradaudit runs with its defaults (rows from a
256 MB activation budget).

Usage:
    python bench/attribution_vs_captum.py [--repeats 5] [--threads 1] [--models mlp,cnn]
        [--methods grad,ig,...] [--device cpu] [--small]

``--small`` (4 images, 16 references, one untimed-loop round) checks that the script still
runs and agrees with Captum; its timings are not a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import captum
import captum._utils.common as captum_common
import numpy as np
import torch
from captum import attr as captum_attr

from gradaudit import attribution, data, models
from gradaudit._allocator import tune_malloc
from gradaudit._io import load_tensors
from gradaudit._provenance import git_revision

N_IMAGES = 256


@dataclass
class Case:
    """One method: how to call each side, and the draws both sides share in the check."""

    method: str
    ours: dict[str, Any]
    captum: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    settings: str = ""
    shared_draws: Callable[..., contextlib.AbstractContextManager] | None = None
    cnn_captum: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def same_noise(x: torch.Tensor, n: int, seed: int, sigma: float) -> Iterator[None]:
    """NoiseTunnel adds our draws: row i·n + k gets σ ε_k, ε from Generator(seed)."""
    eps = torch.randn((n, *x.shape[1:]), generator=torch.Generator().manual_seed(seed)).to(x)
    noise = (sigma * eps).unsqueeze(0).expand(len(x), *eps.shape).reshape(-1, *x.shape[1:])
    original = captum_attr.NoiseTunnel.__dict__["_add_noise_to_input"]  # the staticmethod object
    done = [0]

    def add_noise(inp: torch.Tensor, stdev: float, n_partition: int) -> torch.Tensor:
        rows = len(inp) * n_partition  # NoiseTunnel may split the samples into partitions
        per_image = noise.view(len(x), n, *x.shape[1:])[:, done[0] : done[0] + n_partition]
        done[0] += n_partition
        assert rows == per_image.shape[0] * per_image.shape[1]
        return inp.repeat_interleave(n_partition, dim=0) + per_image.reshape(rows, *x.shape[1:])

    captum_attr.NoiseTunnel._add_noise_to_input = staticmethod(add_noise)
    try:
        yield
    finally:
        captum_attr.NoiseTunnel._add_noise_to_input = original


@contextlib.contextmanager
def same_references(x: torch.Tensor, n: int, seed: int, n_refs: int) -> Iterator[None]:
    """GradientShap draws our (reference, α) pairs, shared by all images."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(n_refs, (n,), generator=gen).numpy()
    alphas = torch.rand(n, generator=gen, dtype=torch.float64).numpy()
    choice, uniform = captum_common.np.random.choice, np.random.uniform
    captum_common.np.random.choice = lambda r, size: np.tile(index, size // n)
    np.random.uniform = lambda lo, hi, size: np.tile(alphas, size // n)
    try:
        yield
    finally:
        captum_common.np.random.choice, np.random.uniform = choice, uniform


def cases(refs: torch.Tensor) -> list[Case]:
    sg = {"n_samples": 25, "sigma": 0.15}
    nt = {"nt_samples": 25, "stdevs": 0.15}
    tunnel = captum_attr.NoiseTunnel

    def noise(n: int) -> Callable[..., contextlib.AbstractContextManager]:
        return lambda x: same_noise(x, n, 0, 0.15)

    return [
        Case("grad", {}, lambda m, x, y, **k: captum_attr.Saliency(m).attribute(x, target=y, abs=False)),
        Case("grad-x-input", {}, lambda m, x, y, **k: captum_attr.InputXGradient(m).attribute(x, target=y)),
        Case("ig", {"n_steps": 64}, lambda m, x, y, **k: captum_attr.IntegratedGradients(m).attribute(
            x, target=y, n_steps=64, method="gausslegendre", **k), "64 steps, Gauss-Legendre",
            cnn_captum={"internal_batch_size": 1024}),
        Case("smoothgrad", sg, lambda m, x, y, **k: tunnel(captum_attr.Saliency(m)).attribute(
            x, target=y, nt_type="smoothgrad", abs=False, **nt, **k), "25 samples, σ=0.15", noise(25),
            cnn_captum={"nt_samples_batch_size": 5}),
        Case("smoothgrad-sq", sg, lambda m, x, y, **k: tunnel(captum_attr.Saliency(m)).attribute(
            x, target=y, nt_type="smoothgrad_sq", abs=False, **nt, **k), "25 samples, σ=0.15", noise(25),
            cnn_captum={"nt_samples_batch_size": 5}),
        Case("vargrad", sg, lambda m, x, y, **k: tunnel(captum_attr.Saliency(m)).attribute(
            x, target=y, nt_type="vargrad", abs=False, **nt, **k), "25 samples, σ=0.15", noise(25),
            cnn_captum={"nt_samples_batch_size": 5}),
        Case("guided-backprop", {}, lambda m, x, y, **k: captum_attr.GuidedBackprop(m).attribute(x, target=y)),
        Case("expected-grad", {"references": refs, "n_samples": 20},
             lambda m, x, y, **k: captum_attr.GradientShap(m).attribute(x, baselines=refs, target=y, n_samples=20, stdevs=0.0),
             "20 samples (GradientShap, stdevs=0)", lambda x: same_references(x, 20, 0, len(refs))),
        Case("sg-ig", {"n_samples": 8, "sigma": 0.15, "n_steps": 16},
             lambda m, x, y, **k: tunnel(captum_attr.IntegratedGradients(m)).attribute(
                 x, target=y, nt_type="smoothgrad", nt_samples=8, stdevs=0.15, n_steps=16, **k),
             "8 samples × 16 steps (NoiseTunnel(IG))", noise(8), cnn_captum={"nt_samples_batch_size": 1}),
    ]


def images(n: int = N_IMAGES, n_refs: int = 1000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n MNIST test images and n_refs reference images (the data root, else the test slice)."""
    try:
        test = data.load("mnist", "test")
        return test.x[:n], test.y[:n], test.x[n : n + n_refs]
    except Exception:  # no data root: the committed 300-image slice
        path = os.path.join(os.path.dirname(__file__), "..", "tests", "assets", "mnist_fmnist_slice.safetensors")
        t = load_tensors(path)
        x = t["mnist_x"].float() / 255
        return x[:n], t["mnist_y"][:n], x[n : n + n_refs]


def timed(fn: Callable[[], torch.Tensor], device: torch.device, loops: int = 1) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) per call, averaged over ``loops`` calls."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(loops):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - wall) / loops, (time.process_time() - cpu) / loops


def run_case(case: Case, name: str, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int,
             span: float = 0.25) -> str:
    kw = case.cnn_captum if name == "cnn" else {}
    ours = lambda: attribution.attribute(case.method, net, x, y, **case.ours)  # noqa: E731
    theirs = lambda: case.captum(net, x.clone(), y, **kw).detach()  # noqa: E731
    with case.shared_draws(x) if case.shared_draws else contextlib.nullcontext():
        ref = theirs()
        per_image = ((ours() - ref).abs().flatten(1).amax(1) / ref.abs().max()).double()
    # Factoring the first layer out (IG, SmoothGrad) reassociates float sums; a ReLU whose input
    # is within rounding of 0 at one of the ~10⁴ points can then take the other side of its kink
    # and move that image's map by ~1e-3. Such images are counted, not hidden.
    diff, flipped = float(per_image.max()), int((per_image > 1e-5).sum())
    if flipped > len(x) // 100 or diff > 1e-2:
        raise SystemExit(f"{name} {case.method}: gradaudit and Captum disagree (max rel diff {diff:.2e}, "
                         f"{flipped} images over 1e-5)")
    warm = max(timed(ours, x.device)[0], timed(theirs, x.device)[0])
    loops = max(1, round(span / warm))  # each timing spans ≥ ~0.25 s, so fast cases are not noise
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "captum": []}
    for r in range(repeats):
        order = [("ours", ours), ("captum", theirs)] if r % 2 == 0 else [("captum", theirs), ("ours", ours)]
        for side, fn in order:
            times[side].append(timed(fn, x.device, loops))
    wall = {side: statistics.median(t[0] for t in v) for side, v in times.items()}
    cpu = {side: statistics.median(t[1] for t in v) for side, v in times.items()}
    settings = case.settings + ("; captum " + ", ".join(f"{k}={v}" for k, v in kw.items()) if kw else "")
    return (f"| {name} | {case.method} | {wall['ours']:.3f} | {wall['captum']:.3f} | "
            f"{wall['captum'] / wall['ours']:.2f}× | {cpu['captum'] / cpu['ours']:.2f}× | "
            f"{diff:.0e} ({flipped}) | {settings} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true", help="4 images, one round: checks the script runs")
    args = parser.parse_args()
    n_images = 4 if args.small else N_IMAGES
    if args.small:
        args.repeats = 1
    tune_malloc()
    warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\..*")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, y, refs = (t.to(device) for t in images(n_images, 16 if args.small else 1000))
    rev = git_revision()
    print(f"# attribution vs Captum — device {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else f'{os.cpu_count()} CPUs'}), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, captum {captum.__version__}, "
          f"numpy {np.__version__}, gradaudit {str(rev['commit'])[:10]}{'+dirty' if rev['dirty'] else ''}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"# {len(x)} MNIST images; median of {args.repeats} alternating runs after a warm-up; "
          "ratio = Captum / gradaudit (wall time; CPU: this process's CPU time, less sensitive to other load)")
    print("| model | method | gradaudit (s) | Captum (s) | ratio | CPU ratio | max rel diff (images > 1e-5) | settings |")
    print("|---|---|---|---|---|---|---|---|")
    wanted = None if args.methods is None else set(args.methods.split(","))
    for name in args.models.split(","):
        net = models.build(name, (1, 28, 28), 10, seed=0).to(device).eval()
        for case in cases(refs):
            if wanted is None or case.method in wanted:
                print(run_case(case, name, net, x, y, args.repeats, 0.0 if args.small else 0.25), flush=True)


if __name__ == "__main__":
    main()
