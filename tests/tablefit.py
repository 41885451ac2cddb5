"""Does every column of every table of a report show at a given window width?

A browser lays out a ``table-layout:auto`` table no narrower than the sum of its columns'
min-content widths (the longest word of each column plus the cell padding); anything wider
than the content box scrolls sideways. This estimates those widths from the report's own
CSS (font size, padding, the page's max-width) with conservative glyph widths, so a test
can check "every column visible at 1280 px" without a browser.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

GLYPH_EM = 0.6  # conservative mean advance of digits and Latin letters in system-ui (≈0.55 em)
HEADER_GLYPH_EM = 0.66  # bold header text
SORT_ARROW_EM = 1.3  # the " ↕" after a sortable header


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._style = False
        self.css = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "style":
            self._style = True
        elif tag == "table":
            self.tables.append({"class": a.get("class") or "", "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td") and self.tables:
            self._cell = []
            self.tables[-1]["rows"][-1].append({"tag": tag, "text": self._cell, "class": a.get("class") or ""})

    def handle_endtag(self, tag):
        if tag == "style":
            self._style = False
        elif tag in ("th", "td"):
            self._cell = None

    def handle_data(self, data):
        if self._style:
            self.css += data
        elif self._cell is not None:
            self._cell.append(data)


def _rule(css: str, selector: str) -> str:
    m = re.search(r"(?:^|})\s*" + re.escape(selector) + r"\{([^}]*)\}", css)
    assert m, f"the report's CSS has no rule for {selector!r}"
    return m.group(1)


def _px(value: str, root_px: float) -> float:
    m = re.fullmatch(r"([\d.]+)(px|rem|em)", value.strip())
    assert m, value
    return float(m.group(1)) * (1 if m.group(2) == "px" else root_px)


def _has_rule(css: str, selector: str) -> bool:
    return re.search(r"(?:^|})\s*" + re.escape(selector) + r"\{", css) is not None


def layout(css: str, window_px: int, dense: bool = False) -> dict[str, float]:
    """Font size, cell padding and content width (px) that the report's CSS gives at
    ``window_px`` (for a table of class "dense" with ``dense``), and which cells may break
    inside a word (``overflow-wrap:anywhere``: their min-content is one glyph)."""
    root = float(re.search(r"font:(\d+)px", _rule(css, "body")).group(1))
    main = _rule(css, "main")
    max_w = _px(re.search(r"max-width:([^;]+)", main).group(1), root)
    pad = [_px(v, root) for v in re.search(r"padding:([^;]+)", main).group(1).split()]
    side = pad[1] if len(pad) > 1 else pad[0]
    table = _rule(css, "table.dense" if dense else "table")
    font = _px(re.search(r"font-size:([^;]+)", table).group(1), root)
    cell = _rule(css, "table.dense th,table.dense td" if dense else "th,td")
    cpad = [_px(v, root) for v in re.search(r"padding:([^;]+)", cell).group(1).split()]
    anywhere = _has_rule(css, "th,td:not(.num)") and "anywhere" in _rule(css, "th,td:not(.num)")
    return {"font": font, "cell_pad": 2 * (cpad[1] if len(cpad) > 1 else cpad[0]),
            "content": min(window_px, max_w) - 2 * side, "break_text": anywhere}


def tables_and_css(html: str) -> tuple[list[dict], str]:
    p = _Tables()
    p.feed(html)
    return p.tables, p.css


def min_content_px(table: dict, geo: dict[str, float]) -> float:
    """Sum of the columns' min-content widths (longest word per column + padding)."""
    sortable = "sortable" in table["class"]
    widths: dict[int, float] = {}
    for row in table["rows"]:
        for i, cell in enumerate(row):
            words = "".join(cell["text"]).split() or [""]
            longest = max(len(w) for w in words)
            if geo["break_text"] and (cell["tag"] == "th" or "num" not in cell["class"].split()):
                longest = min(longest, 1)  # text may break anywhere; numbers never do
            if cell["tag"] == "th":
                w = longest * HEADER_GLYPH_EM * geo["font"] + (SORT_ARROW_EM * geo["font"] if sortable else 0)
            else:
                w = longest * GLYPH_EM * geo["font"]
            widths[i] = max(widths.get(i, 0.0), w + geo["cell_pad"])
    return sum(widths.values())


def overflowing_tables(html: str, window_px: int = 1280) -> list[str]:
    """The tables of ``html`` that would scroll sideways (or clip) at ``window_px``, as
    'first header cells: N px > content px'; [] when every column of every table shows."""
    tables, css = tables_and_css(html)
    no_wrap = [sel for sel in ("th,td", "thead th", "td.num") if "nowrap" in _rule(css, sel)]
    assert not no_wrap, f"cells must be allowed to wrap; white-space:nowrap in {no_wrap}"
    assert "width:100%" in _rule(css, "table"), "tables must take the page width and wrap their cells"
    bad = []
    for t in tables:
        geo = layout(css, window_px, dense="dense" in t["class"].split())
        need = min_content_px(t, geo)
        if need > geo["content"]:
            head = [" ".join("".join(c["text"]).split()) for c in (t["rows"][0] if t["rows"] else [])][:4]
            bad.append(f"{head}: {need:.0f} px > {geo['content']:.0f} px")
    return bad
