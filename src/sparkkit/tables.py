"""Tables people read whole: no cell cut at pandas' 50 characters, in JupyterLab (HTML) and in text.

01's fixes are commands to copy; a table that ends them in "…" hides what 01 exists to show.
"""
from __future__ import annotations

import pandas as pd


class WholeTable(pd.DataFrame):
    """A DataFrame that renders every cell whole, in HTML and in text, and stays one after slicing."""

    @property
    def _constructor(self):
        return WholeTable

    def _repr_html_(self) -> str:
        with pd.option_context("display.max_colwidth", None, "display.max_rows", None, "display.max_columns", None):
            return self.to_html(index=False, na_rep="")

    def __repr__(self) -> str:
        with pd.option_context("display.max_colwidth", None, "display.max_rows", None, "display.max_columns", None,
                               "display.width", 100_000):
            return self.to_string(index=False, na_rep="")
