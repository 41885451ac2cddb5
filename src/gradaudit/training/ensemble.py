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
    * ``"loop"``: any model (CNNs, ResNets with BatchNorm) trains one member after
      another through :func:`fit` itself.
    * ``"vmap"``: CNNs and ResNets as one stack (``torch.func`` ``vmap`` over the members,
      per-member BatchNorm buffers; :mod:`~gradaudit.training.stacked_vmap`), each member
      equal to ``fit`` to float rounding; standard recipes. On a CPU it measured slower than
      ``"loop"`` (0.6× for the small CNN, 0.44× for a ResNet9, one thread). It is meant for GPUs, where one small model leaves the
      card idle; not measured on one yet (the table has no cuda entry: "auto" keeps "loop").
    * ``"auto"`` (default): the engine that ``training/engine_table.json`` records as fastest
      for the device type and model family (``bench/train_throughput.py --stacked --record``);
      without an entry, ``"bmm"`` when the model qualifies, else ``"loop"``.

Adversarial training stacks too: a member's ``attack`` overrides (norm, eps, step) give it
its own threat model, and the bmm engine runs PGD for all attacked members at once
(:class:`_StackedPGD`), each member equal to ``fit`` with its own recipe. So do the
input-gradient regularizers of :mod:`~gradaudit.training.regularizers` (gradient norm, score
and anti-score matching, :class:`_StackedRegularizer`): one double backward through the
stack gives every member's ∇ₓ f_y, each member draws its trace-estimate noise from its own
generator, and a member equals ``fit`` of it alone to float rounding (the double backward
of the grouped products is not nn.Linear's, so not bitwise).

Device residency: the training inputs, labels, the epoch's row orders and the members'
running losses/accuracies live on the training device; nothing is read back to the host
inside the step loop (:class:`_Epoch`), only once per epoch. ``precision`` ("fp32" default,
"tf32", "bf16") is a CUDA speed option for retraining.

Source: the ensembling recipe of the torch.func documentation ("Model ensembling":
``stack_module_state`` + ``vmap``); here the MLP case is written out as grouped matrix
products, which is what vmap lowers it to, but with a backward that matches ``nn.Linear``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from .attacks import _random_start
from .augment import augment_batch
from .fit import _resident, fit, make_optimizer, to_device
from .recipe import Recipe
from .regularizers import check_smooth_model, regularizer_options
from .schedule import lr_at

__all__ = ["ENGINES", "MEMBER_FIELDS", "PRECISIONS", "BatchInputFn", "InputFn", "Member", "StackedFit", "apply_inputs", "fit_stacked", "stackable"]

ENGINES = ("auto", "bmm", "loop", "vmap")
PRECISIONS = ("fp32", "tf32", "bf16")
MEMBER_FIELDS = ("attack", "eps", "attack_step_size", "attack_random_start")
InputFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchInputFn = Callable[[torch.Tensor], torch.Tensor]
_ELEMENTWISE = (nn.ReLU, nn.Softplus, nn.Identity, Normalize)
_BUILD = threading.Lock()  # fit_stacked may run in several threads at once (evaluation.retrain)


@dataclass(frozen=True)
class Member:
    """One model of a stacked run.

    Attributes:
        init_seed: Seed of ``spec.build`` (the initial weights).
        data_seed: The member's ``recipe.seed``: batch order, held-out split, augmentation.
        inputs: ``inputs(x_batch, index) -> model inputs`` for rows ``index`` of the training
            set (e.g. masked pixels); must act row by row. None feeds ``x`` as it is. Both
            arguments are on the training device.
        attack: The member's own adversarial training, overriding the shared recipe's:
            ``{"attack": "linf" | "l2" | None, "eps": ..., "attack_step_size": ...}`` (any of
            :data:`MEMBER_FIELDS`); empty keeps the shared recipe's.
    """

    init_seed: int
    data_seed: int
    inputs: InputFn | None = field(default=None, compare=False)
    attack: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def recipe(self, recipe: Recipe) -> Recipe:
        """The recipe this member is trained with when trained alone (validated)."""
        unknown = sorted(set(self.attack) - set(MEMBER_FIELDS))
        if unknown:
            raise ParameterError(
                f"Member.attack may set only {', '.join(MEMBER_FIELDS)}; got {', '.join(unknown)}. "
                "Put the other fields in the shared recipe."
            )
        try:
            return Recipe.model_validate({**recipe.model_dump(), **self.attack, "seed": self.data_seed})
        except ValueError as err:
            raise ParameterError(f"Member {self.attack!r} gives an invalid recipe: {err}") from None


@dataclass(frozen=True)
class StackedFit:
    """What :func:`fit_stacked` returns.

    Attributes:
        models: The trained members, in order, as ordinary modules in eval mode.
        engine: "bmm" or "loop".
        history: One dict per epoch: epoch, lr, seconds, and per-member lists train_loss,
            train_acc.
        seconds: Wall time of training.
        flops: Multiply-add FLOPs of the training steps (forward + backward, plus forward +
            input gradient per PGD step of the attacked members), counted from the layer
            shapes (bmm engine); None for the loop engine and for regularized training.
        precision: The arithmetic used (see :func:`fit_stacked`).
    """

    models: tuple[nn.Module, ...]
    engine: str
    history: list[dict[str, Any]]
    seconds: float
    flops: float | None
    precision: str = "fp32"


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
        if grad.dtype != w.dtype:  # bf16 products (precision="bf16"): cast as autocast did forward
            x, w = x.to(grad.dtype), w.to(grad.dtype)
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

    def forward(self, x: torch.Tensor, sel: torch.Tensor | None = None, frozen: bool = False,
                native: bool = False) -> torch.Tensor:
        """Logits (M, B, classes) of inputs (M, B, ...); ``sel`` runs only those members (x
        then holds their inputs); ``frozen`` takes no weight gradients (attacks); ``native``
        uses autograd's own baddbmm (twice differentiable, and its backward computes only
        the gradients asked for: the regularizers' ∇ₓ pass takes no weight gradient)."""
        j = 0
        for m in self.layers:
            if isinstance(m, nn.Flatten):
                x = x.flatten(2)
            elif isinstance(m, nn.Linear):
                w, b = self.weights[j], self.biases[j]
                if frozen:
                    w, b = w.detach(), None if b is None else b.detach()
                if sel is not None:
                    w, b = w[sel], None if b is None else b[sel]
                if native:
                    x = torch.baddbmm(b, x, w.transpose(1, 2)) if b is not None else torch.bmm(x, w.transpose(1, 2))
                else:
                    x = _StackedLinear.apply(x, w, b)
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

    def attack_flops(self, rows: int) -> float:
        """FLOPs of one attack step for ``rows`` samples of every member (forward + input gradient)."""
        return sum(2 * 2.0 * w.shape[1] * w.shape[2] * rows * w.shape[0] for w in self.weights)

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
    parts = [fn(x[i : i + rows], torch.arange(i, min(i + rows, len(x)), device=x.device))
             for i in range(0, len(x), rows)]
    return torch.cat(parts) if parts else x


def _check(spec: Any, train: Any, recipe: Any, members: Sequence[Any], engine: str) -> None:
    caller = "fit_stacked()"
    if not isinstance(spec, ModelSpec):
        raise ParameterTypeError(f"The 'spec' argument of {caller} must be a models.ModelSpec. Got {type(spec).__name__}.")
    if not isinstance(train, ImageSet):
        raise ParameterTypeError(f"The 'train' argument of {caller} must be a data.ImageSet. Got {type(train).__name__}.")
    if not isinstance(recipe, Recipe):
        raise ParameterTypeError(f"The 'recipe' argument of {caller} must be a training.Recipe. Got {type(recipe).__name__}.")
    if not members or not all(isinstance(m, Member) for m in members):
        raise ParameterError(f"The 'members' argument of {caller} must be a non-empty list of Member.")
    check_choice(engine, "engine", caller, ENGINES)
    for m in members:
        m.recipe(recipe)  # each member's recipe is valid


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
    precision: str = "fp32",
) -> StackedFit:
    """Train one model per member, all sharing the batch loop; see the module docstring.

    Args:
        spec: The architecture (every member is ``spec.build(member.init_seed)``).
        train: The training set, shared by all members (each member sees ``member.inputs``
            of it, in its own order).
        recipe: The shared recipe (standard, PGD and/or a regularizer); ``recipe.seed`` is
            replaced by each member's ``data_seed``, and its attack fields by the member's
            ``attack`` overrides.
        members: The members.
        engine: "auto", "bmm", "loop" or "vmap" (CNNs and ResNets stacked with torch.func:
            :mod:`~gradaudit.training.stacked_vmap`; "auto" reads its measured engine table).
        batch_inputs: Optional fast path of the bmm engine: ``batch_inputs(rows)`` with
            ``rows`` (M, B) (member m's training rows) returns the stacked inputs (M, B, ...)
            and must equal stacking ``members[m].inputs(train.x[rows[m]], rows[m])`` (e.g.
            all keep-masks of a step built in one broadcast comparison).
        device: Where to train.
        quiet: No progress bars.
        bar: An open progress display to add the epoch bar to (instead of opening one).
        precision: "fp32" (default: the numbers of ``fit``), "tf32" (fp32 with TensorFloat-32
            matrix products and convolutions on CUDA; the same as fp32 on the CPU) or "bf16"
            (TF32 plus ``torch.autocast`` to bfloat16: products in bf16, losses and
            weights in fp32). A speed option for CUDA retraining; off by default.

    Returns:
        A :class:`StackedFit`; ``models[i]`` is member i, trained, in eval mode.

    Raises:
        ParameterError / ParameterTypeError: bad arguments, score or anti-score matching of
            a piecewise-linear model, or ``engine="bmm"`` for a model that has no stacked form.
    """
    _check(spec, train, recipe, members, engine)
    check_choice(precision, "precision", "fit_stacked()", PRECISIONS)
    device = torch.device(device)
    with _BUILD:  # build seeds the global RNG (saved and restored): one thread at a time
        nets = [spec.build(m.init_seed) for m in members]
    if recipe.regularizer is not None:
        check_smooth_model(recipe.regularizer, nets[0])
    ok, why = stackable(nets[0])
    if engine == "bmm" and not ok:
        raise ParameterError(f"fit_stacked(engine='bmm') cannot stack this model: {why}. Use engine='loop'.")
    if engine == "auto":  # the measured table (training.stacked_vmap.auto_engine)
        from .stacked_vmap import auto_engine

        engine = auto_engine(spec, ok, recipe, members, device)
    chosen = engine
    with torch.enable_grad(), arithmetic(precision, device):
        if bar is not None:
            fitted = _run(chosen, nets, train, recipe, members, batch_inputs, device, bar)
        else:
            with progress(quiet) as own:
                fitted = _run(chosen, nets, train, recipe, members, batch_inputs, device, own)
    return dataclasses.replace(fitted, precision=precision)


