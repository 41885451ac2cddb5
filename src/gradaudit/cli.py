"""The ``gradaudit`` command line: thin commands that parse options and call the library.

Examples:
    gradaudit train --dataset fmnist --model mlp --attack linf --eps 0.0627 --epochs 10 --out runs/x
    gradaudit robustness --run runs/x --norm linf --eps 0,0.05,0.1
    gradaudit diffroar --run runs/x --method grad --levels 0.05,0.1,0.2,0.5 --seeds 3 --mask-only
    gradaudit road --run runs/x --method ig -o n_steps=32 --n 1000
    gradaudit perturb --run runs/x --method smoothgrad --kind degradation --patch-size 4
    gradaudit leakage --run runs/blockmnist --method pattern-attribution --ks 2.5,5,10

User errors print one line on stderr and exit with status 2 (``--debug`` shows the
traceback); library messages name the command's options (``--eps``, ``-o n_steps``).
Results go to stdout (``--json`` for scripts). Progress goes to stderr: bars on a terminal,
and everywhere one time-stamped line per finished step (model trained, maps computed, curve
finished, epoch, job resumed), so the log of a background run (``2> log``) shows progress;
``-q`` turns both off.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from ._allocator import tune_malloc
from ._validation import GradauditError, ParameterError, check_choice, format_validation_error


class _Commands(MutableMapping[str, Any]):
    """The main group's commands. The evaluation commands built from the metric registry
    (:func:`metric_commands`; they import the library) are added, after ``attribute``, on the
    first listing or the first lookup of a name the others lack, so `gradaudit runs ls` stays
    light and a metric registered at run time has its command."""

    def __init__(self, base: Mapping[str, Any]) -> None:
        self._commands = dict(base)
        self._built = False

    def _build(self) -> None:
        if self._built:
            return
        self._built = True
        commands, self._commands = self._commands, {}
        for name, command in commands.items():
            self._commands[name] = command
            if name == "attribute":
                self._commands.update(metric_commands())

    def __getitem__(self, name: str) -> Any:
        if name not in self._commands:
            self._build()
        return self._commands[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._commands[name] = command

    def __delitem__(self, name: str) -> None:
        del self._commands[name]

    def __iter__(self) -> Iterator[str]:
        self._build()
        return iter(self._commands)

    def __len__(self) -> int:
        self._build()
        return len(self._commands)


class _MainGroup(typer.core.TyperGroup):
    """The main command group: its commands (:class:`_Commands`) include ``diffroar`` and one
    command per registered metric that needs only a model, maps and block masks, and
    `gradaudit --help` ends with the registered metrics (``evaluation.METRICS``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands(self.commands)  # type: ignore[assignment]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from .evaluation import METRICS

        self.epilog = ("Metrics (`gradaudit metrics` shows their options):\n\n"
                       + "\n\n".join(METRICS.listing().splitlines()))
        super().format_help(ctx, formatter)


app = typer.Typer(
    name="gradaudit",
    help="Audit whether feature attributions highlight the features a model uses.",
    cls=_MainGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: rich cut long defaults to '…' and showed flags as <bool>
)

# Shared options, declared once (also used by `gradaudit runs`).
from ._cli_options import (  # noqa: E402
    DataRoot,
    Device,
    FitN,
    Json,
    Method,
    MethodOption,
    OptRun,
    Quiet,
    RunDir,
    Seed,
    Target,
    UserData,
    UserModel,
    UserWeights,
)


def parse_floats(text: str, name: str) -> list[float]:
    """'0,0.05,0.1' -> [0.0, 0.05, 0.1], or a one-line error naming the option."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"--{name} must be comma-separated numbers, e.g. 0,0.05,0.1. Got {text!r}.") from None


def parse_ints(text: str, name: str) -> list[int]:
    """'256,256' -> [256, 256], or a one-line error naming the option."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"--{name} must be comma-separated integers, e.g. 256,256. Got {text!r}.") from None


def _device(name: str) -> str:
    import torch

    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ParameterError(f"--device must be 'cpu' or 'cuda'. Got {name!r}.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("--device cuda was given but CUDA is not available here; use --device cpu.")
    return name


def emit(result: Any, as_json: bool, text: str) -> None:
    """Print ``text`` for people, or ``result`` as JSON for scripts."""
    from ._io import to_jsonable

    typer.echo(json.dumps(to_jsonable(result), indent=2) if as_json else text)


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. mnist, fmnist, blockmnist.")] = "mnist",
    model: Annotated[str, typer.Option(help="Model name, e.g. mlp, cnn, resnet18.")] = "mlp",
    hidden: Annotated[str, typer.Option(help="MLP hidden widths, comma-separated.")] = "256,256",
    width: Annotated[int | None, typer.Option(help="ResNet base width (64 = published size).")] = None,
    act: Annotated[str, typer.Option(help="Activation: relu or softplus.")] = "relu",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = "sgd",
    lr: Annotated[float, typer.Option(help="Learning rate (peak lr for onecycle).")] = 0.05,
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 0.0,
    schedule: Annotated[str, typer.Option(help="constant, onecycle, multistep, step or cosine.")] = "constant",
    augment: Annotated[str, typer.Option(help="none, flip or crop-flip.")] = "none",
    attack: Annotated[str | None, typer.Option(help="Adversarial training: linf or l2.")] = None,
    eps: Annotated[float, typer.Option(help="Attack radius in input units.")] = 0.0,
    attack_steps: Annotated[int, typer.Option(help="PGD steps during training.")] = 10,
    regularizer: Annotated[
        str | None, typer.Option(help="gradnorm, score (score-matching) or anti (anti-score-matching).")
    ] = None,
    reg_weight: Annotated[float | None, typer.Option(help="Regularizer weight λ (paper default if unset).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of train held out to monitor.")] = 0.1,
    out: Annotated[Path, typer.Option(help="Run directory (resumes if it holds a killed run).")] = Path("runs/train"),
    seed: Seed = 0,
    data_root: DataRoot = None,
    device: Device = "cpu",
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Train a model and write a run directory (config, metrics JSON, checkpoint)."""
    from . import data as data_mod
    from .models import ModelSpec
    from .training import Recipe, fit
    from .training.regularizers import PAPER_DEFAULTS

    reg_names = {"score": "score-matching", "anti": "anti-score-matching"}
    reg = reg_names.get(regularizer, regularizer) if regularizer else None
    if reg is not None and reg not in PAPER_DEFAULTS:
        from ._validation import unknown_name

        raise ParameterError(unknown_name("regularizer", regularizer, [*PAPER_DEFAULTS, "score", "anti"]))
    weight = reg_weight if reg_weight is not None else (PAPER_DEFAULTS[reg]["reg_weight"] if reg else 0.0)
    recipe = Recipe(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                    weight_decay=weight_decay, schedule=schedule, augment=augment, attack=attack, eps=eps,
                    attack_steps=attack_steps, regularizer=reg, reg_weight=weight,
                    val_fraction=val_fraction, seed=seed)
    dev = _device(device)
    # both splits before the first epoch: a missing or corrupt test file stops here, not after training
    train_set = data_mod.load(dataset, "train", root=data_root, seed=seed)
    test_set = data_mod.load(dataset, "test", root=data_root, seed=seed)
    options: dict[str, Any] = {}
    if model in ("mlp",):
        options["hidden"] = parse_ints(hidden, "hidden")
    if width is not None:
        options["width"] = width
    if act != "relu":
        options["act"] = act
    spec = ModelSpec(name=model, input_shape=train_set.input_shape, num_classes=train_set.num_classes,
                     options=options)
    net = spec.build(seed=seed)
    result = fit(net, train_set, recipe, out=out, device=dev, quiet=quiet, spec=spec.model_dump(mode="json"),
                 test=test_set)  # (fit records the test accuracy in run.json)
    test_acc = result.test_accuracy
    last = result.history[-1] if result.history else {}
    emit({"out": str(out), "test_accuracy": test_acc, "history": result.history}, as_json,
         f"{'loaded' if result.loaded else 'trained'} {model} on {dataset}: "
         f"train acc {last.get('train_acc', float('nan')):.4f}, val acc {last.get('val_acc', float('nan')):.4f}, "
         f"test acc {test_acc:.4f} -> {out}")


@app.command()
def robustness(
    run: RunDir,
    eps: Annotated[str, typer.Option(help="Comma-separated radii, in input units.")] = "0,0.05,0.1",
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    steps: Annotated[int, typer.Option(help="PGD steps (evaluation attacks are stronger than training).")] = 40,
    restarts: Annotated[int, typer.Option(help="PGD random restarts.")] = 1,
    n: Annotated[int | None, typer.Option(help="Evaluate on the first n test images (default all).")] = None,
    data_root: DataRoot = None,
    device: Device = "cpu",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Robust accuracy of a trained run under PGD at several radii; saved as robustness.json."""
    from . import data as data_mod
    from ._io import write_json
    from ._provenance import provenance
    from .training import load_run, robust_accuracy

    radii = parse_floats(eps, "eps")
    dev = _device(device)
    net, info = load_run(run, device=dev)
    test = data_mod.load(info["data"]["name"], "test", root=data_root, seed=seed)
    if n is not None:
        test = test.subset(slice(0, n))
    from ._progress import log_step, progress
    from ._validation import check_float

    for r in radii:  # every radius before the first attack
        check_float(r, "eps", "robust_accuracy", 0.0)
    accs: dict[float, float] = {}
    x, y = test.x.to(dev), test.y.to(dev)
    with progress(quiet) as bar:
        task = bar.add_task(f"PGD-{steps} ({norm}) on {run.name}", total=len(radii))
        for r in radii:  # each radius has its own seeded generator: one call per radius gives the same numbers
            start = time.perf_counter()
            accs.update(robust_accuracy(net, x, y, norm=norm, eps=[r], steps=steps, restarts=restarts,
                                        bounds=test.bounds, seed=seed))
            log_step(f"robustness of {run.name}: eps {r:g} accuracy {accs[r]:.4f}", time.perf_counter() - start)
            bar.advance(task)
    table = {"norm": norm, "steps": steps, "restarts": restarts, "n": len(test),
             "accuracy": {str(k): v for k, v in accs.items()}, "seed": seed, **provenance()}
    write_json(run / "robustness.json", table)
    lines = [f"{'eps':>8}  accuracy"] + [f"{k:>8g}  {v:.4f}" for k, v in accs.items()]
    emit(table, as_json, "\n".join(lines))


from .runs.cli import runs_app  # noqa: E402 (sub-app: `gradaudit runs ls|show|gc`)

app.add_typer(runs_app, name="runs")


class _AttributeCommand(typer.core.TyperCommand):
    """`gradaudit attribute --help` ends with every registered method and its options."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from .attribution import METHODS

        lines = [
            f"{name}: {spec.summary}. Options: "
            + (", ".join(f"{key}={opt.shown()}" for key, opt in spec.options.items()) or "none")
            for name, spec in METHODS.items()
        ]
        self.epilog = ("Methods (set options with --option name=value; required options are fitted "
                       "from --fit-n training images):\n\n") + "\n\n".join(lines)
        super().format_help(ctx, formatter)


@app.command(cls=_AttributeCommand)
def attribute(
    run: OptRun = None,
    model: UserModel = None,
    weights: UserWeights = None,
    data: UserData = None,
    method: Annotated[str, typer.Option(help="Attribution method (listed below).")] = "grad",
    n: Annotated[int, typer.Option(help="Attribute the first n test images.")] = 16,
    target: Annotated[str, typer.Option(help="label (the true class) or predicted.")] = "label",
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", metavar="NAME=VALUE",
                                       help="A method option name=value (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Figure of inputs and maps (.png, .pdf or .svg).")] = None,
    save: Annotated[Path | None, typer.Option(help="Save x, target and maps (.safetensors).")] = None,
    fit_n: Annotated[int, typer.Option(help="Training images to fit patterns / draw references from.")] = 5000,
    max_batch: Annotated[int | None, typer.Option(help="Rows per forward/backward (memory budget).")] = None,
    seed: Seed = 0,
    data_root: DataRoot = None,
    device: Device = "cpu",
    quiet: Quiet = False,  # (no bars here; -q silences the log lines, see main)
    as_json: Json = False,
) -> None:
    """Attribute a trained run's predictions on its test images; draw the grid and/or save the maps."""
    from . import _cli_support as cs
    from . import attribution as attr
    from ._io import save_tensors
    from ._provenance import provenance
    from ._validation import check_int
    from .user_model import open_audit

    caller = "gradaudit attribute"
    given = cs.parse_method_options(method, option)
    check_choice(target, "target", caller, ("label", "predicted"))
    check_int(n, "n", caller, 1)
    check_int(fit_n, "fit_n", caller, 1)
    if out is None and save is None:
        raise ParameterError("Nothing to write: give --out FIGURE.png and/or --save MAPS.safetensors.")
    if out is not None and out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ParameterError(f"--out must end in .png, .pdf or .svg (the figure's format). Got {str(out)!r}.")
    audit = open_audit(run, model, weights, data, data_root, _device(device), caller)
    net, name, test = audit.model, audit.dataset, audit.load("test", n, caller)
    options, fitted = cs.fit_method(audit, method, given, fit_n=fit_n, seed=seed)
    x, y = test.x.to(audit.device), test.y.to(audit.device)
    maps = attr.attribute(method, net, x, y if target == "label" else "predicted", seed=seed,
                          max_batch=max_batch, **options)
    if target == "predicted":
        import torch

        with torch.no_grad():
            y = net(x).argmax(1)
    written = []
    if save is not None:
        meta = {"method": method, "options": given, "fitted": sorted(fitted), "seed": seed,
                "target": target, "run": str(run), "data": name, **provenance()}
        save_tensors(save, {"x": x, "target": y, "attributions": maps}, metadata=meta)
        written.append(str(save))
    if out is not None:
        from .report.maps import attribution_grid
        from .report.plots import save_figure

        fig = attribution_grid(x.cpu(), {method: maps.cpu()}, col_labels=[f"class {int(c)}" for c in y],
                               image_bounds=test.bounds, title=f"{method} — {(run or data).name}")
        written += [str(p) for p in save_figure(fig, out, formats=(out.suffix.lstrip(".") or "png",))]
    emit({"method": method, "n": len(x), "target": target, "written": written}, as_json,
         f"{method} on {len(x)} {name} test images ({target}) -> {', '.join(written)}")



# ---- evaluation commands, built from the metric registry ---------------------------------------


@dataclass(frozen=True)
class MetricCommand:
    """A command over registered metrics: ``metrics`` maps each ``--kind`` to its metric (one
    entry: the command has no ``--kind``); ``n`` is the default ``--n`` (None: every test image)."""

    name: str
    metrics: Mapping[str, str]
    n: int | None = 1000


# The commands whose name or defaults are not the registry's; every other metric that needs
# only a model, maps and block masks gets a command named after it (e.g. `gradaudit road`).
DECLARED_COMMANDS = (
    MetricCommand("perturb", {"pixel": "pixel-perturbation", "degradation": "degradation"}),
    MetricCommand("leakage", {"leakage": "leakage"}, n=None),
)


def metric_commands() -> dict[str, Any]:
    """name -> click command: ``diffroar``, then, in registration order, one for every
    registered metric the command line can feed (``MAP_NEEDS``: a model, its test maps,
    block masks)."""
    from .evaluation import METRICS
    from .evaluation.registry import MAP_NEEDS

    declared = {metric: c for c in DECLARED_COMMANDS for metric in c.metrics.values()}
    out: dict[str, Any] = {"diffroar": _diffroar_command()}
    for name, spec in METRICS.items():
        if not spec.needs <= MAP_NEEDS or "maps" not in spec.needs:
            continue
        command = declared.get(name, MetricCommand(name, {name: name}))
        if command.name not in out and all(m in METRICS for m in command.metrics.values()):
            out[command.name] = _metric_command(command)
    return out


_COMMON_FLAGS = {"--run", "--model", "--weights", "--data", "--method", "--target", "--kind", "--n", "--option",
                 "--fit-n", "--out", "--seed", "--data-root", "--device", "--quiet", "--json"}
Param = tuple[str, Any, Any]  # (name, Annotated type, default) of one command-line option
_SOURCE: list[Param] = [("run", OptRun, None), ("model", UserModel, None), ("weights", UserWeights, None),
                        ("data", UserData, None)]
_MAPS: list[Param] = [("method", Method, "grad"), ("target", Target, "label")]
_TAIL: list[Param] = [("option", MethodOption, None), ("fit_n", FitN, 5000), ("seed", Seed, 0),
                      ("data_root", DataRoot, None), ("device", Device, "cpu"), ("quiet", Quiet, False),
                      ("as_json", Json, False)]


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _many(opt: Any) -> bool:
    """Whether a metric option is a list of numbers (read comma-separated)."""
    return bool(getattr(opt, "many", False)) or isinstance(opt.default, list | tuple)


def _shown(opt: Any) -> str:
    if opt.default is None:
        return ""
    if _many(opt):
        return ",".join(f"{v:g}" for v in opt.default)
    return str(opt.default)


def _option_param(key: str, opts: Mapping[str | None, Any]) -> tuple[Any, Any]:
    """(annotation, default) of the CLI option of metric option ``key``; ``opts`` holds the
    option of each ``--kind`` that has it (one entry, under None, for a one-metric command)."""
    flag = _flag(key)
    multi = None not in opts

    def per_kind(text: Callable[[Any], str]) -> str:
        shown = {kind: text(opt) for kind, opt in opts.items()}
        if not multi or (len(set(shown.values())) == 1 and len(opts) > 1):
            return next(iter(shown.values()))
        return "; ".join(f"{kind}: {t}" for kind, t in shown.items() if t)

    def helped(opt: Any) -> str:
        choices = getattr(opt.check, "choices", None)
        return opt.help + (f" ({', '.join(choices)})" if choices else "")

    first = next(iter(opts.values()))
    help_text = per_kind(helped) + (", comma-separated" if _many(first) else "") + "."
    help_text = help_text[:1].upper() + help_text[1:]
    if not multi and isinstance(first.default, bool):
        decls = f"{flag}/--no-{flag[2:]}" if first.default else flag
        return Annotated[bool, typer.Option(decls, help=help_text)], first.default
    kinds = {type(o.default) for o in opts.values()}
    metavar = ("<numbers>" if _many(first) else f"<{kinds.pop().__name__}>"
               if len(kinds) == 1 and kinds <= {int, float} else "<value>")
    shown = per_kind(_shown)
    if not multi:  # the registry's default, as typed: given unchanged, the registry's own value is used
        return Annotated[str | None, typer.Option(flag, help=help_text, metavar=metavar)], shown or None
    return Annotated[str | None, typer.Option(flag, help=help_text, metavar=metavar,
                                              show_default=shown or False)], None


def _metric_options(specs: Mapping[str | None, Any]) -> tuple[dict[str, dict[str | None, Any]], list[Param]]:
    """The options of ``specs`` (kind -> MetricSpec; one spec under None): key -> the option
    of each kind that has it, and the command-line options (``opt_<key>``), declared once."""
    keys: dict[str, dict[str | None, Any]] = {}
    for kind, spec in specs.items():
        for key, opt in spec.options.items():
            keys.setdefault(key, {})[kind] = opt
    params = []
    for key, opts in keys.items():
        if _flag(key) in _COMMON_FLAGS:
            names = ", ".join(s.name for s in specs.values())
            raise ParameterError(f"The option {key!r} of the metric(s) {names} takes the command line's "
                                 f"{_flag(key)}; rename it in the metric's registration.")
        params.append((f"opt_{key}", *_option_param(key, opts)))
    return keys, params


def _given_options(keys: Mapping[str, Mapping[str | None, Any]], kw: dict[str, Any], spec: Any,
                   kind: str | None) -> dict[str, Any]:
    """The metric options given on the command line (``opt_<key>`` of ``kw``, popped), read
    and checked by the registry (``spec.resolve``: every option, defaults included)."""
    from ._cli_options import parse_value

    given: dict[str, Any] = {}
    for key, opts in keys.items():
        value, first = kw.pop(f"opt_{key}"), next(iter(opts.values()))
        if value is None or (None in opts and value in (first.default, _shown(first))):
            continue  # not given, or (one metric) given as its default
        if key not in spec.options:
            where = ", ".join(str(k) for k in opts)
            raise ParameterError(f"{_flag(key)} does not apply to --kind {kind}; only to --kind {where}.")
        opt = spec.options[key]
        given[key] = (value if isinstance(value, bool) else parse_floats(value, key.replace("_", "-"))
                      if _many(opt) else parse_value(value, _flag(key)))
    return spec.resolve(given, f"evaluate({spec.name!r})")


def _command(name: str, help_text: str, params: list[Param], run: Callable[[dict[str, Any]], None]) -> Any:
    """A click command named ``name`` whose options are ``params``; ``run(kw)`` gets their values."""
    import inspect

    def callback(**kw: Any) -> None:
        run(kw)

    callback.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
         for key, ann, default in params])
    callback.__annotations__ = {key: ann for key, ann, _ in params}
    sub = typer.Typer(rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False)
    sub.command(name, help=help_text)(callback)
    return typer.main.get_command(sub)


