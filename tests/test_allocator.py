"""tune_malloc: after it, a large buffer freed and allocated again costs no page faults."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

# In a fresh interpreter (no torch): malloc, touch every page, free, 12 times over; count
# the minor page faults of the last 10 rounds.
PROBE = """
import ctypes, json, resource, sys
sys.path[:0] = {path!r}
from gradaudit._allocator import tune_malloc
tuned = tune_malloc() if {tune} else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = 0
for i in range(12):
    if i == 2:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
print(json.dumps({{"tuned": tuned, "faults_per_round": faults / 10}}))
"""


def _probe(tune: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc defaults
    code = PROBE.format(path=sys.path, tune=tune)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tune_malloc tunes glibc only")
def test_tuned_heap_keeps_large_buffers() -> None:
    default = _probe(tune=False)
    tuned = _probe(tune=True)
    assert tuned["tuned"] is True
    pages = (64 << 20) // 4096
    assert default["faults_per_round"] > 0.9 * pages  # glibc mmaps and unmaps the 64 MiB each time
    assert tuned["faults_per_round"] < 0.01 * pages  # kept in the heap: touched once, reused
