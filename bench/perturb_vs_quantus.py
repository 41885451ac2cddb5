"""Pixel perturbation: gradaudit.evaluation.pixel_perturbation against Quantus 0.6.0's
PixelFlipping in a matching configuration.

Matching configuration: one channel (MNIST), pixels ranked by |input gradient|, a constant
0.5 fill, ``features_in_step = s`` in Quantus and the fractions (t + 1)·s / 784 in gradaudit,
so both remove exactly the same pixels at every step. Many |gradient| values tie exactly
(MNIST's black border; ties also occur on random images), and a tie cut by a step boundary
is broken by gradaudit's seeded shuffle on one side and by numpy's argsort on the other;
Quantus therefore gets ``removal_scores`` (H·W − r for the pixel gradaudit removes at step
r: tie-free, highest first = gradaudit's LeRF or MoRF order), computed outside the timing
as Quantus's own input is. Quantus
reports the softmax probability of the label per image and step; the check compares its mean
with gradaudit's probability curve (max |Δ| ≤ 1e-6), then both sides are timed: one warm-up,
median of --repeats runs, in wall time and in this process's CPU time (less sensitive to
other load on a shared machine).

Models: the project's MLP 784-256-256-10 and its small CNN, each trained one short epoch.
Both sides run one forward per step per batch; gradaudit's run with the convolution weights
channels-last (oneDNN's fast CPU layout; ``attribution._core.fast_layout``) and through
``attribution._fastpath`` (max-pool before ReLU, channels-last max-pools), which is most of
its lead on the CNN, where the forwards are most of the time.

Usage: python bench/perturb_vs_quantus.py [--n 256] [--repeats 5] [--threads 1] [--small]
(``--small``: 4 images, 256 training images, 7× larger steps, one timing; a smoke test, not a measurement)
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
from gradaudit.evaluation.perturbation import pixel_perturbation, removal_scores


def load(n: int, n_train: int = 6000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    root = os.environ.get("GRADAUDIT_DATA")
    try:
        train, test = data.load("mnist", "train", root=root), data.load("mnist", "test", root=root)
        return train.x[:n_train], train.y[:n_train], test.x[:n], test.y[:n], "MNIST"
    except Exception as err:  # no data: random images and labels
        print(f"# MNIST not available ({type(err).__name__}); using random images", file=sys.stderr)
        g = torch.Generator().manual_seed(0)
        return (torch.rand(n_train, 1, 28, 28, generator=g), torch.randint(10, (n_train,), generator=g),
                torch.rand(n, 1, 28, 28, generator=g), torch.randint(10, (n,), generator=g), "random")


def trained(name: str, x_tr: torch.Tensor, y_tr: torch.Tensor, **options) -> torch.nn.Module:
    model = models.build(name, input_shape=(1, 28, 28), num_classes=10, seed=0, **options)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(0, len(x_tr), 128):
        loss = torch.nn.functional.cross_entropy(model(x_tr[i : i + 128]), y_tr[i : i + 128])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    model(xg).gather(1, y.view(-1, 1)).sum().backward()
    model.zero_grad(set_to_none=True)
    return xg.grad.detach()


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall seconds, this process's CPU seconds) of ``repeats`` calls after a warm-up."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--small", action="store_true", help="4 images, one timing: checks the script runs")
    args = parser.parse_args()
    if args.small:
        args.n, args.repeats = 4, 1
    torch.set_num_threads(args.threads)
    import quantus

    v, rev = versions(), git_revision()
    print(f"# device: cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {args.threads}); load average {os.getloadavg()[0]:.1f}")
    print(f"# torch {v['torch']}, numpy {v['numpy']}, quantus {quantus.__version__}, "
          f"python {v['python']}; git {rev['commit']} (dirty: {rev['dirty']})")
    x_tr, y_tr, x, y, source = load(args.n, 256 if args.small else 6000)
    nets = {"mlp": trained("mlp", x_tr, y_tr, hidden=(256, 256)), "cnn": trained("cnn", x_tr, y_tr)}
    print(f"# data: {source}, {args.n} images; pixel scores |input gradient|; fill 0.5")
    print(f"{'case':<18} {'ours [s]':>9} {'quantus [s]':>12} {'ratio':>7} {'CPU ratio':>10}  max |Δ probability|")
    grow = 7 if args.small else 1  # --small: 14 and 7 steps (the step must divide 784)
    for model_name, order, step in (("mlp", "lerf", 8 * grow), ("mlp", "morf", 8 * grow),
                                    ("cnn", "lerf", 16 * grow), ("cnn", "morf", 16 * grow)):
        model = nets[model_name]
        score = gradients(model, x, y).abs()
        fractions = [(t + 1) * step / 784 for t in range(784 // step)]
        metric = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.5, normalise=False,
                                       abs=False, disable_warnings=True)
        a_q = removal_scores(score, order=order).numpy()  # our order, tie-free, highest first

        def peer(model=model, metric=metric, a_q=a_q) -> np.ndarray:
            return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a_q,
                                     device="cpu", batch_size=args.n)).mean(0)

        def ours(model=model, score=score, fractions=fractions, order=order):
            return pixel_perturbation(model, x, y, score, fractions=fractions, order=order,
                                      fill="constant", value=0.5, batch_size=args.n)

        delta = float(np.max(np.abs(peer() - np.asarray(ours().curve.probability))))
        name = f"{model_name} {order} s={step}"
        if delta > 1e-6:
            raise SystemExit(f"{name}: values differ by {delta:.2e}; not timing")
        (t_ours, c_ours), (t_peer, c_peer) = timed(ours, args.repeats), timed(peer, args.repeats)
        print(f"{name:<18} {t_ours:9.3f} {t_peer:12.3f} {t_peer / t_ours:6.1f}× {c_peer / c_ours:9.1f}×  {delta:.1e}")
    print("# timings share 2 cores with other jobs on this machine: noisy; ratios are measured"
          " in the same process, one after the other.")


if __name__ == "__main__":
    main()
