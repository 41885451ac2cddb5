"""Report sections shared by the studies: DiffROAR with its leakage control, ROAD, leakage, footer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..report import Report, plots
from . import narrative

__all__ = [
    "add_diffroar",
    "add_footer",
    "add_leakage_tables",
    "add_road",
    "diffroar_rows",
    "leak_aware_rows",
    "leakage_rows",
    "mask_only_note",
]


def _ms(d: Mapping[str, Any], i: int) -> tuple[float, float]:
    return d["mean"][i], d["std"][i]


def diffroar_rows(by_model: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One table row per (model, level): accuracies, DiffROAR, and the mask-only control."""
    rows = []
    for label, res in by_model.items():
        curve = res["curves"]["attribution"]
        leak = res.get("leakage", {}).get("attribution")
        for i, k in enumerate(res["levels"]):
            row: dict[str, Any] = {"model": label, "k": k, "top-k acc": _ms(curve["top"], i),
                                   "bottom-k acc": _ms(curve["bottom"], i), "DiffROAR": _ms(curve["diffroar"], i)}
            if leak is not None:
                row["mask-only top-k acc"] = _ms(leak["mask_only"]["top"], i)
                row["mask-only DiffROAR"] = _ms(leak["mask_only_diffroar"], i)
                row["DiffROAR − mask-only"] = _ms(leak["diffroar_minus_mask_only"], i)
                row["leak-free margin (top)"] = _ms(leak["leak_free_margin"]["top"], i)
            rows.append(row)
    return rows


_DIFFROAR_HEADERS = {"k": "k (pixels kept)", "top-k acc": "top-k accuracy", "bottom-k acc": "bottom-k accuracy",
                     "mask-only top-k acc": "mask-only top-k accuracy"}
_ORDER_NAMES = {"morf": "MoRF", "lerf": "LeRF"}


def _level(k: float) -> str:
    return f"{100 * k:g}%"


def _percent(v: float) -> str:
    return f"{100 * v:.1f}"