def _metric_command(command: MetricCommand) -> Any:
    """The command of ``command``: the shared options, ``--kind`` if it has several metrics,
    and each metric option as the registry declares it (help, default, list or flag)."""
    from .evaluation import METRICS

    specs = {kind: METRICS[name] for kind, name in command.metrics.items()}
    single = len(specs) == 1
    keys, options = _metric_options({None: next(iter(specs.values()))} if single else specs)
    kind_param: list[Param] = [] if single else [
        ("kind", Annotated[str, typer.Option("--kind", help=" or ".join(specs) + ".")], next(iter(specs)))]
    n_help = "Evaluate on the first n test images" + (" (default all)." if command.n is None else ".")
    stem = command.name if single else f"{command.name}-<kind>"
    params = [*_SOURCE, *_MAPS, *kind_param, *options,
              ("n", Annotated[int | None, typer.Option("--n", help=n_help)], command.n),
              ("out", Annotated[Path | None, typer.Option(
                  "--out", help=f"Result file (default <run>/{stem}-<method>-<target>.json).")], None),
              *_TAIL]
    if single:
        spec = next(iter(specs.values()))
        text = f"{spec.label}: {spec.summary}.\n\nSource: {spec.source}."
    else:
        text = (" or ".join(f"{s.label} (--kind {k})" for k, s in specs.items()) + ": the model's accuracy as "
                "ranked inputs are removed.\n\n" + "\n\n".join(f"--kind {k}: {s.summary}. Source: {s.source}."
                                                               for k, s in specs.items()))
    return _command(command.name, text[:1].upper() + text[1:], params,
                    lambda kw: _run_metric_command(command, keys, kw))


