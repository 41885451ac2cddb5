"""Stacked training: many models of one architecture trained at once on per-member data.

Every member ``m`` has its own initialisation seed, its own data-order seed and its own view
of the training inputs (e.g. a keep-mask applied to each batch); all share one
:class:`~gradaudit.training.Recipe`. Member ``m`` ends with the same weights as

    fit(spec.build(m.init_seed), train.with_x(m.inputs(train.x, arange(N))),
        recipe.model_copy(update={"seed": m.data_seed}))

i.e. :func:`~gradaudit.training.fit` of one freshly built model on that member's data:
the data-order seed plays the role of ``recipe.seed`` (shuffling, the held-out split,
augmentation), the step's learning rate comes from the pure schedule
:func:`~gradaudit.training.lr_at`, and the optimizer is :func:`make_optimizer` over the
stacked tensors (SGD with momentum/Nesterov/weight decay and Adam act elementwise, so one
optimizer over stacked leaves is exactly one optimizer per member).

Engines (chosen by measurement on a 2-core AVX2 CPU, see ``bench/diffroar_fmnist.py``):
    * ``"bmm"``: models that are a plain chain of Normalize / Flatten / Linear / ReLU /
      Softplus (every MLP and the linear model) run as grouped matrix products
      (``torch.baddbmm`` over the member axis) with a hand-written backward that issues, per
      member, the same matrix products as ``nn.Linear``'s autograd. The grouped products
      run each member single-threaded (threads share out the members), so the result does
      not depend on the thread count and a member's weights are bitwise those of ``fit``
      run with one thread (measured on MKL, 1 and 2 threads). ``fit`` with several threads
      lets MKL split one product across threads and rounds differently: the two then agree
      to float rounding (chaotic growth can leave accuracies a few 1e-4 apart after an
      epoch at lr 0.1).
    * ``"loop"``: any other model (CNNs, ResNets with BatchNorm) trains one member after
      another through :func:`fit` itself. vmap-stacking small CNNs measured 1.0× here, and
      BatchNorm under ``vmap`` needs per-member buffers, so there is nothing to gain.
    * ``"auto"`` (default): ``"bmm"`` when the model qualifies, else ``"loop"``.

Source: the ensembling recipe of the torch.func documentation ("Model ensembling":
``stack_module_state`` + ``vmap``); here the MLP case is written out as grouped matrix
products, which is what vmap lowers it to, but with a backward that matches ``nn.Linear``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import progress
from .._validation import ParameterError, ParameterTypeError, check_choice
from ..data.imageset import ImageSet
from ..models.layers import Normalize
from ..models.spec import ModelSpec
from .augment import augment_batch
from .fit import fit, make_optimizer
from .recipe import Recipe
from .schedule import lr_at

__all__ = ["ENGINES", "BatchInputFn", "InputFn", "Member", "StackedFit", "apply_inputs", "fit_stacked", "stackable"]

ENGINES = ("auto", "bmm", "loop")
InputFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchInputFn = Callable[[torch.Tensor], torch.Tensor]
_ELEMENTWISE = (nn.ReLU, nn.Softplus, nn.Identity, Normalize)


@dataclass(frozen=True)
class Member:
    """One model of a stacked run.

    Attributes:
        init_seed: Seed of ``spec.build`` (the initial weights).
        data_seed: The member's ``recipe.seed``: batch order, held-out split, augmentation.
        inputs: ``inputs(x_batch, index) -> model inputs`` for rows ``index`` of the training
            set (e.g. masked pixels); must act row by row. None feeds ``x`` as it is.
    """

    init_seed: int
    data_seed: int
    inputs: InputFn | None = field(default=None, compare=False)

    def recipe(self, recipe: Recipe) -> Recipe:
        """The recipe this member is trained with when trained alone."""
        return recipe.model_copy(update={"seed": self.data_seed})


@dataclass(frozen=True)
class StackedFit:
    """What :func:`fit_stacked` returns.

    Attributes:
        models: The trained members, in order, as ordinary modules in eval mode.
        engine: "bmm" or "loop".
        history: One dict per epoch: epoch, lr, seconds, and per-member lists train_loss,
            train_acc.
        seconds: Wall time of training.
        flops: Multiply-add FLOPs of the training steps (forward + backward), counted from
            the layer shapes (bmm engine); None for the loop engine.
    """

    models: tuple[nn.Module, ...]
    engine: str
    history: list[dict[str, Any]]
    seconds: float
    flops: float | None


class _StackedLinear(torch.autograd.Function):
    """y = x Wᵀ + b for every member at once; the backward issues nn.Linear's own products."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        wt = w.transpose(1, 2)
        return torch.baddbmm(b, x, wt) if b is not None else torch.bmm(x, wt)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        # addmm's backward for a column-major mat2 (Wᵀ) computes (gᵀ x)ᵀ, and g W for x.
        gx = torch.bmm(grad, w) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = grad.sum(1, keepdim=True) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _leaves(model: nn.Module) -> list[nn.Module] | None:
    if not isinstance(model, nn.Sequential):
        return None
    out: list[nn.Module] = []
    for child in model:
        sub = _leaves(child) if isinstance(child, nn.Sequential) else [child]
        if sub is None:
            return None
        out += sub
    return out


