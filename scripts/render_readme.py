"""Render the README's result blocks from the committed results files in docs/results/.

Every number and wall time the README quotes about the main job comes from a results file
that the run which measured it wrote (its ``results.json``, copied with its config,
provenance and wall time). The README holds marked blocks::

    <!-- results:synthetic -->
    ... generated text: do not edit by hand ...
    <!-- /results:synthetic -->

Usage::

    python scripts/render_readme.py                      # rewrite README.md from docs/results/*.json
    python scripts/render_readme.py --check              # exit 1 if README.md is out of date
    python scripts/render_readme.py --import runs/main --note "quiet machine"
        # copy runs/main/results.json (+ synthetic/, blockmnist/) into docs/results/ and the
        # figures the README shows into docs/figures/, then render
    python scripts/render_readme.py --import-study cifar10-cpu=runs/cifar10-cpu --note "..."
        # copy one study run's results.json to docs/results/cifar10-cpu.json, then render

``tests/test_readme_numbers.py`` re-renders in memory and fails when the README and the
files disagree, and checks that every number in a rendered block is a value of the files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"
PARTS = ("main", "synthetic", "blockmnist")  # docs/results/<part>.json
_BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


# ---------------------------------------------------------------------------- formatting

def pct(v: float, decimals: int = 0) -> str:
    return f"{100 * v:.{decimals}f}%"


def signed(v: float, decimals: int = 3) -> str:
    return f"{v:+.{decimals}f}".replace("-", "−")


def duration(seconds: float) -> str:
    """'8 min 24 s' (or '58 s')."""
    s = round(seconds)
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def when(record: Mapping[str, Any]) -> str:
    """'2026-11-26, revision 1a2b3c4' (+ ' with uncommitted changes')."""
    copied = record.get("copied", {})
    date = copied.get("results_written", "unknown date")[:10]
    git = record.get("git") or {}
    rev = (git.get("commit") or "unknown")[:7]
    dirty = " with uncommitted changes" if git.get("dirty") else ""
    return f"{date}, revision `{rev}`{dirty}"


def _note(record: Mapping[str, Any], load: bool = True) -> str:
    """The measurement note given at --import, and (``load``) the machine's load when the file
    was copied."""
    copied = record.get("copied", {})
    average = copied.get("load_average_at_copy") if load else None
    text = f"; {copied['note']}" if copied.get("note") else ""
    return text + (f" (load average {average[0]:.1f} over the last minute when the results were copied, on "
                   f"{copied.get('cores', '?')} cores)" if average else "")


def _below_one(levels: list[float], values: list[float]) -> float:
    vals = [v for lv, v in zip(levels, values, strict=True) if lv < 1]
    return sum(vals) / len(vals)


# ---------------------------------------------------------------------------- blocks

def block_main_timing(res: Mapping[str, Mapping[str, Any]]) -> str:
    main = res["main"]
    parts = main["results"]
    copied = main.get("copied", {})
    machine = f"{copied.get('cores', '?')} cores, {copied.get('cpu', 'unknown CPU')}, no GPU"
    return (f"Measured on {when(main)}, on this machine ({machine}): `gradaudit run --out runs/main` from "
            f"an empty store took **{duration(main['wall_time_s'])}** (`synthetic` "
            f"{duration(parts['synthetic']['wall_time_s'])}, `blockmnist` "
            f"{duration(parts['blockmnist']['wall_time_s'])}){_note(main)}.\n")


def _robust_text(row: Mapping[str, Any], eps_train: list[float]) -> str:
    curve = {float(k): v for k, v in row["robust_accuracy"].items()}
    shown = sorted({e for e in (*eps_train, 0.1) if e in curve} | {max(curve)})
    return "ℓ∞ PGD accuracy " + ", ".join(f"{pct(curve[e])} at ε = {e:g}" for e in shown)


def block_synthetic(res: Mapping[str, Mapping[str, Any]]) -> str:
    rec = res["synthetic"]
    r, cfg = rec["results"], rec["config"]
    train_eps = sorted({m["recipe"]["eps"] for part in ("v1", "simplified") for m in cfg[part]["models"]
                        if m["recipe"].get("eps")})
    lines = [f"**Synthetic theory check** (`synthetic`, {duration(rec['wall_time_s'])} on {when(rec)}{_note(rec)}; "
             f"simplified BlockMNIST with {cfg['simplified']['blocks']} blocks, the first half task-relevant).",
             "", "| data | model | test acc. | result |", "|---|---|---|---|"]
    for row in r["v1"]:
        inv = " (feature inversion)" if row["aq"] < 0 else ""
        lines.append(f"| v1 | {row['model']} | {pct(row['test_accuracy'])} | the gradient ranks the signal "
                     f"coordinate **first on {pct(row['top1'])}** of test points and **last on "
                     f"{pct(row['bottom1'])}**: AQ = {signed(row['aq'], 2)}{inv}; "
                     f"{_robust_text(row, train_eps)} |")
    for row in r["simplified"]:
        leaks = row["own_share"] < 2 * row["chance"]
        verdict = "leakage" if leaks else (f"no leakage; its top block is its own signal block on "
                                           f"{pct(row['top_block_is_own'])} of points")
        lines.append(f"| simplified BlockMNIST | {row['model']} | {pct(row['test_accuracy'])} | "
                     f"**{pct(row['own_share'])}** of the task-relevant gradient mass on the point's own signal "
                     f"block (uniform: {pct(row['chance'])}): {verdict} |")
    return "\n".join(lines) + "\n"


def _leak(r: Mapping[str, Any], dataset: str, model: str) -> Mapping[str, Any] | None:
    return next((x for x in r["leakage"] if x["dataset"] == dataset and x["model"] == model), None)


def block_blockmnist(res: Mapping[str, Mapping[str, Any]]) -> str:
    rec = res["blockmnist"]
    r, cfg = rec["results"], rec["config"]
    k = 5 if 5 in cfg["leakage_ks"] else cfg["leakage_ks"][0]
    datasets = cfg["datasets"]
    acc = {m["model"]: m["test_accuracy"] for m in r["models"] if m["dataset"] == datasets[0]}
    head = " | ".join(f"{d}: top-{k:g}% on null | null share of mass" for d in datasets)
    lines = [f"**BlockMNIST feature leakage** (`blockmnist`, {duration(rec['wall_time_s'])} on {when(rec)}"
             f"{_note(rec)}): "
             "every image stacks a 0/1 digit block and a label-independent null block; the null block's share "
             f"of an image's top-{k:g}% |gradient| coordinates (chance: {pct(r['leakage'][0]['null_area_share'])}) "
             "and of the gradient mass.", "",
             f"| model (test acc. on {datasets[0]}) | {head} |", "|---" * (1 + 2 * len(datasets)) + "|"]
    for label in acc:
        cells = []
        for d in datasets:
            row = _leak(r, d, label)
            share = row["topk_null_mean"][row["ks"].index(k)] if row else None
            cells += [f"**{pct(share)}**" if share is not None else "n/a",
                      pct(row["mass_null_mean"]) if row else "n/a"]
        lines.append(f"| {label} ({pct(acc[label], 2)}) | " + " | ".join(cells) + " |")
    lines.append("")
    if r.get("diffroar"):
        parts = []
        rnd = 0.0
        for label, d in r["diffroar"].items():
            lv, curve = d["levels"], d["curves"]["attribution"]["diffroar"]["mean"]
            parts.append(f"{label} {signed(curve[0])} at k = {pct(lv[0])} (mean {signed(_below_one(lv, curve))} "
                         "over the levels k < 1)")
            if "random" in d["curves"]:
                rnd = max(rnd, max(abs(v) for v in d["curves"]["random"]["diffroar"]["mean"]))
        text = "DiffROAR of the input gradients: " + "; ".join(parts)
        if any("random" in d["curves"] for d in r["diffroar"].values()):
            text += f"; the random attribution's DiffROAR stays within ±{rnd:.3f} of 0"
        lines.append(text + ".")
        masked = {lab: d["leakage"]["attribution"] for lab, d in r["diffroar"].items() if "leakage" in d}
        if masked:
            lines.append("Models retrained on the top-k keep-mask alone (no pixel values) reach a mean accuracy "
                         "over the levels k < 1 of " + ", ".join(
                             f"{pct(_below_one(r['diffroar'][lab]['levels'], m['mask_only']['top']['mean']), 1)} "
                             f"({lab})" for lab, m in masked.items()) + ": the mask's shape carries the label.")
    if r.get("road"):
        lines.append("ROAD gap (LeRF − MoRF accuracy area, noisy linear imputation): " + "; ".join(
            f"{lab} {signed(v['score'])}" for lab, v in r["road"].items()) + ".")
    return "\n".join(lines) + "\n"


def block_studies(res: Mapping[str, Mapping[str, Any]]) -> str:
    def wall(part: str) -> str:
        return (f"{duration(res[part]['wall_time_s'])} ({when(res[part])})" if part in res
                else "not measured at this revision")

    lines = ["| study | what it reproduces | full default, measured (see above) |", "|---|---|---|"]
    rows = [("synthetic", "paper §5: v1 data (AQ, top-1/bottom-1, robust-accuracy curve, heatmaps), simplified "
                          "BlockMNIST leakage", wall("synthetic")),
            ("blockmnist", "paper §4, Fig. 1: null-block leakage on BlockMNIST / BlockMNIST-Top, DiffROAR and ROAD",
             wall("blockmnist")),
            ("(main job)", "`synthetic` + `blockmnist` with an index report", wall("main"))]
    lines += [f"| `{a}` | {b} | {c} |" if not a.startswith("(") else f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- other committed runs
# Blocks rendered from single runs committed beside the main job's files (not --import'ed:
# each is a copy of one run's results.json, or of examples/own_model.py's result).

def _revision(rec: Mapping[str, Any]) -> str:
    git = rec.get("git") or (rec.get("provenance") or {}).get("git") or {}
    if not git.get("commit"):
        return "no git revision recorded"
    return f"revision `{git['commit'][:7]}`" + (" with uncommitted changes" if git.get("dirty") else "")


def _run_provenance(rec: Mapping[str, Any]) -> str:
    """Wall time, date and revision of a committed study run, and what its file does not record."""
    wall = f"{duration(rec['wall_time_s'])}, " if "wall_time_s" in rec else "no wall time recorded, "
    if "copied" in rec:  # imported with --import-study: when, where and under what load
        copied = rec["copied"]
        # (a study imported after its run: the load at the copy says nothing of the run's)
        return (f"{wall}{copied['results_written'][:10]}, {_revision(rec)}, {copied.get('cores', '?')}-core "
                f"{copied.get('cpu', 'unknown CPU')}{_note(rec, load=False)}")
    return f"{wall}{_revision(rec)}; the file records no date, machine or load"


def _first_below_one(levels: list[float]) -> int:
    return next((i for i, lv in enumerate(levels) if lv < 1), 0)


def _cifar10_run(rec: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any],
                                                   Mapping[str, Any]]:
    """(results, config, first model's config, DiffROAR curves of the first target) of a cifar10 run."""
    r, cfg = rec["results"], rec["config"]
    return r, cfg, cfg["models"][0], r["diffroar"][cfg["targets"][0]]


def block_cifar10_quick(extra: Mapping[str, Mapping[str, Any]]) -> str:
    rec = extra["cifar10-quick"]
    r, cfg, first, curves = _cifar10_run(rec)
    lines = [f"**CIFAR-10, quick** (`gradaudit run {rec['study']}{' --quick' if rec['quick'] else ''}` on the real "
             f"CIFAR-10 files; {_run_provenance(rec)}; the file holds the merged config, not the command line): "
             f"{cfg['n_train']:,} training and {cfg['n_test']:,} test images, ResNet9 of width "
             f"{first['model_options']['width']}, {first['recipe']['epochs']} epochs, DiffROAR of input gradients "
             f"(target: the true label) with {cfg['diffroar']['seeds']} retraining seeds, {cfg['diffroar']['fill']} "
             "fill.", "",
             "| model | test acc. | DiffROAR | random attribution | mask-only DiffROAR | DiffROAR − mask-only "
             "| ROAD gap |", "|---|---|---|---|---|---|---|"]
    acc = {m["model"]: m["test_accuracy"] for m in r["models"]}
    summary = {}
    for label, d in curves.items():
        i = _first_below_one(d["levels"])
        at = f" at k = {pct(d['levels'][i])}"
        real = d["curves"]["attribution"]["diffroar"]["mean"][i]
        rnd = d["curves"]["random"]["diffroar"]["mean"][i] if "random" in d["curves"] else None
        leak = d.get("leakage", {}).get("attribution")
        mask = leak["mask_only_diffroar"]["mean"][i] if leak else None
        rest = leak["diffroar_minus_mask_only"]["mean"][i] if leak else None
        summary[label] = (real, rest)
        road = r.get("road", {}).get(label)
        lines.append(f"| {label} | {pct(acc[label])} | **{signed(real)}**{at} | "
                     f"{signed(rnd) if rnd is not None else 'n/a'} | {signed(mask) if mask is not None else 'n/a'} | "
                     f"{signed(rest) if rest is not None else 'n/a'} | "
                     f"{signed(road['score']) if road else 'n/a'} |")
    lines.append("")
    ranked = sorted(summary, key=lambda lab: summary[lab][0], reverse=True)
    robust = [lab for lab in summary if any(m["label"] == lab and m["recipe"].get("attack")
                                            for m in cfg["models"])]
    if robust and len(ranked) > 1:
        top = ranked[0]
        agrees = top in robust
        text = (f"{top} has the higher DiffROAR: " + ("this agrees with" if agrees else "the opposite of")
                + " the paper's claim that robust models' gradients are more discriminative at small k.")
        if all(rest is not None for _, rest in summary.values()):
            after = sorted(summary, key=lambda lab: summary[lab][1], reverse=True)
            text += (" The mask-only control explains it: models retrained on the keep-mask alone, with no pixel "
                     "values, reach at least the same DiffROAR, so no model's gradient carries more than its "
                     "mask's shape" if all(rest <= 0 for _, rest in summary.values())
                     else " After subtracting the mask-only DiffROAR the order is " + ", ".join(after))
            text += "; " + ("the ordering survives the subtraction." if after == ranked
                            else "the ordering does not survive the subtraction.")
        lines.append(text + " A quick run: small models and few images, far from the paper's size.")
    return "\n".join(lines) + "\n"


def block_cifar10_cpu(extra: Mapping[str, Mapping[str, Any]]) -> str:
    rec = extra["cifar10-cpu"]
    r, cfg, first, curves = _cifar10_run(rec)
    levels = next(iter(curves.values()))["levels"]
    n_model = cfg.get("n_model_train") or cfg["n_train"]
    lines = [f"**CIFAR-10, CPU config** (`gradaudit run cifar10 --config configs/cifar10-cpu.yaml` on the real "
             f"CIFAR-10 files; {_run_provenance(rec)}): ResNet9 of width {first['model_options']['width']} trained on "
             f"{n_model:,} images; DiffROAR of input gradients (target: the true label) on {cfg['n_train']:,} "
             f"training and {cfg['n_test']:,} test images, {cfg['diffroar']['seeds']} retraining seeds, "
             f"{cfg['diffroar']['fill']} fill; mean ± std over the seeds.", "",
             "| model | test acc. | " + " | ".join(f"DiffROAR k = {pct(lv)}" for lv in levels)
             + " | random, k = " + pct(levels[0]) + " | DiffROAR − mask-only, k = " + pct(levels[0]) + " | ROAD gap |",
             "|---|---|" + "---|" * (len(levels) + 3)]
    acc = {m["model"]: m["test_accuracy"] for m in r["models"]}
    small = {}
    for label, d in curves.items():
        att = d["curves"]["attribution"]["diffroar"]
        cells = [f"{signed(m)} ± {sd:.3f}" if sd is not None else signed(m)
                 for m, sd in zip(att["mean"], att["std"], strict=True)]
        rnd = d["curves"].get("random", {}).get("diffroar", {}).get("mean")
        leak = d.get("leakage", {}).get("attribution")
        rest = leak["diffroar_minus_mask_only"]["mean"][0] if leak else None
        road = r.get("road", {}).get(label)
        small[label] = (att["mean"][0], rest)
        lines.append(f"| {label} | {pct(acc[label])} | " + " | ".join(cells) + " | "
                     f"{signed(rnd[0]) if rnd else 'n/a'} | {signed(rest) if rest is not None else 'n/a'} | "
                     f"{signed(road['score']) if road else 'n/a'} |")
    lines.append("")
    robust = {m["label"] for m in cfg["models"] if m["recipe"].get("attack")}
    standard = [lab for lab in small if lab not in robust]
    if robust and standard:
        std = standard[0]
        above = sorted(lab for lab in robust if small[lab][0] > small[std][0])
        text = (f"At k = {pct(levels[0])}, " + (
            f"{', '.join(above)} {'has' if len(above) == 1 else 'have'} a higher DiffROAR than {std}: in line with"
            if above else f"no robust model has a higher DiffROAR than {std}: against")
            + " the paper's claim that robust models' input gradients are more discriminative at small k.")
        if all(rest is not None for _, rest in small.values()):
            order = sorted(small, key=lambda lab: small[lab][1], reverse=True)
            text += (" After subtracting the mask-only DiffROAR (models retrained on the keep-mask alone) the "
                     f"order at k = {pct(levels[0])} is " + ", ".join(order)
                     + ("; every difference is negative: at this k the keep-mask's shape alone accounts for more "
                        "than the whole DiffROAR."
                        if all(rest < 0 for _, rest in small.values()) else "."))
        lines.append(text)
    return "\n".join(lines) + "\n"


def block_zoo_cifar10(extra: Mapping[str, Mapping[str, Any]]) -> str:
    rec = extra["zoo-cifar10-cpu"]
    r, cfg = rec["results"], rec["config"]
    c = cfg["cifar10"]
    models = [m["model"] for m in r["models"]]
    acc = {m["model"]: m["test_accuracy"] for m in r["models"]}
    levels = cfg["diffroar"]["levels"]
    lines = [f"**CIFAR-10 zoo, CPU config** (`gradaudit run zoo --config configs/zoo-cifar10-cpu.yaml`; "
             f"{_run_provenance(rec)}): models trained on {c['n_model_train']:,} images ("
             + ", ".join(f"{m} {pct(acc[m])} test accuracy" for m in models)
             + f"); DiffROAR on {c['n_train']:,} attributed training images, {cfg['diffroar']['seeds']} seed, "
             f"mean of k = {', '.join(pct(lv) for lv in levels)}; ROAD gap (LeRF − MoRF) and pixel-perturbation "
             f"area on {c['n_perturb']:,} test images.", "",
             "| method | " + " | ".join(f"{m}: DiffROAR mean | ROAD gap | pixel pert." for m in models) + " |",
             "|---|" + "---|---|---|" * len(models)]
    cells = {(x["model"], x["method"]): x for x in r["cells"] if x["dataset"] == "cifar10"}
    methods = list(dict.fromkeys(x["method"] for x in r["cells"] if x["dataset"] == "cifar10"))

    def cell(x: Mapping[str, Any] | None) -> str:
        if x is None or not x.get("applicable", True) or x.get("DiffROAR mean") is None:
            return "n/a | n/a | n/a"
        return f"{signed(x['DiffROAR mean'])} | {signed(x['ROAD gap'])} | {x['pixel perturbation']:.3f}"

    for method in methods:
        lines.append(f"| {method} | " + " | ".join(cell(cells.get((m, method))) for m in models) + " |")
    lines.append("")
    reasons = dict.fromkeys(x["reason"] for x in r["cells"] if not x.get("applicable", True) and x.get("reason"))
    if reasons:
        lines.append("n/a: the method does not apply to the model (" + "; ".join(reasons) + ")")
        lines.append("")
    lines.extend(f"- {f}" for f in r["findings"])
    return "\n".join(lines) + "\n"


_SRINIVAS = (("srinivas-fmnist-quick-before", "Fashion-MNIST, quick, before the robust proxy and the flag"),
             ("srinivas-fmnist-quick", "Fashion-MNIST, quick"),
             ("srinivas-cifar10-quick", "CIFAR-10, quick"),
             ("srinivas-cifar10-reduced", "CIFAR-10, reduced CPU size"),
             ("srinivas-cifar10-cpu", "CIFAR-10, CPU config"))


def _flag(gan: Mapping[str, Any]) -> str:
    """The saturation flag's verdict and its reason, as the run wrote it."""
    reason = gan["reason"]
    return ("**saturated**, " if gan["saturated"] and not reason.startswith("saturated") else "") + reason


def block_srinivas(extra: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["| run | model | test acc. | GAN-test | mean target probability | DiffROAR of input gradients |",
             "|---|---|---|---|---|---|"]
    notes = []
    for name, title in _SRINIVAS:
        if name not in extra:
            continue
        rec = extra[name]
        r, cfg = rec["results"], rec["config"]
        for m in r["models"]:
            d = r.get("diffroar", {}).get(m["model"])
            dr = (f"{signed(d['curves']['attribution']['diffroar']['mean'][0])} at k = {pct(d['levels'][0])}"
                  if d else "n/a")
            prob = f"{m['gan_test_probability']:.3f}" if "gan_test_probability" in m else "not recorded"
            lines.append(f"| {title} | {m['model']} | {pct(m['test_accuracy'], 1)} | {pct(m['gan_test'], 1)} | "
                         f"{prob} | {dr} |")
        proxy = r["proxy"]
        gan = r.get("gan_test") or {}
        claim = next((f for f in r["findings"] if f.startswith("Srinivas & Fleuret's claim")), None)
        flag = (f"Saturation flag, GAN-test: {_flag(gan)} Target probability: {_flag(gan['probability'])}"
                if "saturated" in gan and "probability" in gan
                else "No saturation flag or target probability recorded (the file predates them).")
        notes.append(f"- **{title}** (`srinivas` on `{cfg['dataset']}`, {cfg['n_train']:,} training images, "
                     f"{cfg['recipe']['epochs']} epochs; {_run_provenance(rec)}). GAN-test {proxy['model']} with test "
                     f"accuracy {pct(proxy['test_accuracy'], 1)}; {flag} {claim or ''}")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def block_own_model(extra: Mapping[str, Mapping[str, Any]]) -> str:
    rec = extra["own_model_example"]
    cfg = rec["config"]
    att, rnd = rec["curves"]["attribution"]["diffroar"], rec["curves"].get("random", {}).get("diffroar")
    lines = [f"**Your own model** (`python examples/own_model.py`: the example's CNN, its own training loop, "
             f"{cfg['train']['n']:,} training images of shape {'×'.join(str(n) for n in cfg['train']['input_shape'])}; "
             f"{len(rec['seeds'])} retraining seeds, {cfg['fill']} fill; {_revision(rec)}; the file records no "
             "wall time, date or machine).", "",
             f"| k | DiffROAR of `{cfg['method']}` (mean ± std over seeds) | random attribution |", "|---|---|---|"]
    for i, lv in enumerate(rec["levels"]):
        lines.append(f"| {pct(lv)} | **{signed(att['mean'][i])}** ± {att['std'][i]:.3f} | "
                     f"{signed(rnd['mean'][i]) if rnd else 'n/a'} |")
    return "\n".join(lines) + "\n"


NEEDS = {"main-timing": ("main",), "synthetic": ("synthetic",), "blockmnist": ("blockmnist",), "studies": (),
         "cifar10-quick": (), "cifar10-cpu": (), "zoo-cifar10": (), "srinivas": (), "own-model": ()}  # the main job's files a block needs
# blocks rendered from other committed runs, by the files (docs/results/<name>.json) they read
FILES = {"cifar10-quick": ("cifar10-quick",), "cifar10-cpu": ("cifar10-cpu",), "zoo-cifar10": ("zoo-cifar10-cpu",),
         "srinivas": tuple(name for name, _ in _SRINIVAS),
         "own-model": ("own_model_example",)}


def placeholder(missing: list[str]) -> str:
    files = ", ".join(f"`docs/results/{p}.json`" for p in missing)
    return (f"_Not measured at this revision: {files} missing. Run `gradaudit run --out runs/main`, then "
            "`python scripts/render_readme.py --import runs/main`._\n")


BLOCKS: dict[str, Callable[[Mapping[str, Mapping[str, Any]]], str]] = {
    "main-timing": block_main_timing,
    "synthetic": block_synthetic,
    "blockmnist": block_blockmnist,
    "studies": block_studies,
    "cifar10-quick": block_cifar10_quick,
    "cifar10-cpu": block_cifar10_cpu,
    "zoo-cifar10": block_zoo_cifar10,
    "srinivas": block_srinivas,
    "own-model": block_own_model,
}


# ---------------------------------------------------------------------------- files

def load_results(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """docs/results/<part>.json for the parts of the main job that have one."""
    return {p: json.loads((folder / f"{p}.json").read_text(encoding="utf-8")) for p in PARTS
            if (folder / f"{p}.json").is_file()}


def load_extra(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """docs/results/<name>.json of the other committed runs that blocks read (see FILES)."""
    names = {n for files in FILES.values() for n in files}
    return {n: json.loads((folder / f"{n}.json").read_text(encoding="utf-8")) for n in sorted(names)
            if (folder / f"{n}.json").is_file()}


def extra_placeholder(name: str) -> str:
    files = ", ".join(f"`docs/results/{p}.json`" for p in FILES[name])
    return f"_Not measured at this revision: {files} missing._\n"


def render(text: str, results: Mapping[str, Mapping[str, Any]],
           extra: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """``text`` with every marked block replaced by its rendering from ``results`` (the main job's
    files) and ``extra`` (the other committed runs; default: read from docs/results)."""
    extra = load_extra() if extra is None else extra

    def sub(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in BLOCKS:
            raise SystemExit(f"render_readme: unknown block <!-- results:{name} -->; known: {', '.join(BLOCKS)}")
        if name in FILES:
            # the srinivas block shows the runs it has; the others need their one file
            have = [f for f in FILES[name] if f in extra]
            ok = bool(have) if name == "srinivas" else len(have) == len(FILES[name])
            return m.group(1) + (BLOCKS[name](extra) if ok else extra_placeholder(name)) + m.group(4)
        missing = [p for p in NEEDS[name] if p not in results]
        return m.group(1) + (placeholder(missing) if missing else BLOCKS[name](results)) + m.group(4)

    return _BLOCK.sub(sub, text)


def blocks(text: str) -> dict[str, str]:
    """The bodies of the marked blocks of ``text``, by name."""
    return {m["name"]: m["body"] for m in _BLOCK.finditer(text)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def import_run(run: Path, note: str | None, folder: Path = RESULTS) -> None:
    """Copy a main-job run's results.json files into ``folder``, with when and where they were written."""
    sources = {"main": run / "results.json", "synthetic": run / "synthetic" / "results.json",
               "blockmnist": run / "blockmnist" / "results.json"}
    found = {part: src for part, src in sources.items() if src.is_file()}
    if not found:
        raise SystemExit(f"render_readme: no results.json under {run}; run `gradaudit run --out {run}` first")
    folder.mkdir(parents=True, exist_ok=True)
    for part in sources.keys() - found.keys():  # never mix a new run with an older one's parts
        (folder / f"{part}.json").unlink(missing_ok=True)
    _copy(found, note, folder)


def import_study(spec: str, note: str | None, folder: Path = RESULTS) -> None:
    """``NAME=RUN``: copy RUN/results.json to ``folder``/NAME.json, with when and where it was written."""
    name, sep, run = spec.partition("=")
    if not sep or not re.fullmatch(r"[a-z0-9_-]+", name):
        raise SystemExit(f"render_readme: --import-study wants NAME=RUN_FOLDER (e.g. cifar10-cpu=runs/cifar10-cpu), "
                         f"got {spec!r}")
    src = Path(run) / "results.json"
    if not src.is_file():
        raise SystemExit(f"render_readme: no {src}; run the study first")
    folder.mkdir(parents=True, exist_ok=True)
    _copy({name: src}, note, folder)


def _copy(found: Mapping[str, Path], note: str | None, folder: Path) -> None:
    for part, src in found.items():
        record = json.loads(src.read_text(encoding="utf-8"))
        written = dt.datetime.fromtimestamp(src.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")
        record["copied"] = {"from": str(src), "results_written": written, "cpu": _cpu_name(),
                            "cores": os.cpu_count(), "load_average_at_copy": [round(x, 2) for x in os.getloadavg()],
                            **({"note": note} if note else {})}
        tmp = folder / f".{part}.json.tmp"
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        shutil.move(tmp, folder / f"{part}.json")


FIGURES = {  # docs/figures/<name> <- the run's figure (PNG) that the README shows
    "synthetic-fig5.png": "synthetic/figures/*the-paper-s-fig-5*.png",
    "blockmnist-gradients.png": "blockmnist/figures/fig01-blockmnist-*.png",
}


def import_figures(run: Path, folder: Path = ROOT / "docs" / "figures") -> list[str]:
    """Copy the run's figures that the README shows into docs/figures; returns what was copied."""
    copied = []
    for name, pattern in FIGURES.items():
        found = sorted(run.glob(pattern))
        if found:
            shutil.copyfile(found[0], folder / name)
            copied.append(name)
    return copied


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is not what the files render")
    ap.add_argument("--import", dest="run", type=Path, help="copy this main-job run's results.json files first")
    ap.add_argument("--import-study", dest="study", metavar="NAME=RUN",
                    help="copy RUN/results.json (any study's run) to docs/results/NAME.json first")
    ap.add_argument("--note", help="with --import/--import-study: a note on the measurement (e.g. the machine's load)")
    args = ap.parse_args(argv)
    if args.study is not None:
        import_study(args.study, args.note)
        print(f"copied {args.study.partition('=')[2]}/results.json into {RESULTS.relative_to(ROOT)}")
    if args.run is not None:
        import_run(args.run, args.note)
        print(f"copied results of {args.run} into {RESULTS.relative_to(ROOT)}; figures: "
              f"{', '.join(import_figures(args.run)) or 'none found'}")
    text = README.read_text(encoding="utf-8")
    new = render(text, load_results())
    if args.check:
        if new != text:
            print("README.md is out of date: run python scripts/render_readme.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
    print(f"README.md: {len(blocks(new))} blocks rendered from {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
