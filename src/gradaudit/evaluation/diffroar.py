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
* the mask-only control (``mask_only=True``): the same architecture retrained on the
  keep-mask alone (no pixel values; centred, see :func:`~.retrain.mask_view`). Label-dependent masks can encode the class (the "class
  information leakage" of Rong et al., ICML 2022); mask-only accuracy measures it, and
  real − mask-only accuracy is the leak-free margin.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._io import write_json
from .._progress import EVAL_QUIET
from .._provenance import provenance
from ..data.imageset import ImageSet
from ..masking.ranking import keep_count
from ..models.spec import ModelSpec
from ..training.recipe import Recipe
from .retrain import Arm
from .retrain_results import Accuracies, DiffROARCurve, DiffROARResult, RetrainResult
from .retrain_setup import RETRAIN_FILLS, TARGETS, check_arguments, make_rankings, retrain_arms

__all__ = ["LEVELS", "MAX_STACK", "RETRAIN_FILLS", "ROAR_LEVELS", "STUDY_MAX_STACK", "TARGETS", "diffroar", "kar",
           "roar"]

LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ROAR_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
MAX_STACK = 32  # retrains trained together as one stacked model (the library default)
# The studies' default (experiments.measures.DiffROARSettings): their retrains are small models, and
# it is part of every stored study DiffROAR job's config hash, so it stays what those jobs were run with.
STUDY_MAX_STACK = 64
SIDES = ("top", "bottom")
def _table(acc: Mapping[tuple[Arm, int], float], arms: Sequence[Arm], seeds: Sequence[int]) -> Accuracies:
    return Accuracies(tuple(tuple(acc[(a, s)] for s in seeds) for a in arms))




def diffroar(
    model: nn.Module | str | os.PathLike[str] | None,
    train: ImageSet | tuple[torch.Tensor, torch.Tensor] | Dataset,
    test: ImageSet | tuple[torch.Tensor, torch.Tensor] | Dataset,
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
    max_stack: int = MAX_STACK,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    quiet: bool = EVAL_QUIET,
    make_model: Callable[[], nn.Module] | None = None,
    train_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], nn.Module] | None = None,
    executor: Any = None,
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

    Notes:
        Arms that see identical data are trained once per seed: at k = 1 top and bottom
        keep every coordinate, so DiffROAR(1) = 0 exactly. The mask-only control feeds the
        keep-mask, centred (keep − k, so values 1 − k and −k; broadcast over channels
        for channel-sum ranks), to the same architecture and recipe. Centring changes no
        information but keeps training stable: the raw {0, 1} mask made high-k retrains
        diverge to chance and under-report the leak.

    Args:
        model: The audited model (attributions come from it, in eval mode, when ``method``
            is given), a finished ``training.fit`` run directory (model, spec and recipe are
            read from it), or None with precomputed ``attributions``.
        train, test: Unmasked training and test sets (the model's input space): ImageSets,
            ``(x, y)`` pairs of tensors or map-style Datasets of ``(image, label)``
            (``data.as_imageset``: bounds given in ``meta["bounds"]`` are checked, else measured).
        method: Attribution method name (``gradaudit.attribution.METHODS``), or None.
        attributions: (train_maps, test_maps) shaped like ``train.x`` and ``test.x``.
        spec: The audited architecture, a registered one (retrains are ``spec.build(seed=r)``).
        recipe: The audited model's recipe; retrains use ``recipe.standard()`` (no attack,
            no regularizer), final-epoch weights, no selection on any test set.
        make_model: Instead of ``spec``, any architecture: a zero-argument callable returning a
            fresh, untrained ``nn.Module`` (called after ``torch.manual_seed(r)``). Given with a
            ``spec`` or a ``model``, their parameter names and shapes must match, else one
            error before any work.
        train_fn: Instead of ``recipe``, your own training code: ``train_fn(model, x, y)`` returns
            the trained module; called once per retrain (on the masked training inputs, on
            ``device``) after ``torch.manual_seed(r)``. Retrains then run one by one
            (:mod:`.retrain_custom`), resumable in ``out``, with both controls.
        executor: With ``make_model``/``train_fn``: run the pending retrains with
            ``executor.map`` (``runs.InProcessExecutor``, ``runs.RayExecutor``).
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
        precision: Arithmetic of the stacked retrains: "fp32" (default), or on CUDA only
            "tf32" (TensorFloat-32 matrix products) or "bf16" (TF32 plus bfloat16 autocast;
            weights and losses in fp32). Recorded in the result's config.
        quiet: No progress bars.

    Raises:
        ParameterError / ParameterTypeError: bad levels, seeds < 1, maps of the wrong shape,
            unknown names, a directory holding another config; all before any work starts.

    Returns:
        A :class:`DiffROARResult` (``to_dict()`` for JSON); with ``out``, also written to
        ``out/result.json``.
    """
    s = check_arguments("diffroar()", model, train, test, method=method, attributions=attributions, spec=spec,
               recipe=recipe, target=target, method_options=method_options, levels=levels,
               seeds=seeds, seed=seed, fill=fill, rank=rank, random=random, mask_only=mask_only,
               engine=engine, max_stack=max_stack, make_model=make_model, train_fn=train_fn, executor=executor,
               precision=precision, device=device)
    rankings = make_rankings(s)
    views = ["pixels", "mask"] if s.controls["mask_only"] else ["pixels"]
    grid = {(n, side, v): [Arm(n, side, keep_count(k, r.d), v) for k in s.levels]
            for n, r in rankings.items() for side in SIDES for v in views}
    acc, config = retrain_arms(s, "diffroar", [a for arms in grid.values() for a in arms], rankings, out, device, quiet)
    curves = {v: {n: DiffROARCurve(_table(acc, grid[(n, "top", v)], s.seeds),
                                   _table(acc, grid[(n, "bottom", v)], s.seeds)) for n in rankings}
              for v in views}
    result = DiffROARResult(s.levels, s.seeds, curves["pixels"], curves.get("mask", {}), config, provenance())
    if out is not None:
        write_json(os.path.join(out, "result.json"), result.to_dict())
    return result


def _removal(protocol: str, model: Any, train: Any, test: Any, kw: dict[str, Any]) -> RetrainResult:
    out, device, quiet = kw.pop("out"), kw["device"], kw.pop("quiet")
    s = check_arguments(f"{protocol}()", model, train, test, **kw)
    rankings = make_rankings(s)
    views = ["pixels", "mask"] if s.controls["mask_only"] else ["pixels"]

    def arm(name: str, level: float, view: str) -> Arm:
        d = rankings[name].d
        if protocol == "roar":  # remove the top round(t·d), keep the rest
            return Arm(name, "bottom", d - keep_count(level, d), view)
        return Arm(name, "top", keep_count(level, d), view)

    grid = {(n, v): [arm(n, t, v) for t in s.levels] for n in rankings for v in views}
    acc, config = retrain_arms(s, protocol, [a for arms in grid.values() for a in arms], rankings, out, device, quiet)
    tables = {v: {n: _table(acc, grid[(n, v)], s.seeds) for n in rankings} for v in views}
    result = RetrainResult(protocol, s.levels, s.seeds, tables["pixels"], tables.get("mask", {}),
                           protocol == "kar", config, provenance())
    if out is not None:
        write_json(os.path.join(out, "result.json"), result.to_dict())
    return result


def _removal_protocol(protocol: str, doc: str) -> Callable[..., RetrainResult]:
    """ROAR or KAR: :func:`diffroar`'s parameters (one declaration), with ``levels``
    defaulting to the ROAR paper's thresholds and ``fill`` to the per-channel mean."""
    defaults = {"levels": ROAR_LEVELS, "fill": "mean"}
    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p
              for p in inspect.signature(diffroar).parameters.values()]
    signature = inspect.Signature(params, return_annotation=RetrainResult)

    def run(*args: Any, **kwargs: Any) -> RetrainResult:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        kw = dict(bound.arguments)
        return _removal(protocol, kw.pop("model"), kw.pop("train"), kw.pop("test"), kw)

    run.__name__ = run.__qualname__ = protocol
    run.__doc__ = doc
    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__annotations__ = {**diffroar.__annotations__, "return": RetrainResult}
    return run


