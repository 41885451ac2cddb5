"""Plain-text tables of the evaluations' results, one per metric (the registry's
``MetricSpec.table``); the command line prints them. A metric without its own table gets
:func:`summary_table`, built from its ``to_dict()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["align", "degradation_table", "diffroar_table", "leakage_table", "pixel_table", "road_table",
           "summary_table"]


def align(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns, two spaces apart, the header first."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows])


def _pm(mean: float, std: float) -> str:
    """A signed difference '+0.5160 ± 0.0933', or the mean alone where the std is undefined
    (one seed)."""
    return f"{mean:+.4f}" if std != std else f"{mean:+.4f} ± {std:.4f}"


def _acc(mean: float, std: float) -> str:
    """An accuracy or share '0.9123 ± 0.0040' (the mean alone for one seed)."""
    return f"{mean:.4f}" if std != std else f"{mean:.4f} ± {std:.4f}"


def diffroar_table(result: Any) -> str:
    """Per level: top-k and bottom-k accuracy, DiffROAR, and the controls that ran."""
    cur = result.attribution
    cols: list[tuple[str, Callable[[int], str]]] = [
        ("top-k acc", lambda i: _acc(cur.top.mean[i], cur.top.std[i])),
        ("bottom-k acc", lambda i: _acc(cur.bottom.mean[i], cur.bottom.std[i])),
        ("DiffROAR", lambda i: _pm(cur.diffroar.mean[i], cur.diffroar.std[i])),
    ]
    rnd = result.random
    if rnd is not None:
        cols.append(("random DiffROAR", lambda i: _pm(rnd.diffroar.mean[i], rnd.diffroar.std[i])))
    mask = result.mask_only.get("attribution")
    if mask is not None:
        cols.append(("mask-only top acc", lambda i: _acc(mask.top.mean[i], mask.top.std[i])))
        cols.append(("mask-only DiffROAR", lambda i: _pm(mask.diffroar.mean[i], mask.diffroar.std[i])))
    rows = [[f"{k:g}", *(f(i) for _, f in cols)] for i, k in enumerate(result.levels)]
    return align(["k", *(name for name, _ in cols)], rows)


def road_table(result: Any) -> str:
    """Per removal fraction: MoRF/LeRF accuracy; then the areas and the gap."""
    orders = [(name, c) for name, c in (("MoRF", result.morf), ("LeRF", result.lerf)) if c is not None]
    head = ["fraction", "removed", *(f"{name} acc" for name, _ in orders)]
    rows = [[f"{p:g}", str(k), *(f"{c.accuracy[i]:.4f}" for _, c in orders)]
            for i, (p, k) in enumerate(zip(result.percentages, result.counts, strict=True))]
    lines = [align(head, rows)] + [f"accuracy area {name} {c.accuracy_area:.4f}" for name, c in orders]
    if result.gap is not None:
        lines.append(f"gap (LeRF − MoRF, higher is better) {result.gap:.4f}")
    return "\n".join(lines)


def leakage_table(result: Any) -> str:
    """Per k: the null (and signal) block's share of the top-k% |attribution|; then the mass."""
    signal = result.topk_signal_mean is not None
    head = ["k %", "null share", *(["signal share"] if signal else [])]
    rows = []
    for i, k in enumerate(result.ks):
        row = [f"{k:g}", _acc(result.topk_null_mean[i], result.topk_null_std[i])]
        if signal:
            row.append(_acc(result.topk_signal_mean[i], result.topk_signal_std[i]))
        rows.append(row)
    return "\n".join([
        align(head, rows),
        f"null block's share of |attribution| mass {_acc(result.mass_null_mean, result.mass_null_std)}",
        f"null block's share of the image (chance level) {result.null_area_share:.4f}",
    ])


def pixel_table(r: Any) -> str:
    """Per removed fraction: the accuracy and label probability; then the area."""
    c = r.curve
    rows = [[f"{f:.4g}", str(k), f"{a:.4f}", f"{p:.4f}"]
            for f, k, a, p in zip(r.fractions, r.counts, c.accuracy, c.probability, strict=True)]
    better = "higher" if r.higher_is_better else "lower"
    order = {"morf": "MoRF", "lerf": "LeRF"}.get(r.order, r.order)
    return "\n".join([align(["fraction", "removed", f"{order} acc", "prob"], rows),
                      f"accuracy area {r.score:.4f} ({better} is better)"])


def degradation_table(r: Any) -> str:
    """Per number of removed patches: MoRF/LeRF probability and accuracy; then the areas."""
    orders = [(name, c) for name, c in (("MoRF", r.morf), ("LeRF", r.lerf)) if c is not None]
    head = ["patches", *(f"{name} {q}" for name, _ in orders for q in ("prob", "acc"))]
    rows = [[str(step), *(f"{v[i]:.4f}" for _, c in orders for v in (c.probability, c.accuracy))]
            for i, step in enumerate(r.steps)]
    lines = [align(head, rows)] + [f"probability area {name} {c.probability_area:.4f}" for name, c in orders]
    if r.gap is not None:
        lines.append(f"gap (LeRF − MoRF, higher is better) {r.gap:.4f}")
    return "\n".join(lines)


def summary_table(result: Any) -> str:
    """The scalar entries of ``result.to_dict()`` (numbers, words, flags), one per line."""
    record = result.to_dict()
    rows = [[str(k), f"{v:.4f}" if isinstance(v, float) else str(v)]
            for k, v in record.items() if isinstance(v, str | int | float | bool) or v is None]
    widths = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(widths)}  {v}" for k, v in rows)
