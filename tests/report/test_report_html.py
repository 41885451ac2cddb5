"""The HTML report: well-formed, self-contained, escaped, captioned, sortable, written
atomically (no partial file on error), with figures saved as PNG/PDF on request."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import gradaudit._io
from gradaudit import ParameterError, ParameterTypeError
from gradaudit.report import Report, figure_bytes
from gradaudit.report import html as report_html

EVIL = "<script>alert('x')</script>"
PROV = {
    "versions": {"torch": "2.13.0", "numpy": "2.3.5"},
    "git": {"commit": "abc123", "dirty": True},
}
VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr"}


class _Checker(HTMLParser):
    """Records tags, attributes and text; fails on unbalanced or unclosed elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
        self.in_script = tag == "script"

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        self.in_script = False

    def handle_data(self, data):
        if not self.in_script:
            self.text.append(data)


def _parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == [], (checker.errors, checker.stack)
    return checker


def _small_figure() -> Figure:
    fig = Figure(figsize=(2.0, 1.5))
    fig.add_subplot().plot([0, 1], [0, 1])
    return fig


def _report() -> Report:
    r = Report(f"Study {EVIL}", subtitle="input gradients, **3 seeds**")
    r.section("Protocol", "The paper's `zero` fill, <i>escaped</i>.")
    r.key_values(
        {"target class": "true label", "seeds": [0, 1, 2], "note": EVIL}, "Protocol choices."
    )
    r.section("Results")
    r.figure(_small_figure(), "DiffROAR of input gradients vs k (mean ± std over 3 seeds).")
    r.figure(
        figure_bytes(_small_figure(), "png", dpi=40), "A figure given as PNG bytes.", name="raw"
    )
    r.table(
        [
            {"model": "standard", "diffroar": (0.05, 0.01), "acc": 0.89, "n": 3},
            {"model": EVIL, "diffroar": (0.15, 0.02), "acc": 0.85, "n": 3},
            {"model": "linear", "diffroar": float("nan"), "acc": None},
        ],
        caption="DiffROAR at k = 0.05 per model.",
        formats={"acc": "{:.1%}"},
        headers={"acc": "test accuracy"},
        highlight={"diffroar": "max", "acc": "min"},
    )
    r.bullets(["first **point**", "second"])
    r.note("The ordering survives once leakage is removed.", "finding")
    r.config({"study": "fmnist", "evil": EVIL, "levels": [0.05, 0.1]})
    r.provenance(PROV, date="2026-01-01T00:00:00+00:00")
    return r


@pytest.fixture(scope="module")
def page() -> str:
    return _report().to_html()