def _run_metric_command(command: MetricCommand, keys: Mapping[str, Mapping[str | None, Any]],
                        kw: dict[str, Any]) -> None:
    """Parse, call :func:`gradaudit._cli_support.evaluate_metric`, save, print."""
    from . import _cli_support as cs
    from .evaluation import get_metric
    from .user_model import UserAudit, open_audit

    caller = f"gradaudit {command.name}"
    single = len(command.metrics) == 1
    kind = kw.pop("kind", next(iter(command.metrics)))
    check_choice(kind, "kind", caller, tuple(command.metrics))
    spec = get_metric(command.metrics[kind])
    options = _given_options(keys, kw, spec, None if single else kind)
    method, target, seed = kw["method"], kw["target"], kw["seed"]
    method_options = cs.parse_method_options(method, kw["option"])
    audit = open_audit(kw["run"], kw["model"], kw["weights"], kw["data"], kw["data_root"], _device(kw["device"]),
                       caller)
    if "block_masks" in spec.needs:
        cs.require_blocks(audit, caller)
    test = audit.load("test", kw["n"], caller)
    done = cs.evaluate_metric(audit, spec.name, options, method, method_options, test, target=target,
                              fit_n=kw["fit_n"], seed=seed, quiet=kw["quiet"], caller=caller,
                              bounds=test.bounds if isinstance(audit, UserAudit) else None)
    settings = done.settings if single else {**done.settings, "kind": kind}
    stem = command.name if single else f"{command.name}-{kind}"
    path = kw["out"] if kw["out"] is not None else audit.run / f"{stem}-{method}-{target}.json"
    record = cs.save_result(path, command.name, audit, done.result.to_dict(), settings, seed)
    emit(record, kw["as_json"], f"{spec.label} of {method} ({target}) on {len(test)} {audit.dataset} test images\n"
         f"{spec.table(done.result)}\n-> {path}")