def _random_curve(by_model: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for res in by_model.values():
        if "random" in res["curves"]:
            return res
    return None


def add_diffroar(r: Report, by_model: Mapping[str, Mapping[str, Any]], data_name: str) -> None:
    """DiffROAR section: curves (Fig. 2 style) with mask-only, top/bottom accuracies, tables."""
    r.section(f"DiffROAR on {data_name}", "Retrain a fresh model on images that keep only the top-k (or "
              "bottom-k) coordinates by |attribution| and compare test accuracies: DiffROAR(k) = acc(top-k) − "
              "acc(bottom-k) > 0 means the attribution ranks the more predictive coordinates first.")
    curves = {lab: (res["levels"], res["curves"]["attribution"]["diffroar"]["mean"],
                    res["curves"]["attribution"]["diffroar"]["std"]) for lab, res in by_model.items()}
    rnd = _random_curve(by_model)
    if rnd is not None:
        c = rnd["curves"]["random"]["diffroar"]
        curves["random attribution"] = (rnd["levels"], c["mean"], c["std"])
    extra = {lab: (res["levels"], res["leakage"]["attribution"]["mask_only_diffroar"]["mean"])
             for lab, res in by_model.items() if "leakage" in res}
    r.figure(plots.diffroar_curves(curves, extra=extra or None, random_line=rnd is None),
             "DiffROAR (mean ± std over retraining seeds) against the fraction k of unmasked pixels; dotted: "
             "the same with models retrained on the keep-mask alone (no pixel values), i.e. what the mask's "
             "shape alone explains.")
    series: dict[str, Any] = {}
    styles: dict[str, str] = {}
    colors: dict[str, int] = {}
    for i, (lab, res) in enumerate(by_model.items()):
        cur = res["curves"]["attribution"]
        for side, style in (("top", "-"), ("bottom", "--")):
            key = f"{lab}, {side}-k"
            series[key] = (res["levels"], cur[side]["mean"], cur[side]["std"])
            styles[key], colors[key] = style, i
    r.figure(plots.accuracy_curves(series, xlabel="fraction of unmasked pixels k", ylabel="retrained test accuracy",
                                   colors=colors, linestyles=styles),
             "Accuracy of models retrained and tested on top-k (solid) and bottom-k (dashed) unmasked data.")
    rows = diffroar_rows(by_model)
    level = {"k": _level}
    first = ["model", "k", "top-k acc", "bottom-k acc", "DiffROAR"]
    control = ["model", "k", "mask-only top-k acc", "mask-only DiffROAR", "DiffROAR − mask-only", "leak-free margin (top)"]
    r.table(rows, columns=first, headers={c: h for c, h in _DIFFROAR_HEADERS.items() if c in first},
            caption="Per model and level k (fraction of pixels kept): test accuracy of the models retrained on the "
                    "top-k and bottom-k pixels, and DiffROAR = their difference (mean ± std over seeds).",
            formats=level)
    if any("mask-only DiffROAR" in row for row in rows):
        r.table([row for row in rows if "mask-only DiffROAR" in row],
                columns=control, headers={c: h for c, h in _DIFFROAR_HEADERS.items() if c in control},
                caption="The mask-only control (mean ± std over seeds): models retrained on the keep-mask alone, no "
                        "pixel values. 'DiffROAR − mask-only' is the part of DiffROAR that the mask's shape does not "
                        "explain; the leak-free margin is real minus mask-only top-k accuracy.",
                formats=level)
    r.paragraph(narrative.leakage_control_sentence(by_model))


def leak_aware_rows(by_target: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per (model, target): mean DiffROAR, mean mask-only DiffROAR and their difference (k < 1)."""
    rows = []
    for target, by_model in by_target.items():
        random_shown = False
        for label, res in by_model.items():
            lv = res["levels"]
            with_random = "random" in res["curves"] and not random_shown
            random_shown |= with_random
            names = ["attribution", *(["random"] if with_random else [])]
            for name in names:
                d = res["curves"][name]["diffroar"]["mean"]
                leak = res.get("leakage", {}).get(name)
                row: dict[str, Any] = {"model": label if name == "attribution" else "random attribution",
                                       "target": target, "DiffROAR": narrative.mean_below_one(lv, d),
                                       "DiffROAR at k=0.05": d[lv.index(0.05)] if 0.05 in lv else None}
                if leak is not None:
                    row["mask-only DiffROAR"] = narrative.mean_below_one(lv, leak["mask_only_diffroar"]["mean"])
                    row["difference"] = narrative.mean_below_one(lv, leak["diffroar_minus_mask_only"]["mean"])
                rows.append(row)
    return rows


def add_road(r: Report, by_model: Mapping[str, Mapping[str, Any]]) -> None:
    """ROAD section: MoRF/LeRF curves and their areas (no retraining)."""
    r.section("ROAD (no retraining)", "Remove the most (MoRF) or least (LeRF) relevant pixels, impute them "
              "by noisy linear imputation (which hides the mask's shape), and measure the unchanged model's "
              "accuracy. A faithful ranking makes MoRF drop fast and LeRF stay high.")
    series: dict[str, Any] = {}
    styles: dict[str, str] = {}
    colors: dict[str, int] = {}
    rows = []
    for i, (lab, res) in enumerate(by_model.items()):
        for order, style in (("morf", "-"), ("lerf", "--")):
            if res.get(order):
                key = f"{lab}, {_ORDER_NAMES[order]}"
                series[key] = (res[order]["x"], res[order]["accuracy"])
                styles[key], colors[key] = style, i
        rows.append({"model": lab, "MoRF area": res["morf"]["accuracy_area"] if res.get("morf") else None,
                     "LeRF area": res["lerf"]["accuracy_area"] if res.get("lerf") else None, "ROAD gap": res["score"]})
    r.figure(plots.accuracy_curves(series, xlabel="fraction of pixels removed", ylabel="accuracy",
                                   colors=colors, linestyles=styles),
             "ROAD: accuracy as pixels are removed most-relevant-first (solid) or least-relevant-first (dashed).")
    r.table(rows, caption="Areas under the ROAD accuracy curves (fraction removed 0 to 1) and the gap LeRF − MoRF "
                          "(higher gap is better).",
            formats={"MoRF area": "{:.3f}", "LeRF area": "{:.3f}", "ROAD gap": "{:+.3f}"})


def leakage_rows(leak: Sequence[Mapping[str, Any]], ks: Sequence[float]) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """Table rows, bar series and the chance level of BlockMNIST leakage results."""
    rows, series = [], {}
    chance = math.nan
    for row in leak:
        entry = {"dataset": row["dataset"], "model": row["model"]}
        for i, k in enumerate(ks):
            entry[f"top-{k:g}%"] = (row["topk_null_mean"][i], row["topk_null_std"][i])
        entry["mass share"] = (row["mass_null_mean"], row["mass_null_std"])
        rows.append(entry)
        series[f"{row['model']} ({row['dataset']})"] = (row["topk_null_mean"], row["topk_null_std"])
        chance = row["null_area_share"]
    return rows, series, chance


def add_leakage_tables(r: Report, leak: Sequence[Mapping[str, Any]], ks: Sequence[float]) -> dict[str, Any]:
    """One table per dataset: the null block's share of each image's top-k% |attribution|
    and of the attribution mass, in percent; returns the bar-chart series and chance level."""
    rows, series, chance = leakage_rows(leak, ks)
    columns = ["model", *(f"top-{k:g}%" for k in ks), "mass share"]
    headers = {**{f"top-{k:g}%": f"top {k:g}%" for k in ks}, "mass share": "share of the mass"}
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        r.table([row for row in rows if row["dataset"] == dataset], columns=columns, headers=headers,
                formats=dict.fromkeys(columns[1:], _percent),
                caption=f"**{dataset}**: null-block share (%, mean ± std over test images) of each image's top-k% "
                        f"|attribution| coordinates, for each k, and of the attribution mass; lower is better, "
                        f"chance {100 * chance:.0f}%.")
    return {"series": series, "chance": chance}


def open_report(record: Mapping[str, Any], title: str, on: str = "") -> Report:
    """A study's report: its title, the line ``gradaudit study '<name>'`` (``on`` after it,
    ``(--quick)`` when the preset was in force), then the findings, first."""
    r = Report(title, f"gradaudit study '{record['study']}'{on}" + (" (--quick)" if record["quick"] else ""))
    r.section("Findings")
    r.bullets(record["results"]["findings"])
    return r


def add_footer(r: Report, record: Mapping[str, Any]) -> None:
    """Config and provenance at the end of every study report."""
    r.section("Reproduce", f"gradaudit run {record['study']}" + (" --quick" if record["quick"] else "")
              + " --config config.yaml (the configuration below); wall time of this run: "
              f"{record['wall_time_s']:.0f} s.")
    r.config(record["config"])
    r.provenance({"versions": record["versions"], "git": record["git"]})


def mask_only_note(diffroar_cfg: Mapping[str, Any]) -> str:
    """The protocol line that says whether the mask-only leakage control ran (issue 9)."""
    if diffroar_cfg.get("mask_only"):
        return "on: models retrained on the centred keep-mask alone; see the leakage columns"
    return ("off in this study's config (it doubles the retrains); run with --set diffroar.mask_only=true "
            "to measure how much of DiffROAR the mask alone explains")
