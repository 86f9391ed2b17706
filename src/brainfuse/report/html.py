"""HTML building blocks of the report: the page frame, tables, embedded images and links.

Every piece of text that comes from data or configuration is escaped; images are embedded as
data URIs and links are relative, so that a page is self-contained.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from urllib.parse import quote

from brainfuse import __version__
from brainfuse.core.html import format_cell, html_table

__all__ = [
    "METRIC_NAMES",
    "STYLE",
    "format_cell",
    "html_img",
    "html_page",
    "html_table",
    "p_text",
    "png_uri",
    "relative_href",
]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1240px;
margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}
h2{border-bottom:2px solid #e3e7ef;padding-bottom:.2em;margin-top:1.6em}
h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d5dae4;padding:.3em .6em;text-align:right}
th{background:#f1f4f9}td:first-child,th:first-child{text-align:left}
td.text{text-align:left;max-width:22em}
table.results{font-size:.85em}table.results td{white-space:nowrap}
table.results td.text{white-space:normal}
.muted{color:#667085}.excluded{color:#b42318}.baseline{background:#fafbfd}
.best{background:#eef4ff;font-weight:600}
.ok{color:#067647;font-weight:600}.warn{color:#b54708;font-weight:600}
.callout{border-left:4px solid #3b5bdb;background:#f5f7ff;padding:.5em 1em;margin:1em 0}
figure{margin:1em 0}figcaption{color:#667085;font-size:.9em}
img{max-width:100%;height:auto}
nav{display:flex;flex-wrap:wrap;gap:.2em 1.1em}
"""

METRIC_NAMES = ("balanced_accuracy", "auc", "accuracy", "sensitivity", "specificity", "f1")


def html_img(src: str, alt: str, caption: str = "") -> str:
    """A ``<figure>`` of image ``src`` (a data URI) with its caption."""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img alt='{escape(alt, quote=True)}' src='{src}'>{cap}</figure>"


def png_uri(path: str | Path | None) -> str | None:
    """The PNG at ``path`` as a data URI, or None when there is none."""
    if path and Path(path).exists():
        return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()
    return None


def relative_href(target: str | Path, page_dir: Path) -> str:
    """A relative, URL-quoted link from ``page_dir`` to ``target``."""
    import os

    rel = os.path.relpath(Path(target).resolve(), page_dir.resolve())
    return quote(Path(rel).as_posix())


def html_page(title: str, body: Sequence[str]) -> str:
    """A complete, self-contained HTML page of ``body`` (style inline, version in the footer)."""
    return "\n".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{escape(title)}</title>",
            f"<style>{STYLE}</style></head><body>",
            *body,
            f"<p class='muted'>brainfuse {escape(__version__)}</p>",
            "</body></html>",
        ]
    )


def p_text(p: float | None) -> str:
    """``p = 0.013``, ``p < 0.0001`` or ``p = n/a``."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p = n/a"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 0.0001"