def _diffroar_command() -> Any:
    """`gradaudit diffroar`: the protocol's options from the registry's ``diffroar``, and your
    own model's training code or recipe."""
    from .evaluation import get_metric

    keys, options = _metric_options({None: get_metric("diffroar")})
    with_model = "With --model and no --train-fn: recipe"
    params = [
        *_SOURCE,
        ("train_fn", Annotated[str | None, typer.Option(
            "--train-fn", help="With --model: your training code, module:function or file.py:function, "
            "called as train_fn(model, x, y) -> model.")], None),
        ("epochs", Annotated[int | None, typer.Option("--epochs", help=f"{with_model} epochs (default 10).")], None),
        ("lr", Annotated[float | None, typer.Option("--lr", help=f"{with_model} learning rate.")], None),
        ("batch_size", Annotated[int | None, typer.Option("--batch-size", help=f"{with_model} batch size.")], None),
        ("optimizer", Annotated[str | None, typer.Option("--optimizer", help=f"{with_model}: sgd or adam.")], None),
        *_MAPS, *options,
        ("out", Annotated[Path | None, typer.Option(
            "--out", help="Result folder (default <run>/diffroar-<method>-<target>).")], None),
        ("n_train", Annotated[int | None, typer.Option("--n-train", help="Retrain on the first n training images.")],
         None),
        ("n_test", Annotated[int | None, typer.Option("--n-test", help="Test on the first n test images.")], None),
        *_TAIL,
    ]
    text = ("DiffROAR: retrain on the top-k and bottom-k attributed coordinates; diffroar.json + .png.\n\n"
            "A rerun with the same settings reuses every finished retrain group; a killed one resumes.")
    return _command("diffroar", text, params, lambda kw: _run_diffroar(keys, kw))


