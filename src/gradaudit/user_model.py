"""Your own model and data on the command line: ``--model``, ``--weights``, ``--data``, ``--train-fn``.

* A model comes from a factory named ``package.module:function`` (importable) or
  ``path/to/file.py:function``; the factory takes no arguments and returns a fresh
  ``nn.Module``. Weights, optional, come from a ``.safetensors`` file or a ``torch.save``
  of a ``state_dict`` (loaded with ``weights_only=True``), strictly matched.
* Data come from an ``.npz`` with ``x_train, y_train, x_test, y_test`` (images (N, C, H, W)
  or (N, H, W), floats in the model's input space; integer labels 0 … C−1) and optionally
  ``bounds`` (lo, hi); without it the bounds are measured over train and test together
  and stated in the result.
* ``--train-fn module:function`` names ``train_fn(model, x, y) -> model`` for the retrains.

What the evaluation commands audit is a training run (``--run``, :class:`Audit`) or your own
model and data (:class:`UserAudit`, the same shape); :func:`open_audit` opens either,
:func:`fit_method` fits a method's data-dependent options on its training images and
:func:`run_diffroar` runs DiffROAR on either (the retrain recipe is the run's, or your
``make_model`` with ``--train-fn`` or a recipe).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import attribution, data, evaluation
from ._io import to_jsonable
from ._validation import DataError, ParameterError, ParameterTypeError, check_choice, check_int
from .data.imageset import ImageSet, as_imageset, check_bounds
from .evaluation.diffroar import TARGETS
from .models import ModelSpec
from .training import Recipe, check_model_fits, data_fingerprint, load_run

__all__ = [
    "NPZ_KEYS",
    "Audit",
    "UserAudit",
    "cli_recipe",
    "fit_method",
    "load_audit",
    "load_callable",
    "load_npz",
    "load_user_model",
    "load_weights",
    "method_settings",
    "open_audit",
    "run_diffroar",
    "run_user_diffroar",
    "user_audit",
]

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_callable(text: str, option: str = "--model") -> Callable[..., Any]:
    """The callable named by ``package.module:name`` or ``path/to/file.py:name``."""
    if not isinstance(text, str) or text.count(":") < 1 or not text.rpartition(":")[2]:
        raise ParameterError(f"{option} must be 'package.module:function' or 'path/to/file.py:function'. Got {text!r}.")
    where, _, name = text.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ParameterError(f"{option}: the file {where} does not exist.")
        mod_name = f"gradaudit_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise ParameterError(f"{option}: cannot import {where} as a Python file.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # so that its functions and classes pickle (executors)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # the user's file: report where it failed, in one line
            raise ParameterError(f"{option}: importing {where} failed: {type(err).__name__}: {err}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise ParameterError(f"{option}: cannot import {where!r} ({err}). Is it on PYTHONPATH, or give a file.py path.") from None
    target: Any = module
    for part in name.split("."):
        if not hasattr(target, part):
            raise ParameterError(f"{option}: {where} has no attribute {name!r}.")
        target = getattr(target, part)
    if not callable(target):
        raise ParameterTypeError(f"{option}: {text} is not callable.")
    return target


def load_weights(model: nn.Module, path: str | Path, option: str = "--weights") -> nn.Module:
    """Load a ``.safetensors`` file or a ``torch.save``-d state_dict into ``model`` (strict)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"{option}: the file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file: one line naming it
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"{option}: cannot read {path} as safetensors or a torch state_dict: {first}") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise DataError(f"{option}: {path} holds a {type(state).__name__}, not a state_dict (save model.state_dict()).")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ParameterError(f"{option}: {path} does not fit the model: {' '.join(s.strip() for s in first[:3])}") from None
    return model


