"""ROAD: gradaudit.evaluation.road against Quantus 0.6.0's ROAD on the same inputs.

Setup: MNIST test images (random images if $GRADAUDIT_DATA lacks MNIST), the project's MLP
784-256-256-10 trained for one short epoch, input-gradient attributions of the true label,
removal fractions 0.1, 0.2, …, 0.9, noise 0 (Quantus draws its noise from the unseeded
global numpy RNG, so only the noise-free runs can agree value for value).

Cases: MoRF alone (Quantus's only order), and MoRF + LeRF (Quantus: two calls, the second on
−a; gradaudit: one call). Values are checked first (accuracies equal to 1e-4), then both
sides are timed: one warm-up, median of --repeats runs.

Usage: python bench/road_vs_quantus.py [--n 128] [--repeats 5] [--threads 1] [--small]
(``--small``: 4 images, 256 training images, one timing; a smoke test, not a measurement)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from gradaudit import data, models
from gradaudit._provenance import git_revision, versions
from gradaudit.evaluation import road


def header(threads: int) -> None:
    v = versions()
    rev = git_revision()
    print(f"# device: cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {threads}); load average {os.getloadavg()[0]:.1f}")
    print(f"# torch {v['torch']}, numpy {v['numpy']}, quantus {_quantus_version()}, "
          f"python {v['python']}; git {rev['commit']} (dirty: {rev['dirty']})")


def _quantus_version() -> str:
    import quantus

    return quantus.__version__


def setup(n: int, n_train: int = 6000) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    root = os.environ.get("GRADAUDIT_DATA")
    try:
        train = data.load("mnist", "train", root=root)
        test = data.load("mnist", "test", root=root)
        x_tr, y_tr, x, y = train.x[:n_train], train.y[:n_train], test.x[:n], test.y[:n]
        source = "MNIST"
    except Exception as err:  # no data: random images, labels from a random teacher
        print(f"# MNIST not available ({type(err).__name__}); using random images", file=sys.stderr)
        g = torch.Generator().manual_seed(0)
        x_tr, x = torch.rand(n_train, 1, 28, 28, generator=g), torch.rand(n, 1, 28, 28, generator=g)
        y_tr, y = torch.randint(10, (n_train,), generator=g), torch.randint(10, (n,), generator=g)
        source = "random"
    model = models.build("mlp", input_shape=(1, 28, 28), num_classes=10, hidden=(256, 256), seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(0, len(x_tr), 128):  # one epoch
        loss = torch.nn.functional.cross_entropy(model(x_tr[i : i + 128]), y_tr[i : i + 128])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xg = x.clone().requires_grad_(True)
    model(xg).gather(1, y.view(-1, 1)).sum().backward()
    attributions = xg.grad.detach()
    model.zero_grad(set_to_none=True)
    print(f"# data: {source}, {n} images; clean accuracy {(model(x).argmax(1) == y).float().mean():.3f}")
    return model, x, y, attributions


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--small", action="store_true", help="4 images, one timing: checks the script runs")
    args = parser.parse_args()
    if args.small:
        args.n, args.repeats = 4, 1
    torch.set_num_threads(args.threads)
    import quantus

    header(args.threads)
    model, x, y, a = setup(args.n, 256 if args.small else 6000)
    percents = list(range(10, 100, 10))
    fractions = [p / 100 for p in percents]
    xn, yn = x.numpy(), y.numpy()

    def quantus_road(attr: torch.Tensor) -> list[float]:
        metric = quantus.ROAD(percentages=percents, noise=0.0, normalise=False, abs=False,
                              disable_warnings=True)
        res = metric(model=model, x_batch=xn, y_batch=yn, a_batch=attr.numpy(), device="cpu",
                     batch_size=args.n)
        return [float(res[p]) for p in percents]

    cases = {
        "morf": (lambda: road(model, x, y, a, percentages=fractions, order="morf", noise=0.0,
                              batch_size=args.n),
                 lambda: quantus_road(a)),
        "morf+lerf": (lambda: road(model, x, y, a, percentages=fractions, order="both", noise=0.0,
                                   batch_size=args.n),
                      lambda: (quantus_road(a), quantus_road(-a))),
    }
    print(f"{'case':<12} {'ours [s]':>9} {'quantus [s]':>12} {'ratio':>7}  max |Δ accuracy|")
    for name, (ours_fn, peer_fn) in cases.items():
        ours, peer = ours_fn(), peer_fn()
        theirs = (peer,) if name == "morf" else peer
        mine = (ours.morf.accuracy,) if name == "morf" else (ours.morf.accuracy, ours.lerf.accuracy)
        delta = max(float(np.max(np.abs(np.subtract(m, t)))) for m, t in zip(mine, theirs, strict=True))
        if delta > 1e-4:
            raise SystemExit(f"{name}: values differ by {delta:.2e}; not timing")
        t_ours, _ = timed(ours_fn, args.repeats)
        t_peer, _ = timed(peer_fn, args.repeats)
        print(f"{name:<12} {t_ours:9.3f} {t_peer:12.3f} {t_peer / t_ours:6.1f}×  {delta:.1e}")
    print("# timings share 2 cores with other jobs on this machine: noisy; ratios are measured"
          " in the same process, one after the other.")


if __name__ == "__main__":
    main()
