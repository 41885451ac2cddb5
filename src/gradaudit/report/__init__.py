"""Figures and self-contained HTML reports for the studies.

The studies feed plain numbers (lists, arrays, tensors, dicts) to :mod:`.plots`, which
returns matplotlib Figures, and assemble them with :class:`Report` into one HTML file::

    from gradaudit.report import Report, plots

    r = Report("BlockMNIST feature leakage")
    r.figure(plots.block_attribution_grid(x, {"standard MLP": g_std}), "Input gradients ...")
    r.write("out/report.html", save_figures=True)

Importing this package has no side effects (no matplotlib backend switch, no pyplot).
"""

from . import plots
from .html import Report
from .plots import *  # noqa: F403  (the figures, exported as plots.__all__ names them)

__all__ = ["Report", "plots", *plots.__all__]
