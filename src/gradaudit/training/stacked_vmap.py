"""The ``"vmap"`` engine of :func:`~gradaudit.training.fit_stacked`: CNNs and ResNets as one stack.

Every member's parameters and buffers are stacked along a new first axis
(``torch.func.stack_module_state``) and one forward runs all members at once:
``vmap(functional_call(model, (params, buffers), x))`` over the member axis, which PyTorch
lowers to grouped convolutions and batched matrix products. Member m sees its own batch
(M, B, ...) exactly as in the ``"bmm"`` engine: the same row orders, augmentation draws and
per-member mean cross-entropy (:class:`~gradaudit.training.ensemble._Epoch`), and one
optimizer of :func:`~gradaudit.training.make_optimizer` over the stacked tensors (SGD with
momentum / Nesterov / weight decay and Adam act elementwise, so that is one optimizer per
member).

BatchNorm: the running statistics are stacked buffers (M, C) passed to ``functional_call``
with the parameters. In training mode ``batch_norm`` updates them in place, and under
``vmap`` the in-place update of a batched buffer writes member m's statistics into row m
(checked: equal to the module trained alone; ``num_batches_tracked`` counts per member), so
BatchNorm needs no functional rewrite.

Member m ends with the weights and BatchNorm buffers of ``fit`` of that member alone with
the same seed, to float rounding: a grouped convolution sums in another order than a single
one. Standard (and augmented) recipes only: adversarial and regularized training of such
models go through the ``"loop"`` engine.

Layers adapted for ``vmap`` on the private copy that runs the stack (the trained members
are unchanged): :class:`~gradaudit.models.resnet.Pointwise` runs as the plain 1×1
convolution it equals (its channels-last test cannot be asked inside ``vmap``), and a
ResNet's ``channels_last`` switch is off (a memory layout, not a function).

Source: the "Model ensembling" recipe of the torch.func documentation
(``stack_module_state`` + ``functional_call`` + ``vmap``).

:func:`auto_engine` chooses the engine of ``fit_stacked(engine="auto")`` from the measured
table ``engine_table.json`` (per device type and model family; written by
``bench/train_throughput.py --stacked --record``). On a CPU (one thread, 4 members, one
epoch) the vmap engine measured 0.60× the loop for the small CNN and 0.44× for a ResNet9
(width 16), so the CPU entries keep ``"loop"``; there is no GPU entry yet.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .._validation import ParameterError
from ..data.imageset import ImageSet
from ..models.resnet import Pointwise, ResNet
from ..models.spec import ModelSpec
from .ensemble import BatchInputFn, Member, StackedFit, _Epoch, _StackedPGD, _train_rows
from .fit import make_optimizer, to_device
from .recipe import Recipe
from .schedule import lr_at

__all__ = ["ENGINE_TABLE", "FAMILIES", "VmapStack", "auto_engine", "engine_table", "fit_vmap", "model_family",
           "vmap_supports"]

ENGINE_TABLE = Path(__file__).with_name("engine_table.json")
FAMILIES = ("mlp", "cnn", "resnet")


class VmapStack:
    """The members' parameters and buffers stacked on ``device``, and the stacked forward."""

    def __init__(self, nets: Sequence[nn.Module], device: torch.device) -> None:
        self.nets = nets
        params, buffers = stack_module_state(list(nets))
        self.params = {k: v.detach().to(device).requires_grad_() for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        base = copy.deepcopy(nets[0]).to("meta")
        for m in base.modules():
            if isinstance(m, Pointwise):  # the plain 1x1 convolution (see the module docstring)
                m.forward = functools.partial(nn.Conv2d.forward, m)  # type: ignore[method-assign]
            if isinstance(m, ResNet):
                m.channels_last = False
        self.base = base

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def _one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
             x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (M, B, classes) of inputs (M, B, ...), in training mode (BatchNorm uses the
        batch statistics and updates each member's running statistics)."""
        self.base.train()
        return vmap(self._one)(self.params, self.buffers, x)

    def unstack(self) -> None:
        """Copy the trained stacked parameters and buffers back into each member."""
        with torch.no_grad():
            for m, net in enumerate(self.nets):
                own = {**dict(net.named_parameters()), **dict(net.named_buffers())}
                for name, value in {**self.params, **self.buffers}.items():
                    own[name].copy_(value[m])


def vmap_supports(recipe: Recipe, members: Sequence[Member]) -> tuple[bool, str]:
    """Whether the vmap engine can train this recipe: (True, "") or (False, why not)."""
    if recipe.regularizer is not None:
        return False, f"it trains no regularizer (the recipe has {recipe.regularizer!r})"
    attacked = [m.recipe(recipe).attack for m in members]
    if any(a is not None for a in attacked):
        return False, "it trains no adversarial (PGD) recipe"
    return True, ""


def fit_vmap(nets: list[nn.Module], train: ImageSet, recipe: Recipe, members: Sequence[Member],
             batch_inputs: BatchInputFn, device: torch.device, bar: Any) -> StackedFit:
    """Train ``nets`` (member i is ``nets[i]``) as one vmap stack; see the module docstring.
    ``train`` is on ``device``; ``batch_inputs(rows)`` gives the stacked inputs of rows (M, B)."""
    ok, why = vmap_supports(recipe, members)
    if not ok:
        raise ParameterError(f"fit_stacked(engine='vmap') cannot train this recipe: {why}. Use engine='loop'.")
    stack = VmapStack(nets, device)
    optimizer = make_optimizer(stack.parameters(), recipe)
    rows = [_train_rows(len(train), recipe.val_fraction, m.data_seed) for m in members]
    gens = [torch.Generator().manual_seed(m.data_seed) for m in members]
    dev_gens = [torch.Generator(device=device).manual_seed(m.data_seed + 1) for m in members]
    no_attack = _StackedPGD([m.recipe(recipe) for m in members], train.bounds, device)
    loop = _Epoch(stack, optimizer, recipe, batch_inputs, train.y, gens, dev_gens,  # type: ignore[arg-type]
                  no_attack, bar)
    n, size = len(rows[0]), recipe.batch_size
    steps = (n + size - 1) // size
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    epochs = bar.add_task("epochs", total=recipe.epochs)
    for epoch in range(recipe.epochs):
        t0 = time.perf_counter()
        order = torch.stack([r[torch.randperm(n, generator=g)] for r, g in zip(rows, gens, strict=True)])
        loss_sum, correct = loop(epoch, to_device(order, device))
        loss_mean, acc = (loss_sum / n).tolist(), (correct / n).tolist()  # the epoch's one read
        history.append({"epoch": epoch + 1, "lr": lr_at(recipe, epoch, steps - 1, steps),
                        "seconds": time.perf_counter() - t0, "train_loss": loss_mean, "train_acc": acc})
        bar.advance(epochs)
    bar.remove_task(epochs)
    seconds = time.perf_counter() - t_start
    stack.unstack()
    for net in nets:
        net.to(device).eval()
    return StackedFit(tuple(nets), "vmap", history, seconds, None)


# ----------------------------------------------------------------------------- engine="auto"
def model_family(spec: ModelSpec, bmm_ok: bool) -> str:
    """The table's family of a model: "mlp" (a chain the bmm engine stacks: MLPs and the
    linear model), "resnet" (the ResNets) or "cnn" (any other model)."""
    if bmm_ok:
        return "mlp"
    return "resnet" if spec.name.startswith("resnet") else "cnn"


def engine_table(path: Path | None = None) -> dict[str, Any]:
    """The measured engine table: ``{device type: {family: {"engine", "ratio", ...}}}``."""
    return json.loads((path or ENGINE_TABLE).read_text())


def auto_engine(spec: ModelSpec, bmm_ok: bool, recipe: Recipe, members: Sequence[Member],
                device: torch.device, table: dict[str, Any] | None = None) -> str:
    """The engine ``fit_stacked(engine="auto")`` runs: the table's entry for the device type
    and model family, when that engine can train the model and recipe; otherwise "bmm" when
    the model has a stacked form, else "loop" (one ``fit`` after another)."""
    table = engine_table() if table is None else table
    entry = table.get(device.type, {}).get(model_family(spec, bmm_ok), {})
    chosen = entry.get("engine") if isinstance(entry, dict) else None
    if chosen == "bmm" and bmm_ok:
        return "bmm"
    if chosen == "vmap" and vmap_supports(recipe, members)[0]:
        return "vmap"
    if chosen == "loop":
        return "loop"
    return "bmm" if bmm_ok else "loop"
