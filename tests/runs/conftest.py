"""Fixtures of the run-store tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

HELPER = Path(__file__).with_name("runs_jobs.py")


@pytest.fixture
def jobs() -> ModuleType:
    """The job functions of runs_jobs.py, loaded by path rather than imported by name: Ray
    and the worker processes then get the functions by value, not by a module they lack."""
    spec = importlib.util.spec_from_file_location("gradaudit_test_runs_jobs", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """One torch thread, as a 1-CPU Ray task or a job subprocess runs (the toy training is
    then bit-equal to theirs); tiny models also train ~20x faster so on 2 shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
