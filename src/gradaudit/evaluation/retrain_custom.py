"""Retrains of DiffROAR, ROAR and KAR with the user's own model factory or training code.

The stacked engine (:class:`~.retrain.Retrainer`) needs a registered architecture
(``spec``) and gradaudit's training loop (``recipe``). When the audit is given
``make_model=`` (a zero-argument factory of a fresh, untrained model) or ``train_fn=``
(``train_fn(model, x, y) -> model``, the user's own loop), each retrain runs alone:

    torch.manual_seed(r); model = make_model()     # or spec.build(seed=r)
    torch.manual_seed(r); model = train_fn(model, x_masked, y)   # or training.fit, recipe.seed = r
    accuracy = final model's accuracy on the test set masked the same way (eval mode)

so that the top-k and bottom-k retrains of seed r share the initialisation and (when the
user's loop draws its batch order from torch's global RNG) the batch order. The masked
inputs are those of the stacked engine, built by the same functions (``_inputs``), the
random and mask-only controls included. Each finished retrain is written atomically to
``out/groups/<seed>-<arm>.json`` (the same store as the stacked engine: ``config.json``
holds the config and its hash) and skipped when the run is repeated, so a killed run
resumes. With an ``executor`` (``runs.InProcessExecutor``, ``runs.RayExecutor``) the
pending retrains are mapped over it; each task writes its own file.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._progress import progress
from .._validation import ParameterTypeError
from ..data.imageset import ImageSet
from ..models.spec import ModelSpec
from ..training.ensemble import apply_inputs
from ..training.metrics import accuracy
from ..training.recipe import Recipe
from .retrain import Arm, Ranking, _inputs, retrain_store, tensor_digest

__all__ = ["CustomRetrainer", "callable_name", "describe_custom"]


def callable_name(fn: Any) -> str | None:
    """``module:qualname`` of a function (or its class for a callable object), for the config."""
    if fn is None:
        return None
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) or isinstance(fn, type) else type(fn)
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"


def describe_custom(make_model: Callable[[], nn.Module] | None, train_fn: Callable[..., nn.Module] | None,
                    spec: ModelSpec | None) -> dict[str, Any]:
    """What the config records of a custom retrain: the factory and loop by name, and the
    architecture (parameter names and shapes) with a digest of the seed-0 initial weights,
    so that a resumed run with another model is refused by the config hash."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = make_model() if make_model is not None else spec.build(seed=0)  # type: ignore[union-attr]
    return {
        "make_model": callable_name(make_model), "train_fn": callable_name(train_fn),
        "architecture": {"class": type(net).__name__, "parameters": sum(p.numel() for p in net.parameters()),
                         "shapes": [[n, list(p.shape)] for n, p in net.named_parameters()],
                         "init_sha256": tensor_digest(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
                         if any(True for _ in net.parameters()) else None},
    }


def _group(seed: int, key: str) -> str:
    return f"s{seed}-{key.replace('/', '-')}"


@dataclass
class CustomRetrainer:
    """Retrains arms over seeds one model at a time; see the module docstring.

    Attributes:
        make_model, spec: How a retrain is built (``make_model`` first if both are given).
        train_fn, recipe: How it is trained (``train_fn`` if given, else ``training.fit``).
        train, test, rankings, fill: As in :class:`~.retrain.Retrainer`.
        device, quiet: Where to train; no progress bars.
        executor: Optional ``map(fn, items)`` executor for the pending retrains.
    """

    make_model: Callable[[], nn.Module] | None
    spec: ModelSpec | None
    train_fn: Callable[..., nn.Module] | None
    recipe: Recipe | None
    train: ImageSet
    test: ImageSet
    rankings: Mapping[str, Ranking]
    fill: str
    device: str | torch.device
    quiet: bool
    executor: Any = None
    _last: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def _positions(self, ranking: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``rankings[ranking].at(seed)``, kept for the next job (jobs come grouped by seed and
        ranking, so the random control is drawn once per seed, not once per arm)."""
        if (ranking, seed) not in self._last:
            self._last.clear()
            self._last[(ranking, seed)] = self.rankings[ranking].at(seed)
        return self._last[(ranking, seed)]

    def _build(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        net = self.make_model() if self.make_model is not None else self.spec.build(seed=seed)  # type: ignore[union-attr]
        return net.to(self.device)

    def _fit(self, net: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        if self.train_fn is None:
            from ..training.fit import fit

            recipe = self.recipe.model_copy(update={"seed": seed})  # type: ignore[union-attr]
            fit(net, self.train.with_x(x), recipe, device=self.device, quiet=True)
            return net
        with torch.enable_grad():
            trained = self.train_fn(net, x.to(self.device), self.train.y.to(self.device))
        if not isinstance(trained, nn.Module):
            raise ParameterTypeError(f"train_fn must return the trained torch.nn.Module. Got {type(trained).__name__}.")
        return trained

    def train_one(self, job: tuple[int, Arm], mean: torch.Tensor | None) -> dict[str, Any]:
        """Build, train and test the retrain of one (seed, arm); its record."""
        seed, arm = job
        positions = self._positions(arm.ranking, seed)
        x_train = apply_inputs(_inputs(arm, positions[0], self.fill, mean), self.train.x)
        x_test = apply_inputs(_inputs(arm, positions[1], self.fill, mean), self.test.x)
        t0 = time.perf_counter()
        net = self._fit(self._build(seed), x_train, seed)
        seconds = time.perf_counter() - t0
        device = torch.device(self.device)
        return {"engine": "custom", "seconds": seconds, "flops": None, "members": [{
            "key": arm.key(self.rankings[arm.ranking].d), "seed": seed, "init_seed": seed, "data_seed": seed,
            "accuracy": accuracy(net, x_test, self.test.y, device=device),
            "train_acc": accuracy(net, x_train, self.train.y, device=device)}]}

    def run(self, arms: Sequence[Arm], seeds: Sequence[int], config: Mapping[str, Any],
            out: str | os.PathLike[str] | None) -> dict[tuple[Arm, int], float]:
        """Accuracy on the matching masked test set of every (arm, seed), final model."""
        store = retrain_store(out, config)
        unique: dict[str, Arm] = {}
        for arm in arms:
            unique.setdefault(arm.key(self.rankings[arm.ranking].d), arm)
        ordered = sorted(unique.values(), key=lambda a: (a.view, a.ranking, a.side, a.count))
        jobs = [(seed, arm) for seed in seeds for arm in ordered]
        mean = self.train.x.mean((0, 2, 3)) if self.fill == "mean" else None
        done: dict[tuple[str, int], float] = {}
        pending = []
        for seed, arm in jobs:
            found = store.load(_group(seed, arm.key(self.rankings[arm.ranking].d)))
            if found is None:
                pending.append((seed, arm))
            else:
                done.update({(m["key"], m["seed"]): m["accuracy"] for m in found["members"]})

        def task(job: tuple[int, Arm]) -> dict[str, Any]:
            record = self.train_one(job, mean)
            store.save(_group(job[0], record["members"][0]["key"]), record)
            return record

        with progress(self.quiet) as bar:
            bar_task = bar.add_task("retrains", total=len(jobs), completed=len(jobs) - len(pending))
            if self.executor is not None:
                records = self.executor.map(task, pending)
            else:
                records = []
                for job in pending:
                    records.append(task(job))
                    bar.advance(bar_task)
        for record in records:
            done.update({(m["key"], m["seed"]): m["accuracy"] for m in record["members"]})
        return {(arm, s): done[(arm.key(self.rankings[arm.ranking].d), s)] for arm in arms for s in seeds}
