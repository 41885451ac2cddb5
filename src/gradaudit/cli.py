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
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from ._allocator import tune_malloc
from ._validation import GradauditError, ParameterError, format_validation_error


class _MainGroup(typer.core.TyperGroup):
    """`gradaudit --help` ends with the registered metrics (``evaluation.METRICS``)."""

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

# Shared options, declared once.
DataRoot = Annotated[
    Path | None,
    typer.Option("--data-root", envvar="GRADAUDIT_DATA", help="Folder holding the datasets."),
]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the run.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars and no log lines on stderr.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]


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
    from .training import Recipe, accuracy, fit
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
    result = fit(net, train_set, recipe, out=out, device=dev, quiet=quiet, spec=spec.model_dump(mode="json"))
    test_acc = accuracy(net, test_set.x, test_set.y, device=dev)
    from ._io import read_json, write_json

    info = read_json(out / "run.json")
    info["test_accuracy"] = test_acc
    write_json(out / "run.json", info)
    last = result.history[-1] if result.history else {}
    emit({"out": str(out), "test_accuracy": test_acc, "history": result.history}, as_json,
         f"{'loaded' if result.loaded else 'trained'} {model} on {dataset}: "
         f"train acc {last.get('train_acc', float('nan')):.4f}, val acc {last.get('val_acc', float('nan')):.4f}, "
         f"test acc {test_acc:.4f} -> {out}")


@app.command()
def robustness(
    run: Annotated[Path, typer.Option(help="A finished training run directory.")],
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


def parse_option(text: str) -> tuple[str, Any]:
    """'n_steps=32' -> ('n_steps', 32): the value is a Python literal if it parses, else a string."""
    import ast

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParameterError(f"--option must be name=value, e.g. n_steps=32. Got {text!r}.")
    try:
        return key.strip(), ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key.strip(), raw


# Your own model instead of a run (gradaudit.user_model; docs/own-model.md).
OptRun = Annotated[Path | None, typer.Option("--run", help="A finished training run directory (or --model and --data).")]
UserModel = Annotated[str | None, typer.Option("--model", help="Your model's factory: package.module:make_model or file.py:make_model.")]
UserWeights = Annotated[Path | None, typer.Option("--weights", help="Weights of --model: .safetensors or a torch state_dict file.")]
UserData = Annotated[Path | None, typer.Option("--data", help="Data of --model: .npz with x_train, y_train, x_test, y_test.")]


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
    from . import attribution as attr
    from . import data as data_mod
    from ._io import save_tensors
    from ._provenance import provenance
    from ._validation import check_choice, check_int
    from .training import load_run

    spec = attr.get_method(method)
    given = dict(parse_option(o) for o in option or [])
    check_choice(target, "target", "gradaudit attribute", ("label", "predicted"))
    check_int(n, "n", "gradaudit attribute", 1)
    check_int(fit_n, "fit_n", "gradaudit attribute", 1)
    if out is None and save is None:
        raise ParameterError("Nothing to write: give --out FIGURE.png and/or --save MAPS.safetensors.")
    if out is not None and out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ParameterError(f"--out must end in .png, .pdf or .svg (the figure's format). Got {str(out)!r}.")
    dev = _device(device)
    from .user_model import user_audit

    user = user_audit(run, model, weights, data, dev, "gradaudit attribute")
    if user is not None:
        net, name, test = user.model, user.dataset, user.load("test", n)
    else:
        net, info = load_run(run, device=dev)
        name = info["data"]["name"]
        test = data_mod.load(name, "test", root=data_root, seed=seed).subset(slice(0, n))
    needs_fit = any(o.required and k not in given for k, o in spec.options.items()) or (
        given.get("baseline") == "mean" and "data_mean" not in given)
    fitted = {}
    if needs_fit:
        train = (user.load("train") if user is not None else
                 data_mod.load(name, "train", root=data_root, seed=seed)).subset(slice(0, fit_n))
        fitted = attr.fit_options(method, net, train.to(dev), seed=seed)
    x, y = test.x.to(dev), test.y.to(dev)
    maps = attr.attribute(method, net, x, y if target == "label" else "predicted", seed=seed,
                          max_batch=max_batch, **{**fitted, **given})
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



# Options of the evaluation commands (diffroar, road, perturb, leakage), declared once.
RunDir = Annotated[Path, typer.Option("--run", help="A finished training run directory.")]
Method = Annotated[str, typer.Option("--method", help="Attribution method (see `gradaudit attribute --help`).")]
Target = Annotated[str, typer.Option("--target", help="Attribute the label (the true class) or the predicted class.")]
MethodOption = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", metavar="NAME=VALUE", help="A method option name=value, value read as YAML "
                 "(repeatable)."),
]
FitN = Annotated[int, typer.Option("--fit-n", help="Training images to fit patterns / references / means from.")]


