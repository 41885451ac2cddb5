"""Job functions shared by the run-store tests, importable by path and runnable as a script.

As a script (the kill -9 test runs it in a subprocess):
    python runs_jobs.py ROOT [PAUSE_AFTER_EPOCH]
runs the training job of CONFIG in the store at ROOT and prints its result as JSON; with
PAUSE_AFTER_EPOCH it writes ROOT/paused after that many epochs and sleeps, to be killed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from gradaudit.data.imageset import ImageSet
from gradaudit.models import build
from gradaudit.runs import Job, RunStore
from gradaudit.training import Recipe, accuracy, fit

CONFIG = {"model": "mlp", "hidden": [32], "recipe": Recipe(epochs=6, batch_size=64, lr=0.1, seed=3),
          "data": {"name": "toy", "n": 512, "seed": 0}}


def toy_data(n: int, seed: int) -> ImageSet:
    """A separable 2-class problem on 1×8×8 images: which half is brighter."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    return ImageSet(x, y, {"name": "toy", "split": "train", "classes": ["top", "bottom"],
                           "bounds": (0.0, 1.0)})


def train_job(job: Job, pause_after: int = 0) -> dict[str, Any]:
    """Train the toy MLP of the job's config under job.path/fit (resumes from its checkpoint);
    log each epoch trained to job.path/epochs.log."""
    cfg = job.config
    data = toy_data(cfg["data"]["n"], cfg["data"]["seed"])
    net = build(cfg["model"], data.input_shape, 2, seed=0, hidden=tuple(cfg["hidden"]))

    def on_epoch_end(epoch: int, entry: dict[str, float]) -> None:
        with open(job.path / "epochs.log", "a") as f:
            f.write(f"{epoch}\n")
        if epoch + 1 == pause_after:
            (job.path.parents[1] / "paused").write_text(str(os.getpid()))
            time.sleep(600)

    fit(net, data, Recipe(**cfg["recipe"]), out=job.path / "fit", quiet=True,
        on_epoch_end=on_epoch_end)
    weights = torch.cat([p.detach().flatten() for p in net.parameters()])
    return {"accuracy": accuracy(net, data.x, data.y), "weight_sum": weights.double().sum().item(),
            "weight_norm": weights.double().norm().item()}


def seeded_job(job: Job) -> dict[str, Any]:
    """A cheap deterministic job: a seeded draw and a small seeded training-free computation
    (lasting at least the config's ``sleep`` seconds, if any)."""
    cfg = job.config
    time.sleep(cfg.get("sleep", 0))
    g = torch.Generator().manual_seed(cfg["seed"])
    w = torch.randn(cfg["n"], cfg["n"], generator=g, dtype=torch.float64)
    (job.path / "pid").write_text(str(os.getpid()))
    return {"seed": cfg["seed"], "trace": (w @ w.T).trace().item(), "first": w[0, 0].item()}


def failing_job(job: Job) -> None:
    """Fails for odd seeds, after writing a partial file."""
    (job.path / "partial.txt").write_text("started")
    if job.config["seed"] % 2:
        raise ValueError(f"seed {job.config['seed']} diverged")


if __name__ == "__main__":
    root, pause = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0
    result = RunStore(root).run("model", CONFIG, lambda job: train_job(job, pause), name="toy")
    print(json.dumps(result))