def load_user_model(factory: str, weights: str | Path | None = None, device: str = "cpu") -> tuple[nn.Module, Callable[[], nn.Module]]:
    """(the model in eval mode on ``device``, its factory): ``factory()`` plus ``weights``."""
    make = load_callable(factory, "--model")
    try:
        model = make()
    except TypeError as err:  # a factory that needs arguments
        raise ParameterError(f"--model: {factory}() must take no arguments and return a fresh model: {err}") from None
    if not isinstance(model, nn.Module):
        raise ParameterTypeError(f"--model: {factory}() must return a torch.nn.Module. Got {type(model).__name__}.")
    if weights is not None:
        load_weights(model, weights)
    return model.to(device).eval(), make


def load_npz(path: str | Path, caller: str = "gradaudit") -> tuple[ImageSet, ImageSet]:
    """(train, test) from an ``.npz`` holding ``x_train, y_train, x_test, y_test`` (and
    optionally ``bounds``); bounds measured over both splits when absent."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"--data: the file {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # not an npz
        raise DataError(f"--data: cannot read {path} as an .npz file: {err}") from None
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DataError(f"--data: {path} lacks {', '.join(missing)}; it needs the arrays {', '.join(NPZ_KEYS)}.")
    if "bounds" in arrays:
        bounds, source = check_bounds(arrays["bounds"].tolist(), caller, "bounds array of --data"), "given"
    else:
        lo = min(float(arrays["x_train"].min()), float(arrays["x_test"].min()))
        hi = max(float(arrays["x_train"].max()), float(arrays["x_test"].max()))
        bounds, source = (lo, hi if hi > lo else lo + 1.0), "measured"
    sets = []
    for split in ("train", "test"):
        images = as_imageset((torch.from_numpy(arrays[f"x_{split}"]), torch.from_numpy(arrays[f"y_{split}"])),
                             bounds=bounds, name=path.stem, caller=caller, what=f"{split} split of {path.name}")
        sets.append(ImageSet(images.x, images.y, {**images.meta, "split": split, "bounds_source": source}))
    if sets[0].input_shape != sets[1].input_shape:
        raise DataError(f"--data: x_train and x_test of {path} have different image shapes "
                        f"{sets[0].input_shape} and {sets[1].input_shape}.")
    return sets[0], sets[1]


@dataclass(frozen=True)
class Audit:
    """A finished training run, with what is needed to reload its data.

    Attributes:
        run: The run directory.
        model: The trained model (eval mode, on ``device``).
        info: The run's ``run.json`` (spec, recipe, data name and fingerprint, history).
        device: Where the model lives.
        data_root: The data root (None: ``$GRADAUDIT_DATA``).
    """

    run: Path
    model: nn.Module
    info: Mapping[str, Any]
    device: str
    data_root: Path | None

    @property
    def dataset(self) -> str:
        return str(self.info["data"]["name"])

    @property
    def data_seed(self) -> int:
        """The seed the run's data were drawn with (BlockMNIST placement, synthetic draws):
        ``gradaudit train`` loads its data with the recipe's seed."""
        return int(self.info["recipe"].get("seed", 0))

    def load(self, split: str, n: int | None = None, caller: str = "gradaudit") -> ImageSet:
        """The run's dataset ``split`` (its first ``n`` images if given), on the CPU."""
        if n is not None:
            check_int(n, "n", caller, 1)
        images = data.load(self.dataset, split, root=self.data_root, seed=self.data_seed)
        return images if n is None else images.subset(slice(0, n))

    def trained_on(self, train: ImageSet) -> bool:
        """Whether ``train`` (a whole train split) is the data the run was fitted on."""
        return self.info["data"].get("fingerprint") == data_fingerprint(train)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(**self.info["spec"])

    @property
    def recipe(self) -> Recipe:
        return Recipe(**self.info["recipe"])

    def retraining(self) -> dict[str, Any]:
        """How DiffROAR retrains this model: the run's architecture and recipe."""
        return {"spec": self.spec, "recipe": self.recipe}

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.run.resolve()), "dataset": self.dataset, "data_seed": self.data_seed}


