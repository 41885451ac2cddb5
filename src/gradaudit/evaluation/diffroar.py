"""DiffROAR, ROAR and KAR: does an attribution's ranking order the features by predictive power?

Each retrains fresh models of the audited architecture on data where only some
coordinates of each image are kept, chosen by the attribution's per-image ranking, and
measures the retrained models' accuracy on test data masked the same way.

* DiffROAR(k) = acc(retrained on top-k unmasked) − acc(retrained on bottom-k unmasked);
  > 0 means the ranking puts the more predictive coordinates first.
* ROAR(t) = acc after removing the top-t fraction (keeping the rest); lower is better.
* KAR(t) = acc after keeping only the top-t fraction; higher is better.

All three are the same machinery (:mod:`.retrain`): rank positions are stored compactly and
masks are built per batch; the retrains of one seed share every batch and train together as
a stacked ensemble, each equal to a model trained alone with ``training.fit`` on the masked
data. Two controls run through the same machinery:

* the random attribution (independent uniformly random rankings of every train and test
  image, drawn afresh for each retrain seed, seeded), actually retrained rather than drawn
  as a line at 0; its curve estimates the expectation over random attributions;
* the mask-only control (``mask_only=True``): the same architecture retrained on the binary
  keep-mask alone (no pixel values). Label-dependent masks can encode the class (the "class
  information leakage" of Rong et al., ICML 2022); mask-only accuracy measures it, and
  real − mask-only accuracy is the leak-free margin.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._io import write_json
from .._provenance import provenance
from .._validation import (
    ParameterError,
    ParameterTypeError,
    check_bool,
    check_choice,
    check_int,
    check_shape,
)
from ..data.imageset import ImageSet
from ..masking.fill import FILLS
from ..masking.ranking import RANK_BY, keep_count, rank_positions
from ..models.spec import ModelSpec
from ..training.ensemble import ENGINES
from ..training.fit import load_run
from ..training.recipe import Recipe
from .retrain import Arm, Ranking, Retrainer, tensor_digest
from .retrain_results import Accuracies, DiffROARCurve, DiffROARResult, RetrainResult

__all__ = ["LEVELS", "RETRAIN_FILLS", "ROAR_LEVELS", "TARGETS", "diffroar", "kar", "roar"]

LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ROAR_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
TARGETS = ("label", "predicted")
RETRAIN_FILLS = ("zero", "mean")
SIDES = ("top", "bottom")


@dataclass(frozen=True)
class _Setup:
    """Validated arguments of one protocol call."""

    caller: str
    model: nn.Module | None
    spec: ModelSpec
    recipe: Recipe
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


def _check_levels(levels: Any, caller: str) -> tuple[float, ...]:
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


def _check_data(train: Any, test: Any, caller: str) -> None:
    for name, value in (("train", train), ("test", test)):
        if not isinstance(value, ImageSet):
            raise ParameterTypeError(f"The {name!r} argument of {caller} must be a data.ImageSet. Got {type(value).__name__}.")
    if train.input_shape != test.input_shape:
        raise ParameterError(f"{caller} needs train and test images of one shape. Got {train.input_shape} and {test.input_shape}.")


def _resolve_model(model: Any, spec: Any, recipe: Any, caller: str) -> tuple[nn.Module | None, ModelSpec, Recipe]:
    if isinstance(model, str | os.PathLike):
        model, info = load_run(model)
        spec = spec if spec is not None else ModelSpec(**info["spec"])
        recipe = recipe if recipe is not None else Recipe(**info["recipe"])
    if model is not None and not isinstance(model, nn.Module):
        raise ParameterTypeError(f"The 'model' argument of {caller} must be a torch.nn.Module, a run directory or None. Got {type(model).__name__}.")
    if not isinstance(spec, ModelSpec):
        raise ParameterTypeError(f"{caller} needs spec=models.ModelSpec(...) (the audited architecture) unless 'model' is a run directory. Got {type(spec).__name__}.")
    if not isinstance(recipe, Recipe):
        raise ParameterTypeError(f"{caller} needs recipe=training.Recipe(...) (the audited model's recipe) unless 'model' is a run directory. Got {type(recipe).__name__}.")
    return model, spec, recipe.standard()


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


def _setup(caller: str, model: Any, train: Any, test: Any, **kw: Any) -> _Setup:
    _check_data(train, test, caller)
    model, spec, recipe = _resolve_model(model, kw["spec"], kw["recipe"], caller)
    if tuple(spec.input_shape) != train.input_shape:
        raise ParameterError(f"The model spec of {caller} takes inputs {tuple(spec.input_shape)}, the data are {train.input_shape}.")
    maps = _check_maps(model, kw["method"], kw["attributions"], train, test, caller)
    seeds = kw["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ParameterError(f"The 'seeds' parameter of {caller} must be an int in [1, inf) (3 is the protocol minimum). Got {seeds!r}.")
    seed = check_int(kw["seed"], "seed", caller, 0)
    return _Setup(
        caller, model, spec, recipe, train, test, maps, kw["method"], dict(kw["method_options"] or {}),
        check_choice(kw["target"], "target", caller, TARGETS), _check_levels(kw["levels"], caller),
        tuple(range(seed, seed + seeds)), seed, _check_fill(kw["fill"], caller),
        check_choice(kw["rank"], "rank", caller, RANK_BY),
        {k: check_bool(kw[k], k, caller) for k in ("random", "mask_only")},
        check_choice(kw["engine"], "engine", caller, ENGINES), check_int(kw["max_stack"], "max_stack", caller, 1),
    )


def _derive(seed: int, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{salt}".encode()).digest()[:7], "little")


def _random_positions(x: torch.Tensor, by: str, seed: int, rows: int = 4096) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    parts = [rank_positions(torch.rand((min(rows, len(x) - i), *x.shape[1:]), generator=gen), by=by, seed=seed)
             for i in range(0, len(x), rows)]
    return torch.cat(parts)


def _rankings(s: _Setup) -> dict[str, Ranking]:
    maps = s.maps
    if maps is None:
        from .. import attribution

        def run(data: ImageSet, seed: int) -> torch.Tensor:
            target = data.y if s.target == "label" else "predicted"
            return attribution.attribute(s.method, s.model, data.x, target, seed=seed, **s.method_options)

        maps = (run(s.train, s.seed), run(s.test, _derive(s.seed, "test-maps")))
    fixed = (rank_positions(maps[0], by=s.rank, seed=s.seed), rank_positions(maps[1], by=s.rank, seed=s.seed + 1))
    out = {"attribution": Ranking("attribution", fixed[0][0].numel(), fixed)}
    if s.controls["random"]:
        def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            return (_random_positions(s.train.x, s.rank, _derive(seed, "random-train")),
                    _random_positions(s.test.x, s.rank, _derive(seed, "random-test")))

        out["random"] = Ranking("random", fixed[0][0].numel(), draw=draw)
    return out


def _data_id(data: ImageSet) -> dict[str, Any]:
    return {"name": data.name, "split": data.meta.get("split"), "n": len(data),
            "input_shape": list(data.input_shape), "x_sha256": tensor_digest(data.x),
            "y_sha256": tensor_digest(data.y)}


def _config(s: _Setup, protocol: str, rankings: Mapping[str, Ranking]) -> dict[str, Any]:
    return {
        "protocol": protocol, "levels": list(s.levels), "seeds": list(s.seeds), "seed": s.seed,
        "retrain_seeding": "retrain r: spec.build(seed=r), recipe.seed = r",
        "fill": s.fill, "rank": s.rank, "target": s.target, "method": s.method,
        "method_options": {k: repr(v) if isinstance(v, torch.Tensor | nn.Module) else v
                           for k, v in s.method_options.items()},
        "attributions": "computed" if s.maps is None else "given",
        "controls": dict(s.controls), "spec": s.spec.model_dump(mode="json"),
        "recipe": s.recipe.model_dump(mode="json"), "engine": s.engine, "max_stack": s.max_stack,
        "train": _data_id(s.train), "test": _data_id(s.test),
        "rank_sha256": {n: [tensor_digest(p) for p in r.fixed] for n, r in rankings.items() if r.fixed},
        "random_rankings": "fresh per retrain seed r, drawn from sha256(f'{r}:random-train'/'-test')",
    }


def _retrain(s: _Setup, protocol: str, arms: list[Arm], rankings: Mapping[str, Ranking],
             out: Any, device: Any, quiet: bool) -> tuple[dict[tuple[Arm, int], float], dict[str, Any]]:
    config = _config(s, protocol, rankings)
    runner = Retrainer(s.spec, s.recipe, s.train, s.test, rankings, s.fill, s.engine, s.max_stack, device, quiet)
    return runner.run(arms, s.seeds, config, out), config


def _table(acc: Mapping[tuple[Arm, int], float], arms: Sequence[Arm], seeds: Sequence[int]) -> Accuracies:
    return Accuracies(tuple(tuple(acc[(a, s)] for s in seeds) for a in arms))




def diffroar(
    model: nn.Module | str | os.PathLike[str] | None,
    train: ImageSet,
    test: ImageSet,
    *,
    method: str | None = None,
    attributions: tuple[torch.Tensor, torch.Tensor] | None = None,
    spec: ModelSpec | None = None,
    recipe: Recipe | None = None,
    target: str = "label",
    method_options: Mapping[str, Any] | None = None,
    levels: Sequence[float] = LEVELS,
    seeds: int = 3,
    seed: int = 0,
    fill: str = "zero",
    rank: str = "element",
    random: bool = True,
    mask_only: bool = False,
    out: str | os.PathLike[str] | None = None,
    engine: str = "auto",
    max_stack: int = 32,
    device: str | torch.device = "cpu",
    quiet: bool = False,
) -> DiffROARResult:
    """DiffROAR curve of an attribution: top-k minus bottom-k retrained accuracy per level k.

    Formula: DiffROAR(k) = acc(f_top-k; top-k test) − acc(f_bottom-k; bottom-k test), where
    f_S is a fresh model of the audited architecture trained on images keeping only the
    coordinates S of each image (others = fill) and k is the fraction of coordinates kept.

    Source: Shah, Jain & Netrapalli, "Do Input Gradients Highlight Discriminative
    Features?", NeurIPS 2021, arXiv:2102.12781, §3 (paper-protocol §1.4).

    Reference code: harshays/inputgradients ``scripts/saliency_utils.py``
    (``get_attribution_indices``), ``scripts/misc_utils.py`` (``get_masked_data``),
    ``01_fig_in_real_data.ipynb`` (aggregation).

    Deviations (the reference code's bugs, fixed as paper-protocol §1.2/§8 lists):
        * Accuracy is the final epoch's on the masked test set; the reference keeps the
          best checkpoint's test accuracy (model selection on the test set).
        * Attributions are taken in eval mode (the reference never calls ``eval()``).
        * Ties are broken by a seeded shuffle (the reference: numpy's unstable quicksort).
        * The random baseline is computed (retrained on random rankings), not drawn at 0.
        * Differences are paired by seed (top and bottom retrains of seed r share the
          initialisation and batch order); the reference pools all pairwise differences.
        * Masks are built per batch from int16/int32 rank positions (the reference loops
          over images to write masked copies).

    Args:
        model: The audited model (attributions come from it, in eval mode, when ``method``
            is given), a finished ``training.fit`` run directory (model, spec and recipe are
            read from it), or None with precomputed ``attributions``.
        train, test: Unmasked training and test sets (the model's input space).
        method: Attribution method name (``gradaudit.attribution.METHODS``), or None.
        attributions: (train_maps, test_maps) shaped like ``train.x`` and ``test.x``.
        spec: The audited architecture (retrains are ``spec.build(seed=r)``).
        recipe: The audited model's recipe; retrains use ``recipe.standard()`` (no attack,
            no regularizer), final-epoch weights, no selection on any test set.
        target: Class whose logit is attributed: "label" (the paper) or "predicted".
            Recorded in the config (with precomputed maps it only records what they used).
        method_options: Options of ``method``.
        seeds: Retrains per arm, ≥ 1 (3 is the protocol minimum); retrain r uses
            initialisation seed and data-order seed ``seed + r``, shared by all arms.
        seed: Base seed: retrain seeds, rank tie-breaks (``seed`` for the train maps,
            ``seed + 1`` for the test maps), the random control's rankings.
        fill: Removed coordinates' value: "zero" (0 in input space) or "mean" (per-channel
            train mean). "nli" raises: it is not supported for retraining.
        rank: "element" (over C·H·W, the paper) or "channel-sum" (pixels by Σ_c |a|).
        random: Also retrain the random-attribution control.
        mask_only: Also retrain the mask-only control (keep-mask as the only input).
        out: Directory for resumable results (finished retrain groups are skipped on rerun)
            and ``result.json``; None keeps everything in memory.
        engine, max_stack: Stacked-training engine ("auto", "bmm", "loop") and the most
            models trained at once.
        device: Where to retrain.
        quiet: No progress bars.

    Raises:
        ParameterError / ParameterTypeError: bad levels, seeds < 1, maps of the wrong shape,
            unknown names, a directory holding another config; all before any work starts.

    Returns:
        A :class:`DiffROARResult` (``to_dict()`` for JSON); with ``out``, also written to
        ``out/result.json``.
    """
    s = _setup("diffroar()", model, train, test, method=method, attributions=attributions, spec=spec,
               recipe=recipe, target=target, method_options=method_options, levels=levels,
               seeds=seeds, seed=seed, fill=fill, rank=rank, random=random, mask_only=mask_only,
               engine=engine, max_stack=max_stack)
    rankings = _rankings(s)
    views = ["pixels", "mask"] if s.controls["mask_only"] else ["pixels"]
    grid = {(n, side, v): [Arm(n, side, keep_count(k, r.d), v) for k in s.levels]
            for n, r in rankings.items() for side in SIDES for v in views}
    acc, config = _retrain(s, "diffroar", [a for arms in grid.values() for a in arms], rankings, out, device, quiet)
    curves = {v: {n: DiffROARCurve(_table(acc, grid[(n, "top", v)], s.seeds),
                                   _table(acc, grid[(n, "bottom", v)], s.seeds)) for n in rankings}
              for v in views}
    result = DiffROARResult(s.levels, s.seeds, curves["pixels"], curves.get("mask", {}), config, provenance())
    if out is not None:
        write_json(os.path.join(out, "result.json"), result.to_dict())
    return result


def _removal(protocol: str, model: Any, train: Any, test: Any, kw: dict[str, Any]) -> RetrainResult:
    out, device, quiet = kw.pop("out"), kw.pop("device"), kw.pop("quiet")
    s = _setup(f"{protocol}()", model, train, test, **kw)
    rankings = _rankings(s)
    views = ["pixels", "mask"] if s.controls["mask_only"] else ["pixels"]

    def arm(name: str, level: float, view: str) -> Arm:
        d = rankings[name].d
        if protocol == "roar":  # remove the top round(t·d), keep the rest
            return Arm(name, "bottom", d - keep_count(level, d), view)
        return Arm(name, "top", keep_count(level, d), view)

    grid = {(n, v): [arm(n, t, v) for t in s.levels] for n in rankings for v in views}
    acc, config = _retrain(s, protocol, [a for arms in grid.values() for a in arms], rankings, out, device, quiet)
    tables = {v: {n: _table(acc, grid[(n, v)], s.seeds) for n in rankings} for v in views}
    result = RetrainResult(protocol, s.levels, s.seeds, tables["pixels"], tables.get("mask", {}),
                           protocol == "kar", config, provenance())
    if out is not None:
        write_json(os.path.join(out, "result.json"), result.to_dict())
    return result


def roar(
    model: nn.Module | str | os.PathLike[str] | None,
    train: ImageSet,
    test: ImageSet,
    *,
    method: str | None = None,
    attributions: tuple[torch.Tensor, torch.Tensor] | None = None,
    spec: ModelSpec | None = None,
    recipe: Recipe | None = None,
    target: str = "label",
    method_options: Mapping[str, Any] | None = None,
    levels: Sequence[float] = ROAR_LEVELS,
    seeds: int = 3,
    seed: int = 0,
    fill: str = "mean",
    rank: str = "element",
    random: bool = True,
    mask_only: bool = False,
    out: str | os.PathLike[str] | None = None,
    engine: str = "auto",
    max_stack: int = 32,
    device: str | torch.device = "cpu",
    quiet: bool = False,
) -> RetrainResult:
    """ROAR: retrained accuracy after removing the top-t fraction of each image (lower is better).

    Formula: ROAR(t) = acc(f_S; S-masked test), S = all but the round(t·d) top-ranked
    coordinates of each image; removed coordinates take ``fill``.

    Source: Hooker, Erhan, Kindermans & Kim, "A Benchmark for Interpretability Methods in
    Deep Neural Networks", NeurIPS 2019, arXiv:1806.10758.

    Reference code: google-research/google-research ``interpretability_benchmark``
    (``data_input.py``: ``tf.nn.top_k`` over all elements, per-channel mean fill).

    Deviations: the ranking is of |attribution| without the reference's optional squaring
    and min-max rescaling (both leave the order unchanged); default thresholds 0.1, 0.3,
    …, 0.9 as in the paper; retraining uses the audited recipe, not ImageNet's.
    Same machinery as :func:`diffroar` (DiffROAR(k) = KAR(k) − ROAR(1 − k) with zero fill).

    Args:
        As :func:`diffroar`, except: ``levels`` are the fractions t removed (default 0.1,
        0.3, …, 0.9, the ROAR paper's thresholds) and ``fill`` defaults to "mean" (ROAR's
        per-channel dataset mean).

    Returns:
        A :class:`RetrainResult` with protocol "roar", ``higher_is_better=False``.
    """
    kw = dict(locals())
    return _removal("roar", kw.pop("model"), kw.pop("train"), kw.pop("test"), kw)


def kar(
    model: nn.Module | str | os.PathLike[str] | None,
    train: ImageSet,
    test: ImageSet,
    *,
    method: str | None = None,
    attributions: tuple[torch.Tensor, torch.Tensor] | None = None,
    spec: ModelSpec | None = None,
    recipe: Recipe | None = None,
    target: str = "label",
    method_options: Mapping[str, Any] | None = None,
    levels: Sequence[float] = ROAR_LEVELS,
    seeds: int = 3,
    seed: int = 0,
    fill: str = "mean",
    rank: str = "element",
    random: bool = True,
    mask_only: bool = False,
    out: str | os.PathLike[str] | None = None,
    engine: str = "auto",
    max_stack: int = 32,
    device: str | torch.device = "cpu",
    quiet: bool = False,
) -> RetrainResult:
    """KAR: retrained accuracy keeping only the top-t fraction of each image (higher is better).

    Formula: KAR(t) = acc(f_S; S-masked test), S = the round(t·d) top-ranked coordinates.

    Source: Hooker, Erhan, Kindermans & Kim, NeurIPS 2019, arXiv:1806.10758 ("keep and
    retrain").

    Reference code: google-research/google-research ``interpretability_benchmark``
    (``keep_information=True``).

    Deviations: as :func:`roar`.

    Args:
        As :func:`diffroar`, except: ``levels`` are the fractions t kept (default 0.1, 0.3,
        …, 0.9) and ``fill`` defaults to "mean".

    Returns:
        A :class:`RetrainResult` with protocol "kar", ``higher_is_better=True``.
    """
    kw = dict(locals())
    return _removal("kar", kw.pop("model"), kw.pop("train"), kw.pop("test"), kw)
