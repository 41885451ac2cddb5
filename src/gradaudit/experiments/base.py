"""The study registry and runner behind ``gradaudit run <study>``.

A study is a named, configurable pipeline: a pydantic config (with a ``--quick`` preset), a
``run`` function that computes results through the run store (so a rerun is instant and a
killed run resumes), and a ``report`` function that turns those results into one
self-contained HTML report. The runner writes ``results.json`` (config, seed, results, wall
time, library versions, git revision) and ``report.html`` into the study's folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import read_json, write_json
from .._provenance import provenance
from .._registry import Registry
from .._validation import ParameterError, check_int
from ..runs.executors import MAX_JOBS_PER_GPU, Executor, InProcessExecutor, make_executor
from ..runs.store import RunStore
from .config import StudyConfig, build_config, to_yaml

__all__ = [
    "STUDIES",
    "Context",
    "Study",
    "check_folders",
    "execute",
    "get_study",
    "register",
    "render_report",
    "run_study",
    "study_config",
]

RESULTS, REPORT = "results.json", "report.html"


@dataclass(frozen=True)
class Context:
    """Where and how a study runs.

    Attributes:
        out: The study's folder (results.json, report.html, figures/).
        store: The run store holding its jobs (models, maps, retrain groups).
        device: "cpu" or "cuda".
        quiet: No progress bars.
        data_root: The data root (None: $GRADAUDIT_DATA or ./data).
        quick: Whether the --quick preset is in force (shown in the report).
        executor: Runs batches of independent jobs (models, DiffROAR curves): in this
            process, or on Ray workers sharing the store root and the data root.
    """

    out: Path
    store: RunStore
    device: str = "cpu"
    quiet: bool = False
    data_root: Path | None = None
    quick: bool = False
    executor: Executor = field(default_factory=InProcessExecutor)

    @property
    def root(self) -> str | None:
        """The data root as jobs receive it (a picklable string, or None for the default)."""
        return str(self.data_root) if self.data_root is not None else None


@dataclass(frozen=True)
class Study:
    """A registered study.

    Attributes:
        name: The CLI name (``gradaudit run <name>``).
        summary: One line for ``gradaudit run --help``.
        config: The pydantic config class (defaults = the full study).
        quick: Overrides that make the study run in a few minutes on a laptop CPU.
        run: ``run(config, ctx) -> results`` (JSON-able mapping).
        report: ``report(record, ctx) -> Report`` where ``record`` is results.json's content.
    """

    name: str
    summary: str
    config: type[StudyConfig]
    run: Callable[[Any, Context], Mapping[str, Any]]
    report: Callable[[Mapping[str, Any], Context], Any]
    quick: Mapping[str, Any] = field(default_factory=dict)


STUDIES: Registry[Study] = Registry("study")


def register(study: Study, *, replace: bool = False) -> Study:
    """Add a study to the registry (done by each study module at import); a taken name is
    refused unless ``replace``."""
    return STUDIES.add(study.name, study, replace=replace)


def get_study(name: str) -> Study:
    """The study called ``name``, or a clear error listing the valid ones."""
    return STUDIES.lookup(name)


def study_config(
    name: str,
    *,
    quick: bool = False,
    config: str | os.PathLike[str] | None = None,
    overrides: tuple[str, ...] | list[str] = (),
) -> StudyConfig:
    """The validated config of study ``name`` (defaults ← quick ← YAML ← overrides)."""
    study = get_study(name)
    return build_config(study.config, quick=study.quick if quick else None, path=config,
                        overrides=overrides, label=f"config of study {name!r}")


def run_study(
    name: str,
    *,
    config: str | os.PathLike[str] | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    quick: bool = False,
    out: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    quiet: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    executor: str = "inprocess",
    jobs_per_gpu: int = 1,
) -> Path:
    """Run study ``name`` end to end; return the path of its report.html.

    Everything is checked before the first job starts: the whole config (types, ranges,
    names, and the values each step will pass to the library, by the library's own checks),
    the output and store folders, and the data files the config names (present, md5-correct,
    loadable: they are loaded here, into the cache the study then reads). Jobs go to
    ``store`` (default ``<out>/store``), so a second call with the same config reuses every
    finished job. On Ray with a CUDA device every job asks for a GPU, or for ``1 /
    jobs_per_gpu`` of one: ``jobs_per_gpu`` jobs share a GPU.
    """
    jobs_per_gpu = check_int(jobs_per_gpu, "jobs_per_gpu", "run_study", 1, MAX_JOBS_PER_GPU)
    if jobs_per_gpu != 1 and (executor != "ray" or device == "cpu"):
        raise ParameterError(f"jobs_per_gpu={jobs_per_gpu} shares GPUs between Ray tasks: use it with "
                             "--executor ray --device cuda (or leave it at 1).")
    study = get_study(name)
    cfg = study_config(name, quick=quick, config=config, overrides=overrides)
    check_precision(cfg.model_dump(mode="json"), device, name)
    out_dir = Path(out) if out is not None else Path("runs") / name
    store_dir = Path(store) if store is not None else out_dir / "store"
    check_folders(name, out_dir, store_dir)
    from .steps import check_data  # (steps imports this module)

    check_data(cfg, str(data_root) if data_root else None)
    # on Ray a job on a CUDA device reserves a GPU (Ray then hands it one; a cluster
    # without GPUs refuses the study before its first job)
    options = {"jobs_per_gpu": jobs_per_gpu} if executor == "ray" and device != "cpu" else {}
    with make_executor(executor, **options) as ex:
        ctx = Context(out=out_dir, store=RunStore(store_dir),
                      device=device, quiet=quiet, data_root=Path(data_root) if data_root else None,
                      quick=quick, executor=ex)
        return execute(study, cfg, ctx)


def check_precision(config: Any, device: str, name: str, path: str = "") -> None:
    """Raise, before any work, if a ``precision`` key of the config asks for a CUDA-only
    arithmetic (tf32, bf16) while the study runs on a CPU."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "precision" and value not in (None, "fp32") and not str(device).startswith("cuda"):
                raise ParameterError(f"Study {name!r}: {where}={value} is a CUDA speed option, but the study runs on "
                                     f"--device {device}. Use --device cuda, or --set {where}=fp32.")
            check_precision(value, device, name, where)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            check_precision(value, device, name, f"{path}[{i}]")


def _writable(folder: Path, option: str) -> None:
    """Raise unless ``folder`` is, or can be created as, a folder this process writes into."""
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"{option} {folder} is a file; give a folder (it is created if missing).")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(f"{option} {folder}: cannot write into {existing}; give a folder you can write to.")