def stackable(model: nn.Module) -> tuple[bool, str]:
    """Whether the ``"bmm"`` engine can train ``model``: (True, "") or (False, why not)."""
    leaves = _leaves(model)
    if leaves is None:
        return False, "it is not an nn.Sequential chain"
    flat = [i for i, m in enumerate(leaves) if isinstance(m, nn.Flatten)]
    if len(flat) != 1 or leaves[flat[0]].start_dim != 1 or leaves[flat[0]].end_dim != -1:
        return False, "it needs exactly one nn.Flatten() (start_dim=1) before its Linear layers"
    for i, m in enumerate(leaves):
        ok = isinstance(m, _ELEMENTWISE) or i == flat[0] or (isinstance(m, nn.Linear) and i > flat[0])
        if not ok or (isinstance(m, Normalize) and i > flat[0]):
            return False, f"layer {type(m).__name__} (position {i}) has no stacked form"
    if any(list(m.buffers()) for m in leaves if not isinstance(m, Normalize)):
        return False, "it has buffers"
    return True, ""


class _Stack:
    """The members' Linear weights stacked along a new first axis, and the stacked forward."""

    def __init__(self, nets: Sequence[nn.Module], device: torch.device) -> None:
        self.layers = _leaves(nets[0]) or []
        linears = [[m for m in (_leaves(n) or []) if isinstance(m, nn.Linear)] for n in nets]
        self.weights = [torch.stack([ls[j].weight.detach() for ls in linears]).to(device)
                        for j in range(len(linears[0]))]
        self.biases = [None if ls0.bias is None else
                       torch.stack([ls[j].bias.detach() for ls in linears]).unsqueeze(1).to(device)
                       for j, ls0 in enumerate(linears[0])]
        self.layers = [m.to(device) if isinstance(m, Normalize) else m for m in self.layers]
        self._linears = linears

    def parameters(self) -> list[torch.Tensor]:
        params = []
        for w, b in zip(self.weights, self.biases, strict=True):
            params += [w.requires_grad_()] + ([] if b is None else [b.requires_grad_()])
        return params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        j = 0
        for m in self.layers:
            if isinstance(m, nn.Flatten):
                x = x.flatten(2)
            elif isinstance(m, nn.Linear):
                x = _StackedLinear.apply(x, self.weights[j], self.biases[j])
                j += 1
            else:
                x = m(x)
        return x

    def flops(self, rows: int) -> float:
        """Training FLOPs for ``rows`` samples of every member (forward + both backward products)."""
        total = 0.0
        for j, w in enumerate(self.weights):
            products = 2 if j == 0 else 3  # the first layer needs no input gradient
            total += products * 2.0 * w.shape[1] * w.shape[2] * rows * w.shape[0]
        return total

    def unstack(self) -> None:
        """Copy the trained stacked tensors back into each member's Linear layers."""
        with torch.no_grad():
            for m, linears in enumerate(self._linears):
                for j, lin in enumerate(linears):
                    lin.weight.copy_(self.weights[j][m])
                    if lin.bias is not None:
                        lin.bias.copy_(self.biases[j][m, 0])


