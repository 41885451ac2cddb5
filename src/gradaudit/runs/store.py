"""A content-addressed run store: one directory per job, named by the hash of its config.

Layout::

    <root>/<kind>/<name>-<hash>/
        config.json   kind, name, hash, the canonical config, provenance, creation time
        lock          present while a process writes the job (flock + its pid)
        ...           the job's own files (checkpoints, weights, maps)
        error.json    the last failure, if the last attempt raised
        done.json     status, result summary, finish time, wall time: written last, atomically

A job is *done* exactly when ``done.json`` exists; it is written only after the job function
returned, so a killed or crashed job is never mistaken for a finished one. Running a done
job loads its result; running an unfinished one calls the job function again, which resumes
from whatever it checkpointed under ``job.path`` (``training.fit(..., out=job.path)`` does).

Example:
    >>> store = RunStore("runs")
    >>> def train_one(job):
    ...     net = spec.build(seed=0)
    ...     fit(net, train, recipe, out=job.path)   # resumes if killed
    ...     return {"test_acc": accuracy(net, test.x, test.y)}
    >>> store.run("model", {"spec": spec, "recipe": recipe, "data": "fmnist"}, train_one)
    {'test_acc': 0.89...}

The hash covers the kind and the config, not the code: change a field of the config (for
instance a ``version``) when a code change must invalidate finished jobs.

A job the caller puts in a folder of its own choosing (``out=`` of DiffROAR/ROAR/KAR, the
run directory of ``training.fit``) uses the same pieces: :class:`RunFolder` (one
``config.json``, parts written atomically and skipped when the job runs again) and
:func:`check_same` (a folder of another config is refused with the differences named).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._progress import log_step
from .._provenance import provenance
from .._validation import DataError, GradauditError, ParameterError, ParameterTypeError
from .hashing import HASH_LENGTH, canonical, config_hash
from .lock import LOCK_NAME, JobLock, is_locked

if TYPE_CHECKING:
    from .executors import Executor

__all__ = ["CONFIG", "DONE", "ERROR", "Job", "RunFolder", "RunStore", "check_same", "differences"]

CONFIG, DONE, ERROR = "config.json", "done.json", "error.json"
STATUSES = ("done", "running", "failed", "partial", "corrupt", "new")
_KIND = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,79}")
_UNSET: Any = object()
_DIR = re.compile(rf"(?P<name>.+)-(?P<hash>[0-9a-f]{{{HASH_LENGTH}}})")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _read(path: Path, fix: str) -> dict[str, Any]:
    """A job's JSON file, or a DataError naming the file and ``fix``."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"The run file {path} is unreadable or corrupt ({err}). {fix}") from None
    if not isinstance(info, dict):
        raise DataError(f"The run file {path} is corrupt (not a JSON object). {fix}")
    return info