@app.command("diffroar")
def diffroar_cmd(
    run: OptRun = None,
    model: UserModel = None,
    weights: UserWeights = None,
    data: UserData = None,
    train_fn: Annotated[str | None, typer.Option(
        "--train-fn", help="With --model: your training code, module:function or file.py:function, "
        "called as train_fn(model, x, y) -> model.")] = None,
    epochs: Annotated[int | None, typer.Option(help="With --model and no --train-fn: recipe epochs (default 10).")] = None,
    lr: Annotated[float | None, typer.Option(help="With --model and no --train-fn: recipe learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="With --model and no --train-fn: recipe batch size.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="With --model and no --train-fn: sgd or adam.")] = None,
    method: Method = "grad",
    target: Target = "label",
    levels: Annotated[str, typer.Option(help="Fractions k of each image kept, comma-separated.")] = (
        "0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"),
    seeds: Annotated[int, typer.Option(help="Retrains per arm (3 is the protocol minimum).")] = 3,
    fill: Annotated[str, typer.Option(help="Value of removed coordinates: zero or mean.")] = "zero",
    rank: Annotated[str, typer.Option(help="element (over C·H·W) or channel-sum (pixels).")] = "element",
    mask_only: Annotated[bool, typer.Option("--mask-only", help="Also retrain on the keep-mask alone.")] = False,
    random: Annotated[bool, typer.Option("--random/--no-random", help="Retrain the random control.")] = True,
    out: Annotated[Path | None, typer.Option(help="Result folder (default <run>/diffroar-<method>-<target>).")] = None,
    n_train: Annotated[int | None, typer.Option(help="Retrain on the first n training images.")] = None,
    n_test: Annotated[int | None, typer.Option(help="Test on the first n test images.")] = None,
    option: MethodOption = None,
    fit_n: FitN = 5000,
    max_stack: Annotated[int, typer.Option(help="Most models trained at once.")] = 32,
    seed: Seed = 0,
    data_root: DataRoot = None,
    device: Device = "cpu",
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """DiffROAR: retrain on the top-k and bottom-k attributed coordinates; diffroar.json + .png.

    A rerun with the same settings reuses every finished retrain group; a killed one resumes.
    """
    from . import _cli_support as cs
    from . import user_model as um

    given = cs.parse_method_options(method, option)
    dev = _device(device)
    recipe_options = {k: v for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size),
                                        ("optimizer", optimizer)) if v is not None}
    if run is not None and (train_fn is not None or recipe_options):
        raise ParameterError("--train-fn, --epochs, --lr, --batch-size and --optimizer go with --model; a --run "
                             "is retrained with its own recipe.")
    audit = um.open_audit(run, model, weights, data, data_root, "cpu", "gradaudit diffroar")  # retrains on --device
    folder = out if out is not None else audit.run / f"diffroar-{method}-{target}"
    common = dict(target=target, levels=parse_floats(levels, "levels"), seeds=seeds, seed=seed, fill=fill,
                  rank=rank, random=random, mask_only=mask_only, max_stack=max_stack)
    if isinstance(audit, um.UserAudit):
        result, settings = um.run_user_diffroar(
            audit, method, given, train_fn=train_fn, recipe=um.cli_recipe(recipe_options, seed), n_train=n_train,
            n_test=n_test, fit_n=fit_n, folder=folder, device=dev, quiet=quiet, **common)
    else:
        result, settings = cs.run_diffroar(audit, method, given, n_train=n_train, n_test=n_test, fit_n=fit_n,
                                           folder=folder, device=dev, quiet=quiet, **common)
    record = cs.save_result(folder / "diffroar.json", "diffroar", audit, result.to_dict(), settings, seed)
    plot = cs.save_diffroar_plot(result, folder / "diffroar.png", f"{method} ({target}) — {(run or data).name}")
    if not settings.get("train_is_run_data", True):
        typer.echo(f"note: {run} was trained on other data than {audit.dataset!r} (seed {audit.data_seed}) "
                   "loads here; the retrains use the loaded data.", err=True)
    emit(record, as_json, f"DiffROAR of {method} ({target}) on {audit.dataset}, retrain seeds {list(result.seeds)}\n"
         f"{cs.diffroar_table(result)}\n-> {folder / 'diffroar.json'}, {plot}")


