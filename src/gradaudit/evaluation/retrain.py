"""The retraining core shared by DiffROAR, ROAR and KAR.

An *arm* says what a retrained model sees: the coordinates kept (the ``count`` top- or
bottom-ranked of each image under one ranking) and the view (the kept pixel values with
the rest filled, or the keep-mask alone, centred, for the mask-only control: :func:`~gradaudit.masking.fill.mask_view`). Every arm is
retrained once per seed; arms that give identical data (everything kept, nothing kept) are
trained once and shared. The retrains of one seed are trained together as a stacked
ensemble (:func:`gradaudit.training.ensemble.fit_stacked`) in groups of at most
``max_stack`` models, and each finished group is written atomically to ``out`` (if given)
and skipped when the run is repeated. On a CPU with several torch threads a group trains
as side-by-side stacks, one per thread (:meth:`Retrainer._side_by_side`), with the same
numbers.

Store layout (``out``, a :class:`~gradaudit.runs.store.RunFolder`): ``config.json`` (config, its hash, provenance) and
``groups/<name>.json`` (the group's config hash, seeds, per-member test accuracy and final
training loss/accuracy, provenance).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._progress import progress
from .._torch_utils import eval_mode, torch_thread_pool
from ..data.imageset import ImageSet
from ..masking.fill import MASK_VIEW, fill_masked, mask_view  # MASK_VIEW re-exported
from ..masking.ranking import keep_mask_count
from ..models.spec import ModelSpec
from ..runs.store import RunFolder
from ..training.ensemble import InputFn, Member, StackedFit, fit_stacked, stackable
from ..training.recipe import Recipe
from ..training.stacked_vmap import auto_engine

__all__ = ["MASK_VIEW", "VIEWS", "Arm", "GroupInputs", "Ranking", "Retrainer", "retrain_store", "tensor_digest"]

VIEWS = ("pixels", "mask")
@dataclass(frozen=True)
class Ranking:
    """Rank positions (``masking.rank_positions``) of one attribution on train and test.

    Attributes:
        name: "attribution", "random", ...
        d: Coordinates ranked per image.
        fixed: (train, test) positions shared by every retrain seed, or None.
        draw: ``draw(seed) -> (train, test)`` positions drawn afresh for each retrain seed
            (the random control), used when ``fixed`` is None.
    """

    name: str
    d: int
    fixed: tuple[torch.Tensor, torch.Tensor] | None = None
    draw: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None

    def at(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) positions used by the retrains of ``seed``."""
        if self.fixed is not None:
            return self.fixed
        if self.draw is None:
            raise RuntimeError(f"Ranking {self.name!r} has neither fixed positions nor a draw.")
        return self.draw(seed)


@dataclass(frozen=True)
class Arm:
    """One retrained configuration (see the module docstring)."""

    ranking: str
    side: str
    count: int
    view: str = "pixels"

    def key(self, d: int) -> str:
        """Names the data this arm trains on; arms with equal keys see identical data."""
        if self.count in (0, d):
            return f"{self.view}/{'all' if self.count else 'none'}"
        return f"{self.view}/{self.ranking}/{self.side}/{self.count}"


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(memoryview(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()))  # no copy
    return h.hexdigest()


def retrain_store(out: str | os.PathLike[str] | None, config: Mapping[str, Any]) -> RunFolder:
    """The run folder of a retraining job (``out``; None: nothing written)."""
    return RunFolder(out, config, what="a retraining run",
                     fix="Write to another folder (--out of gradaudit diffroar, out= in Python), or delete it.")


