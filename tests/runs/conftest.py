"""Fixtures of the run-store tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

HELPER = Path(__file__).with_name("runs_jobs.py")


@pytest.fixture
def jobs() -> ModuleType:
    """The job functions of runs_jobs.py, loaded by path rather than imported by name: Ray
    and the worker processes then get the functions by value, not by a module they lack."""
    spec = importlib.util.spec_from_file_location("gradaudit_test_runs_jobs", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