def load_audit(run: Path, data_root: Path | None, device: str) -> Audit:
    """Load a run directory written by ``gradaudit train`` (or ``training.fit(spec=...)``).

    Raises:
        ParameterError: ``run`` is not a finished run, or its run.json names no dataset.
    """
    model, info = load_run(run, device=device)
    if not isinstance(info.get("data"), Mapping) or not info["data"].get("name"):
        raise ParameterError(f"The run {run} records no dataset name in run.json; evaluate it with the library instead.")
    return Audit(Path(run), model, info, device, data_root)


@dataclass(frozen=True)
class UserAudit:
    """A user's model and ``.npz`` data, in the shape of :class:`Audit`."""

    model: nn.Module
    make_model: Callable[[], nn.Module]
    factory: str
    weights: Path | None
    data: Path
    device: str
    splits: tuple[ImageSet, ImageSet] = field(repr=False)
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.data.stem

    @property
    def data_seed(self) -> int:
        return 0

    @property
    def run(self) -> Path:
        """Where results go by default: next to the data file."""
        return self.data.parent

    def load(self, split: str, n: int | None = None, caller: str = "gradaudit") -> ImageSet:
        images = self.splits[0] if split == "train" else self.splits[1]
        if n is not None:
            check_int(n, "n", caller, 1)
        return images if n is None else images.subset(slice(0, n))

    def trained_on(self, train: ImageSet) -> bool:
        return True

    def retraining(self) -> dict[str, Any]:
        """How DiffROAR retrains this model: fresh ones from ``--model``'s factory (the
        training code, ``train_fn`` or a recipe, is given with it)."""
        return {"make_model": self.make_model}

    def describe(self) -> dict[str, Any]:
        return {"model": self.factory, "weights": None if self.weights is None else str(self.weights.resolve()),
                "data": str(self.data.resolve()), "dataset": self.dataset,
                "bounds": list(self.splits[0].bounds), "bounds_source": self.splits[0].meta.get("bounds_source")}


def open_audit(run: Path | None, model: str | None, weights: Path | None, data: Path | None,
               data_root: Path | None, device: str, caller: str) -> Any:
    """:func:`load_audit` of ``run`` for ``--run``, a :class:`UserAudit` for ``--model`` and
    ``--data``; one clear error for any other combination."""
    user = user_audit(run, model, weights, data, device, caller)
    if user is not None:
        return user
    return load_audit(run, data_root, device)  # type: ignore[arg-type]


def user_audit(run: Path | None, model: str | None, weights: Path | None, data: Path | None,
               device: str, caller: str) -> UserAudit | None:
    """None for ``--run`` alone, a :class:`UserAudit` for ``--model`` and ``--data`` (and
    ``--weights``); one clear error for any other combination."""
    if run is not None and (model is not None or data is not None or weights is not None):
        raise ParameterError(f"{caller}: give --run RUN_DIR, or --model module:factory --data file.npz "
                             "(with optional --weights), not both.")
    if run is not None:
        return None
    if model is None or data is None:
        raise ParameterError(f"{caller} needs --run RUN_DIR (a gradaudit training run) or your own model: "
                             "--model my_pkg.my_module:make_model (or file.py:make_model) --data file.npz.")
    splits = load_npz(data, caller)
    net, make = load_user_model(model, weights, device)
    return UserAudit(net, make, model, weights, Path(data), device, splits,
                     {"data": {"name": Path(data).stem}, "model": model})


def fit_method(audit: Audit, method: str, given: Mapping[str, Any], *, fit_n: int, seed: int,
               train: ImageSet | None = None) -> tuple[dict[str, Any], list[str]]:
    """(every option of ``method`` to pass on, names of the fitted ones).

    Options that ``method`` requires and were not given (patterns, reference set), and the
    data mean for ``baseline=mean``, are fitted with ``attribution.fit_options`` on the first
    ``fit_n`` training images (``train`` if given, else the run's train split).
    """
    spec = attribution.get_method(method)
    missing = any(opt.required and key not in given for key, opt in spec.options.items())
    if not missing and not (given.get("baseline") == "mean" and "data_mean" not in given):
        return dict(given), []
    images = (train if train is not None else audit.load("train")).subset(slice(0, fit_n))
    fitted = attribution.fit_options(method, audit.model, images.x.to(audit.device), seed=seed)
    fitted = {k: v for k, v in fitted.items() if k not in given}
    return {**fitted, **given}, sorted(fitted)