@dataclass
class Job:
    """One job directory. Get it from :meth:`RunStore.job` (by config) or
    :meth:`RunStore.jobs` / :meth:`RunStore.find` (from disk).

    Attributes:
        kind: The job's kind ("model", "maps", "retrain", "study"...).
        name: A readable label; the directory is ``<name>-<hash>``.
        hash: The short hash of kind + config.
        path: The job directory; the job function writes its files here.
    """

    kind: str
    name: str
    hash: str
    path: Path
    _config: Any = field(default=_UNSET, repr=False)
    _lock: JobLock | None = field(default=None, repr=False)

    @property
    def config(self) -> Any:
        """The config as JSON types, floats exact (from memory, or from ``config.json``)."""
        if self._config is _UNSET:
            self._config = self.read_config()["config"]
        return self._config

    def read_config(self) -> dict[str, Any]:
        """The whole ``config.json`` (config, provenance, created)."""
        return _read(self.path / CONFIG, f"Delete the job directory {self.path} to redo the job "
                     "(gradaudit runs gc --corrupt does it), or restore the file.")

    @property
    def done(self) -> bool:
        """Whether the job finished (``done.json`` exists and is valid)."""
        if not (self.path / DONE).exists():
            return False
        self.info()
        return True

    def info(self) -> dict[str, Any]:
        """The whole ``done.json`` (status, result, finished, wall_s, provenance)."""
        info = _read(self.path / DONE, f"Delete {self.path / DONE} to rerun the job (it resumes "
                     "from its checkpoints), or restore the file.")
        if info.get("status") != "done" or "result" not in info:
            raise DataError(f"The run file {self.path / DONE} is corrupt (no status 'done' or no "
                            f"result). Delete it to rerun the job, or restore the file.")
        return info

    def result(self) -> Any:
        """The result summary the job function returned (as JSON types)."""
        if not (self.path / DONE).exists():
            raise GradauditError(f"The job {self.path} is not done (status {self.status}); "
                                 "run it first.")
        return self.info()["result"]

    @property
    def status(self) -> str:
        """done, running (a live process holds the lock), failed (the last attempt raised),
        partial (started, not finished), corrupt (unreadable run files) or new."""
        try:
            if self.done:
                return "done"
            if not self.path.exists():
                return "new"
            if (self.path / CONFIG).exists():
                self.read_config()
        except DataError:
            return "corrupt"
        if is_locked(self.path / LOCK_NAME):
            return "running"
        return "failed" if (self.path / ERROR).exists() else "partial"

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[Job]:
        """``with job.lock():`` makes this process the job's only writer for the block;
        entering creates the directory and ``config.json``.

        Args:
            wait: Seconds to wait for another holder to let go.

        Raises:
            JobLockedError: another live process holds it (after ``wait``).
        """
        with JobLock(self.path, f"{self.kind}/{self.path.name}", wait=wait) as lock:
            self._lock = lock
            try:
                self._write_config()
                yield self
            finally:
                self._lock = None

    def _write_config(self) -> None:
        if (self.path / CONFIG).exists():
            return
        if self._config is _UNSET:
            raise DataError(f"The job {self.path} has no {CONFIG}; open it with "
                            "RunStore.job(kind, config) to restart it.")
        from .._io import write_json

        write_json(self.path / CONFIG, {"kind": self.kind, "name": self.name, "hash": self.hash,
                                        "config": self._config, "created": _now(),
                                        "provenance": provenance()})

    def finish(self, result: Any, wall_s: float | None = None) -> None:
        """Mark the job done with ``result`` (JSON-able); call it holding :meth:`lock`."""
        if self._lock is None or not self._lock.held:
            raise GradauditError(f"Job.finish() of {self.path} must be called inside "
                                 "`with job.lock():` (RunStore.run does this for you).")
        from .._io import to_jsonable, write_json  # (imports torch: only when writing)

        try:
            value = to_jsonable(result)
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ParameterTypeError(
                f"The result of job {self.path} must be JSON-able (numbers, strings, lists, "
                f"dicts): {err}. Save tensors and models as files under job.path instead."
            ) from None
        write_json(self.path / DONE, {"status": "done", "kind": self.kind, "name": self.name,
                                      "hash": self.hash, "result": value, "finished": _now(),
                                      "wall_s": wall_s, "provenance": provenance()})
        (self.path / ERROR).unlink(missing_ok=True)

    def record_error(self, err: BaseException) -> None:
        """Write ``error.json`` for a failed attempt (the job stays unfinished)."""
        from .._io import write_json

        lines = traceback.format_exception(err)
        write_json(self.path / ERROR, {"error": type(err).__name__, "message": str(err),
                                       "time": _now(), "traceback": "".join(lines[-6:])})


