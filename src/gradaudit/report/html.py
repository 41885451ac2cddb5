"""One self-contained HTML report: sections, text, figures, tables, config and provenance.

The file needs nothing else: CSS and the table-sorting script are inline, figures are
base64 PNG ``data:`` URIs, and a Content-Security-Policy forbids every network fetch. All
caller text is escaped. ``write`` renders everything in memory first and then replaces the
file atomically, so a failure never leaves a partial report.

Example::

    r = Report("Fashion-MNIST DiffROAR", subtitle="input gradients, 3 seeds")
    r.section("Protocol")
    r.key_values({"target class": "true label", "fill": "zero"}, "Protocol choices.")
    r.section("Results")
    r.figure(plots.diffroar_curves(curves), "DiffROAR of input gradients vs k (mean ± std).")
    r.table(rows, caption="DiffROAR per model and k.", formats={"k=0.05": "{:.3f}"})
    r.config(cfg)
    r.provenance()
    r.write(out / "report.html", save_figures=True)   # + out/figures/<slug>.png|pdf
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from .. import __version__
from .._io import to_jsonable, write_bytes, write_text
from .._provenance import provenance as current_provenance
from .._validation import ParameterError, ParameterTypeError, check_choice, check_int
from ._figure import figure_bytes
from ._markup import CSS, JS, escape, inline, plain, slugify, table_html

__all__ = ["Report"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SCREEN_PX_PER_INCH = 144  # figures use 8-pt fonts: show them at 1.5x print size on screen
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class _FigureBlock:
    number: int
    slug: str
    caption: str
    png: bytes
    width_px: int
    figure: Figure | None  # kept for the PDF; None for PNG bytes given by the caller


def _text(value: Any, name: str, caller: str, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise ParameterTypeError(
            f"The {name!r} parameter of {caller} must be a string. Got {value!r}."
        )
    if required and not value.strip():
        raise ParameterError(
            f"The {name!r} parameter of {caller} must be a non-empty string. Got {value!r}."
        )
    return value


class Report:
    """Builder of one self-contained HTML report. Blocks appear in the order they are added.

    Args:
        title: the page title (h1).
        subtitle: one line under the title, or None.
    """

    def __init__(self, title: str, subtitle: str | None = None) -> None:
        self.title = _text(title, "title", "Report()")
        self.subtitle = None if subtitle is None else _text(subtitle, "subtitle", "Report()")
        self._blocks: list[str | _FigureBlock] = []
        self._sections: list[tuple[str, str, int]] = []  # (anchor, title, level)
        self._slugs: set[str] = set()
        self._tables = 0

    # ------------------------------------------------------------------ text blocks
    def _unique(self, base: str) -> str:
        slug, n = base, 2
        while slug in self._slugs:
            slug, n = f"{base}-{n}", n + 1
        self._slugs.add(slug)
        return slug

    def section(self, title: str, text: str | None = None, *, level: int = 2) -> None:
        """Start a section (h2, or h3 with ``level=3``), optionally with a first paragraph."""
        _text(title, "title", "Report.section()")
        check_int(level, "level", "Report.section()", low=2, high=3)
        anchor = self._unique("sec-" + slugify(title))
        self._sections.append((anchor, title, level))
        self._blocks.append(f'<h{level} id="{anchor}">{escape(title)}</h{level}>')
        if text is not None:
            self.paragraph(text)

    def paragraph(self, text: str) -> None:
        """A paragraph of escaped text; ``**bold**`` and ```code``` are rendered."""
        self._blocks.append(f"<p>{inline(_text(text, 'text', 'Report.paragraph()'))}</p>")

    def bullets(self, items: Sequence[str]) -> None:
        """A bulleted list (each item like a paragraph)."""
        if isinstance(items, str) or not isinstance(items, Sequence) or not items:
            raise ParameterError(
                f"The 'items' parameter of Report.bullets() must be a non-empty list of strings. Got {items!r}."
            )
        lis = "".join(f"<li>{inline(_text(t, 'items', 'Report.bullets()'))}</li>" for t in items)
        self._blocks.append(f"<ul>{lis}</ul>")

    def note(self, text: str, kind: str = "info") -> None:
        """A highlighted box: "info", "finding" (a result in one sentence) or "warning"."""
        check_choice(kind, "kind", "Report.note()", ("info", "finding", "warning"))
        self._blocks.append(
            f'<div class="note {kind}">{inline(_text(text, "text", "Report.note()"))}</div>'
        )

    # ------------------------------------------------------------------ figures and tables
    def figure(self, fig: Figure | bytes, caption: str, *, name: str | None = None) -> None:
        """Embed a figure (a matplotlib Figure, or PNG bytes) with its required caption.

        The Figure is rendered to PNG now (later changes to it do not show in the page); it
        is kept to write a PDF when ``write(..., save_figures=True)``. PNG bytes are saved
        as PNG only.

        Args:
            fig: a matplotlib Figure or PNG file bytes.
            caption: one sentence saying what the figure shows and how to read it.
            name: file stem for the saved figure (default: from the number and caption).
        """
        caller = "Report.figure()"
        _text(caption, "caption", caller)
        number = sum(isinstance(b, _FigureBlock) for b in self._blocks) + 1
        slug = self._unique(
            slugify(_text(name, "name", caller))
            if name
            else f"fig{number:02d}-{slugify(caption, 40)}"
        )
        if isinstance(fig, Figure):
            width = round(fig.get_figwidth() * _SCREEN_PX_PER_INCH)
            block = _FigureBlock(
                number, slug, caption, figure_bytes(fig, "png", dpi=200), width, fig
            )
        elif isinstance(fig, bytes | bytearray) and bytes(fig[:8]) == _PNG_MAGIC and len(fig) >= 24:
            width = struct.unpack(">I", bytes(fig[16:20]))[0]  # IHDR width
            block = _FigureBlock(number, slug, caption, bytes(fig), width, None)
        else:
            raise ParameterTypeError(
                f"The 'fig' parameter of {caller} must be a matplotlib Figure or PNG bytes. Got {type(fig).__name__}."
            )
        self._blocks.append(block)

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        caption: str,
        columns: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        formats: Mapping[str, Any] | None = None,
        highlight: Mapping[str, str] | None = None,
        sortable: bool = True,
    ) -> None:
        """A table of one dict per row, sortable by clicking a header.

        Cells: numbers (formatted with ``formats[col]``, e.g. "{:.3f}", or a callable),
        ``(mean, std)`` tuples shown as "m ± s" and sorted by m, strings, None/NaN as "n/a".

        Args:
            rows: one mapping per row.
            caption: what the table shows (required).
            columns: column keys in order (default: every key, in first-seen order).
            headers: column key -> header text (default: the key).
            formats: column key -> format string or callable for numbers.
            highlight: column key -> "max" or "min": the best cell of the column is bold.
            sortable: add the click-to-sort script hooks.
        """
        caller = "Report.table()"
        _text(caption, "caption", caller)
        if (
            isinstance(rows, Mapping | str)
            or not isinstance(rows, Sequence)
            or not all(isinstance(r, Mapping) for r in rows)
        ):
            raise ParameterTypeError(
                f"The 'rows' parameter of {caller} must be a list of dicts (one per row). Got {type(rows).__name__}."
            )
        cols = (
            list(columns)
            if columns is not None
            else list(dict.fromkeys(k for r in rows for k in r))
        )
        if not cols:
            raise ParameterError(
                f"The 'columns' of {caller} must not be empty: give rows with keys or 'columns'. Got {cols!r}."
            )
        self._tables += 1
        self._blocks.append(
            table_html(
                rows,
                [str(c) for c in cols],
                dict(headers or {}),
                formats,
                highlight,
                sortable,
                caption,
                caller,
            )
        )

    def key_values(self, items: Mapping[str, Any], caption: str) -> None:
        """A two-column table of names and values (e.g. the protocol choices)."""
        caller = "Report.key_values()"
        _text(caption, "caption", caller)
        if not isinstance(items, Mapping) or not items:
            raise ParameterError(
                f"The 'items' parameter of {caller} must be a non-empty dict. Got {items!r}."
            )
        body = "".join(
            f'<tr><th scope="row">{escape(k)}</th><td>{escape(plain(v))}</td></tr>'
            for k, v in items.items()
        )
        self._blocks.append(
            f'<div class="table-wrap"><table class="kv"><caption>{inline(caption)}</caption>'
            f"<tbody>{body}</tbody></table></div>"
        )

    def config(self, config: Any, title: str = "Configuration") -> None:
        """The run's config as collapsible YAML, with a link that downloads it."""
        text = yaml.safe_dump(
            to_jsonable(config), sort_keys=False, allow_unicode=True, default_flow_style=False
        )
        data = base64.b64encode(text.encode("utf-8")).decode("ascii")
        self._blocks.append(
            f"<details><summary>{escape(_text(title, 'title', 'Report.config()'))}</summary>"
            f'<pre><code>{escape(text)}</code></pre><p class="files">'
            f'<a download="config.yaml" href="data:text/yaml;base64,{data}">download config.yaml</a></p></details>'
        )

    def provenance(self, prov: Mapping[str, Any] | None = None, *, date: str | None = None) -> None:
        """What produced the results: git revision (+ dirty flag), date, library versions.

        Args:
            prov: a :func:`gradaudit._provenance.provenance` dict (default: the current one).
            date: when the results were produced (default: ``prov["date"]`` or now, UTC).
        """
        prov = dict(current_provenance() if prov is None else prov)
        git = dict(prov.pop("git", None) or {})
        versions = dict(prov.pop("versions", None) or {})
        when = (
            date or prov.pop("date", None) or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        )
        commit = git.get("commit")
        dirty = ' <span class="badge">uncommitted changes</span>' if git.get("dirty") else ""
        rows = [
            (
                "git revision",
                f"<code>{escape(commit or 'unknown (not a git checkout)')}</code>{dirty}",
            ),
            ("date", escape(when)),
        ]
        rows += [(str(k), escape(plain(v))) for k, v in versions.items()]
        rows += [(str(k), escape(plain(v))) for k, v in prov.items()]
        body = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{v}</td></tr>' for k, v in rows)
        self._blocks.append(
            '<h2 id="sec-provenance">Provenance</h2><div class="table-wrap"><table class="kv">'
            "<caption>The code and library versions that produced this report.</caption>"
            f"<tbody>{body}</tbody></table></div>"
        )

    # ------------------------------------------------------------------ output
    def _figure_html(self, b: _FigureBlock, links: Sequence[str]) -> str:
        data = base64.b64encode(b.png).decode("ascii")
        files = " ".join(f'<a href="figures/{escape(b.slug)}.{f}">{f.upper()}</a>' for f in links)
        files = f'<span class="files">[{files}]</span>' if files else ""
        return (
            f'<figure id="{escape(b.slug)}"><img src="data:image/png;base64,{data}" '
            f'alt="{escape(b.caption)}" style="width:{b.width_px}px">'
            f"<figcaption><b>Figure {b.number}.</b> {inline(b.caption)}{files}</figcaption></figure>"
        )

    def to_html(self, *, figure_links: Sequence[str] = ()) -> str:
        """The whole page as a string (``figure_links``: saved formats to link under captions)."""
        parts = []
        for b in self._blocks:
            if isinstance(b, _FigureBlock):
                parts.append(
                    self._figure_html(
                        b,
                        figure_links if b.figure is not None else ("png",) if figure_links else (),
                    )
                )
            else:
                parts.append(b)
        toc = ""
        if len(self._sections) >= 2:
            items = "".join(
                f'<li><a href="#{a}">{escape(t)}</a></li>'
                for a, t, lvl in self._sections
                if lvl == 2
            )
            toc = f'<nav class="toc"><b>Contents</b><ol>{items}</ol></nav>'
        sub = f'<p class="subtitle">{inline(self.subtitle)}</p>' if self.subtitle else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(self.title)}</title><style>{CSS}</style></head>\n<body><main>"
            f"<header><h1>{escape(self.title)}</h1>{sub}</header>{toc}\n"
            + "\n".join(parts)
            + f"\n<footer>Generated by gradaudit {escape(__version__)}.</footer></main>"
            f"<script>{JS}</script></body></html>\n"
        )

    def write(
        self,
        path: str | os.PathLike[str],
        *,
        save_figures: bool = False,
        formats: Sequence[str] = ("png", "pdf"),
        dpi: int = 300,
    ) -> Path:
        """Write the report to ``path`` atomically; returns the path.

        With ``save_figures``, each figure is also written as ``figures/<slug>.<fmt>`` next
        to the report (PNG-bytes figures as PNG only), and linked under its caption.
        Everything is rendered before the first byte is written.
        """
        caller = "Report.write()"
        path = Path(path)
        if path.is_dir():
            raise ParameterError(
                f"The 'path' parameter of {caller} must be a file path, not a folder. Got {str(path)!r}."
            )
        for fmt in formats:
            check_choice(fmt, "formats", caller, ("png", "pdf", "svg"))
        links = tuple(formats) if save_figures else ()
        files: dict[Path, bytes] = {}
        for b in self._blocks:
            if save_figures and isinstance(b, _FigureBlock):
                for fmt in links if b.figure is not None else ("png",):
                    blob = b.png if b.figure is None else figure_bytes(b.figure, fmt, dpi=dpi)
                    files[path.parent / "figures" / f"{b.slug}.{fmt}"] = blob
        page = self.to_html(figure_links=links)
        for target, blob in files.items():
            write_bytes(target, blob)
        write_text(path, page)
        return path
