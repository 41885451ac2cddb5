"""The ``zoo`` study's report: leaderboard, metric heatmaps, grids, metric agreement, summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from ..report import Report, plots
from .reporting import add_footer, mask_only_note
from .steps import load_arrays

__all__ = ["METRICS", "metric_agreement", "report", "spearman", "zoo_findings"]

# metric column -> (higher is better?, short description)
METRICS: dict[str, tuple[bool, str]] = {
    "DiffROAR mean": (True, "DiffROAR averaged over the levels k (retraining; > 0 satisfies the assumption)"),
    "DiffROAR@0.05": (True, "DiffROAR at k = 5% unmasked"),
    "ROAD gap": (True, "ROAD LeRF − MoRF accuracy area (no retraining)"),
    "pixel perturbation": (True, "area under the LeRF pixel-perturbation accuracy curve"),
    "null mass": (False, "BlockMNIST: null block's share of the attribution mass"),
    "null top-5%": (False, "BlockMNIST: null block's share of the top-5% attributions"),
    "seconds_per_1000": (False, "wall time to attribute 1000 images"),
}
AGREEMENT = ("DiffROAR mean", "ROAD gap", "pixel perturbation", "null mass")


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the mid-ranks); NaN if undefined."""
    if len(a) != len(b) or len(a) < 3:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else math.nan


def _columns(cells: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((c["dataset"], c["model"]) for c in cells))


def _oriented(row: Mapping[str, Any], metric: str) -> float | None:
    v = row.get(metric)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v if METRICS[metric][0] else -v