def check_folders(name: str, out: Path, store: Path) -> None:
    """Raise, before any work, if the study folder or the store cannot take this study's files:
    a file in their place, no write permission, or results of another study in ``out``."""
    _writable(out, "--out")
    _writable(store, "--store")
    results = out / RESULTS
    if results.is_file():
        try:
            other = read_json(results).get("study")
        except (OSError, ValueError, AttributeError):
            other = None  # unreadable: the run rewrites it
        if other is not None and other != name:
            raise ParameterError(f"--out {out} holds the results of study {other!r}; give study {name!r} "
                                 "another --out (or delete the folder).")


def execute(study: Study, cfg: StudyConfig, ctx: Context) -> Path:
    """Run a validated study config in ``ctx``: results.json, then report.html."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = study.run(cfg, ctx)
    record = {
        "study": study.name,
        "quick": ctx.quick,
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "config_yaml": to_yaml(cfg),
        "results": results,
        "wall_time_s": round(time.perf_counter() - t0, 1),
        **provenance(),
    }
    write_json(ctx.out / RESULTS, record)
    return render_report(ctx.out, ctx)

def render_report(out: str | os.PathLike[str], ctx: Context | None = None) -> Path:
    """(Re)build ``report.html`` of a study folder from its ``results.json``."""
    out = Path(out)
    if not (out / RESULTS).is_file():
        raise ParameterError(f"{out} holds no {RESULTS}; run a study into it first "
                             f"(gradaudit run <study> --out {out}).")
    record = read_json(out / RESULTS)
    study = get_study(record["study"])
    ctx = ctx or Context(out=out, store=RunStore(out / "store"))
    report = study.report(record, ctx)
    return Path(report.write(out / REPORT, save_figures=True))
