"""Tables for the report template: every cell is text the template escapes.

:func:`table` turns a DataFrame into ``{"columns", "rows", "more"}`` with cells
``(kind, text)``: ``text`` (a value formatted by :func:`fmt`: floats with 3 decimals,
missing values empty), or a :class:`Cell` the report makes itself (``audio``: the
``src`` of a player; ``note``: a remark in grey; ``link``: ``(href, text)``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..jsonio import finite_number  # re-exported: report and atlas modules import it from here

__all__ = ["Cell", "fmt", "table", "drop_defaults", "only_models", "finite_number"]


@dataclass(frozen=True)
class Cell:
    """A cell the report makes itself (not data): ``audio`` (src of a player), ``note``, or
    ``link`` (value ``(href, text)``: a relative link, e.g. into the feature atlas)."""

    kind: str
    value: Any


def fmt(value: Any) -> str:
    """A table cell as text: floats with 3 decimals, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(float(value)) else f"{float(value):.3f}"
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def table(df: pd.DataFrame, max_rows: int = 60) -> dict[str, Any]:
    """A table for the template: column names, and cells as ``(kind, text)`` with kind
    ``text``, ``audio`` (a :class:`Cell` made by the report: the player's src) or ``note``;
    the template escapes every one."""
    view = df.head(max_rows)
    rows = [[(cell.kind, cell.value) if isinstance(cell, Cell) else ("text", fmt(cell)) for cell in row]
            for row in view.itertuples(index=False, name=None)]
    return {"columns": [str(c) for c in view.columns], "rows": rows, "more": max(0, len(df) - max_rows)}


def drop_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Without the ``activation``/``l1_coef`` columns of an all-TopK table (always topk / 0);
    the CSV keeps them."""
    if "activation" in df.columns and (df["activation"].astype(str) == "topk").all():
        return df.drop(columns=[c for c in ("activation", "l1_coef") if c in df.columns])
    return df


def only_models(df: pd.DataFrame, models: set[str] | None) -> pd.DataFrame:
    """The rows of a per-model table (one with a ``name`` column) whose model is in ``models``
    (``None``: every row); tables without a ``name`` column as they are."""
    if models is None or "name" not in df.columns:
        return df
    return df[df["name"].astype(str).isin(models)].reset_index(drop=True)