def test_page_is_balanced_and_self_contained(page):
    checker = _parse(page)
    tags = [t for t, _ in checker.starts]
    assert tags[0] == "html" and tags.count("script") == 1 and tags.count("style") == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "@import" not in page and "url(" not in page
    imgs = [a for t, a in checker.starts if t == "img"]
    assert len(imgs) == 2
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(a["src"].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
        assert a["alt"]
    csp = [
        a
        for t, a in checker.starts
        if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_captions_numbering_and_toc(page):
    text = re.sub(r"\s+", " ", "".join(_parse(page).text))
    assert "Figure 1. DiffROAR of input gradients vs k (mean ± std over 3 seeds)." in text
    assert "Figure 2. A figure given as PNG bytes." in text
    assert "DiffROAR at k = 0.05 per model." in text and "Protocol choices." in text
    assert page.count("<figcaption>") == 2 and page.count("<caption>") == 3  # table, kv, provenance
    assert '<a href="#sec-protocol">Protocol</a>' in page and '<h2 id="sec-results">' in page


def test_everything_from_the_caller_is_escaped(page):
    assert "<script>alert" not in page
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    # <title>, <h1>, key-value, table cell, table sort key, YAML config
    assert page.count(escaped) == 6
    assert escaped in page.split("<details>")[1]
    assert "<strong>3 seeds</strong>" in page and "<code>zero</code>" in page
    assert "&lt;i&gt;escaped&lt;/i&gt;" in page and "<i>" not in page


def test_table_cells_sort_keys_and_highlight(page):
    checker = _parse(page)
    cells = [a for t, a in checker.starts if t == "td" and "data-sort" in a]
    keys = [c["data-sort"] for c in cells]
    assert keys[:4] == ["standard", "0.05", "0.89", "3.0"]
    assert keys[5:8] == ["0.15", "0.85", "3.0"]
    assert keys[8:] == ["linear", "", "", ""]  # NaN, None and a missing key sort last
    assert [c.get("class") for c in cells[:3]] == [None, "num", "num"]
    assert (
        cells[5]["class"] == "num best" and cells[6]["class"] == "num best"
    )  # max diffroar, min acc
    text = "".join(checker.text)
    assert "0.050 ± 0.010" in text and "89.0%" in text and "n/a" in text
    assert next(a.get("class") for t, a in checker.starts if t == "table") == "kv"
    assert ("table", {"class": "sortable"}) in checker.starts
    assert '<th scope="col" data-col="acc">test accuracy</th>' in page


def test_provenance_config_and_determinism(page):
    assert (
        "abc123" in page and "uncommitted changes" in page and "2026-01-01T00:00:00+00:00" in page
    )
    assert '<th scope="row">torch</th><td>2.13.0</td>' in page
    m = re.search(r'href="data:text/yaml;base64,([^"]+)"', page)
    yaml_text = base64.b64decode(m.group(1)).decode()
    assert "levels:\n- 0.05\n- 0.1\n" in yaml_text and EVIL in yaml_text
    assert _report().to_html() == page  # same inputs, same bytes


def test_default_provenance_is_current():
    r = Report("t")
    r.provenance()
    page = r.to_html()
    assert "gradaudit" in page and "torch" in page and "git revision" in page


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r: r.figure(_small_figure(), "  "), ParameterError, "'caption'.*non-empty"),
        (lambda r: r.figure(b"GIF89a....", "c"), ParameterTypeError, "Figure or PNG bytes"),
        (
            lambda r: r.table([{"a": 1}], caption="c", formats={"b": "{:.1f}"}),
            ParameterError,
            "'b'.*Valid: a",
        ),
        (
            lambda r: r.table([{"a": 1}], caption="c", formats={"a": "{:.1q}"}),
            ParameterError,
            "format strings",
        ),
        (
            lambda r: r.table([{"a": 1}], caption="c", highlight={"a": "best"}),
            ParameterError,
            "'max', 'min'",
        ),
        (lambda r: r.table({"a": 1}, caption="c"), ParameterTypeError, "list of dicts"),
        (lambda r: r.table([], caption="c"), ParameterError, "must not be empty"),
        (
            lambda r: r.table([{"a": 1}], caption="c", headers={"x": "X"}),
            ParameterError,
            "'headers'",
        ),
        (lambda r: r.key_values({}, "c"), ParameterError, "non-empty dict"),
        (lambda r: r.note("x", kind="danger"), ParameterError, "'info', 'finding', 'warning'"),
        (lambda r: r.section("x", level=1), ParameterError, r"'level'.*\[2, 3\]"),
    ],
)
def test_bad_input_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(Report("t"))