@app.command("road")
def road_cmd(
    run: OptRun = None,
    model: UserModel = None,
    weights: UserWeights = None,
    data: UserData = None,
    method: Method = "grad",
    target: Target = "label",
    percentages: Annotated[str, typer.Option(help="Fractions removed, comma-separated.")] = (
        "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"),
    order: Annotated[str, typer.Option(help="morf, lerf or both.")] = "both",
    fill: Annotated[str, typer.Option(help="nli (noisy linear imputation), zero or mean.")] = "nli",
    rank: Annotated[str, typer.Option(help="channel-sum (ROAD) or element.")] = "channel-sum",
    absolute: Annotated[bool, typer.Option("--absolute", help="Rank |attribution| instead of the signed map.")] = False,
    n: Annotated[int, typer.Option(help="Evaluate on the first n test images.")] = 1000,
    option: MethodOption = None,
    fit_n: FitN = 5000,
    out: Annotated[Path | None, typer.Option(help="Result file (default <run>/road-<method>-<target>.json).")] = None,
    seed: Seed = 0,
    data_root: DataRoot = None,
    device: Device = "cpu",
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """ROAD (Rong et al., ICML 2022): accuracy as the most / least relevant coordinates are imputed."""
    from . import _cli_support as cs
    from . import evaluation

    given = cs.parse_method_options(method, option)
    from .user_model import open_audit

    audit = open_audit(run, model, weights, data, data_root, _device(device), "gradaudit road")
    test = audit.load("test", n, "gradaudit road")
    fracs = parse_floats(percentages, "percentages")
    mean = audit.load("train").x.mean((0, 2, 3)).to(audit.device) if fill == "mean" else None

    def metric(images: Any, maps: Any, silent: bool) -> Any:
        return evaluation.road(audit.model, images.x, images.y, maps, percentages=fracs, order=order, fill=fill,
                               rank=rank, absolute=absolute, mean=mean, seed=seed, device=audit.device,
                               quiet=silent, bounds=images.bounds if data is not None else None)

    done = cs.evaluate(audit, method, given, test, metric, target=target, fit_n=fit_n, seed=seed, quiet=quiet,
                       caller="gradaudit road")
    path = out if out is not None else audit.run / f"road-{method}-{target}.json"
    record = cs.save_result(path, "road", audit, done.result.to_dict(), done.settings, seed)
    emit(record, as_json, f"ROAD of {method} ({target}) on {len(test)} {audit.dataset} test images\n"
         f"{cs.road_table(done.result)}\n-> {path}")


@app.command("perturb")
def perturb_cmd(
    run: OptRun = None,
    model: UserModel = None,
    weights: UserWeights = None,
    data: UserData = None,
    method: Method = "grad",
    target: Target = "label",
    kind: Annotated[str, typer.Option(help="pixel (Srinivas & Fleuret) or degradation (patches, PGIG).")] = "pixel",
    order: Annotated[str | None, typer.Option(help="lerf or morf (degradation: also both, its default).")] = None,
    fill: Annotated[
        str | None, typer.Option(help="pixel: constant, image-mean or zero; degradation: patch-mean or zero.")
    ] = None,
    fractions: Annotated[str | None, typer.Option(help="pixel: fractions removed, comma-separated.")] = None,
    patch_size: Annotated[int | None, typer.Option(help="degradation: patch side (default 4).")] = None,
    n: Annotated[int, typer.Option(help="Evaluate on the first n test images.")] = 1000,
    option: MethodOption = None,
    fit_n: FitN = 5000,
    out: Annotated[
        Path | None, typer.Option(help="Result file (default <run>/perturb-<kind>-<method>-<target>.json).")
    ] = None,
    seed: Seed = 0,
    data_root: DataRoot = None,
    device: Device = "cpu",
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Pixel perturbation or patch degradation: the model's accuracy as ranked pixels/patches go."""
    from . import _cli_support as cs

    spec, kw = cs.perturb_options(kind, {"order": order, "fill": fill, "patch_size": patch_size,
                                         "fractions": None if fractions is None else parse_floats(fractions, "fractions")})
    given = cs.parse_method_options(method, option)
    from .user_model import open_audit

    audit = open_audit(run, model, weights, data, data_root, _device(device), "gradaudit perturb")
    test = audit.load("test", n, "gradaudit perturb")

    def metric(images: Any, maps: Any, silent: bool) -> Any:
        return spec.function(audit.model, images.x, images.y, maps, seed=seed, device=audit.device, quiet=silent, **kw)

    done = cs.evaluate(audit, method, given, test, metric, target=target, fit_n=fit_n, seed=seed, quiet=quiet,
                       caller="gradaudit perturb")
    path = out if out is not None else audit.run / f"perturb-{kind}-{method}-{target}.json"
    record = cs.save_result(path, "perturb", audit, done.result.to_dict(), {**done.settings, "kind": kind}, seed)
    emit(record, as_json, f"{kind} perturbation of {method} ({target}) on {len(test)} {audit.dataset} test images\n"
         f"{spec.table(done.result)}\n-> {path}")


@app.command("leakage")
def leakage_cmd(
    run: RunDir,
    method: Method = "grad",
    target: Target = "label",
    ks: Annotated[str, typer.Option(help="Top-k levels in percent, comma-separated.")] = "2.5,5,10,15,20,25,30",
    n: Annotated[int | None, typer.Option(help="Evaluate on the first n test images (default all).")] = None,
    option: MethodOption = None,
    fit_n: FitN = 5000,
    out: Annotated[Path | None, typer.Option(help="Result file (default <run>/leakage-<method>-<target>.json).")] = None,
    seed: Seed = 0,
    data_root: DataRoot = None,
    device: Device = "cpu",
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """BlockMNIST feature leakage: how much attribution lands on the label-independent null block."""
    from . import _cli_support as cs
    from . import evaluation

    given = cs.parse_method_options(method, option)
    audit = cs.load_audit(run, data_root, _device(device))
    cs.require_blocks(audit)
    test = audit.load("test", n, "gradaudit leakage")
    levels = parse_floats(ks, "ks")

    def metric(images: Any, maps: Any, silent: bool) -> Any:
        masks = images.per_image
        return evaluation.leakage(maps, masks["null_mask"], masks["signal_mask"], ks=levels, seed=seed)

    done = cs.evaluate(audit, method, given, test, metric, target=target, fit_n=fit_n, seed=seed, quiet=quiet,
                       caller="gradaudit leakage")
    path = out if out is not None else run / f"leakage-{method}-{target}.json"
    record = cs.save_result(path, "leakage", audit, done.result.to_dict(), done.settings, seed)
    emit(record, as_json, f"Null-block leakage of {method} ({target}) on {len(test)} {audit.dataset} test images\n"
         f"{cs.leakage_table(done.result)}\n-> {path}")


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
                                 device=_device(device), quiet=quiet, data_root=data_root, executor=executor)
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
