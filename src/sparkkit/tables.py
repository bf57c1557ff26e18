"""Tables people read whole: no cell cut at pandas' 50 characters, in JupyterLab (HTML) and in text.

01's fixes are commands to copy; a table that ends them in "…" hides what 01 exists to show.
A missing value is an empty cell (never "NaN"), a column of whole numbers shows whole numbers (never
"1938.0"), and sparkkit's own sentences — "parameter `context`: got …" — show their `code` as code in
JupyterLab and as typed in a terminal.
"""
from __future__ import annotations

import html
import re

import pandas as pd

# `x` in a cell's text: code in HTML. The cell is HTML-escaped first, so what is inside stays text.
_CODE = re.compile(r"`([^`\n]+)`")
_WHOLE = {"display.max_colwidth": None, "display.max_rows": None, "display.max_columns": None}


def code_html(text: str) -> str:
    """`text` escaped for HTML, each `span` in backticks a <code> element (how Markdown shows it)."""
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(str(text), quote=False))


def _integral(col: pd.Series) -> bool:
    if not pd.api.types.is_float_dtype(col.dtype):
        return False
    vals = col.dropna()
    return len(vals) > 0 and bool(((vals % 1) == 0).all()) and bool((vals.abs() < 2**53).all())


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """A plain copy to render: float columns holding only whole numbers (a column with a gap turns ints
    into floats) show integers again, the gap an empty cell; other missing values are None (rendered
    empty too)."""
    out = pd.DataFrame(df).copy()
    for i, name in enumerate(out.columns):
        col = out.iloc[:, i]
        if _integral(col):
            out.isetitem(i, pd.Series([("" if v != v else int(v)) for v in col], index=out.index, dtype=object))
        elif not pd.api.types.is_numeric_dtype(col.dtype):
            out.isetitem(i, pd.Series([("" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v)
                                       for v in col], index=out.index, dtype=object))
    return out


def _cell_html(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return ""
    return code_html(v)


class WholeTable(pd.DataFrame):
    """A DataFrame that renders every cell whole, in HTML and in text, and stays one after slicing."""

    @property
    def _constructor(self):
        return WholeTable

    def _repr_html_(self) -> str:
        df = readable(self).rename(columns=lambda c: html.escape(str(c)))
        text = {c: _cell_html for c in df.columns if not pd.api.types.is_numeric_dtype(df[c].dtype)}
        with pd.option_context(*[x for kv in _WHOLE.items() for x in kv]):
            return df.to_html(index=False, na_rep="", escape=False, formatters=text or None)

    def __repr__(self) -> str:
        df = readable(self)
        # text reads from the left (a column of sentences right-aligned is hard to read); numbers stay right
        names, left = [], {}
        for i, name in enumerate(df.columns):
            col = df.iloc[:, i]
            if not pd.api.types.is_numeric_dtype(col.dtype) and not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) or v == "" for v in col):
                width = max([len(str(v)) for v in col] + [len(str(name))])
                name = str(name).ljust(width)
                left[name] = lambda v, w=width: str(v).ljust(w)
            names.append(name)
        df = df.set_axis(names, axis=1)
        with pd.option_context(*[x for kv in _WHOLE.items() for x in kv], "display.width", 100_000):
            text = df.to_string(index=False, na_rep="", formatters=left or None)
        return "\n".join(line.rstrip() for line in text.splitlines())

    def to_plain(self) -> str:
        """The text a terminal shows (what `print` and `repr` give)."""
        return repr(self)