def _run_diffroar(keys: Mapping[str, Mapping[str | None, Any]], kw: dict[str, Any]) -> None:
    from . import _cli_support as cs
    from . import user_model as um
    from .evaluation import get_metric

    spec = get_metric("diffroar")
    options = _given_options(keys, kw, spec, None)
    method, target, seed, run, data = kw["method"], kw["target"], kw["seed"], kw["run"], kw["data"]
    given = cs.parse_method_options(method, kw["option"])
    dev = _device(kw["device"])
    recipe_options = {k: kw[k] for k in ("epochs", "lr", "batch_size", "optimizer") if kw[k] is not None}
    if run is not None and (kw["train_fn"] is not None or recipe_options):
        raise ParameterError("--train-fn, --epochs, --lr, --batch-size and --optimizer go with --model; a --run "
                             "is retrained with its own recipe.")
    audit = um.open_audit(run, kw["model"], kw["weights"], data, kw["data_root"], "cpu",
                          "gradaudit diffroar")  # retrains on --device
    folder = kw["out"] if kw["out"] is not None else audit.run / f"diffroar-{method}-{target}"
    common = dict(target=target, seed=seed, **options)
    sizes = dict(n_train=kw["n_train"], n_test=kw["n_test"], fit_n=kw["fit_n"], folder=folder, device=dev,
                 quiet=kw["quiet"])
    if isinstance(audit, um.UserAudit):
        result, settings = um.run_user_diffroar(audit, method, given, train_fn=kw["train_fn"],
                                                recipe=um.cli_recipe(recipe_options, seed), **sizes, **common)
    else:
        result, settings = cs.run_diffroar(audit, method, given, **sizes, **common)
    record = cs.save_result(folder / "diffroar.json", "diffroar", audit, result.to_dict(), settings, seed)
    plot = cs.save_diffroar_plot(result, folder / "diffroar.png", f"{method} ({target}) — {(run or data).name}")
    if not settings.get("train_is_run_data", True):
        typer.echo(f"note: {run} was trained on other data than {audit.dataset!r} (seed {audit.data_seed}) "
                   "loads here; the retrains use the loaded data.", err=True)
    emit(record, kw["as_json"], f"{spec.label} of {method} ({target}) on {audit.dataset}, retrain seeds "
         f"{list(result.seeds)}\n{spec.table(result)}\n-> {folder / 'diffroar.json'}, {plot}")


