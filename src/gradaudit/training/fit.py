"""One training loop for every recipe: standard, adversarial (PGD) and regularized.

A run directory (``out``) makes training resumable: after each epoch the whole training
state (weights, optimizer, RNG states, history) is written atomically to
``checkpoint.safetensors``; a finished run leaves ``model.safetensors`` and ``run.json``.
Calling :func:`fit` again on the same directory loads a finished run instead of training,
and continues a killed one from its last completed epoch, ending with the same weights as
an uninterrupted run (same seed, CPU).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._io import read_json, write_json
from .._progress import progress
from .._provenance import provenance
from .._validation import ParameterError
from ..data.imageset import ImageSet
from .attacks import pgd
from .augment import augment_batch
from .checkpoint import load_checkpoint, read_metadata, save_checkpoint
from .metrics import accuracy
from .recipe import Recipe
from .regularizers import check_regularizer, regularization
from .schedule import lr_at

__all__ = ["FitResult", "fit", "load_run", "make_optimizer"]

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: The trained model (the object passed in, trained in place), in eval mode.
        recipe: The recipe it was trained with.
        history: One dict per epoch: epoch, lr, train_loss, train_acc, val_acc (if a
            validation split was held out), seconds, samples_per_s.
        seconds: Wall time of the epochs trained in this call.
        loaded: True if the run was finished already and only loaded from ``out``.
        out: The run directory, if any.
    """

    model: nn.Module
    recipe: Recipe
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    loaded: bool = False
    out: Path | None = None


