"""Audit your own model with gradaudit: your architecture, numpy data, your training loop.

Nothing here is registered with gradaudit: the CNN is defined below, the data are numpy
arrays, and the retrains use the Adam loop below (``train_fn``). gradaudit only needs

* ``make_model()``: a fresh, untrained model of the audited architecture;
* ``train_fn(model, x, y) -> model``: your training code (gradaudit seeds torch before
  each call, so retrain r is reproducible and its top-k and bottom-k runs are paired);
* the data as ``(x, y)`` pairs (or a ``TensorDataset``, or a ``data.ImageSet``).

Run:  python examples/own_model.py            (a few minutes on a laptop CPU)
      python examples/own_model.py --small    (seconds; what the CI test runs)
      python examples/own_model.py --out audit/   (resumable: rerun after a kill to continue)

See docs/own-model.md.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from gradaudit import evaluation

SIDE = 12  # images are 1 × SIDE × SIDE


class TwoConvNet(nn.Module):
    """A small CNN of our own (not in gradaudit's model registry)."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * (SIDE // 4) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def make_model() -> nn.Module:
    """A fresh, untrained TwoConvNet (gradaudit calls it after seeding torch)."""
    return TwoConvNet()


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images in [0, 1]: noise, plus a bright 4×4 patch whose position gives the class
    (top-left for class 0, bottom-right for class 1). Only 32 of 144 pixels carry the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0.0, 0.6, (n, 1, SIDE, SIDE)).astype(np.float32)
    for i, label in enumerate(y):
        r = 1 if label == 0 else SIDE - 5
        x[i, 0, r : r + 4, r : r + 4] += 0.5
    return x.clip(0.0, 1.0), y.astype(np.int64)


EPOCHS = 3


def train_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """Our own training loop: Adam, mini-batches in an order drawn from torch's RNG."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            batch = order[i : i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    return model


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", default=bool(os.environ.get("GRADAUDIT_EXAMPLE_SMALL")),
                        help="tiny sizes (the CI test; also GRADAUDIT_EXAMPLE_SMALL=1)")
    parser.add_argument("--out", default=None, help="folder for resumable results (default: in memory)")
    args = parser.parse_args(argv)
    n_train, n_test, seeds, levels = (256, 200, 2, (0.2, 0.5)) if args.small else (2000, 1000, 3, (0.05, 0.1, 0.2, 0.5))

    x_train, y_train = make_data(n_train, seed=0)
    x_test, y_test = make_data(n_test, seed=1)
    train = (torch.from_numpy(x_train), torch.from_numpy(y_train))  # plain tensors are fine
    test = (torch.from_numpy(x_test), torch.from_numpy(y_test))

    torch.manual_seed(0)
    model = train_fn(make_model(), *train).eval()
    with torch.no_grad():
        acc = (model(test[0]).argmax(1) == test[1]).float().mean().item()
    print(f"our model: test accuracy {acc:.3f}")

    result = evaluation.diffroar(
        model, train, test, method="grad",
        make_model=make_model, train_fn=train_fn,  # instead of spec= and recipe=
        levels=levels, seeds=seeds, out=args.out, quiet=True,
    )
    print("k      DiffROAR(grad)   DiffROAR(random)")
    for k, g, r in zip(result.levels, result.attribution.diffroar.mean, result.random.diffroar.mean, strict=True):
        print(f"{k:<6g} {g:+.3f}           {r:+.3f}")
    return result


if __name__ == "__main__":
    main()