class _RunCommand(typer.core.TyperCommand):
    """`gradaudit run --help` ends with the registered studies (``experiments.STUDIES``)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from .experiments import STUDIES

        self.epilog = "Studies:\n\n" + "\n\n".join(STUDIES.listing().splitlines())
        super().format_help(ctx, formatter)


@app.command("run", cls=_RunCommand)
def run_cmd(
    study: Annotated[str | None, typer.Argument(help="Study name; none runs the main job (synthetic + blockmnist).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file overriding the study's defaults.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override one key, e.g. --set seed=1 (repeatable).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small settings that run in minutes on a laptop CPU.")] = False,
    methods: Annotated[str | None, typer.Option(help="Comma list of attribution methods (zoo); "
                                                      "same as --set methods=[a,b].")] = None,
    datasets: Annotated[str | None, typer.Option(help="Comma list of datasets (zoo, blockmnist); "
                                                       "same as --set datasets=[a,b].")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the merged config as YAML and exit.")] = False,
    out: Annotated[Path | None, typer.Option(help="Study folder (default runs/<study>).")] = None,
    store: Annotated[Path | None, typer.Option(help="Run store shared by studies (default <out>/store).")] = None,
    executor: Annotated[str, typer.Option(help="inprocess, or ray (pip install 'gradaudit\\[ray]').")] = "inprocess",
    jobs_per_gpu: Annotated[int, typer.Option(help="With --executor ray --device cuda: jobs that share one GPU "
                                                   "(each asks Ray for 1/k of a GPU).")] = 1,
    data_root: DataRoot = None,
    device: Device = "cpu",
    quiet: Quiet = False,
) -> None:
    """Run a study end to end: results.json and a self-contained report.html.

    Studies: listed below. A rerun reuses every finished job; a killed run resumes.
    """
    from . import experiments
    from .experiments.config import to_yaml

    name = study or "main"
    overrides = list(set_ or [])
    for key, value in (("methods", methods), ("datasets", datasets)):
        if value is not None:
            overrides.append(f"{key}=[{', '.join(v.strip() for v in value.split(',') if v.strip())}]")
    if print_config:
        typer.echo(to_yaml(experiments.study_config(name, quick=quick, config=config, overrides=overrides)),
                   nl=False)
        return
    path = experiments.run_study(name, config=config, overrides=overrides, quick=quick, out=out, store=store,
                                 device=_device(device), quiet=quiet, data_root=data_root, executor=executor,
                                 jobs_per_gpu=jobs_per_gpu)
    typer.echo(f"report: {path}")


@app.command("metrics")
def metrics_cmd(as_json: Json = False) -> None:
    """List the registered evaluation metrics: score direction, what each needs, its options."""
    from .evaluation import METRICS

    rows = {name: {"summary": m.summary, "higher_is_better": m.higher_is_better, "needs": sorted(m.needs),
                   "options": {key: opt.shown() for key, opt in m.options.items()}, "source": m.source}
            for name, m in METRICS.items()}
    text = "\n".join(
        f"{name} ({'higher' if r['higher_is_better'] else 'lower'} is better; needs {', '.join(r['needs'])}): "
        f"{r['summary']}\n    options: "
        + (", ".join(f"{k}={v}" for k, v in r["options"].items()) or "none")
        for name, r in rows.items())
    emit(rows, as_json, text)


@app.command("report")
def report_cmd(
    folder: Annotated[Path, typer.Argument(help="A study folder holding results.json.")],
) -> None:
    """Rebuild a study's report.html from its results.json (no recomputation)."""
    from .experiments import render_report

    typer.echo(f"report: {render_report(folder)}")


