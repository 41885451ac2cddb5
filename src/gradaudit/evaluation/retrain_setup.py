"""Arguments, rankings and config of the retraining protocols (DiffROAR, ROAR, KAR).

Everything here runs before any retraining: :func:`check_arguments` validates a call once
(raising the one clear error), :func:`make_rankings` computes the rank positions (the
attribution's, from given maps or from ``attribution.attribute`` on the audited model, and
the random control's, drawn per retrain seed), and :func:`retrain_arms` records the config
(with digests of the data and rankings) and runs :class:`~.retrain.Retrainer`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._seeding import derive_seed  # re-exported: the one seed derivation
from .._validation import (
    ParameterError,
    ParameterTypeError,
    check_bool,
    check_choice,
    check_int,
    check_shape,
)
from ..data.imageset import ImageSet, as_imageset
from ..masking.fill import FILLS, MASK_VIEW
from ..masking.ranking import RANK_BY, rank_positions
from ..models.spec import ModelSpec
from ..training.ensemble import ENGINES, PRECISIONS
from ..training.fit import load_run
from ..training.recipe import Recipe
from .retrain import Arm, Ranking, Retrainer, tensor_digest

__all__ = ["RETRAIN_FILLS", "TARGETS", "Setup", "check_arguments", "check_levels", "derive_seed", "make_rankings", "retrain_arms"]

TARGETS = ("label", "predicted")
RETRAIN_FILLS = ("zero", "mean")


@dataclass(frozen=True)
class Setup:
    """Validated arguments of one protocol call."""

    caller: str
    model: nn.Module | None
    spec: ModelSpec | None
    recipe: Recipe | None
    train: ImageSet
    test: ImageSet
    maps: tuple[torch.Tensor, torch.Tensor] | None
    method: str | None
    method_options: Mapping[str, Any]
    target: str
    levels: tuple[float, ...]
    seeds: tuple[int, ...]
    seed: int
    fill: str
    rank: str
    controls: Mapping[str, bool]
    engine: str
    max_stack: int
    make_model: Callable[[], nn.Module] | None = None
    train_fn: Callable[..., nn.Module] | None = None
    executor: Any = None
    precision: str = "fp32"

    @property
    def custom(self) -> bool:
        """Whether retrains go through :mod:`.retrain_custom` (a factory or a ``train_fn``)."""
        return self.spec is None or self.train_fn is not None


def check_levels(levels: Any, caller: str) -> tuple[float, ...]:
    """``levels`` as sorted floats: distinct fractions in (0, 1], else one ParameterError."""
    msg = f"The 'levels' parameter of {caller} must be distinct fractions in (0, 1]. Got {levels!r}."
    if isinstance(levels, str | bytes) or not isinstance(levels, Sequence) or not levels:
        raise ParameterError(msg)
    for v in levels:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
            raise ParameterError(msg)
    if len(set(levels)) != len(levels):
        raise ParameterError(msg)
    return tuple(sorted(float(v) for v in levels))


def _check_fill(fill: Any, caller: str) -> str:
    if fill in FILLS and fill not in RETRAIN_FILLS:
        raise ParameterError(
            f"fill={fill!r} is not supported for retraining in {caller}: imputing every batch of "
            "every retrain is too costly. Use fill='zero' or 'mean', or evaluation.road for "
            "noisy linear imputation without retraining."
        )
    return check_choice(fill, "fill", caller, RETRAIN_FILLS)


def _check_data(train: Any, test: Any, caller: str) -> tuple[ImageSet, ImageSet]:
    train = as_imageset(train, caller=caller, what="train")
    test = as_imageset(test, caller=caller, what="test")
    if train.input_shape != test.input_shape:
        raise ParameterError(f"{caller} needs train and test images of one shape. Got {train.input_shape} and {test.input_shape}.")
    return train, test


def architecture(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """The parameter names and shapes of ``model``: what "the same architecture" compares."""
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def _same_architecture(a: nn.Module, b: nn.Module, names: tuple[str, str], caller: str) -> None:
    arch_a, arch_b = architecture(a), architecture(b)
    if arch_a == arch_b:
        return
    diff = next(((x, y) for x, y in zip(arch_a, arch_b, strict=False) if x != y), None)
    where = (f"first difference: {diff[0][0]} {diff[0][1]} vs {diff[1][0]} {diff[1][1]}" if diff is not None
             else f"{len(arch_a)} vs {len(arch_b)} parameter tensors")
    count = (sum(p.numel() for p in a.parameters()), sum(p.numel() for p in b.parameters()))
    raise ParameterError(
        f"{caller}: {names[0]} ({count[0]:,} parameters) and {names[1]} ({count[1]:,} parameters) are different "
        f"architectures ({where}); the retrains would audit another model. Pass make_model= (a zero-argument "
        "function returning a fresh model of the audited architecture) instead of a mismatched spec.")


def _build(make_model: Callable[[], nn.Module], seed: int, caller: str) -> nn.Module:
    torch.manual_seed(seed)
    net = make_model()
    if not isinstance(net, nn.Module):
        raise ParameterTypeError(f"The 'make_model' argument of {caller} must return a torch.nn.Module. Got {type(net).__name__}.")
    return net


def _resolve_model(model: Any, kw: Mapping[str, Any], caller: str
                   ) -> tuple[nn.Module | None, ModelSpec | None, Recipe | None, nn.Module]:
    """(model, spec, standard recipe or None with a train_fn, a freshly built retrain model)."""
    spec, recipe = kw["spec"], kw["recipe"]
    make_model, train_fn = kw.get("make_model"), kw.get("train_fn")
    if isinstance(model, str | os.PathLike):
        model, info = load_run(model)
        spec = spec if spec is not None or make_model is not None else ModelSpec(**info["spec"])
        recipe = recipe if recipe is not None or train_fn is not None else Recipe(**info["recipe"])
    if model is not None and not isinstance(model, nn.Module):
        raise ParameterTypeError(f"The 'model' argument of {caller} must be a torch.nn.Module, a run directory or None. Got {type(model).__name__}.")
    if make_model is not None and not callable(make_model):
        raise ParameterTypeError(f"The 'make_model' argument of {caller} must be a zero-argument callable returning a fresh nn.Module. Got {type(make_model).__name__}.")
    if train_fn is not None and not callable(train_fn):
        raise ParameterTypeError(f"The 'train_fn' argument of {caller} must be a callable train_fn(model, x, y) -> nn.Module. Got {type(train_fn).__name__}.")
    if spec is not None and not isinstance(spec, ModelSpec):
        raise ParameterTypeError(f"The 'spec' argument of {caller} must be a models.ModelSpec. Got {type(spec).__name__}.")
    if spec is None and make_model is None:
        raise ParameterTypeError(
            f"{caller} needs make_model= (a zero-argument function returning a fresh, untrained model of the audited "
            "architecture) or spec=models.ModelSpec(...) (a registered architecture), unless 'model' is a run directory.")
    if train_fn is not None and recipe is not None:
        raise ParameterError(f"{caller} takes one of recipe= (gradaudit's training loop) or train_fn= (your own), not both.")
    if train_fn is None and not isinstance(recipe, Recipe):
        raise ParameterTypeError(
            f"{caller} needs recipe=training.Recipe(...) (the audited model's recipe) or train_fn=fn(model, x, y) -> "
            f"model (your own training code), unless 'model' is a run directory. Got {type(recipe).__name__}.")
    with torch.random.fork_rng(devices=[]):  # the checks leave the caller's RNG alone
        fresh = _build(make_model, 0, caller) if make_model is not None else spec.build(seed=0)  # type: ignore[union-attr]
    if make_model is not None and spec is not None:
        _same_architecture(fresh, spec.build(seed=0), ("make_model()", f"spec {spec.name!r}"), caller)
    if model is not None:
        built = "make_model()" if make_model is not None else f"spec {spec.name!r}"  # type: ignore[union-attr]
        _same_architecture(model, fresh, ("the audited model", built), caller)
    return model, spec, None if recipe is None else recipe.standard(), fresh


def _check_maps(model: Any, method: Any, attributions: Any, train: ImageSet, test: ImageSet,
                caller: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if (method is None) == (attributions is None):
        raise ParameterError(f"{caller} needs exactly one of method='grad' (computed from 'model') or attributions=(train_maps, test_maps).")
    if method is not None:
        from .. import attribution  # a lower layer, imported when used

        attribution.get_method(method)
        if model is None:
            raise ParameterError(f"{caller} with method={method!r} needs the audited model (a module or a run directory).")
        return None
    if not isinstance(attributions, Sequence) or len(attributions) != 2 or not all(isinstance(a, torch.Tensor) for a in attributions):
        raise ParameterTypeError(f"The 'attributions' argument of {caller} must be a pair of tensors (train_maps, test_maps).")
    check_shape(attributions[0].shape, train.x.shape, "attributions[0] (train maps)", caller)
    check_shape(attributions[1].shape, test.x.shape, "attributions[1] (test maps)", caller)
    return attributions[0], attributions[1]


def check_arguments(caller: str, model: Any, train: Any, test: Any, **kw: Any) -> Setup:
    """Validate one protocol call (all of diffroar/roar/kar's arguments) before any work.

    Raises:
        ParameterError / ParameterTypeError: the first problem found, naming the argument.
    """
    train, test = _check_data(train, test, caller)
    model, spec, recipe, fresh = _resolve_model(model, kw, caller)
    top = max(int(train.y.max()), int(test.y.max())) if len(train) and len(test) else 0
    if spec is not None:
        if tuple(spec.input_shape) != train.input_shape:
            raise ParameterError(f"The model spec of {caller} takes inputs {tuple(spec.input_shape)}, the data are {train.input_shape}.")
        if top >= spec.num_classes:
            raise ParameterError(f"The model spec of {caller} has {spec.num_classes} classes, the labels go up to {top}.")
    else:
        _check_fresh(fresh, train, top, caller)
    maps = _check_maps(model, kw["method"], kw["attributions"], train, test, caller)
    seeds = kw["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ParameterError(f"The 'seeds' parameter of {caller} must be an int in [1, inf) (3 is the protocol minimum). Got {seeds!r}.")
    seed = check_int(kw["seed"], "seed", caller, 0)
    executor = kw.get("executor")
    precision = _check_precision(kw.get("precision", "fp32"), kw.get("device", "cpu"),
                                 spec is None or kw.get("train_fn") is not None, caller)
    if executor is not None and not callable(getattr(executor, "map", None)):
        raise ParameterTypeError(f"The 'executor' argument of {caller} must have a map(fn, items) method (runs.InProcessExecutor, runs.RayExecutor). Got {type(executor).__name__}.")
    return Setup(
        caller, model, spec, recipe, train, test, maps, kw["method"], dict(kw["method_options"] or {}),
        check_choice(kw["target"], "target", caller, TARGETS), check_levels(kw["levels"], caller),
        tuple(range(seed, seed + seeds)), seed, _check_fill(kw["fill"], caller),
        check_choice(kw["rank"], "rank", caller, RANK_BY),
        {k: check_bool(kw[k], k, caller) for k in ("random", "mask_only")},
        check_choice(kw["engine"], "engine", caller, ENGINES), check_int(kw["max_stack"], "max_stack", caller, 1),
        kw.get("make_model"), kw.get("train_fn"), executor, precision,
    )


def _on_cuda(device: Any) -> bool:
    try:
        return torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return False


def _check_precision(precision: Any, device: Any, custom: bool, caller: str) -> str:
    """fp32 anywhere; tf32 and bf16 only for gradaudit's own (stacked) retraining on a CUDA device."""
    check_choice(precision, "precision", caller, PRECISIONS)
    if precision == "fp32":
        return precision
    if not _on_cuda(device):
        raise ParameterError(
            f"precision={precision!r} of {caller} is a CUDA speed option (TensorFloat-32 / bfloat16 products); "
            f"the retrains run on {device!r}. Use precision='fp32' (the default) on the CPU, or device='cuda'.")
    if custom:
        raise ParameterError(f"precision={precision!r} of {caller} applies to retraining a spec= architecture with "
                             "recipe=; with make_model= or train_fn= the retrains run one by one in fp32. Leave "
                             "precision='fp32'.")
    return precision


def _check_fresh(fresh: nn.Module, train: ImageSet, top: int, caller: str) -> None:
    """One forward pass of a fresh ``make_model()`` on two training images: shapes and classes."""
    try:
        with torch.no_grad():
            out = fresh.eval()(train.x[:2])
    except Exception as err:  # the user's model: any failure is a shape mismatch to report
        raise ParameterError(f"{caller}: make_model() builds a model that fails on the data's images "
                             f"{train.input_shape}: {type(err).__name__}: {err}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ParameterError(f"{caller}: make_model() must build a classifier returning logits (N, C). Got "
                             f"{getattr(out, 'shape', type(out).__name__)}.")
    if top >= out.shape[1]:
        raise ParameterError(f"{caller}: make_model() builds a model with {out.shape[1]} outputs, the labels go up to {top}.")


def _random_positions(x: torch.Tensor, by: str, seed: int, rows: int = 4096) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    parts = [rank_positions(torch.rand((min(rows, len(x) - i), *x.shape[1:]), generator=gen), by=by, seed=seed)
             for i in range(0, len(x), rows)]
    return torch.cat(parts)


def make_rankings(s: Setup) -> dict[str, Ranking]:
    """The attribution's rankings (tie-break seeds ``seed`` / ``seed + 1`` for train / test)
    and, if asked, the random control's (drawn afresh for each retrain seed)."""
    maps = s.maps
    if maps is None:
        from .. import attribution

        def run(data: ImageSet, seed: int) -> torch.Tensor:
            target = data.y if s.target == "label" else "predicted"
            return attribution.attribute(s.method, s.model, data.x, target, seed=seed, **s.method_options)

        maps = (run(s.train, s.seed), run(s.test, derive_seed(s.seed, "test-maps")))
    fixed = (rank_positions(maps[0], by=s.rank, seed=s.seed), rank_positions(maps[1], by=s.rank, seed=s.seed + 1))
    out = {"attribution": Ranking("attribution", fixed[0][0].numel(), fixed)}
    if s.controls["random"]:
        def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            return (_random_positions(s.train.x, s.rank, derive_seed(seed, "random-train")),
                    _random_positions(s.test.x, s.rank, derive_seed(seed, "random-test")))

        out["random"] = Ranking("random", fixed[0][0].numel(), draw=draw)
    return out


def _record(value: Any) -> Any:
    """A deterministic JSON record of a method option (tensors and modules by digest)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return {"tensor_sha256": tensor_digest(value)}
    if isinstance(value, nn.Module):
        return {"module": type(value).__name__,
                "state_sha256": [tensor_digest(t) for t in value.state_dict().values()]}
    if isinstance(value, Mapping):
        return {str(k): _record(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_record(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _record(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": type(value).__name__, **fields}
    return {"type": type(value).__name__}


def _data_id(data: ImageSet) -> dict[str, Any]:
    return {"name": data.name, "split": data.meta.get("split"), "n": len(data),
            "input_shape": list(data.input_shape), "x_sha256": tensor_digest(data.x),
            "y_sha256": tensor_digest(data.y)}


def _config(s: Setup, protocol: str, rankings: Mapping[str, Ranking]) -> dict[str, Any]:
    return {
        "protocol": protocol, "levels": list(s.levels), "seeds": list(s.seeds), "seed": s.seed,
        "retrain_seeding": ("retrain r: spec.build(seed=r), recipe.seed = r" if not s.custom else
                            "retrain r: torch.manual_seed(r); build; torch.manual_seed(r); train"
                            + (" with recipe.seed = r" if s.train_fn is None else " with train_fn")),
        "fill": s.fill, "rank": s.rank, "target": s.target, "method": s.method,
        "method_options": {k: _record(v) for k, v in s.method_options.items()},
        "attributions": "computed" if s.maps is None else "given",
        "controls": dict(s.controls), "mask_view": MASK_VIEW,
        "spec": None if s.spec is None else s.spec.model_dump(mode="json"),
        "recipe": None if s.recipe is None else s.recipe.model_dump(mode="json"), "engine": s.engine, "max_stack": s.max_stack,
        "precision": s.precision,
        "train": _data_id(s.train), "test": _data_id(s.test),
        "rank_sha256": {n: [tensor_digest(p) for p in r.fixed] for n, r in rankings.items() if r.fixed},
        "random_rankings": "fresh per retrain seed r, drawn from sha256(f'{r}:random-train'/'-test')",
    }


def retrain_arms(s: Setup, protocol: str, arms: list[Arm], rankings: Mapping[str, Ranking],
             out: Any, device: Any, quiet: bool) -> tuple[dict[tuple[Arm, int], float], dict[str, Any]]:
    """Retrain every arm for every seed (resumable in ``out``); return accuracies and config."""
    config = _config(s, protocol, rankings)
    if s.custom:
        from .retrain_custom import CustomRetrainer, describe_custom

        config.update(describe_custom(s.make_model, s.train_fn, s.spec))
        custom = CustomRetrainer(s.make_model, s.spec, s.train_fn, s.recipe, s.train, s.test, rankings, s.fill,
                                 device, quiet, s.executor)
        return custom.run(arms, s.seeds, config, out), config
    runner = Retrainer(s.spec, s.recipe, s.train, s.test, rankings, s.fill, s.engine, s.max_stack, device, quiet,
                       s.precision)
    return runner.run(arms, s.seeds, config, out), config