roar = _removal_protocol("roar", """ROAR: retrained accuracy after removing the top-t fraction of each image (lower is better).

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
        As :func:`diffroar` (the same parameters), except: ``levels`` are the fractions t
        removed (default 0.1, 0.3, …, 0.9, the ROAR paper's thresholds) and ``fill``
        defaults to "mean" (ROAR's per-channel dataset mean).

    Returns:
        A :class:`RetrainResult` with protocol "roar", ``higher_is_better=False``.
    """)

kar = _removal_protocol("kar", """KAR: retrained accuracy keeping only the top-t fraction of each image (higher is better).

    Formula: KAR(t) = acc(f_S; S-masked test), S = the round(t·d) top-ranked coordinates.

    Source: Hooker, Erhan, Kindermans & Kim, NeurIPS 2019, arXiv:1806.10758 ("keep and
    retrain").

    Reference code: google-research/google-research ``interpretability_benchmark``
    (``keep_information=True``).

    Deviations: as :func:`roar`.

    Args:
        As :func:`diffroar` (the same parameters), except: ``levels`` are the fractions t
        kept (default 0.1, 0.3, …, 0.9) and ``fill`` defaults to "mean".

    Returns:
        A :class:`RetrainResult` with protocol "kar", ``higher_is_better=True``.
    """)
