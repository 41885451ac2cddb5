"""The command line's shared options, declared once as ``Annotated`` aliases, and its one
``NAME=VALUE`` parser.

``cli.py`` (every command) and ``runs/cli.py`` (``gradaudit runs``) import these; the
metric commands add them to the options they read from the metric registry. Only typer
is imported here, so ``gradaudit runs`` stays light.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated, Any

import typer

from ._validation import ParameterError

__all__ = [
    "DataRoot",
    "Device",
    "FitN",
    "Json",
    "Method",
    "MethodOption",
    "OptRun",
    "Quiet",
    "RunDir",
    "Seed",
    "Target",
    "UserData",
    "UserModel",
    "UserWeights",
    "parse_option",
    "parse_value",
]

DataRoot = Annotated[
    Path | None,
    typer.Option("--data-root", envvar="GRADAUDIT_DATA", help="Folder holding the datasets."),
]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the run.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars and no log lines on stderr.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]

# A training run, or your own model (gradaudit.user_model; docs/own-model.md).
RunDir = Annotated[Path, typer.Option("--run", help="A finished training run directory.")]
OptRun = Annotated[Path | None, typer.Option("--run", help="A finished training run directory (or --model and --data).")]
UserModel = Annotated[str | None, typer.Option("--model", help="Your model's factory: package.module:make_model or file.py:make_model.")]
UserWeights = Annotated[Path | None, typer.Option("--weights", help="Weights of --model: .safetensors or a torch state_dict file.")]
UserData = Annotated[Path | None, typer.Option("--data", help="Data of --model: .npz with x_train, y_train, x_test, y_test.")]

# How the attribution maps are made (attribute and every evaluation command).
Method = Annotated[str, typer.Option("--method", help="Attribution method (see `gradaudit attribute --help`).")]
Target = Annotated[str, typer.Option("--target", help="Attribute the label (the true class) or the predicted class.")]
MethodOption = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", metavar="NAME=VALUE",
                 help="A method option name=value (repeatable); the value is read as a Python literal "
                      "(32, 0.1, None, [0, 1]) or else as YAML (mean, null, [a, b])."),
]
FitN = Annotated[int, typer.Option("--fit-n", help="Training images to fit patterns / references / means from.")]


def parse_value(raw: str, name: str = "value") -> Any:
    """The one reading of a command-line value: a Python literal if it is one (``32``,
    ``1e-3``, ``None``, ``True``, ``[0, 1]``, ``'text'``), else a YAML scalar or list (``mean``,
    ``null``, ``[a, b]``); an empty value is ``''``.

    Raises:
        ParameterError: The value is neither (e.g. an unclosed ``[1``).
    """
    import yaml

    if not raw.strip():
        return ""
    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ParameterError(f"--option {name}: cannot read {raw!r} as a YAML value "
                             "(a number, word or [list]).") from None


def parse_option(text: str) -> tuple[str, Any]:
    """``'n_steps=32'`` -> ``('n_steps', 32)``; the value read by :func:`parse_value`.

    Raises:
        ParameterError: No ``=`` or no name, or an unreadable value.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParameterError(f"--option must be name=value, e.g. n_steps=32. Got {text!r}.")
    return key.strip(), parse_value(raw, key.strip())