def make_optimizer(params: Sequence[torch.Tensor] | Any, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params``; the learning rate is set per step."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)


def _identity(recipe: Recipe, train: ImageSet, spec: dict[str, Any] | None) -> dict[str, Any]:
    """What a run directory must match to be resumed or reused."""
    return {
        "recipe": recipe.model_dump(mode="json"),
        "data": {"name": train.name, "split": train.meta.get("split"), "n": len(train),
                 "input_shape": list(train.input_shape)},
        "spec": spec,
    }


def _check_same(out: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    for key in ("recipe", "data", "spec"):
        if found.get(key) != wanted[key]:
            raise ParameterError(
                f"The run directory {out} holds a run with a different {key} "
                f"({found.get(key)!r} vs {wanted[key]!r}). Use another --out, or delete it."
            )


def fit(
    model: nn.Module,
    train: ImageSet,
    recipe: Recipe,
    *,
    out: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    quiet: bool = False,
    spec: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` with ``recipe`` (in place) and return a :class:`FitResult`.

    Args:
        model: A freshly built (seeded) model; trained in place.
        train: The training set. A validation split of ``recipe.val_fraction`` is carved
            from it (seeded) for monitoring; no selection is made on it or on any test set.
        recipe: The training recipe.
        out: Run directory for checkpoints, final weights and ``run.json``; None keeps
            everything in memory.
        device: "cpu", "cuda" or a torch.device.
        quiet: No progress bars.
        spec: JSON-able description of the model (``models.ModelSpec``) recorded in
            ``run.json`` so the run can be reloaded with :func:`training.load_run`.
        on_epoch_end: Called as ``fn(epoch, history_entry)`` after each saved epoch.

    Raises:
        ParameterError: ``out`` holds a run of another recipe, data set or model.
    """
    check_regularizer(recipe.regularizer, recipe.reg_weight, dict(recipe.reg_options))
    device = torch.device(device)
    model.to(device)
    out_dir = Path(out) if out is not None else None
    ident = _identity(recipe, train, spec)
    if out_dir is not None and (out_dir / RUN_JSON).exists():
        info = read_json(out_dir / RUN_JSON)
        _check_same(out_dir, info, ident)
        load_checkpoint(out_dir / WEIGHTS, model)
        model.eval()
        return FitResult(model, recipe, info["history"], 0.0, True, out_dir)

    data, val = (train, None)
    if recipe.val_fraction > 0:
        data, val = train.split(recipe.val_fraction, seed=recipe.seed)
    optimizer = make_optimizer(model.parameters(), recipe)
    gens = {"cpu": torch.Generator().manual_seed(recipe.seed),
            "device": torch.Generator(device=device).manual_seed(recipe.seed + 1)}
    history: list[dict[str, float]] = []
    start = 0
    if out_dir is not None and (out_dir / CHECKPOINT).exists():
        _check_same(out_dir, read_metadata(out_dir / CHECKPOINT), ident)
        meta = load_checkpoint(out_dir / CHECKPOINT, model, optimizer, gens)
        start, history = int(meta["epoch"]), list(meta["history"])

    t0 = time.perf_counter()
    with progress(quiet) as bar:
        epochs = bar.add_task("epochs", total=recipe.epochs, completed=start)
        for epoch in range(start, recipe.epochs):
            entry = _train_epoch(model, data, recipe, optimizer, gens, epoch, device, bar)
            if val is not None:
                entry["val_acc"] = accuracy(model, val.x, val.y, device=device)
            history.append(entry)
            if out_dir is not None:
                save_checkpoint(out_dir / CHECKPOINT, model, optimizer, gens,
                                {**ident, "epoch": epoch + 1, "history": history})
            if on_epoch_end is not None:
                on_epoch_end(epoch, entry)
            bar.advance(epochs)
    seconds = time.perf_counter() - t0
    model.eval()
    if out_dir is not None:
        _finish(out_dir, model, ident, history)
    return FitResult(model, recipe, history, seconds, False, out_dir)


def _train_epoch(
    model: nn.Module,
    data: ImageSet,
    recipe: Recipe,
    optimizer: torch.optim.Optimizer,
    gens: dict[str, torch.Generator],
    epoch: int,
    device: torch.device,
    bar: Any,
) -> dict[str, float]:
    n = len(data)
    perm = torch.randperm(n, generator=gens["cpu"])
    steps = (n + recipe.batch_size - 1) // recipe.batch_size
    task = bar.add_task(f"epoch {epoch + 1}", total=steps)
    loss_sum, correct, lr, t0 = 0.0, 0, recipe.lr, time.perf_counter()
    for step in range(steps):
        idx = perm[step * recipe.batch_size : (step + 1) * recipe.batch_size]
        xb, yb = data.x[idx].to(device), data.y[idx].to(device)
        xb = augment_batch(xb, recipe.augment, gens["cpu"])
        if recipe.attack is not None:
            xb = pgd(model, xb, yb, norm=recipe.attack, eps=recipe.eps, steps=recipe.attack_steps,
                     step_size=recipe.step_size, random_start=recipe.attack_random_start,
                     bounds=data.bounds, generator=gens["device"])
        model.train()
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        if recipe.regularizer is not None:
            reg = regularization(recipe.regularizer, model, xb, yb, dict(recipe.reg_options),
                                 gens["device"])
            loss = loss + recipe.reg_weight * reg
        lr = lr_at(recipe, epoch, step, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
        bar.advance(task)
    bar.remove_task(task)
    seconds = time.perf_counter() - t0
    return {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / n, "train_acc": correct / n,
            "seconds": seconds, "samples_per_s": n / seconds}


def _finish(out: Path, model: nn.Module, ident: dict[str, Any], history: list[dict[str, float]]) -> None:
    save_checkpoint(out / WEIGHTS, model, None, {}, {"spec": ident["spec"]})
    write_json(out / RUN_JSON, {**ident, "status": "complete", "history": history,
                                "seconds": sum(h["seconds"] for h in history), **provenance()})
    (out / CHECKPOINT).unlink(missing_ok=True)


def load_run(
    out: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained model of a finished run directory; return (model, run.json).

    Raises:
        ParameterError: ``out`` is not a finished run written with a model spec.
    """
    from ..models.spec import ModelSpec  # models is a lower layer; imported lazily for speed

    out = Path(out)
    if not (out / RUN_JSON).exists():
        raise ParameterError(
            f"{out} is not a finished training run (no {RUN_JSON}). Train one with "
            "`gradaudit train --out DIR`, or pass the directory of a finished run."
        )
    info = read_json(out / RUN_JSON)
    if info.get("spec") is None:
        raise ParameterError(f"The run {out} has no model spec in {RUN_JSON}; it cannot be rebuilt.")
    model = ModelSpec(**info["spec"]).build(seed=None).to(device)
    load_checkpoint(out / WEIGHTS, model)
    model.eval()
    return model, info
