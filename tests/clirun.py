"""Run the `gradaudit` console entry point in-process, for tests."""

from __future__ import annotations

import sys

from gradaudit import cli


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process: (exit status, stdout, stderr)."""
    argv = sys.argv
    sys.argv = ["gradaudit", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err