def _train_rows(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Rows ``fit`` trains on: what ``ImageSet.split(fraction, seed)`` keeps (all if 0)."""
    if fraction <= 0:
        return torch.arange(n)
    held = round(fraction * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[held:].sort().values


def apply_inputs(fn: InputFn | None, x: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """``fn`` applied to every row of ``x`` (in chunks), as a member trained alone sees it."""
    if fn is None:
        return x
    parts = [fn(x[i : i + rows], torch.arange(i, min(i + rows, len(x)))) for i in range(0, len(x), rows)]
    return torch.cat(parts) if parts else x


def _check(spec: Any, train: Any, recipe: Any, members: Sequence[Any], engine: str) -> None:
    caller = "fit_stacked()"
    if not isinstance(spec, ModelSpec):
        raise ParameterTypeError(f"The 'spec' argument of {caller} must be a models.ModelSpec. Got {type(spec).__name__}.")
    if not isinstance(train, ImageSet):
        raise ParameterTypeError(f"The 'train' argument of {caller} must be a data.ImageSet. Got {type(train).__name__}.")
    if not isinstance(recipe, Recipe):
        raise ParameterTypeError(f"The 'recipe' argument of {caller} must be a training.Recipe. Got {type(recipe).__name__}.")
    if recipe.attack is not None or recipe.regularizer is not None:
        raise ParameterError(f"{caller} does standard training only; pass recipe.standard().")
    if not members or not all(isinstance(m, Member) for m in members):
        raise ParameterError(f"The 'members' argument of {caller} must be a non-empty list of Member.")
    check_choice(engine, "engine", caller, ENGINES)


def fit_stacked(
    spec: ModelSpec,
    train: ImageSet,
    recipe: Recipe,
    members: Sequence[Member],
    *,
    engine: str = "auto",
    batch_inputs: BatchInputFn | None = None,
    device: str | torch.device = "cpu",
    quiet: bool = False,
    bar: Any = None,
) -> StackedFit:
    """Train one model per member, all sharing the batch loop; see the module docstring.

    Args:
        spec: The architecture (every member is ``spec.build(member.init_seed)``).
        train: The training set, shared by all members (each member sees ``member.inputs``
            of it, in its own order).
        recipe: Standard-training recipe (no attack, no regularizer); ``recipe.seed`` is
            replaced by each member's ``data_seed``.
        members: The members.
        engine: "auto", "bmm" or "loop" (see the module docstring).
        batch_inputs: Optional fast path of the bmm engine: ``batch_inputs(rows)`` with
            ``rows`` (M, B) (member m's training rows) returns the stacked inputs (M, B, ...)
            and must equal stacking ``members[m].inputs(train.x[rows[m]], rows[m])`` (e.g.
            all keep-masks of a step built in one broadcast comparison).
        device: Where to train.
        quiet: No progress bars.
        bar: An open progress display to add the epoch bar to (instead of opening one).

    Returns:
        A :class:`StackedFit`; ``models[i]`` is member i, trained, in eval mode.

    Raises:
        ParameterError / ParameterTypeError: bad arguments, a non-standard recipe, or
            ``engine="bmm"`` for a model that has no stacked form.
    """
    _check(spec, train, recipe, members, engine)
    device = torch.device(device)
    nets = [spec.build(m.init_seed) for m in members]
    ok, why = stackable(nets[0])
    if engine == "bmm" and not ok:
        raise ParameterError(f"fit_stacked(engine='bmm') cannot stack this model: {why}. Use engine='loop'.")
    chosen = "bmm" if (engine == "auto" and ok) else ("loop" if engine == "auto" else engine)
    with torch.enable_grad():
        if bar is not None:
            return _run(chosen, nets, train, recipe, members, batch_inputs, device, bar)
        with progress(quiet) as own:
            return _run(chosen, nets, train, recipe, members, batch_inputs, device, own)


def _run(engine: str, nets: list[nn.Module], train: ImageSet, recipe: Recipe, members: Sequence[Member],
         batch_inputs: BatchInputFn | None, device: torch.device, bar: Any) -> StackedFit:
    if engine == "loop":
        return _fit_loop(nets, train, recipe, members, device, bar)
    if batch_inputs is None:
        def batch_inputs(rows: torch.Tensor) -> torch.Tensor:
            return torch.stack([train.x[r] if m.inputs is None else m.inputs(train.x[r], r)
                                for m, r in zip(members, rows, strict=True)])
    return _fit_bmm(nets, train, recipe, members, batch_inputs, device, bar)


def _fit_loop(nets: list[nn.Module], train: ImageSet, recipe: Recipe,
              members: Sequence[Member], device: torch.device, bar: Any) -> StackedFit:
    t0, runs = time.perf_counter(), []
    task = bar.add_task("members", total=len(members))
    for net, member in zip(nets, members, strict=True):
        data = train if member.inputs is None else train.with_x(apply_inputs(member.inputs, train.x))
        runs.append(fit(net, data, member.recipe(recipe), device=device, quiet=True).history)
        bar.advance(task)
    bar.remove_task(task)
    history = [{"epoch": e + 1, "lr": runs[0][e]["lr"], "seconds": sum(r[e]["seconds"] for r in runs),
                "train_loss": [r[e]["train_loss"] for r in runs],
                "train_acc": [r[e]["train_acc"] for r in runs]} for e in range(recipe.epochs)]
    return StackedFit(tuple(nets), "loop", history, time.perf_counter() - t0, None)


def _fit_bmm(nets: list[nn.Module], train: ImageSet, recipe: Recipe, members: Sequence[Member],
             batch_inputs: BatchInputFn, device: torch.device, bar: Any) -> StackedFit:
    stack = _Stack(nets, device)
    optimizer = make_optimizer(stack.parameters(), recipe)
    rows = [_train_rows(len(train), recipe.val_fraction, m.data_seed) for m in members]
    gens = [torch.Generator().manual_seed(m.data_seed) for m in members]
    n, size = len(rows[0]), recipe.batch_size
    steps = (n + size - 1) // size
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    epochs = bar.add_task("epochs", total=recipe.epochs)
    for epoch in range(recipe.epochs):
        t0 = time.perf_counter()
        order = [r[torch.randperm(n, generator=g)] for r, g in zip(rows, gens, strict=True)]
        loss_sum = torch.zeros(len(members), dtype=torch.float64)
        correct = torch.zeros(len(members), dtype=torch.int64)
        task = bar.add_task(f"epoch {epoch + 1}", total=steps)
        for step in range(steps):
            idx = torch.stack([o[step * size : (step + 1) * size] for o in order])
            xb = batch_inputs(idx).to(device)
            if recipe.augment != "none":
                xb = torch.stack([augment_batch(x, recipe.augment, g) for x, g in zip(xb, gens, strict=True)])
            losses, hits = _step(stack, optimizer, xb, train.y[idx].to(device), lr_at(recipe, epoch, step, steps))
            loss_sum += losses * idx.shape[1]
            correct += hits
            bar.advance(task)
        bar.remove_task(task)
        bar.advance(epochs)
        history.append({"epoch": epoch + 1, "lr": lr_at(recipe, epoch, steps - 1, steps),
                        "seconds": time.perf_counter() - t0,
                        "train_loss": (loss_sum / n).tolist(), "train_acc": (correct / n).tolist()})
    bar.remove_task(epochs)
    seconds = time.perf_counter() - t_start
    stack.unstack()
    for net in nets:
        net.to(device).eval()
    flops = stack.flops(n) * recipe.epochs
    return StackedFit(tuple(nets), "bmm", history, seconds, flops)


def _step(stack: _Stack, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
          lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD/Adam step of every member on its batch (M, B, ...); per-member mean
    cross-entropy, as ``fit``. Returns the members' losses (float64) and correct counts."""
    logits = stack.forward(xb)
    losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
    losses = losses.view(len(yb), -1).mean(1)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()
    return losses.detach().double().cpu(), (logits.detach().argmax(2) == yb).sum(1).cpu()
