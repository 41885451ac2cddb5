"""The comparison benchmarks still run: each one in its ``--small`` mode (a few images, one
timing), as on a fresh clone without a data root, must check its values against the peer
library, exit 0 and print every row of its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script -> (peer library, table header, rows: the first words of each printed row)
BENCHMARKS = {
    "attribution_vs_captum.py": (
        "captum",
        "| model | method | gradaudit (s) | Captum (s) | ratio |",
        [f"| {model} | {method} |" for model in ("mlp", "cnn") for method in (
            "grad", "grad-x-input", "ig", "smoothgrad", "smoothgrad-sq", "vargrad",
            "guided-backprop", "expected-grad", "sg-ig")],
    ),
    "road_vs_quantus.py": ("quantus", "case ", ["morf ", "morf+lerf "]),
    "perturb_vs_quantus.py": (
        "quantus", "case ",
        ["mlp lerf s=56 ", "mlp morf s=56 ", "cnn lerf s=112 ", "cnn morf s=112 "],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_runs_to_the_end_in_small_mode(script: str, tmp_path: Path) -> None:
    peer, header, rows = BENCHMARKS[script]
    pytest.importorskip(peer)
    env = {k: v for k, v in os.environ.items() if k != "GRADAUDIT_DATA"}  # a fresh clone's setting
    env["HOME"] = str(tmp_path)  # no default data root under the user's home either
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--small", "--threads", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert any(line.startswith(header) for line in lines), done.stdout
    for row in rows:
        found = [line for line in lines if line.startswith(row)]
        assert len(found) == 1, f"{script}: no row {row!r} in\n{done.stdout}"
        assert "×" in found[0], found[0]  # a ratio was printed
