"""Small HTML building blocks shared by report sections (tables of numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np
import pandas as pd


def html_table(
    frame: pd.DataFrame,
    classes: list[str] | None = None,
    raw_columns: Sequence[str] = (),
    text_columns: Sequence[str] = (),
    table_class: str = "",
) -> str:
    """An HTML table; cells are escaped except in ``raw_columns`` (already-built HTML)."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    body = []
    columns = list(frame.columns)
    for i, row in enumerate(frame.itertuples(index=False)):
        cls = f' class="{escape(classes[i])}"' if classes and classes[i] else ""
        cells = []
        for column, value in zip(columns, row, strict=True):
            content = str(value) if column in raw_columns else escape(format_cell(value))
            kind = ' class="text"' if column in text_columns else ""
            cells.append(f"<td{kind}>{content}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    attr = f" class='{escape(table_class, quote=True)}'" if table_class else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def format_cell(value) -> str:
    """A table cell: floats to three decimals, missing values as ``n/a``."""
    if isinstance(value, float | np.floating):
        return "n/a" if np.isnan(value) else f"{value:.3f}"
    if value is None:
        return "n/a"
    return str(value)
