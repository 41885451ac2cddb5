"""Plain-language findings, written from the measured numbers (never hard-coded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["synthetic_findings"]


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def synthetic_findings(v1: Sequence[dict[str, Any]], simplified: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences for the synthetic study: signal ranking on v1 data, leakage on simplified data."""
    out = []
    for row in v1:
        verdict = ("ranks the signal coordinate first" if row["aq"] > 0.5 else
                   "ranks the signal coordinate last more often than first (feature inversion)"
                   if row["aq"] < 0 else "does not single out the signal coordinate")
        out.append(f"v1 data, {row['model']} (test accuracy {_pct(row['test_accuracy'])}): its gradient "
                   f"{verdict}: first on {_pct(row['top1'])} of points, last on {_pct(row['bottom1'])} "
                   f"(AQ {row['aq']:+.2f}).")
    for row in simplified:
        leaks = row["own_share"] < 2 * row["chance"]
        out.append(f"Simplified BlockMNIST, {row['model']} (test accuracy {_pct(row['test_accuracy'])}): "
                   f"{_pct(row['own_share'])} of the task-relevant gradient mass is on the point's own signal "
                   f"block (uniform spread would give {_pct(row['chance'])}): "
                   + ("feature leakage." if leaks else "instance-specific, no leakage."))
    return out