def method_settings(method: str, given: Mapping[str, Any], fitted: Sequence[str], target: str,
                    fit_n: int, n: int) -> dict[str, Any]:
    """How the attributions were made, as recorded in the result files."""
    return {"method": method, "method_options": to_jsonable(dict(given)), "fitted_options": list(fitted),
            "fit_n": fit_n if fitted else None, "target": target, "n_images": n}


def run_diffroar(audit: Audit | UserAudit, method: str, given: Mapping[str, Any], *, n_train: int | None,
                 n_test: int | None, fit_n: int, folder: Path, device: str, quiet: bool,
                 training: Mapping[str, Any] | None = None, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """``evaluation.diffroar`` of ``method`` on the audit's data, resumable in ``folder/retrains``.

    The retrains are the audit's (:meth:`Audit.retraining`) with ``training`` added (your
    own model's ``train_fn`` or recipe). The command's own arguments are checked before the
    data are loaded; the protocol's options in ``kw`` are the metric registry's resolved
    ``diffroar`` options (``MetricSpec.resolve``, as the command reads them) and the method's
    options were checked by ``parse_method_options``, so ``evaluation.diffroar`` is the one
    check of the whole call. ``kw``: target, levels, seeds, seed, fill, rank, random,
    mask_only, max_stack. Returns (result, settings to record).
    """
    caller = "gradaudit diffroar"
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            check_int(value, name, caller, 1)
    check_int(fit_n, "fit_n", caller, 1)
    check_choice(kw["target"], "target", caller, TARGETS)
    check_int(kw["seed"], "seed", caller, 0)
    test = audit.load("test", n_test, caller)
    full = audit.load("train")
    train = full if n_train is None else full.subset(slice(0, n_train))
    check_model_fits(audit.model, test, device)  # one clear error before the method's options are fitted
    options, fitted = fit_method(audit, method, given, fit_n=fit_n, seed=kw["seed"], train=train)
    result = evaluation.diffroar(audit.model, train, test, method=method, method_options=options,
                                 out=folder / "retrains", device=device, quiet=quiet,
                                 **audit.retraining(), **(training or {}), **kw)
    settings = method_settings(method, given, fitted, kw["target"], fit_n, len(test))
    settings.update(n_test=settings.pop("n_images"), n_train=len(train), train_is_run_data=audit.trained_on(full))
    return result, settings


def run_user_diffroar(audit: UserAudit, method: str, given: Mapping[str, Any], *, train_fn: str | None,
                      recipe: Any, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """:func:`run_diffroar` on your own model and data: retrains from ``make_model``
    (``--model``) trained by ``train_fn`` (``--train-fn``), else by ``recipe``."""
    fn = load_callable(train_fn, "--train-fn") if train_fn is not None else None
    result, settings = run_diffroar(audit, method, given, training={"train_fn": fn} if fn is not None
                                    else {"recipe": recipe}, **kw)
    del settings["train_is_run_data"]  # (always: the data are the model's own)
    settings.update(train_fn=train_fn, recipe=None if fn is not None else recipe.model_dump(mode="json"))
    return result, settings


def cli_recipe(options: Mapping[str, Any], seed: int) -> Any:
    """The retrain recipe of ``gradaudit diffroar --model`` without ``--train-fn``: the
    recipe defaults with the given ``--epochs/--lr/--batch-size/--optimizer``."""
    from pydantic import ValidationError

    from ._validation import format_validation_error
    from .training.recipe import Recipe

    try:
        return Recipe(**options, seed=seed)
    except ValidationError as err:
        raise ParameterError(f"gradaudit diffroar: bad recipe option: {format_validation_error(err)}") from None
