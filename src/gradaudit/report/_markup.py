"""HTML fragments for :mod:`gradaudit.report.html`: escaping, inline markup, tables, CSS, JS.

Everything that comes from the caller goes through :func:`escape` (or :func:`inline`, which
escapes first and only then turns ``**bold**`` and ```code``` into tags), so no string in a
config, label or caption can inject markup.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._io import to_jsonable
from .._validation import ParameterError, ParameterTypeError, check_choice, unknown_name

__all__ = ["CSS", "JS", "escape", "formatter", "human_header", "inline", "plain", "slugify", "table_html"]

MISSING = "n/a"


def escape(text: Any) -> str:
    """``str(text)`` with &, <, >, " and ' escaped (safe in text and quoted attributes)."""
    return html.escape(str(text), quote=True)


_BOLD = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
# Relative links only: no scheme (no ':'), so a report never points off the machine.
_LINK = re.compile(r"\[([^\]]+)\]\(([A-Za-z0-9_./#-]+)\)")


def inline(text: str) -> str:
    """Escape ``text``, then render ``**bold**``, ```code``` and ``[text](relative/path)``."""
    out = escape(text)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _LINK.sub(r'<a href="\2">\1</a>', out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


def slugify(text: str, max_len: int = 48) -> str:
    """A lowercase ASCII file/anchor name: 'DiffROAR (ℓ∞ 16/255)' -> 'diffroar-16-255'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_len:  # cut at a word boundary when there is one
        cut = slug[: max_len + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else slug[:max_len]
    return slug or "item"


def plain(value: Any) -> str:
    """Short human text for a value: numbers as given, lists joined, dicts as compact JSON."""
    value = to_jsonable(value)
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(plain(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return str(value)


# ---------------------------------------------------------------------------- tables

Formatter = Callable[[float], str]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _number(v: Any) -> float | None:
    """A finite float for numbers, 0-d tensors/arrays and (mean, std) pairs; else None."""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, tuple) and len(v) == 2 and all(_is_number(x) for x in v):
        v = v[0]
    return float(v) if _is_number(v) and math.isfinite(v) else None


def human_header(key: str) -> str:
    """A column header for a raw field name: 'test_accuracy' -> 'test accuracy',
    'train_seconds' -> 'train time (s)'; names without underscores are kept."""
    if "_" not in key:
        return key
    words = key.split("_")
    if words[-1] in ("seconds", "s") and len(words) > 1:
        return " ".join(words[:-1]) + " time (s)"
    return " ".join(words)


def _column_format(rows: Sequence[Mapping[str, Any]], col: str) -> Formatter | None:
    """One fixed number of decimals for a column of plain numbers (so 0.030 and 0.025 line
    up), chosen from its largest magnitude; None when the column holds only integers."""
    values = [v for v in (_number(r.get(col)) for r in rows if not isinstance(r.get(col), tuple)) if v is not None]
    if not values or all(isinstance(r.get(col), int) for r in rows if _number(r.get(col)) is not None):
        return None
    top = max(abs(v) for v in values)
    decimals = 3 if top < 10 else 2 if top < 100 else 1 if top < 1000 else 0
    return f"{{:,.{decimals}f}}".format


def _cell(value: Any, fmt: Formatter | None) -> tuple[str, str, bool]:
    """(text, sort key, numeric) of one table cell."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING, "", True
    if isinstance(value, tuple) and len(value) == 2 and all(_is_number(x) for x in value):
        f = fmt or "{:.3f}".format
        return f"{f(value[0])} ± {f(value[1])}", repr(float(value[0])), True
    if _is_number(value):
        text = fmt(value) if fmt else (str(value) if isinstance(value, int) else f"{value:.4g}")
        return text, repr(float(value)), True
    text = plain(value)
    return text, text, False


def formatter(fmt: Any, name: str, caller: str, *, example: str = "{:.3f}", where: str = "") -> Formatter:
    """``fmt`` as a number -> text function: a callable as given, a format string's ``format``.

    Raises:
        ParameterTypeError: ``fmt`` is neither a string nor a callable.
        ParameterError: ``fmt`` does not format a number (``where`` ends both messages).
    """
    if callable(fmt):
        return fmt
    need = f"The {name!r} parameter of {caller} must hold format strings such as {example!r} or callables"
    if not isinstance(fmt, str):
        raise ParameterTypeError(f"{need}. Got {fmt!r}{where}.")
    try:
        fmt.format(0.5)
    except (ValueError, IndexError, KeyError) as err:
        raise ParameterError(f"{need}. Got {fmt!r}{where}.") from err
    return fmt.format


def _formatters(
    formats: Mapping[str, Any] | None, columns: Sequence[str], caller: str
) -> dict[str, Formatter]:
    out: dict[str, Formatter] = {}
    for col, fmt in (formats or {}).items():
        if col not in columns:
            raise ParameterError(unknown_name("column in 'formats'", col, columns, caller=caller))
        out[col] = formatter(fmt, "formats", caller, where=f" for {col!r}")
    return out


def _best(
    rows: Sequence[Mapping[str, Any]],
    highlight: Mapping[str, str] | None,
    columns: Sequence[str],
    caller: str,
) -> dict[str, float]:
    """Column -> its best finite value, for the columns to highlight."""
    best = {}
    for col, how in (highlight or {}).items():
        if col not in columns:
            raise ParameterError(unknown_name("column in 'highlight'", col, columns, caller=caller))
        check_choice(how, f"highlight[{col!r}]", caller, ("max", "min"))
        vals = [v for v in (_number(r.get(col)) for r in rows) if v is not None]
        if vals:
            best[col] = max(vals) if how == "max" else min(vals)
    return best


DENSE_COLUMNS = 8  # wider tables get a smaller font and padding (class "dense") to fit the page


def table_html(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    headers: Mapping[str, str],
    formats: Mapping[str, Any] | None,
    highlight: Mapping[str, str] | None,
    sortable: bool,
    caption: str,
    caller: str,
) -> str:
    """A <table> with a caption; cells carry ``data-sort`` keys for the sorting script."""
    for key in headers:
        if key not in columns:
            raise ParameterError(unknown_name("column in 'headers'", key, columns, caller=caller))
    fmts = _formatters(formats, columns, caller)
    for col in columns:
        if col not in fmts and (auto := _column_format(rows, col)) is not None:
            fmts[col] = auto
    best = _best(rows, highlight, columns, caller)
    head = "".join(
        f'<th scope="col" data-col="{escape(c)}">{escape(headers.get(c, human_header(c)))}</th>' for c in columns
    )
    body = []
    for row in rows:
        cells = []
        for col in columns:
            text, key, numeric = (
                _cell(row.get(col), fmts.get(col)) if col in row else ("—", "", True)
            )
            classes = ["num"] if numeric else []
            if col in best and _number(row.get(col)) == best[col]:
                classes.append("best")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f'<td{cls} data-sort="{escape(key)}">{escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    classes = (["sortable"] if sortable else []) + (["dense"] if len(columns) > DENSE_COLUMNS else [])
    kind = f' class="{" ".join(classes)}"' if classes else ""
    hint = " Click a column header to sort." if sortable else ""
    return (
        f'<div class="table-wrap"><table{kind}><caption>{inline(caption)}'
        f'<span class="hint">{hint}</span></caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


# ---------------------------------------------------------------------------- assets

CSS = """
:root{--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--soft:#f6f8fa;--accent:#0072B2;--warn:#D55E00;--good:#009E73}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1020px;margin:0 auto;padding:28px 24px 64px}
header h1{font-size:1.75rem;line-height:1.25;margin:0 0 .25rem}
header .subtitle{color:var(--muted);margin:0 0 1rem;font-size:1.05rem}
h2{font-size:1.3rem;margin:2.2rem 0 .6rem;padding-bottom:.25rem;border-bottom:1px solid var(--line)}
h3{font-size:1.08rem;margin:1.6rem 0 .5rem}
p{margin:.55rem 0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em}
code{background:var(--soft);padding:.05em .3em;border-radius:4px}
nav.toc{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:.5rem 1rem;margin:1rem 0;font-size:.93rem}
nav.toc ol{margin:.2rem 0;padding-left:1.3rem}
nav.toc a{color:var(--accent);text-decoration:none}
figure{margin:1.2rem 0 1.6rem;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,caption{color:var(--muted);font-size:.92rem;text-align:left;margin:.4rem auto 0;max-width:48rem}
figcaption b,caption b{color:var(--fg)}
caption{caption-side:top;margin:0 0 .4rem}
.files{font-size:.85rem;margin-left:.4rem}
.files a{color:var(--accent)}
.table-wrap{overflow-x:auto;margin:1rem 0 1.4rem}
table{border-collapse:collapse;font-size:.9rem;font-variant-numeric:tabular-nums;width:100%;table-layout:auto}
th,td{padding:.3rem .65rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;overflow-wrap:break-word;word-wrap:break-word}
th,td:not(.num){overflow-wrap:anywhere}
thead th{background:var(--soft);border-bottom:2px solid var(--line);vertical-align:bottom}
td.num{text-align:right}
table.dense{font-size:.8rem}
table.dense th,table.dense td{padding:.25rem .4rem}
tbody tr:nth-child(even){background:#fbfcfd}
td.best{font-weight:650;background:#e7f5ef}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th::after{content:" \\2195";color:#aab}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2";color:var(--fg)}
table.sortable th[aria-sort=descending]::after{content:" \\25BC";color:var(--fg)}
.hint{font-size:.8rem;color:#8c959f;margin-left:.4rem}
table.kv th{background:none;font-weight:600;width:14rem;border-bottom:1px solid var(--line)}
details{border:1px solid var(--line);border-radius:6px;margin:1rem 0;background:#fff}
details summary{cursor:pointer;padding:.5rem .8rem;font-weight:600;background:var(--soft);border-radius:6px}
details pre{margin:0;padding:.8rem 1rem;overflow:auto;max-height:36rem}
.note{border-left:4px solid var(--accent);background:#eef6fb;padding:.55rem .9rem;margin:1rem 0;border-radius:0 6px 6px 0}
.note.warning{border-color:var(--warn);background:#fdf1ea}
.note.finding{border-color:var(--good);background:#ebf7f2}
.badge{display:inline-block;font-size:.78rem;padding:0 .45rem;border-radius:9px;background:var(--warn);color:#fff;margin-left:.4rem}
footer{margin-top:3rem;color:#8c959f;font-size:.82rem}
@media print{main{max-width:none;padding:0}figure,table,details{page-break-inside:avoid}nav.toc,.hint{display:none}details>*{display:block}}
"""

JS = """
(function(){
function key(row,i){var c=row.cells[i];var v=c.getAttribute("data-sort");return v===null?c.textContent:v;}
function sortBy(table,i,th){
 var asc=th.getAttribute("aria-sort")!=="ascending";
 Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute("aria-sort");});
 th.setAttribute("aria-sort",asc?"ascending":"descending");
 var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
 var numeric=rows.every(function(r){var k=key(r,i);return k===""||isFinite(parseFloat(k));});
 rows.sort(function(a,b){
  var x=key(a,i),y=key(b,i);
  if(x===""||y===""){return (x==="")-(y==="");}
  var d=numeric?parseFloat(x)-parseFloat(y):x.localeCompare(y,undefined,{numeric:true});
  return asc?d:-d;});
 rows.forEach(function(r){body.appendChild(r);});
}
Array.prototype.forEach.call(document.querySelectorAll("table.sortable"),function(table){
 Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
  th.tabIndex=0;
  th.addEventListener("click",function(){sortBy(table,i,th);});
  th.addEventListener("keydown",function(e){if(e.key==="Enter"||e.key===" "){e.preventDefault();sortBy(table,i,th);}});
 });
});
})();
"""