class RunStore:
    """Jobs under one root directory (see the module docstring).

    Args:
        root: The store's folder; created on the first job.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def job(self, kind: str, config: Any, name: str | None = None) -> Job:
        """The job of ``config``: its directory is ``<root>/<kind>/<name>-<hash>``.

        A job already on disk under another name (same kind and config) is reused: the
        config, not the label, identifies the work. A job on disk keeps the config it was
        started with (``job.config``), which may differ from ``config`` below the hash's
        15 significant digits.

        Raises:
            ParameterError: a bad kind or name.
            ParameterTypeError: a config value that cannot be hashed.
            DataError: the existing directory's ``config.json`` is corrupt or holds
                another config.
        """
        _check_label(kind, _KIND, "kind", "a lowercase word like 'model' or 'retrain-group'")
        name = kind if name is None else name
        _check_label(name, _NAME, "name", "letters, digits and . _ + = -, e.g. 'mlp-linf'")
        cfg = canonical(config, exact=True)
        digest = config_hash(kind, cfg)
        found = sorted((self.root / kind).glob(f"*-{digest}")) if (self.root / kind).is_dir() else []
        path = found[0] if found else self.root / kind / f"{name}-{digest}"
        job = Job(kind, path.name[: -HASH_LENGTH - 1], digest, path, cfg)
        if (path / CONFIG).exists():
            stored = job.read_config()
            if stored.get("kind") != kind or _canonical_or_none(stored.get("config")) != canonical(cfg):
                raise DataError(f"The run file {path / CONFIG} holds another config than the one "
                                f"hashed to {digest} (edited by hand?). Delete {path} to redo "
                                "the job, or restore the file.")
            job._config = stored["config"]  # what the job was started with: resume with it
        return job

    def run(self, kind: str, config: Any, fn: Callable[[Job], Any], name: str | None = None,
            *, wait: float = 0.0) -> Any:
        """The result of the job: loaded if done, else ``fn(job)`` run and recorded.

        ``fn`` writes its files under ``job.path`` and returns a JSON-able summary; if an
        earlier attempt was killed, ``fn`` finds its checkpoints there and resumes. The value
        returned is always the one read back from ``done.json``, so a first run and a cached
        run return equal results.

        Args:
            kind: The job's kind (a lowercase word: "model", "maps", "retrain-group"...).
            config: Everything that determines the result (JSON types, pydantic models,
                dataclasses); its hash names the directory.
            fn: ``fn(job) -> result``, the work.
            name: A readable label for the directory (default: the kind).
            wait: Seconds to wait for another process that holds the job, then load its
                result (or take the job over if it died); 0 raises at once.

        Raises:
            JobLockedError: another live process is running the same job (after ``wait``).
            Exception: whatever ``fn`` raised (the job stays unfinished, with error.json).
        """
        job = self.job(kind, config, name)
        if job.done:
            log_step(f"{kind} {job.name}: already done ({job.path})")
            return job.result()
        with job.lock(wait=wait):
            return self._run_locked(job, fn)

    def _run_locked(self, job: Job, fn: Callable[[Job], Any]) -> Any:
        if job.done:  # finished by another process while we waited
            return job.result()
        if (job.path / CONFIG).exists() and any(p.name not in (CONFIG, LOCK_NAME) for p in job.path.iterdir()):
            log_step(f"{job.kind} {job.name}: resuming from {job.path}")
        start = time.perf_counter()
        try:
            result = fn(job)
        except Exception as err:
            job.record_error(err)
            raise
        wall = time.perf_counter() - start
        job.finish(result, wall_s=round(wall, 3))
        log_step(f"{job.kind} {job.name}: done", wall)
        return job.result()

    def task(self, kind: str, name: str | None = None) -> Callable[[Callable[[Job], Any]], Callable[[Any], Any]]:
        """Decorator: ``@store.task("model") def train(job): ...`` then ``train(config)``."""

        def wrap(fn: Callable[[Job], Any]) -> Callable[[Any], Any]:
            def call(config: Any) -> Any:
                return self.run(kind, config, fn, name)

            call.__doc__ = fn.__doc__
            return call

        return wrap

    def map(self, kind: str, configs: Sequence[Any], fn: Callable[[Job], Any],
            names: Sequence[str | None] | None = None, executor: Executor | None = None) -> list[Any]:
        """Run many independent jobs of one kind, on ``executor`` (in-process by default).

        Equal configs are run once. Results come back in the order of ``configs``, and are
        equal whichever executor ran them.
        """
        from .executors import InProcessExecutor

        names = list(names) if names is not None else [None] * len(configs)
        if len(names) != len(configs):
            raise ParameterError(f"The 'names' parameter of RunStore.map must have one name per "
                                 f"config ({len(configs)}). Got {len(names)}.")
        jobs = [self.job(kind, c, n) for c, n in zip(configs, names, strict=True)]
        unique = list({j.hash: (j.config, j.name) for j in jobs}.items())
        task = JobTask(str(self.root), kind, fn)
        results = (executor or InProcessExecutor()).map(task, [item for _, item in unique])
        by_hash = {digest: r for (digest, _), r in zip(unique, results, strict=True)}
        return [by_hash[j.hash] for j in jobs]

    def jobs(self, kind: str | None = None) -> list[Job]:
        """The job directories on disk (optionally of one kind), sorted by kind and name."""
        if not self.root.is_dir():
            return []
        kinds = [self.root / kind] if kind else sorted(self.root.iterdir())
        out = []
        for folder in kinds:
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            for path in sorted(folder.iterdir()):
                m = _DIR.fullmatch(path.name)
                if m and path.is_dir() and not path.name.startswith("."):
                    out.append(Job(folder.name, m["name"], m["hash"], path))
        return out

    def find(self, key: str) -> Job:
        """The job at path ``key``, or whose hash (or ``name-hash``) starts with ``key``.

        Raises:
            ParameterError: no job or several jobs match.
        """
        path = Path(key)
        m = _DIR.fullmatch(path.name)
        if path.is_dir() and m:
            return Job(path.parent.name, m["name"], m["hash"], path)
        matches = [j for j in self.jobs() if j.hash.startswith(key) or j.path.name.startswith(key)]
        if not matches:
            raise ParameterError(f"No job matches {key!r} under {self.root}. List them with "
                                 f"`gradaudit runs ls --root {self.root}`.")
        if len(matches) > 1:
            shown = ", ".join(f"{j.kind}/{j.path.name}" for j in matches[:5])
            raise ParameterError(f"{key!r} matches {len(matches)} jobs under {self.root} "
                                 f"({shown}); give more characters of the hash.")
        return matches[0]


@dataclass(frozen=True)
class JobTask:
    """A picklable ``(config, name) -> result`` that runs one job of a store on any worker."""

    root: str
    kind: str
    fn: Callable[[Job], Any]

    def __call__(self, item: tuple[Any, str | None]) -> Any:
        config, name = item
        return RunStore(self.root).run(self.kind, config, self.fn, name)


class RunFolder:
    """A job done in parts in a folder the caller names; each finished part is written
    atomically and skipped when the job runs again (the DiffROAR/ROAR/KAR retrain groups).

    Layout: ``config.json`` (the config, its hash, provenance), written when the folder is
    opened, and ``<parts>/<name>.json``, each part stamped with the config hash. The hash is
    :func:`~gradaudit.runs.hashing.config_hash` of the config alone, floats as given, 16 hex
    characters: the hash these folders always had, so folders written before resume.

    Args:
        path: The folder (created when needed), or None: nothing is written or found.
        config: What determines the parts (JSON types; see :func:`canonical`).
        what: Names the job in the error, e.g. "a retraining run".
        fix: What to do about a folder of another config, e.g. "Write to another folder
            (out=...), or delete it."
        parts: The sub-folder of the parts.

    Raises:
        ParameterError: ``path`` holds a job of another config (named with its differences).
    """

    HASH_LENGTH = 16

    def __init__(self, path: str | os.PathLike[str] | None, config: Mapping[str, Any], *,
                 what: str = "a run", fix: str = "Write to another folder, or delete it.",
                 parts: str = "groups") -> None:
        self.path = None if path is None else Path(path)
        self.hash = config_hash(None, config, exact=True, length=self.HASH_LENGTH)
        self.parts = parts
        if self.path is None:
            return
        from .._io import read_json, write_json  # (imports torch: only when writing)

        if (self.path / CONFIG).exists():
            stored = read_json(self.path / CONFIG)
            found = stored.get("config_hash")
            if found != self.hash:
                diffs = differences(stored["config"], canonical(config, exact=True), "config") if "config" in stored else []
                raise ParameterError(f"The directory {self.path} holds {what} with another config "
                                     f"({_shown(diffs) or f'hash {found} vs {self.hash}'}). {fix}")
        else:
            write_json(self.path / CONFIG, {"config_hash": self.hash, "config": config, **provenance()})

    def _part(self, name: str) -> Path | None:
        return None if self.path is None else self.path / self.parts / f"{name}.json"

    def load(self, name: str) -> dict[str, Any] | None:
        """The part ``name`` written by :meth:`save` under this config, or None."""
        path = self._part(name)
        if path is None or not path.exists():
            return None
        from .._io import read_json

        info = read_json(path)
        return info if info.get("config_hash") == self.hash else None

    def save(self, name: str, payload: Mapping[str, Any]) -> None:
        """Write the part ``name`` atomically (with the config hash and provenance)."""
        path = self._part(name)
        if path is not None:
            from .._io import write_json

            write_json(path, {"config_hash": self.hash, "group": name, **payload, **provenance()})


def differences(found: Any, wanted: Any, where: str) -> list[str]:
    """``"<where>.<key> is <found> there, <wanted> here"`` for each leaf where two JSON values differ."""
    if isinstance(found, dict) and isinstance(wanted, dict):
        keys = [*wanted, *(k for k in found if k not in wanted)]
        return [d for k in keys for d in differences(found.get(k), wanted.get(k), f"{where}.{k}")]
    return [] if found == wanted else [f"{where} is {found!r} there, {wanted!r} here"]


def _shown(diffs: Sequence[str]) -> str:
    return "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")


def check_same(folder: str | os.PathLike[str], found: Mapping[str, Any], wanted: Mapping[str, Any], *,
               what: str, fix: str) -> None:
    """Refuse to resume ``folder`` if what it holds (``found``) differs from ``wanted`` in any
    of ``wanted``'s keys: one ParameterError naming the first differences, then ``fix``."""
    diffs = [d for key in wanted for d in differences(found.get(key), wanted[key], key)]
    if diffs:
        raise ParameterError(f"The directory {folder} holds {what} with another config ({_shown(diffs)}). {fix}")


def _canonical_or_none(config: Any) -> Any:
    try:
        return canonical(config)
    except GradauditError:
        return _UNSET


def _check_label(value: Any, pattern: re.Pattern[str], what: str, example: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ParameterError(f"The {what!r} parameter of RunStore.job must be {example}. "
                             f"Got {value!r}.")