def test_write_saves_figures_and_links_them(tmp_path):
    out = _report().write(tmp_path / "run" / "report.html", save_figures=True)
    assert out == tmp_path / "run" / "report.html"
    files = sorted(p.name for p in (tmp_path / "run" / "figures").iterdir())
    slug = "fig01-diffroar-of-input-gradients-vs-k-mean"
    assert files == sorted([f"{slug}.png", f"{slug}.pdf", "raw.png"])
    figs = tmp_path / "run" / "figures"
    assert (figs / f"{slug}.pdf").read_bytes().startswith(b"%PDF")
    assert (figs / "raw.png").read_bytes().startswith(b"\x89PNG")
    page = out.read_text(encoding="utf-8")
    _parse(page)
    assert f'href="figures/{slug}.pdf"' in page and 'href="figures/raw.png"' in page
    assert 'href="figures/raw.pdf"' not in page
    assert not list(out.parent.glob(".*.tmp"))


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("previous report", encoding="utf-8")

    def boom(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    r = _report()
    monkeypatch.setattr(report_html, "figure_bytes", boom)  # fails while rendering the PDFs
    with pytest.raises(RuntimeError, match="renderer crashed"):
        r.write(path, save_figures=True)
    assert path.read_text(encoding="utf-8") == "previous report"
    assert not (tmp_path / "figures").exists()
    monkeypatch.undo()

    monkeypatch.setattr(gradaudit._io.os, "replace", boom)  # fails at the final rename
    with pytest.raises(RuntimeError):
        r.write(path)
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == "previous report"
    assert sorted(os.listdir(tmp_path)) == ["report.html"]  # the temporary file is gone
    with pytest.raises(ParameterError, match="not a folder"):
        r.write(tmp_path)


_SORT_HARNESS = r"""
const spec = JSON.parse(process.argv[1]);
function el(attrs){return {attrs:Object.assign({},attrs),listeners:{},
  getAttribute(k){return k in this.attrs?this.attrs[k]:null;},
  setAttribute(k,v){this.attrs[k]=String(v);}, removeAttribute(k){delete this.attrs[k];},
  addEventListener(t,f){this.listeners[t]=f;}};}
const ths = spec.rows[0].map(() => el({}));
const rows = spec.rows.map((r, id) => ({id, cells: r.map(k => Object.assign(el({"data-sort": k}), {textContent: k}))}));
const body = {rows: rows.slice(), appendChild(r){this.rows.splice(this.rows.indexOf(r), 1); this.rows.push(r);}};
const table = {tHead: {rows: [{cells: ths}]}, tBodies: [body]};
global.document = {querySelectorAll: () => [table]};
eval(spec.script);
const out = [];
for (const i of spec.clicks) { ths[i].listeners.click(); out.push([body.rows.map(r => r.id), ths[i].attrs["aria-sort"]]); }
console.log(JSON.stringify(out));
"""


def test_sort_script_orders_numbers_strings_and_puts_missing_last():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the inline sorting script cannot be executed")
    r = Report("t")
    r.table(
        [
            {"name": "b10", "v": 0.3},
            {"name": "a", "v": float("nan")},
            {"name": "b9", "v": 0.1},
            {"name": "c", "v": (2.0, 0.5)},
        ],
        caption="c",
    )
    page = r.to_html()
    checker = _parse(page)
    keys = [a["data-sort"] for t, a in checker.starts if t == "td"]
    rows = [keys[i : i + 2] for i in range(0, len(keys), 2)]
    script = page.split("<script>")[1].split("</script>")[0]
    spec = json.dumps({"rows": rows, "script": script, "clicks": [1, 1, 0]})
    out = subprocess.run(
        [node, "-e", _SORT_HARNESS, spec], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == [
        [[2, 0, 3, 1], "ascending"],  # 0.1, 0.3, 2.0, then NaN
        [[3, 0, 2, 1], "descending"],  # NaN stays last
        [[1, 2, 0, 3], "ascending"],  # natural order: a, b9, b10, c
    ]


def test_numpy_and_tensor_scalars_in_tables():
    import torch

    r = Report("t")
    r.table([{"a": np.float32(0.5), "b": torch.tensor(2), "c": np.int64(4)}], caption="c")
    keys = [a["data-sort"] for t, a in _parse(r.to_html()).starts if t == "td"]
    assert keys == ["0.5", "2.0", "4.0"]


def test_report_paths_accept_strings(tmp_path):
    r = Report("t")
    r.paragraph("hello")
    out = r.write(str(tmp_path / "a.html"))
    assert isinstance(out, Path) and "hello" in out.read_text(encoding="utf-8")


def test_inline_links_are_relative_only():
    from gradaudit.report._markup import inline

    out = inline("see [the report](synthetic/report.html) and [x](http://evil.example) <b>")
    assert '<a href="synthetic/report.html">the report</a>' in out
    assert "http://evil.example" in out and 'href="http' not in out
    assert "&lt;b&gt;" in out


# ---------------------------------------------------------------------------- tables at 1280 px (issue 13)

def _curve(values):
    return {"mean": list(values), "std": [0.0123] * len(values)}


def _diffroar_result(levels, with_random):
    n = len(levels)
    res = {"levels": levels, "curves": {"attribution": {"top": _curve([0.9991] * n), "bottom": _curve([0.9312] * n),
                                                        "diffroar": _curve([0.0761] * n)}},
           "leakage": {"attribution": {"mask_only": {"top": _curve([0.9981] * n)},
                                       "mask_only_diffroar": _curve([-0.0123] * n),
                                       "diffroar_minus_mask_only": _curve([0.0884] * n),
                                       "leak_free_margin": {"top": _curve([0.0011] * n)}}}}
    if with_random:
        res["curves"]["random"] = {"diffroar": _curve([0.0012] * n)}
    return res


def _blockmnist_like_report() -> str:
    from gradaudit.experiments import reporting

    r = Report("BlockMNIST")
    levels = [0.05, 0.1, 0.2, 0.5, 1.0]
    by_model = {"MLP": _diffroar_result(levels, True), "MLP ℓ2 ε=2": _diffroar_result(levels, False)}
    reporting.add_diffroar(r, by_model, "BlockMNIST")
    ks = [2.5, 5, 10, 15, 20, 25, 30]
    leak = [{"dataset": d, "model": m, "topk_null_mean": [0.4312] * 7, "topk_null_std": [0.1234] * 7,
             "mass_null_mean": 0.4801, "mass_null_std": 0.0312, "null_area_share": 0.5}
            for d in ("blockmnist", "blockmnist-top") for m in ("MLP", "MLP ℓ2 ε=2", "ResNet9")]
    reporting.add_leakage_tables(r, leak, ks)
    road = {lab: {"morf": {"x": [0.1, 0.5], "accuracy": [0.6, 0.5], "accuracy_area": 0.4123},
                  "lerf": {"x": [0.1, 0.5], "accuracy": [0.9, 0.8], "accuracy_area": 0.8123}, "score": 0.4}
            for lab in by_model}
    reporting.add_road(r, road)
    return r.to_html()


def test_key_tables_show_every_column_at_1280px():
    from tablefit import overflowing_tables, tables_and_css

    html = _blockmnist_like_report()
    tables, _ = tables_and_css(html)
    # DiffROAR (+ mask-only control), two leakage tables, ROAD
    assert len(tables) == 5 and max(len(t["rows"][0]) for t in tables) <= 9
    assert overflowing_tables(html, 1280) == []
    heads = [" ".join("".join(c["text"]).split()) for t in tables for c in t["rows"][0]]
    assert "k (pixels kept)" in heads and "top-k accuracy" in heads and "share of the mass" in heads
    assert "5%" in html and "43.1 ± 12.3" in html  # levels and leakage shares in percent


def test_table_fit_check_catches_a_table_too_wide_for_the_page():
    from tablefit import overflowing_tables

    r = Report("Wide")  # numbers never break inside, so 24 columns of them cannot fit
    r.table([{f"column {i}": (0.12345, 0.01234) for i in range(24)}], caption="24 mean ± std columns.",
            formats={f"column {i}": "{:.5f}" for i in range(24)})
    assert len(overflowing_tables(r.to_html(), 1280)) == 1
    leaderboard = Report("Leaderboard")  # >8 columns: the smaller "dense" style; long text may break
    metrics = [f"metric_{i}" for i in range(8)]
    leaderboard.table([{"dataset": "blockmnist-top", "method": "pattern-attribution", **dict.fromkeys(metrics, 0.4481),
                        "note": "n/a: PatternAttribution needs a Linear/Conv/ReLU/MaxPool net"}], caption="Cells.")
    html = leaderboard.to_html()
    assert 'class="sortable dense"' in html and overflowing_tables(html, 1280) == []
    narrow = Report("Narrow")
    narrow.table([{"a": 1.0, "b": 2.0}], caption="Two columns.")
    assert overflowing_tables(narrow.to_html(), 1280) == []


def test_raw_field_names_get_human_headers_and_one_rounding_per_column():
    r = Report("Headers")
    r.table([{"model": "a", "test_accuracy": 0.03, "train_seconds": 12.5, "n": 3},
             {"model": "b", "test_accuracy": 0.025, "train_seconds": 3.25, "n": 10}], caption="Two rows.")
    html = r.to_html()
    assert ">test accuracy</th>" in html and ">train time (s)</th>" in html and "test_accuracy<" not in html
    assert ">0.030</td>" in html and ">0.025</td>" in html  # not 0.03 next to 0.025
    assert ">12.50</td>" in html and ">3.25</td>" in html and ">10</td>" in html  # 2 decimals from 10 up
