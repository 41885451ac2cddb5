"""Plain-language findings, written from the measured numbers (never hard-coded)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "blockmnist_findings",
    "diffroar_findings",
    "leakage_control_sentence",
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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


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
        d = res["curves"]["attribution"]["diffroar"]["mean"]
        out.append(f"DiffROAR of {label} on BlockMNIST: {d[0]:+.3f} at k = {res['levels'][0]:g}, "
                   f"mean {_mean(d):+.3f} over the levels.")
    return out


def leakage_control_sentence(by_model: Mapping[str, Mapping[str, Any]]) -> str:
    """Does each attribution's DiffROAR ordering survive once the mask-only part is removed?"""
    with_leak = {lab: res for lab, res in by_model.items() if "leakage" in res}
    if not with_leak:
        return "The mask-only control did not run, so class-information leakage through the mask is not measured."
    raw = {lab: _mean(res["curves"]["attribution"]["diffroar"]["mean"]) for lab, res in with_leak.items()}
    clean = {lab: _mean(res["leakage"]["attribution"]["diffroar_minus_mask_only"]["mean"])
             for lab, res in with_leak.items()}
    order_raw = sorted(raw, key=raw.get, reverse=True)
    order_clean = sorted(clean, key=clean.get, reverse=True)
    top_mask = max(_mean(res["leakage"]["attribution"]["mask_only"]["top"]["mean"]) for res in with_leak.values())
    parts = [f"Models retrained on the keep-mask alone reach up to {_pct(top_mask)} accuracy on top-k masks "
             "(averaged over levels), so the mask itself carries class information."]
    if len(with_leak) > 1:
        same = order_raw == order_clean
        parts.append(f"Ordered by mean DiffROAR: {', '.join(order_raw)}; after subtracting the mask-only DiffROAR: "
                     f"{', '.join(order_clean)} — the ordering {'survives' if same else 'does NOT survive'} once "
                     "the leakage is removed.")
    else:
        lab = order_raw[0]
        keeps = (raw[lab] > 0) == (clean[lab] > 0)
        parts.append(f"Mean DiffROAR {raw[lab]:+.3f}, {clean[lab]:+.3f} after subtracting the mask-only DiffROAR: "
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