def _inputs(arm: Arm, positions: torch.Tensor, fill: str, mean: torch.Tensor | None) -> InputFn | None:
    """What a model of ``arm`` sees of rows ``rows`` when trained alone (the reference path)."""
    d = positions[0].numel()
    if arm.view == "pixels" and arm.count == d:
        return None

    def fn(xb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        keep = keep_mask_count(positions[rows], arm.count, arm.side)
        if arm.view == "mask":
            return mask_view(keep, torch.tensor(arm.count), d, xb.dtype).expand_as(xb)
        return fill_masked(xb, keep, fill, mean=mean)

    return fn


class GroupInputs:
    """The inputs of all members of a group for given rows, built block by block.

    Member i keeps ``arms[i]`` of ``positions[i]`` (rank positions of its ranking, for its
    seed). Consecutive members with the same positions, side, view and (if ``seeds`` is
    given) seed form a block whose keep-masks come from one broadcast comparison of the
    stored ranks against the block's counts, on the device the positions live on.
    ``self(rows)``, ``rows`` (M, B) (or (1, B), shared by all), equals stacking each
    member's :func:`_inputs` on its rows, bitwise (comparisons and fills are exact).

    ``seeds`` (member i's data seed) tells which members draw the same rows: a block of
    one seed gathers its rows once and broadcasts them, decided when the group is built,
    not by comparing rows per step (which would wait on the device).
    """

    def __init__(self, arms: Sequence[Arm], positions: Sequence[torch.Tensor], x: torch.Tensor,
                 fill: str, mean: torch.Tensor | None, seeds: Sequence[int] | None = None) -> None:
        self.x, self.fill, self.mean = x, fill, mean
        # (members, arm, positions, counts, source): source is the first member of the block's
        # seed (its rows are every member of that seed's rows), None when rows are per member.
        self.blocks: list[tuple[slice, Arm, torch.Tensor, torch.Tensor, int | None]] = []

        def same(i: int, start: int) -> bool:
            return (positions[i] is positions[start] and (arms[i].side, arms[i].view) == (arms[start].side, arms[start].view)
                    and (seeds is None or seeds[i] == seeds[start]))

        start = 0
        for i in range(1, len(arms) + 1):
            if i == len(arms) or not same(i, start):
                counts = torch.tensor([a.count for a in arms[start:i]], device=positions[start].device)
                source = None if seeds is None else list(seeds).index(seeds[start])
                self.blocks.append((slice(start, i), arms[start], positions[start], counts, source))
                start = i

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        total = self.blocks[-1][0].stop
        out = torch.empty((total, *rows.shape[1:], *self.x.shape[1:]), dtype=self.x.dtype, device=self.x.device)
        # rows of x and of positions (and positions as floats) that blocks of one seed share,
        # made once per step
        gathered: dict[tuple[Any, ...], torch.Tensor] = {}
        for sl, arm, positions, counts, source in self.blocks:
            index = rows if len(rows) == 1 else rows[source : source + 1] if source is not None else rows[sl]
            # the cache key of this block's rows (None: rows of its own, nothing to share)
            rows_key = (0,) if len(rows) == 1 else None if source is None else (source,)
            pos = _once(gathered, rows_key and ("pos", id(positions), *rows_key), _take, positions, index)
            xb = _once(gathered, rows_key and ("x", *rows_key), _take, self.x, index)
            d = pos[0, 0].numel()
            if arm.view == "pixels" and self.fill == "zero" and pos.shape[2:] == self.x.shape[1:] and _exact(self.x, d):
                # x · keep with keep built in x's dtype (clamp of c − pos: 1 kept, 0 not; integers
                # below 2^24 are exact), the same products as fill_masked's x · bool mask, with
                # contiguous (members, rows, d) loops instead of broadcasts over a 28-wide axis.
                pf = _once(gathered, rows_key and ("float", id(positions), *rows_key),
                           lambda p: p.flatten(2).to(self.x.dtype), pos)
                c = counts.to(self.x.dtype).view(-1, 1, 1)
                keep = (c - pf) if arm.side == "top" else pf - (d - 1 - c)  # bottom: pos − (d − c) + 1
                torch.mul(xb.flatten(2), keep.clamp_(0, 1), out=out[sl].flatten(2))
                continue
            c = counts.view(-1, *([1] * (pos.dim() - 1)))
            keep = pos < c if arm.side == "top" else pos >= d - c
            shape = (len(counts), *index.shape[1:], *self.x.shape[1:])
            if arm.view == "mask":
                out[sl] = mask_view(keep, c, d, self.x.dtype).expand(shape)
            else:
                out[sl] = fill_masked(xb.expand(shape), keep, self.fill, mean=self.mean)
        return out


def _once(cache: dict[tuple[Any, ...], torch.Tensor], key: tuple[Any, ...] | None,
          make: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """``make(*args)``, kept in ``cache`` under ``key`` and reused (``key`` None: not kept)."""
    if key is None:
        return make(*args)
    if key not in cache:
        cache[key] = make(*args)
    return cache[key]


def _take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` for an integer index of any shape (index_select: a plain row gather)."""
    return t.index_select(0, index.flatten()).view(*index.shape, *t.shape[1:])


def _exact(x: torch.Tensor, d: int) -> bool:
    """Whether rank positions up to ``d`` are exact integers in ``x``'s dtype."""
    return x.dtype in (torch.float32, torch.float64) and d < 2**24


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    parts = math.ceil(len(items) / size)
    step = math.ceil(len(items) / parts) if parts else 1
    return [list(items[i : i + step]) for i in range(0, len(items), step)]


def _last_epoch(fitted: StackedFit, i: int) -> dict[str, float]:
    last = fitted.history[-1]
    return {"train_loss": last["train_loss"][i], "train_acc": last["train_acc"][i]}


@dataclass
class Retrainer:
    """Retrains arms over seeds and returns each (arm, seed)'s final test accuracy.

    Attributes:
        spec, recipe: Architecture and (standard) recipe of every retrain.
        train, test: The unmasked data.
        rankings: Ranking name -> :class:`Ranking`.
        fill: "zero" or "mean" (``masking.fill_masked``); ``mean`` is the per-channel mean
            of ``train``.
        engine, max_stack, device, quiet, precision: Passed on to ``fit_stacked`` / progress
            (a precision other than "fp32" is part of the store's config, so it never resumes
            groups trained in another precision).
    """

    spec: ModelSpec
    recipe: Recipe
    train: ImageSet
    test: ImageSet
    rankings: Mapping[str, Ranking]
    fill: str
    engine: str
    max_stack: int
    device: str | torch.device
    quiet: bool
    precision: str = "fp32"
    _on_device: dict[str, ImageSet] = field(default_factory=dict, init=False, repr=False)
    _engine_used: str = field(default="", init=False, repr=False)  # self.engine, "auto" resolved
    _positions: dict[tuple[str, int | None], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False)

    def _groups(self, arms: Sequence[Arm], seeds: Sequence[int]) -> list[tuple[str, list[tuple[int, Arm]]]]:
        unique: dict[str, Arm] = {}
        for arm in arms:
            unique.setdefault(arm.key(self.rankings[arm.ranking].d), arm)
        ordered = sorted(unique.values(), key=lambda a: (a.view, a.ranking, a.side, a.count))
        jobs = [(seed, arm) for seed in seeds for arm in ordered]
        return [(f"group{j:03d}", part) for j, part in enumerate(_chunks(jobs, self.max_stack))]

    def run(self, arms: Sequence[Arm], seeds: Sequence[int], config: Mapping[str, Any],
            out: str | os.PathLike[str] | None) -> dict[tuple[Arm, int], float]:
        """Accuracy on the matching masked test set of every (arm, seed), final epoch.

        The training and test sets (and each ranking's positions) are moved to the device
        once and stay there for the whole job."""
        store = retrain_store(out, config if self.precision == "fp32" else {**config, "precision": self.precision})
        groups = self._groups(arms, seeds)
        done: dict[tuple[str, int], float] = {}
        device = torch.device(self.device)
        self._on_device = {"train": self.train.to(device), "test": self.test.to(device)}
        self._positions = {}
        self._engine_used = self._engine(device)
        mean = self.train.x.mean((0, 2, 3)).to(device) if self.fill == "mean" else None
        with progress(self.quiet) as bar:
            task = bar.add_task("retrain groups", total=len(groups))
            for name, part in groups:
                found = store.load(name)
                if found is None:
                    found = self._train_group(part, mean, bar)
                    store.save(name, found)
                for member in found["members"]:
                    done[(member["key"], member["seed"])] = member["accuracy"]
                bar.advance(task)
        return {(arm, s): done[(arm.key(self.rankings[arm.ranking].d), s)] for arm in arms for s in seeds}

    def _engine(self, device: torch.device) -> str:
        """The engine ``fit_stacked`` runs for these retrains ("auto" resolved once per job, so
        that the side-by-side decision and every group use the same one)."""
        if self.engine != "auto":
            return self.engine
        ok = stackable(self.spec.build(0))[0]
        return auto_engine(self.spec, ok, self.recipe, [Member(0, 0)], device)

    def _positions_at(self, name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) positions of ranking ``name`` for ``seed``, on the device: a fixed
        ranking is moved once per job, a drawn one once per group."""
        ranking = self.rankings[name]
        key = (name, None if ranking.fixed is not None else seed)
        if key not in self._positions:
            device = torch.device(self.device)
            self._positions[key] = tuple(p.to(device) for p in ranking.at(seed))  # type: ignore[assignment]
        return self._positions[key]

    def _train_group(self, part: list[tuple[int, Arm]], mean: torch.Tensor | None, bar: Any) -> dict[str, Any]:
        """Train and test one group; on a CPU with several torch threads, as side-by-side
        stacks (:meth:`_side_by_side`)."""
        for key in [k for k in self._positions if k[1] is not None]:  # drawn rankings of earlier groups
            del self._positions[key]
        jobs = [(s, a, self._positions_at(a.ranking, s)) for s, a in part]
        threads = torch.get_num_threads()
        stacks = self._side_by_side(len(jobs), threads)
        if len(stacks) == 1:
            fits = [self._fit_part(jobs, mean, bar)]
        else:
            with torch_thread_pool(len(stacks), max(1, threads // len(stacks))) as pool:
                fits = list(pool.map(lambda rows: self._fit_part(jobs[rows], mean, bar), stacks))
        rows = [{"key": a.key(self.rankings[a.ranking].d), "seed": s, "init_seed": s, "data_seed": s,
                 "accuracy": acc, **_last_epoch(fitted, i)}
                for (fitted, accs), sl in zip(fits, stacks, strict=True)
                for i, ((s, a, _), acc) in enumerate(zip(jobs[sl], accs, strict=True))]
        flops = [f.flops for f, _ in fits]
        return {"engine": fits[0][0].engine, "precision": fits[0][0].precision,
                "seconds": max(f.seconds for f, _ in fits),
                "flops": None if any(f is None for f in flops) else sum(flops), "members": rows}

    def _side_by_side(self, members: int, threads: int) -> list[slice]:
        """The group's members as consecutive slices, one stack each, trained at once.

        On a CPU with T > 1 torch threads, a bmm-engine group trains as min(T, members)
        stacks, each in its own Python thread with T // stacks torch threads (torch's ops
        release the GIL): the stacks never wait for each other, where one stack over T
        threads pays a thread wake-up on every parallel op of every step. Members are
        independent and the bmm engine's products run one member per thread, so every
        member's numbers are those of one stack (those of ``fit`` with one thread).
        Elsewhere (CUDA, one thread, other engines): one stack."""
        one = [slice(0, members)]
        if threads < 2 or members < 2 or torch.device(self.device).type != "cpu" or self._engine_used != "bmm":
            return one
        count = min(threads, members)
        return [slice(i * members // count, (i + 1) * members // count) for i in range(count)]

    def _fit_part(self, jobs: Sequence[tuple[int, Arm, tuple[torch.Tensor, torch.Tensor]]],
                  mean: torch.Tensor | None, bar: Any) -> tuple[StackedFit, list[float]]:
        """Train the members ``jobs`` ((seed, arm, positions)) as one stack; their test accuracies."""
        train, test_set = self._on_device["train"], self._on_device["test"]
        arms, seeds = [a for _, a, _ in jobs], [s for s, _, _ in jobs]
        members = [Member(s, s, _inputs(a, p[0], self.fill, mean)) for s, a, p in jobs]
        fitted = fit_stacked(self.spec, train, self.recipe, members, engine=self._engine_used,
                             batch_inputs=GroupInputs(arms, [p[0] for _, _, p in jobs], train.x, self.fill, mean, seeds),
                             device=self.device, bar=bar, precision=self.precision)
        test = GroupInputs(arms, [p[1] for _, _, p in jobs], test_set.x, self.fill, mean)
        return fitted, _accuracies(fitted.models, test, test_set.y, self.device)


@torch.no_grad()
def _accuracies(models: Sequence[torch.nn.Module], inputs: GroupInputs, y: torch.Tensor,
                device: str | torch.device, rows: int = 1000) -> list[float]:
    """Each model's accuracy on its own inputs, in eval mode, ``rows`` test images at a time
    (the batching of ``training.accuracy``); the counts stay on the device until the end."""
    y = y.to(device)
    correct = torch.zeros(len(models), dtype=torch.long, device=y.device)
    for i in range(0, len(y), rows):
        index = torch.arange(i, min(i + rows, len(y)), device=y.device)
        xb = inputs(index.unsqueeze(0)).to(device)
        for m, model in enumerate(models):
            with eval_mode(model):
                correct[m] += (model(xb[m]).argmax(1) == y[index]).sum()
    return [c / len(y) for c in correct.tolist()]