_LIBRARY_PARAMETER = re.compile(r"^The '(\w+)' (?:parameter|argument) of (.+?) (must .*)$", re.S)


def _options(argv: list[str]) -> set[str]:
    """The option names (--eps, -o, ...) of the command ``argv`` invokes (empty if none)."""
    command: Any = typer.main.get_command(app)
    for word in argv:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command = sub
    return {o for p in getattr(command, "params", []) for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}


def in_user_words(msg: str, argv: list[str]) -> str:
    """A library message in the words of the command line: "The 'eps' parameter of
    robust_accuracy must ..." becomes "--eps must ..." when the command has --eps, and a
    method option's check names ``-o NAME``; a corrupt-file hint that only the Python API
    can follow is left out."""
    from .data.download import VERIFY_HINT

    msg = msg.replace(VERIFY_HINT, "")
    m = _LIBRARY_PARAMETER.match(msg)
    if m is None:
        return msg
    name, caller, rest = m.groups()
    options = _options(argv)
    flag = "--" + name.replace("_", "-")
    if flag in options:
        return f"{flag} {rest}"
    if caller.startswith("attribute(") and "--option" in options:
        return f"-o {name} {rest}"
    return msg


def main() -> None:
    """Entry point: run the app, mapping user errors to one line and exit status 2."""
    # Idle OpenMP threads sleep instead of spinning: on a shared or oversubscribed CPU,
    # spinning made small-op training up to ~18x slower (bench/diffroar_fmnist.py).
    # It must be set before torch loads its OpenMP runtime; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tune_malloc()
    debug = "--debug" in sys.argv or os.environ.get("GRADAUDIT_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    from ._progress import configure_log, reset_log

    # one line per finished step on stderr (so a log file of a background run shows progress)
    configure_log(quiet=any(a in ("-q", "--quiet") for a in sys.argv[1:]))
    try:
        app(standalone_mode=False)
    except (GradauditError, ValidationError) as err:
        if debug:
            raise
        msg = format_validation_error(err) if isinstance(err, ValidationError) else str(err)
        typer.echo(f"error: {in_user_words(msg, sys.argv[1:])}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except TyperException as err:  # usage errors from typer's bundled click
        show = getattr(err, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(err, "exit_code", 2) or 2)
    finally:
        reset_log()  # (for callers that run main() in their own process, e.g. tests)


if __name__ == "__main__":
    main()