@contextlib.contextmanager
def arithmetic(precision: str, device: torch.device) -> Iterator[None]:
    """Inside the block, matrix products run in ``precision`` (see :func:`fit_stacked`);
    the TF32 switches are restored after it."""
    if precision == "fp32":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        if precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _run(engine: str, nets: list[nn.Module], train: ImageSet, recipe: Recipe, members: Sequence[Member],
         batch_inputs: BatchInputFn | None, device: torch.device, bar: Any) -> StackedFit:
    if engine == "loop":
        return _fit_loop(nets, train, recipe, members, device, bar)
    train = _resident(train, device)  # inputs and labels stay on the device for the whole run
    if batch_inputs is None:
        def batch_inputs(rows: torch.Tensor) -> torch.Tensor:
            return torch.stack([train.x[r] if m.inputs is None else m.inputs(train.x[r], r)
                                for m, r in zip(members, rows, strict=True)])
    if engine == "vmap":
        from .stacked_vmap import fit_vmap  # (it imports this module)

        return fit_vmap(nets, train, recipe, members, batch_inputs, device, bar)
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


class _StackedPGD:
    """PGD of every attacked member at once, each with its own norm, radius and step.

    Member m's adversarial batch equals ``attacks.pgd`` of member m alone (model in eval
    mode, its own device generator for the random start), operation for operation: the
    random start is drawn per member with :func:`attacks._random_start` on its own batch;
    every step takes the gradient of each member's mean cross-entropy (one backward over
    the stack: members are independent, so the sum's gradient is each member's), then the
    l-inf (sign) or l2 (normalised) step and projection, with the radius and step as float32
    tensors (``eps / t`` is written as ``t.reciprocal() * eps``, what PyTorch does for a
    Python number over a tensor).
    """

    def __init__(self, recipes: Sequence[Recipe], bounds: tuple[float, float], device: torch.device) -> None:
        self.recipes = recipes
        self.bounds = bounds
        attacked = [i for i, r in enumerate(recipes) if r.attack is not None]
        self.attacked = attacked
        self.sel = torch.tensor(attacked, device=device)
        self.steps = recipes[attacked[0]].attack_steps if attacked else 0

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.eps = column([recipes[i].eps for i in attacked])
        self.alpha = column([recipes[i].step_size for i in attacked])
        linf = [recipes[i].attack == "linf" for i in attacked]
        self.linf = torch.tensor([j for j, v in enumerate(linf) if v], dtype=torch.long, device=device)
        self.l2 = torch.tensor([j for j, v in enumerate(linf) if not v], dtype=torch.long, device=device)
        self.all_linf, self.all_l2 = all(linf), not any(linf)

    def __call__(self, stack: _Stack, x: torch.Tensor, y: torch.Tensor,
                 gens: Sequence[torch.Generator]) -> torch.Tensor:
        if not self.attacked:
            return x
        xa = x[self.sel] if len(self.attacked) < len(x) else x
        ya = y[self.sel] if len(self.attacked) < len(x) else y
        starts = []
        for j, i in enumerate(self.attacked):
            r = self.recipes[i]
            starts.append(_random_start(xa[j], r.attack, r.eps, gens[i]) if r.attack_random_start
                          else torch.zeros_like(xa[j]))
        adv = self._attack(stack, xa, ya, torch.stack(starts))
        if len(self.attacked) == len(x):
            return adv
        out = x.clone()
        out[self.sel] = adv
        return out

    def _attack(self, stack: _Stack, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        lo, hi = self.bounds
        shape = (-1, *([1] * (x.dim() - 1)))
        eps, alpha = self.eps.view(shape), self.alpha.view(shape)
        sel = None if len(self.attacked) == len(self.recipes) else self.sel
        adv = torch.clamp(x + start, lo, hi).detach()
        with torch.enable_grad():
            for _ in range(self.steps):
                adv.requires_grad_(True)
                logits = stack.forward(adv, sel, frozen=True)
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
                (grad,) = torch.autograd.grad(loss.view(len(y), -1).mean(1).sum(), adv)
                with torch.no_grad():
                    adv = self._project(adv, grad, x, eps, alpha)
                    adv = torch.clamp(x + adv, lo, hi).detach()
        return adv

    def _project(self, adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
                 alpha: torch.Tensor) -> torch.Tensor:
        """δ after one step: the members' l-inf and l2 updates (each on its own members)."""
        if self.all_linf:
            return self._linf(adv, grad, x, eps, alpha)
        if self.all_l2:
            return self._l2(adv, grad, x, eps, alpha)
        delta = torch.empty_like(adv)
        for part, update in ((self.linf, self._linf), (self.l2, self._l2)):
            delta[part] = update(adv[part], grad[part], x[part], eps[part], alpha[part])
        return delta

    @staticmethod
    def _linf(adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
              alpha: torch.Tensor) -> torch.Tensor:
        adv = adv + alpha * grad.sign()
        return torch.clamp(adv - x, -eps, eps)

    @staticmethod
    def _l2(adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps: torch.Tensor,
            alpha: torch.Tensor) -> torch.Tensor:
        adv = adv + alpha * grad / (_norms(grad) + 1e-10)
        delta = adv - x
        return delta * torch.clamp(_norms(delta).reciprocal() * eps, max=1.0)


def _norms(t: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norms of stacked batches (M, B, ...), shaped to broadcast."""
    return t.flatten(2).norm(p=2, dim=2).view(*t.shape[:2], *([1] * (t.dim() - 2)))


class _StackedRegularizer:
    """λ × the recipe's input-gradient regularizer of every member at once, (M,).

    Member m's value equals ``regularizers.regularization`` of member m alone (the terms and
    their order as written there: target logits f_y of a fresh forward on the detached batch,
    ∇ₓ f_y by a double-backward ``autograd.grad``, per-sample squared norms; the trace
    estimate's noise ``randn(x.shape) · σ`` drawn from member m's own device generator,
    sample by sample), up to the float rounding of the stacked double backward.
    """

    def __init__(self, recipe: Recipe) -> None:
        self.name = recipe.regularizer
        self.weight = recipe.reg_weight
        self.options = regularizer_options(str(self.name), dict(recipe.reg_options))

    def __call__(self, stack: _Stack, x: torch.Tensor, y: torch.Tensor,
                 gens: Sequence[torch.Generator]) -> torch.Tensor:
        o = self.options
        x = x.detach()
        with torch.enable_grad():
            fy = grad = None
            if self.name in ("gradnorm", "score-matching"):
                xg = x.clone().requires_grad_(True)
                fy = _target(stack.forward(xg, native=True), y)
                (grad,) = torch.autograd.grad(fy.sum(), xg, create_graph=True, retain_graph=True)
            if self.name == "gradnorm":
                value = 0.5 * _sq_norms(grad).mean(1)
            else:
                h = self._trace(stack, x, y, gens, fy)
                if self.name == "score-matching":
                    value = h.mean(1) + 0.5 * _sq_norms(grad).mean(1) + o["tau"] * h.pow(2).mean(1)
                else:
                    value = -torch.clamp(h, max=o["threshold"]).mean(1)
        return self.weight * value

    def _trace(self, stack: _Stack, x: torch.Tensor, y: torch.Tensor, gens: Sequence[torch.Generator],
               fy: torch.Tensor | None) -> torch.Tensor:
        """:func:`regularizers.hessian_trace_estimate` per member, (M, B)."""
        samples, sigma, antithetic = self.options["samples"], self.options["sigma"], self.options["antithetic"]
        if fy is None:
            fy = _target(stack.forward(x, native=True), y)
        total = torch.zeros_like(fy)
        for _ in range(samples):
            v = torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype)
                             for g in gens]) * sigma
            if antithetic:
                total = (total + _target(stack.forward(x + v, native=True), y)
                         + _target(stack.forward(x - v, native=True), y) - 2 * fy)
            else:
                total = total + 2 * (_target(stack.forward(x + v, native=True), y) - fy)
        return total / (samples * sigma**2)


def _target(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The label's logit f_y of stacked logits (M, B, C) and labels (M, B): (M, B)."""
    return logits.gather(2, y.unsqueeze(2)).squeeze(2)


def _sq_norms(grad: torch.Tensor) -> torch.Tensor:
    """Per-sample squared l2 norms of stacked gradients (M, B, ...): (M, B)."""
    return grad.flatten(2).pow(2).sum(2)


def _fit_bmm(nets: list[nn.Module], train: ImageSet, recipe: Recipe, members: Sequence[Member],
             batch_inputs: BatchInputFn, device: torch.device, bar: Any) -> StackedFit:
    """The stacked loop; data, orders and metrics stay on ``device``: no host synchronisation
    per step (the members' losses and accuracies are read once per epoch)."""
    stack = _Stack(nets, device)
    optimizer = make_optimizer(stack.parameters(), recipe)
    recipes = [m.recipe(recipe) for m in members]
    attack = _StackedPGD(recipes, train.bounds, device)
    rows = [_train_rows(len(train), recipe.val_fraction, m.data_seed) for m in members]
    gens = [torch.Generator().manual_seed(m.data_seed) for m in members]
    dev_gens = [torch.Generator(device=device).manual_seed(m.data_seed + 1) for m in members]
    n, size = len(rows[0]), recipe.batch_size
    steps = (n + size - 1) // size
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    epochs = bar.add_task("epochs", total=recipe.epochs)
    reg = _StackedRegularizer(recipe) if recipe.regularizer is not None else None
    loop = _Epoch(stack, optimizer, recipe, batch_inputs, train.y, gens, dev_gens, attack, bar, reg)
    for epoch in range(recipe.epochs):
        t0 = time.perf_counter()
        order = to_device(torch.stack([r[torch.randperm(n, generator=g)] for r, g in zip(rows, gens, strict=True)]),
                          device)
        loss_sum, correct = loop(epoch, order)
        bar.advance(epochs)
        loss_mean, acc = (loss_sum / n).tolist(), (correct / n).tolist()  # the epoch's one read
        history.append({"epoch": epoch + 1, "lr": lr_at(recipe, epoch, steps - 1, steps),
                        "seconds": time.perf_counter() - t0, "train_loss": loss_mean, "train_acc": acc})
    bar.remove_task(epochs)
    seconds = time.perf_counter() - t_start
    stack.unstack()
    for net in nets:
        net.to(device).eval()
    share = len(attack.attacked) / len(members)  # attack steps run only for the attacked members
    flops = (stack.flops(n) + attack.steps * share * stack.attack_flops(n)) * recipe.epochs
    return StackedFit(tuple(nets), "bmm", history, seconds, None if reg is not None else flops)


@dataclass
class _Epoch:
    """The stacked step loop of one epoch, free of host synchronisation: ``self(epoch,
    order)`` with ``order`` (M, n) the members' row orders on the device returns the
    members' Σ batch loss × batch size (float64) and correct counts, on the device."""

    stack: _Stack
    optimizer: torch.optim.Optimizer
    recipe: Recipe
    batch_inputs: BatchInputFn
    y: torch.Tensor
    gens: Sequence[torch.Generator]
    dev_gens: Sequence[torch.Generator]
    attack: _StackedPGD
    bar: Any
    reg: _StackedRegularizer | None = None

    def __call__(self, epoch: int, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recipe, (m, n), size = self.recipe, order.shape, self.recipe.batch_size
        steps = (n + size - 1) // size
        loss_sum = torch.zeros(m, dtype=torch.float64, device=order.device)
        correct = torch.zeros(m, dtype=torch.int64, device=order.device)
        task = self.bar.add_task(f"epoch {epoch + 1}", total=steps)
        for step in range(steps):
            idx = order[:, step * size : (step + 1) * size]
            xb = self.batch_inputs(idx).to(order.device)
            if recipe.augment != "none":
                xb = torch.stack([augment_batch(x, recipe.augment, g) for x, g in zip(xb, self.gens, strict=True)])
            yb = self.y[idx]
            xb = self.attack(self.stack, xb, yb, self.dev_gens)
            reg = None if self.reg is None else functools.partial(self.reg, self.stack, xb, yb, self.dev_gens)
            losses, hits = _step(self.stack, self.optimizer, xb, yb, lr_at(recipe, epoch, step, steps), reg)
            loss_sum += losses * idx.shape[1]
            correct += hits
            self.bar.advance(task)
        self.bar.remove_task(task)
        return loss_sum, correct


def _step(stack: _Stack, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
          lr: float, reg: Callable[[], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD/Adam step of every member on its batch (M, B, ...); per-member mean
    cross-entropy (plus λ × the member's regularizer ``reg()``), as ``fit``. Returns the
    members' losses (float64) and correct counts, left on the device."""
    logits = stack.forward(xb)
    losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
    losses = losses.view(len(yb), -1).mean(1)
    if reg is not None:
        losses = losses + reg()
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()
    return losses.detach().double(), (logits.detach().argmax(2) == yb).sum(1)
