"""One training loop for every recipe: standard, adversarial (PGD) and regularized.

A run directory (``out``) makes training resumable. After each epoch the whole training
state (weights, optimizer state, generator states, history) is written atomically to
``checkpoint.safetensors``, with the recipe, the data's identity, the model spec and
:func:`provenance` as JSON metadata. A finished run holds:

    run.json            recipe (config), data identity, model spec, per-epoch metrics
                        (history), seconds, versions and git revision
    model.safetensors   the final weights (plus the model spec as metadata)

Calling :func:`fit` again on the same directory loads a finished run instead of training,
and continues a killed one from its last completed epoch, ending with bit-identical weights
to an uninterrupted run (same seed, CPU). A directory that holds a run of another recipe,
data set or model is refused with an error naming the differences, and left as it is.

Reproducibility: every random draw of training (shuffling, the validation split,
augmentation, PGD starts, regularizer noise) comes from two generators seeded from
``recipe.seed`` and saved in each checkpoint; the global RNG is never used.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

from .._io import read_json, write_json
from .._progress import log_step, progress, show_progress
from .._provenance import provenance
from .._torch_utils import eval_mode
from .._validation import DataError, ParameterError, ParameterTypeError
from ..data.imageset import ImageSet, as_imageset
from ..runs.store import check_same
from .attacks import pgd
from .augment import augment_batch
from .checkpoint import load_checkpoint, read_metadata, save_checkpoint
from .metrics import accuracy
from .recipe import Recipe
from .regularizers import check_regularizer, regularization
from .schedule import lr_at

__all__ = ["OPTIMIZERS", "FitResult", "check_model_fits", "fit", "load_run", "make_optimizer"]

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
        test_accuracy: Accuracy of the final model on ``fit(test=...)`` (None if not given).
    """

    model: nn.Module
    recipe: Recipe
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    loaded: bool = False
    out: Path | None = None
    test_accuracy: float | None = None


def _sgd(params: Any, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)


