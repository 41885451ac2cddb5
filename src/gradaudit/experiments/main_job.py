"""The main job (``gradaudit run`` with no study, ``make run``): synthetic + blockmnist.

Runs the two studies into ``<out>/synthetic`` and ``<out>/blockmnist`` (one shared run
store), then writes an index report with the headline findings of both and links to their
full reports. Its measured wall time is in the README (rendered from docs/results/main.json).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from .._io import read_json
from ..report import Report
from .base import RESULTS, Context, Study, execute, get_study, register
from .blockmnist import QUICK as BLOCKMNIST_QUICK
from .blockmnist import BlockMNISTConfig
from .config import StudyConfig
from .reporting import add_footer
from .synthetic import QUICK as SYNTHETIC_QUICK
from .synthetic import SyntheticConfig

__all__ = ["MainConfig"]

PARTS = ("synthetic", "blockmnist")


class MainConfig(StudyConfig):
    """Config of the main job: one section per study."""

    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    blockmnist: BlockMNISTConfig = Field(default_factory=BlockMNISTConfig)


def run(cfg: MainConfig, ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in PARTS:
        sub = dataclasses.replace(ctx, out=ctx.out / name)
        execute(get_study(name), getattr(cfg, name), sub)
        record = read_json(sub.out / RESULTS)
        out[name] = {"report": f"{name}/report.html", "findings": record["results"]["findings"],
                     "wall_time_s": record["wall_time_s"]}
    return out


def report(record: Mapping[str, Any], ctx: Context) -> Report:
    res = record["results"]
    r = Report("gradaudit: do input gradients highlight discriminative features?",
               "The main job: the synthetic testbeds and BlockMNIST" + (" (--quick)" if record["quick"] else ""))
    r.paragraph("Two studies of Shah, Jain & Netrapalli (NeurIPS 2021) with known ground truth: the synthetic "
                "data of the paper's theory, and BlockMNIST, where a digit block carries the label and a null "
                "block does not. Each section lists the measured findings and links to the full report.")
    titles = {"synthetic": "Synthetic testbeds", "blockmnist": "BlockMNIST feature leakage"}
    for name in PARTS:
        part = res[name]
        r.section(titles[name], f"Full report: [{part['report']}]({part['report']}) "
                  f"(wall time {part['wall_time_s']:.0f} s).")
        r.bullets(part["findings"])
    add_footer(r, record)
    return r


register(Study(name="main", summary="the main job: synthetic + blockmnist, with an index report",
               config=MainConfig, run=run, report=report,
               quick={"synthetic": SYNTHETIC_QUICK, "blockmnist": BLOCKMNIST_QUICK}))