def metric_agreement(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Spearman agreement of the metrics' rankings of methods, averaged over model columns.

    Each metric is oriented so that higher is better before ranking.
    """
    out: dict[str, Any] = {"metrics": list(AGREEMENT), "matrix": [], "n_columns": []}
    for a in AGREEMENT:
        row, counts = [], []
        for b in AGREEMENT:
            vals = []
            for col in _columns(cells):
                pairs = [(_oriented(c, a), _oriented(c, b)) for c in cells
                         if (c["dataset"], c["model"]) == col and c["applicable"]]
                pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
                rho = spearman([x for x, _ in pairs], [y for _, y in pairs])
                if not math.isnan(rho):
                    vals.append(rho)
            row.append(sum(vals) / len(vals) if vals else math.nan)
            counts.append(len(vals))
        out["matrix"].append(row)
        out["n_columns"].append(counts)
    return out


def _best(cells: Sequence[Mapping[str, Any]], col: tuple[str, str], metric: str) -> tuple[str, float] | None:
    cand = [(c["method"], _oriented(c, metric)) for c in cells
            if (c["dataset"], c["model"]) == col and c["applicable"] and c["method"] != "random"]
    cand = [(m, v) for m, v in cand if v is not None]
    if not cand:
        return None
    m, v = max(cand, key=lambda t: t[1])
    return m, v if METRICS[metric][0] else -v


def zoo_findings(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """Plain-language summary of the leaderboard, written from the numbers."""
    out = []
    for col in _columns(cells):
        parts = []
        for metric in ("DiffROAR mean", "ROAD gap", "null mass"):
            best = _best(cells, col, metric)
            if best is not None:
                parts.append(f"best {metric}: {best[0]} ({best[1]:+.3f})" if metric != "null mass"
                             else f"least null-block mass: {best[0]} ({best[1]:.0%})")
        rnd = next((c for c in cells if (c["dataset"], c["model"]) == col and c["method"] == "random"
                    and c["applicable"]), None)
        if rnd is not None:
            parts.append(f"random attribution DiffROAR {rnd['DiffROAR mean']:+.3f}")
        out.append(f"{col[0]}, {col[1]}: " + "; ".join(parts) + ".")
    for name in dict.fromkeys(c["dataset"] for c in cells):
        cols = [c for c in _columns(cells) if c[0] == name]
        means = {}
        for col in cols:
            vals = [c["DiffROAR mean"] for c in cells if (c["dataset"], c["model"]) == col and c["applicable"]
                    and c["method"] != "random"]
            if vals:
                means[col[1]] = sum(vals) / len(vals)
        if len(means) > 1:
            ranked = sorted(means.items(), key=lambda t: -t[1])
            out.append(f"{name}: averaged over methods, DiffROAR is highest for {ranked[0][0]} ({ranked[0][1]:+.3f}) "
                       f"and lowest for {ranked[-1][0]} ({ranked[-1][1]:+.3f}): the model matters as much as the "
                       "method." if abs(ranked[0][1] - ranked[-1][1]) > 0.02 else
                       f"{name}: averaged over methods, the models' DiffROAR are within 0.02 of each other.")
    agree = metric_agreement(cells)
    m = agree["metrics"]
    pairs = [(m[i], m[j], agree["matrix"][i][j]) for i, j in combinations(range(len(m)), 2)
             if not math.isnan(agree["matrix"][i][j])]
    if pairs:
        hi, lo = max(pairs, key=lambda t: t[2]), min(pairs, key=lambda t: t[2])
        out.append(f"Metric agreement (Spearman over methods, averaged over models): {hi[0]} and {hi[1]} agree most "
                   f"(ρ = {hi[2]:+.2f}); {lo[0]} and {lo[1]} least (ρ = {lo[2]:+.2f}).")
    return out


def report(record: Mapping[str, Any], ctx: Any) -> Report:
    res, cfg = record["results"], record["config"]
    cells = res["cells"]
    r = Report("Attribution zoo: which methods highlight discriminative features?",
               "gradaudit study 'zoo'" + (" (--quick)" if record["quick"] else ""))
    r.section("Summary")
    r.bullets(res["findings"])
    r.key_values({"target class": cfg["target"], "DiffROAR levels": cfg["diffroar"]["levels"],
                  "DiffROAR seeds": cfg["diffroar"]["seeds"],
                  "mask-only control": mask_only_note(cfg["diffroar"]), "ranking": "|attribution| per element, seeded tie-break",
                  "ROAD": "noisy linear imputation, ranked by |attribution|",
                  "pixel perturbation": "LeRF, fill 0.5, fractions logspace(−2, 0, 25)",
                  "method options": cfg["method_options"]}, caption="Protocol choices.")
    r.table(res["models"], columns=["dataset", "model", "test_accuracy", "train_seconds"],
            caption="Audited models (trained on the full training split).", formats={"test_accuracy": "{:.4f}"})
    metric_cols = [k for k in METRICS if any(k in c for c in cells)]
    leader = [{"dataset": c["dataset"], "model": c["model"], "method": c["method"],
               **{k: c.get(k) for k in metric_cols}, "note": "" if c["applicable"] else f"n/a: {c['reason']}"}
              for c in cells]
    r.section("Leaderboard", "Click a column header to sort. n/a: the method does not apply to the model.")
    r.table(leader, caption="Every (dataset, model, method) cell; DiffROAR, ROAD and pixel perturbation: higher is "
            "better; null-block shares and time: lower is better.",
            formats={k: "{:.3f}" for k in metric_cols} | {"seconds_per_1000": "{:.2f}"})
    _heatmaps(r, cells, metric_cols)
    _grids(r, cfg, ctx)
    agree = metric_agreement(cells)
    r.section("Do the metrics agree?")
    r.figure(plots.metric_heatmap(agree["matrix"], agree["metrics"], agree["metrics"], fmt="{:+.2f}", cmap="RdBu",
                                  vmin=-1, vmax=1),
             "Spearman correlation between the metrics' rankings of the methods (each metric oriented so higher is "
             "better), averaged over the audited models: +1 = the two metrics order the methods identically.")
    add_footer(r, record)
    return r


def _heatmaps(r: Report, cells: Sequence[Mapping[str, Any]], metric_cols: Sequence[str]) -> None:
    cols = _columns(cells)
    methods = list(dict.fromkeys(c["method"] for c in cells))
    lookup = {(c["dataset"], c["model"], c["method"]): c for c in cells}
    r.section("Method × model heatmaps")
    for metric in metric_cols:
        values = [[(lookup.get((d, m, meth)) or {}).get(metric, math.nan) if (lookup.get((d, m, meth)) or {}).get(
            "applicable") else math.nan for d, m in cols] for meth in methods]
        values = [[math.nan if v is None else v for v in row] for row in values]
        if all(math.isnan(v) for row in values for v in row):
            continue
        higher, desc = METRICS[metric]
        r.figure(plots.metric_heatmap(values, methods, [f"{m}\n({d})" for d, m in cols], title=metric,
                                      fmt="{:.2f}" if metric != "seconds_per_1000" else "{:.1f}",
                                      higher_is_better=higher),
                 f"{desc}, per method (rows) and audited model (columns); n/a where the method does not apply.")


def _grids(r: Report, cfg: Mapping[str, Any], ctx: Any) -> None:
    """Each method's maps of the first test images of every dataset with block masks (the
    grids the study saved), the dotted line between the two stacked blocks."""
    arrays = load_arrays(ctx)
    for name in cfg["datasets"]:
        x = arrays.get(f"grid/{name}/x")
        if x is None:
            continue
        r.section(f"{name}: attributions of every method")
        for i, m in enumerate(cfg[name]["models"]):
            maps = {k.split("/", 3)[3]: v for k, v in arrays.items() if k.startswith(f"grid/{name}/{i}/")}
            if maps:
                r.figure(plots.attribution_grid(x, maps, boundary=x.shape[-2] // 2, transpose=True),
                         f"{m['label']}: the same {x.shape[0]} {name} test images and each method's "
                         "attribution; the dotted line is the block boundary, so mass below or above it on the "
                         "digit-free block is leakage.")