def _adam(params: Any, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


OPTIMIZERS: dict[str, Callable[[Any, Recipe], torch.optim.Optimizer]] = {"sgd": _sgd, "adam": _adam}


def make_optimizer(params: Sequence[torch.Tensor] | Any, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params``; the learning rate is set per step by ``fit``.

    "sgd": ``torch.optim.SGD`` (momentum, weight decay, Nesterov); "adam":
    ``torch.optim.Adam`` (betas (0.9, 0.999), L2 weight decay added to the gradient).
    PyTorch's default (per-tensor) kernels, not the fused ones: fused SGD and Adam are
    faster here (MLP 784-256-256-10: 0.14 vs 0.27 ms and 0.31 vs 1.08 ms per step) but
    round an element differently depending on its position in the tensor, which would
    break the bitwise equality of ``training.ensemble``'s stacked members with ``fit``.
    """
    return OPTIMIZERS[recipe.optimizer](params, recipe)


def data_fingerprint(data: ImageSet) -> str:
    """CRC-32 of the inputs' and labels' bytes: tells two same-sized data sets apart."""
    x = data.x.detach().cpu().contiguous()
    y = data.y.detach().cpu().contiguous()
    crc = zlib.crc32(memoryview(x.numpy()).cast("B"))
    crc = zlib.crc32(memoryview(y.numpy()).cast("B"), crc)
    return f"{crc:08x}"


def _identity(recipe: Recipe, train: ImageSet, spec: dict[str, Any] | None) -> dict[str, Any]:
    """What a run directory must match to be resumed or reused."""
    return {
        "recipe": recipe.model_dump(mode="json"),
        "data": {"name": train.name, "split": train.meta.get("split"), "n": len(train),
                 "input_shape": list(train.input_shape), "fingerprint": data_fingerprint(train)},
        "spec": spec,
    }


def _check_same(out: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    check_same(out, found, wanted, what="a training run",
               fix="Use another --out (out=...), or delete that directory to retrain.")


def _check_args(model: nn.Module, train: ImageSet, recipe: Recipe) -> None:
    if not isinstance(model, nn.Module):
        raise ParameterTypeError(f"The 'model' argument of fit must be a torch.nn.Module. Got {type(model).__name__}.")
    if not isinstance(train, ImageSet):
        raise ParameterTypeError(f"The 'train' argument of fit must be a data.ImageSet. Got {type(train).__name__}.")
    if not isinstance(recipe, Recipe):
        raise ParameterTypeError(f"The 'recipe' argument of fit must be a training.Recipe. Got {type(recipe).__name__}.")
    if len(train) - round(recipe.val_fraction * len(train)) < 1:
        raise ParameterError(
            f"fit needs at least one training image after holding out val_fraction="
            f"{recipe.val_fraction} of {len(train)}."
        )
    check_regularizer(recipe.regularizer, recipe.reg_weight, dict(recipe.reg_options))


def check_model_fits(model: nn.Module, train: ImageSet, device: str | torch.device = "cpu") -> None:
    """One forward of one image: the model takes the inputs and has a logit per class."""
    with torch.no_grad(), eval_mode(model):
        try:
            logits = model(train.x[:1].to(device))
        except RuntimeError as err:
            raise ParameterError(
                f"The model does not take inputs of shape {tuple(train.input_shape)} "
                f"({str(err).splitlines()[0]}). Build it with input_shape=train.input_shape."
            ) from None
    classes = int(train.y.max().item()) + 1
    if logits.dim() != 2 or logits.shape[1] < classes:
        raise ParameterError(
            f"The model gives logits of shape {tuple(logits.shape)} per image batch, but the "
            f"labels need {classes} classes. Build it with num_classes=train.num_classes."
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
    test: ImageSet | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` with ``recipe`` (in place) and return a :class:`FitResult`.

    Per step: a batch of the shuffled training split, augmented; under ``recipe.attack``
    replaced by its PGD adversarial examples (model in eval mode for the attack); one
    optimizer step on the mean cross-entropy (plus ``reg_weight`` × the regularizer) at
    the learning rate of :func:`lr_at`.

    Args:
        model: A freshly built (seeded) model; trained in place, left in eval mode.
        train: The training set (an ImageSet, an ``(x, y)`` pair or a Dataset of ``(image,
            label)``: ``data.as_imageset``). A validation split of ``recipe.val_fraction`` is carved
            from it (seeded) for monitoring (``val_acc``); nothing is selected on it, and
            no test set is ever used: the model returned is the last epoch's.
        recipe: The training recipe.
        out: Run directory for checkpoints, final weights and ``run.json``; None keeps
            everything in memory.
        device: "cpu", "cuda" or a torch.device.
        quiet: No progress bars.
        spec: JSON-able description of the model (``models.ModelSpec``) recorded in
            ``run.json`` so the run can be reloaded with :func:`training.load_run`.
        on_epoch_end: Called as ``fn(epoch, history_entry)`` after each saved epoch.
        test: A held-out test set, never trained or selected on: the final model's accuracy
            on it is returned and recorded in ``run.json`` (``test_accuracy``).

    Returns:
        The :class:`FitResult`.

    Raises:
        ParameterTypeError: Arguments of the wrong type.
        ParameterError: ``out`` holds a run of another recipe, data set or model; the model
            does not fit the data; no training image is left after the validation split.
    """
    if not isinstance(train, ImageSet):  # (x, y) tensors or a Dataset of (image, label): converted once, checked
        train = as_imageset(train, caller="fit", what="train")
    _check_args(model, train, recipe)
    device = torch.device(device)
    model.to(device)
    check_model_fits(model, train, device)
    out_dir = Path(out) if out is not None else None
    ident = _identity(recipe, train, spec) if out_dir is not None else {}
    if out_dir is not None and (out_dir / RUN_JSON).exists():
        info = _readable(read_json, out_dir / RUN_JSON)
        _check_same(out_dir, info, ident)
        _load_into(out_dir / WEIGHTS, model)
        model.eval()
        acc = info.get("test_accuracy") if test is not None else None
        if test is not None and acc is None:  # (a run written without a test set)
            acc = accuracy(model, test.x, test.y, device=device)
        return FitResult(model, recipe, info["history"], 0.0, True, out_dir, acc)

    if not train.x.is_contiguous():  # batches are gathered rows: keep them dense
        train = train.with_x(train.x.contiguous())
    data, val = (train, None)
    if recipe.val_fraction > 0:
        data, val = train.split(recipe.val_fraction, seed=recipe.seed)
    data = _resident(data, device)  # the training split stays on the device for the whole run
    optimizer = make_optimizer(model.parameters(), recipe)
    gens = {"cpu": torch.Generator().manual_seed(recipe.seed),
            "device": torch.Generator(device=device).manual_seed(recipe.seed + 1)}
    start, history = _resume(out_dir, ident, model, optimizer, gens)
    what = _what(model, spec, out_dir)
    if start and not quiet:
        log_step(f"{what}: resuming from {out_dir / CHECKPOINT} at epoch {start + 1}/{recipe.epochs}")

    t0 = time.perf_counter()
    with progress(quiet) as bar:
        epochs = bar.add_task(f"training {what}", total=recipe.epochs, completed=start)
        for epoch in range(start, recipe.epochs):
            t0_epoch = time.perf_counter()
            steps = _epoch_steps(model, data, recipe, optimizer, gens, epoch, device, bar)
            entry = _epoch_entry(epoch, len(data), t0_epoch, *steps)
            if val is not None:
                entry["val_acc"] = accuracy(model, val.x, val.y, device=device)
            history.append(entry)
            if not quiet and not show_progress(quiet):  # no bar: a line per epoch for the log
                log_step(f"{what}: epoch {epoch + 1}/{recipe.epochs}, " + _epoch_summary(entry), entry.get("seconds"))
            if out_dir is not None:
                save_checkpoint(out_dir / CHECKPOINT, model, optimizer, gens,
                                {**ident, "epoch": epoch + 1, "history": history, **provenance()})
            if on_epoch_end is not None:
                on_epoch_end(epoch, entry)
            bar.advance(epochs)
    seconds = time.perf_counter() - t0
    model.eval()
    acc = None if test is None else accuracy(model, test.x, test.y, device=device)
    if out_dir is not None:
        _finish(out_dir, model, ident, history, {} if acc is None else {"test_accuracy": acc})
    return FitResult(model, recipe, history, seconds, False, out_dir, acc)


def _resident(data: ImageSet, device: torch.device) -> ImageSet:
    """``data`` with inputs and labels on ``device`` (moved once per run, not per batch)."""
    if data.x.device == device and data.y.device == device:
        return data
    return ImageSet(to_device(data.x, device), to_device(data.y, device), dict(data.meta),
                    {k: to_device(v, device) for k, v in data.per_image.items()})


def _what(model: nn.Module, spec: dict[str, Any] | None, out: Path | None) -> str:
    """Names the model in bars and log lines: its architecture and its run directory."""
    arch = str(spec.get("name")) if spec and spec.get("name") else type(model).__name__
    return f"{arch} in {out}" if out is not None else arch


def _epoch_summary(entry: dict[str, float]) -> str:
    shown = (("train_loss", "loss"), ("train_acc", "train acc"), ("val_acc", "val acc"))
    return ", ".join(f"{label} {entry[key]:.4f}" for key, label in shown if key in entry)


def _resume(out: Path | None, ident: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            gens: dict[str, torch.Generator]) -> tuple[int, list[dict[str, float]]]:
    """(first epoch to train, history so far): from the checkpoint of a killed run, if any."""
    if out is None or not (out / CHECKPOINT).exists():
        return 0, []
    _check_same(out, _readable(read_metadata, out / CHECKPOINT), ident)
    meta = _load_into(out / CHECKPOINT, model, optimizer, gens)
    return int(meta["epoch"]), list(meta["history"])


def _readable(read: Callable[[Path], Any], path: Path) -> Any:
    """``read(path)``, or a DataError naming the unreadable file."""
    try:
        return read(path)
    except (OSError, ValueError, SafetensorError) as err:
        raise DataError(
            f"The run file {path} is unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            "Delete it (or the run directory) to train again."
        ) from None


def _load_into(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               gens: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    try:
        return _readable(lambda p: load_checkpoint(p, model, optimizer, gens), path)
    except RuntimeError as err:
        raise ParameterError(
            f"The weights in {path} do not fit this model ({str(err).splitlines()[0]}). "
            "Use another run directory, or the model the run was trained with."
        ) from None


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory without
    blocking the host (so no host synchronisation); on the CPU ``t`` itself."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _epoch_entry(epoch: int, n: int, t0: float, loss_sum: torch.Tensor, correct: torch.Tensor,
                 lr: float) -> dict[str, float]:
    """The history entry of an epoch of ``n`` images begun at ``t0``, from what
    :func:`_epoch_steps` returned: loss and accuracy are read from the device once, here."""
    loss, acc = loss_sum.item() / n, int(correct) / n  # the epoch's one host synchronisation
    seconds = time.perf_counter() - t0
    return {"epoch": epoch + 1, "lr": lr, "train_loss": loss, "train_acc": acc,
            "seconds": seconds, "samples_per_s": n / seconds}


def _epoch_steps(
    model: nn.Module,
    data: ImageSet,
    recipe: Recipe,
    optimizer: torch.optim.Optimizer,
    gens: dict[str, torch.Generator],
    epoch: int,
    device: torch.device,
    bar: Any,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The step loop of one epoch, free of host synchronisation: returns (Σ batch loss ×
    batch size as a float64 device scalar, correct count as an int64 device scalar, last lr).
    Draw order (kept by ``training.ensemble``): the epoch's permutation, then per batch the
    augmentation draws (CPU generator), then the PGD starts and regularizer noise (device
    generator). The float64 sum adds the same terms in the same order as ``loss.item() * b``
    summed in Python, so the history is unchanged to the bit."""
    n, size = len(data), recipe.batch_size
    perm = to_device(torch.randperm(n, generator=gens["cpu"]), device)
    steps = (n + size - 1) // size
    task = bar.add_task(f"epoch {epoch + 1}", total=steps)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    lr = recipe.lr
    model.train()  # pgd, accuracy and the regularizers restore the mode they find
    for step in range(steps):
        idx = perm[step * size : (step + 1) * size]
        xb = augment_batch(data.x[idx], recipe.augment, gens["cpu"])
        yb = data.y[idx]
        if recipe.attack is not None:
            xb = pgd(model, xb, yb, norm=recipe.attack, eps=recipe.eps, steps=recipe.attack_steps,
                     step_size=recipe.step_size, random_start=recipe.attack_random_start,
                     bounds=data.bounds, generator=gens["device"])
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
        loss_sum += loss.detach().double() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
        bar.advance(task)
    bar.remove_task(task)
    return loss_sum, correct, lr


def _finish(out: Path, model: nn.Module, ident: dict[str, Any], history: list[dict[str, float]],
            extra: dict[str, Any]) -> None:
    # the weights file describes itself: model spec, recipe (with its seed), data, provenance
    save_checkpoint(out / WEIGHTS, model, None, {}, {**ident, **provenance()})
    write_json(out / RUN_JSON, {**ident, "status": "complete", "history": history,
                                "seconds": sum(h["seconds"] for h in history), **extra, **provenance()})
    (out / CHECKPOINT).unlink(missing_ok=True)


def load_run(
    out: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained model of a finished run directory; return (model, run.json).

    Args:
        out: A run directory written by :func:`fit` with ``spec=...`` (the CLI does).
        device: Where to put the model.

    Returns:
        (model in eval mode, the contents of ``run.json``).

    Raises:
        ParameterError: ``out`` is not a finished run written with a model spec, or its
            weights do not fit the spec.
    """
    from ..models.spec import ModelSpec  # models is a lower layer; imported lazily for speed

    out = Path(out)
    if not (out / RUN_JSON).exists():
        raise ParameterError(
            f"{out} is not a finished training run (no {RUN_JSON}). Train one with "
            "`gradaudit train --out DIR`, or pass the directory of a finished run."
        )
    info = _readable(read_json, out / RUN_JSON)
    if info.get("spec") is None:
        raise ParameterError(f"The run {out} has no model spec in {RUN_JSON}; it cannot be rebuilt.")
    model = ModelSpec(**info["spec"]).build(seed=0).to(device)  # weights are overwritten
    _load_into(out / WEIGHTS, model)
    model.eval()
    return model, info
