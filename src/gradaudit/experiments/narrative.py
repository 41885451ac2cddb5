"""Plain-language findings, written from the measured numbers (never hard-coded)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "blockmnist_findings",
    "diffroar_findings",
    "leakage_control_sentence",
    "mean_below_one",
    "synthetic_findings",
]


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


def mean_below_one(levels: Sequence[float], values: Sequence[float]) -> float:
    """Mean of ``values`` over the levels k < 1 (NaN if there is none).

    At k = 1 every pixel is kept: the keep-mask is constant, top-k and bottom-k share their
    retrains, so DiffROAR is 0 and the mask-only accuracy is the majority-class rate by
    construction. Averaging that level in would dilute every "mean over the levels".
    """
    vals = [v for k, v in zip(levels, values, strict=True) if k < 1]
    return sum(vals) / len(vals) if vals else math.nan


def _levels_note(levels: Sequence[float]) -> str:
    below = [k for k in levels if k < 1]
    return "the levels k < 1" if len(below) != 1 else f"k = {below[0]:g}"


def blockmnist_findings(results: dict[str, Any]) -> list[str]:
    """Sentences for the blockmnist study: leakage per model, and DiffROAR where it ran."""
    out = []
    for row in results["leakage"]:
        k_small = row["ks"][1] if len(row["ks"]) > 1 else row["ks"][0]
        share = row["topk_null_mean"][row["ks"].index(k_small)]
        out.append(f"{row['dataset']}, {row['model']}: {_pct(share)} of each image's top-{k_small:g}% |gradient| "
                   f"coordinates lie on the null block (chance {_pct(row['null_area_share'])}); "
                   f"null-block share of the gradient mass {_pct(row['mass_null_mean'])}.")
    by = {(r["dataset"], r["model"]): r["mass_null_mean"] for r in results["leakage"]}
    datasets = sorted({d for d, _ in by})
    for d in datasets:
        ranked = sorted((v, m) for (dd, m), v in by.items() if dd == d)
        out.append(f"{d}: least leakage (null-block mass share) for {ranked[0][1]} ({_pct(ranked[0][0])}), "
                   f"most for {ranked[-1][1]} ({_pct(ranked[-1][0])}).")
    for label, res in results.get("diffroar", {}).items():
        d, lv = res["curves"]["attribution"]["diffroar"]["mean"], res["levels"]
        out.append(f"DiffROAR of {label} on BlockMNIST: {d[0]:+.3f} at k = {lv[0]:g}, "
                   f"mean {mean_below_one(lv, d):+.3f} over {_levels_note(lv)}.")
    return out


def leakage_control_sentence(by_model: Mapping[str, Mapping[str, Any]]) -> str:
    """Does each attribution's DiffROAR ordering survive once the mask-only part is removed?"""
    with_leak = {lab: res for lab, res in by_model.items() if "leakage" in res}
    if not with_leak:
        return "The mask-only control did not run, so class-information leakage through the mask is not measured."
    if not any(k < 1 for res in with_leak.values() for k in res["levels"]):
        return ("Every DiffROAR level is k = 1 (all pixels kept), where the keep-mask is constant: the "
                "mask-only control measures nothing there.")

    def below_one(res: Mapping[str, Any], values: Sequence[float]) -> float:
        return mean_below_one(res["levels"], values)

    raw = {lab: below_one(res, res["curves"]["attribution"]["diffroar"]["mean"]) for lab, res in with_leak.items()}
    clean = {lab: below_one(res, res["leakage"]["attribution"]["diffroar_minus_mask_only"]["mean"])
             for lab, res in with_leak.items()}
    order_raw = sorted(raw, key=raw.get, reverse=True)
    order_clean = sorted(clean, key=clean.get, reverse=True)
    levels = sorted({k for res in with_leak.values() for k in res["levels"]})
    top_mask = max(below_one(res, res["leakage"]["attribution"]["mask_only"]["top"]["mean"])
                   for res in with_leak.values())
    parts = [f"Models retrained on the keep-mask alone reach up to {100 * top_mask:.1f}% accuracy on top-k masks "
             f"(mean over {_levels_note(levels)}; at k = 1 the mask is constant), so the mask itself carries "
             "class information."]
    if len(with_leak) > 1:
        same = order_raw == order_clean
        parts.append(f"Ordered by mean DiffROAR (k < 1): {', '.join(order_raw)}; after subtracting the mask-only DiffROAR: "
                     f"{', '.join(order_clean)} — the ordering {'survives' if same else 'does NOT survive'} once "
                     "the leakage is removed.")
    else:
        lab = order_raw[0]
        keeps = (raw[lab] > 0) == (clean[lab] > 0)
        parts.append(f"Mean DiffROAR (k < 1) {raw[lab]:+.3f}, {clean[lab]:+.3f} after subtracting the mask-only DiffROAR: "
                     f"its sign {'survives' if keeps else 'flips'} once the leakage is removed.")
    return " ".join(parts)


def diffroar_findings(results: Mapping[str, Any]) -> list[str]:
    """Sentences for a DiffROAR study: accuracy, DiffROAR at the smallest level, leakage control."""
    out = []
    for row in results["models"]:
        out.append(f"{row['model']}: test accuracy {_pct(row['test_accuracy'])}.")
    for target, by_model in results["diffroar"].items():
        for label, res in by_model.items():
            lv, d = res["levels"], res["curves"]["attribution"]["diffroar"]["mean"]
            head = f"Target {target}, {label}: DiffROAR {d[0]:+.3f} at k = {lv[0]:g}"
            leak = res.get("leakage", {}).get("attribution")
            if leak is not None:
                mo_top = leak["mask_only"]["top"]["mean"][0]
                mo_d = leak["mask_only_diffroar"]["mean"][0]
                head += (f"; models retrained on the top-{lv[0]:g} keep-mask alone reach {_pct(mo_top)} accuracy "
                         f"(mask-only DiffROAR {mo_d:+.3f}, so {d[0] - mo_d:+.3f} is not explained by the mask)")
            out.append(head + ".")
        if len(by_model) > 1:
            out.append(f"Target {target}: " + leakage_control_sentence(by_model))
        rnd = next((res for res in by_model.values() if "random" in res["curves"]), None)
        if rnd is not None:
            rd = rnd["curves"]["random"]["diffroar"]["mean"]
            out.append(f"Target {target}: the computed random attribution's DiffROAR stays within "
                       f"{max(abs(v) for v in rd):.3f} of 0 across levels.")
    return out
