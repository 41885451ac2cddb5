"""``gradaudit runs``: list, inspect and clean a run store.

Examples:
    gradaudit runs ls --root runs --kind model
    gradaudit runs show 3fa9c2
    gradaudit runs gc --older-than 7d --dry-run
    gradaudit runs gc --done --kind maps        # finished jobs only on explicit request
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .._cli_options import Json

__all__ = ["runs_app"]

runs_app = typer.Typer(help="List, inspect and clean the run store (one folder per job).",
                       no_args_is_help=True, rich_markup_mode=None)

Root = Annotated[Path, typer.Option("--root", envvar="GRADAUDIT_RUNS",
                                    help="The run store's folder.")]
Kind = Annotated[str | None, typer.Option("--kind", help="Only jobs of this kind.")]


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


def _table(rows: list[Any]) -> str:
    from .maintenance import format_age, format_size

    head = ("KIND", "NAME", "HASH", "STATUS", "SIZE", "AGE", "WALL")
    lines = [head] + [(r.kind, r.name, r.hash, r.status, format_size(r.size), format_age(r.age_s),
                       "-" if r.wall_s is None else f"{r.wall_s:.1f}s") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


@runs_app.command("ls")
def ls(root: Root = Path("runs"), kind: Kind = None, as_json: Json = False) -> None:
    """List the jobs with their status, size, age and wall time.

    Status is done, running (a live process holds its lock), failed (the last attempt
    raised), partial (started, not finished) or corrupt (unreadable run files).
    """
    from .maintenance import job_rows
    from .store import RunStore

    rows = job_rows(RunStore(root), kind)
    if as_json:
        typer.echo(_dump([r.as_dict() for r in rows]))
    elif rows:
        typer.echo(_table(rows))
    else:
        typer.echo(f"no jobs under {root}" + (f" of kind {kind!r}" if kind else ""))


@runs_app.command("show")
def show(key: Annotated[str, typer.Argument(help="A job's hash (or its first characters), "
                                            "its folder name, or its path.")],
         root: Root = Path("runs"), as_json: Json = False) -> None:
    """Show a job's config, status, and result summary (or its last error)."""
    from .maintenance import describe
    from .store import RunStore

    info = describe(RunStore(root).find(key))
    if as_json:
        typer.echo(_dump(info))
        return
    lines = [f"{info['kind']}/{info['name']}-{info['hash']}  [{info['status']}]", f"path: {info['path']}"]
    for label in ("created", "finished", "wall_s", "config_error", "done_error"):
        if info.get(label) is not None:
            lines.append(f"{label}: {info[label]}")
    lines += ["config:", _dump(info.get("config"))]
    if "result" in info:
        lines += ["result:", _dump(info["result"])]
    if "last_error" in info and info["status"] != "done":
        err = info["last_error"]
        lines.append(f"last error: {err.get('error')}: {err.get('message')} ({err.get('time')})")
    typer.echo("\n".join(lines))


@runs_app.command("gc")
def gc(root: Root = Path("runs"), kind: Kind = None,
       partial: Annotated[bool, typer.Option("--partial", help="Delete partial and failed jobs "
                                             "(the default when no other selection is given).")] = False,
       done: Annotated[bool, typer.Option("--done", help="Delete done jobs too (their results "
                                          "are lost).")] = False,
       corrupt: Annotated[bool, typer.Option("--corrupt", help="Delete jobs with unreadable "
                                             "run files.")] = False,
       older_than: Annotated[str | None, typer.Option("--older-than", help="Only jobs untouched "
                                                      "for this long: 30m, 12h, 7d, 2w.")] = None,
       dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be deleted; "
                                             "delete nothing.")] = False,
       as_json: Json = False) -> None:
    """Delete unfinished jobs and temp files left by killed writers.

    Done jobs are kept unless --done is given; a job a live process is writing is never
    deleted.
    """
    from .maintenance import format_size, parse_age
    from .maintenance import gc as collect
    from .store import RunStore

    age = parse_age(older_than) if older_than is not None else None
    partial = partial or not (done or corrupt)
    out = collect(RunStore(root), partial=partial, done=done, corrupt=corrupt, older_than=age,
                  kind=kind, dry_run=dry_run)
    if as_json:
        typer.echo(_dump({"dry_run": dry_run, "deleted": [r.as_dict() for r in out["deleted"]],
                          "kept_running": [r.as_dict() for r in out["kept_running"]],
                          "strays": [str(p) for p in out["strays"]]}))
        return
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{verb} {r.kind}/{r.path.name} ({r.status}, {format_size(r.size)})" for r in out["deleted"]]
    lines += [f"kept {r.kind}/{r.path.name}: a process is writing it" for r in out["kept_running"]]
    lines += [f"{verb} leftover {p}" for p in out["strays"]]
    total = format_size(sum(r.size for r in out["deleted"]))
    counts = [f"{len(out['deleted'])} job(s) ({total})"] if out["deleted"] else []
    counts += [f"{len(out['strays'])} leftover(s)"] if out["strays"] else []
    lines.append(f"{verb} {' and '.join(counts)}" if counts else "nothing to delete")
    typer.echo("\n".join(lines))
