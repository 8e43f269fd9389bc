"""Feature atlas, metadata: which columns of the store's table are used, and that table as matrices.

:func:`categorical_columns` and :func:`numeric_columns` pick the columns (:data:`EXCLUDED_COLUMNS`
left out unless named); :func:`metadata_design` turns them into the :class:`MetadataDesign`
built once and shared by every model (one-hot values, standardised numbers, average ranks
from :func:`average_ranks`). The rules: :mod:`jsae.analyses.atlas`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ...errors import NotFoundError

__all__ = ["EXCLUDED_COLUMNS", "MetadataDesign", "categorical_columns", "numeric_columns", "average_ranks",
           "metadata_design"]


#: metadata columns left out of enrichment and correlation unless named explicitly
EXCLUDED_COLUMNS = ("id", "source", "spans", "offset", "duration", "split", "clip", "describe.error")


def _category_strings(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(values [N] str, missing [N] bool)`` of a column; NaN/None and blank strings are missing."""
    na = s.isna().to_numpy(bool)
    strs = s.astype(object).where(~na, "").astype(str)
    missing = na | (strs.str.strip() == "").to_numpy(bool)
    return strs.to_numpy(object), missing


def _is_categorical_dtype(s: pd.Series) -> bool:
    t = s.dtype
    return (pd.api.types.is_object_dtype(t) or pd.api.types.is_string_dtype(t) or pd.api.types.is_bool_dtype(t)
            or isinstance(t, pd.CategoricalDtype))


def _is_numeric_dtype(s: pd.Series) -> bool:
    t = s.dtype
    return pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t)


def categorical_columns(table: pd.DataFrame, *, exclude: Sequence[str] = EXCLUDED_COLUMNS,
                        max_values: int = 50) -> list[str]:
    """The columns of ``table`` used for enrichment, in table order.

    Object, string, bool and category columns not in ``exclude`` with 2 … ``max_values``
    distinct non-missing values that are not id-like (one distinct value per row that has one).
    """
    out = []
    for c in table.columns:
        if c in exclude or not _is_categorical_dtype(table[c]):
            continue
        values, missing = _category_strings(table[c])
        kept = values[~missing]
        n_distinct = len(pd.unique(kept))
        if 2 <= n_distinct <= max_values and n_distinct < len(kept):
            out.append(str(c))
    return out


def numeric_columns(table: pd.DataFrame, *, exclude: Sequence[str] = EXCLUDED_COLUMNS) -> list[str]:
    """The columns of ``table`` used for correlation, in table order: int and float columns
    (not bool) not in ``exclude`` with at least 2 distinct finite values on 3 rows or more."""
    out = []
    for c in table.columns:
        if c in exclude or not _is_numeric_dtype(table[c]):
            continue
        x = pd.to_numeric(table[c], errors="coerce").to_numpy(np.float64)
        x = x[np.isfinite(x)]
        if len(x) >= 3 and len(np.unique(x)) >= 2:
            out.append(str(c))
    return out


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1 … n along axis 0 of ``a [n, ...]``, ties given their average rank
    (``scipy.stats.rankdata(a, axis=0)``, vectorised over the other axes), float64."""
    a = np.asarray(a)
    n = a.shape[0]
    if n == 0:
        return np.zeros(a.shape, np.float64)
    order = np.argsort(a, axis=0, kind="stable")
    s = np.take_along_axis(a, order, axis=0)
    idx = np.arange(n).reshape((n,) + (1,) * (a.ndim - 1))
    start = np.ones(s.shape, bool)
    start[1:] = s[1:] != s[:-1]
    end = np.ones(s.shape, bool)
    end[:-1] = start[1:]
    first = np.maximum.accumulate(np.where(start, idx, 0), axis=0)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end, idx, n - 1), axis=0), axis=0), axis=0)
    ranks = np.empty(s.shape, np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=0)
    return ranks


@dataclass(frozen=True)
class MetadataDesign:
    """The metadata of the ``N`` rows as matrices, built once for every model (:func:`metadata_design`).

    Categorical: ``categorical`` (``C`` columns), ``values`` / ``value_column`` (``V`` column
    values, sorted within each column, and the position of each one's column), ``onehot
    [N, V]`` (float64 indicators; missing rows all 0), ``known [N, C]`` (the row has a value).
    Numeric: ``numeric`` (``K`` columns), ``finite [N, K]``, ``z [N, K]`` (each column
    standardised over its finite rows, 0 where not finite), ``mean`` / ``sd [K]`` (of those
    rows), ``rank_groups``: columns with the same finite rows, as ``(rows [n], columns [g],
    centred average ranks [n, g])``.
    """

    n_rows: int
    categorical: tuple[str, ...]
    values: tuple[str, ...]
    value_column: np.ndarray
    onehot: np.ndarray
    known: np.ndarray
    numeric: tuple[str, ...]
    finite: np.ndarray
    z: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    rank_groups: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]


def metadata_design(table: pd.DataFrame, categorical: Sequence[str], numeric: Sequence[str]) -> MetadataDesign:
    """The :class:`MetadataDesign` of ``table`` for the given columns (each must exist)."""
    missing_cols = [c for c in (*categorical, *numeric) if c not in table.columns]
    if missing_cols:
        raise NotFoundError(f"no metadata column {missing_cols}; columns: {list(table.columns)}")
    n = len(table)
    values: list[str] = []
    value_column: list[int] = []
    blocks, known = [], np.zeros((n, len(categorical)), np.float64)
    for j, c in enumerate(categorical):
        strs, missing = _category_strings(table[c])
        levels = sorted(set(strs[~missing].tolist()))
        codes = pd.Index(levels).get_indexer(strs)
        codes[missing] = -1
        block = np.zeros((n, len(levels)), np.float64)
        block[np.flatnonzero(~missing), codes[~missing]] = 1.0
        blocks.append(block)
        known[:, j] = ~missing
        values += levels
        value_column += [j] * len(levels)
    onehot = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    x = np.column_stack([pd.to_numeric(table[c], errors="coerce").to_numpy(np.float64) for c in numeric]) \
        if numeric else np.zeros((n, 0))
    finite = np.isfinite(x)
    cnt = finite.sum(axis=0)
    xs = np.where(finite, x, 0.0)
    mean = xs.sum(axis=0) / np.maximum(cnt, 1)
    sd = np.sqrt(np.where(finite, (x - mean) ** 2, 0.0).sum(axis=0) / np.maximum(cnt - 1, 1))
    z = np.where(finite, (x - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    groups: dict[bytes, list[int]] = {}
    for j in range(finite.shape[1]):
        groups.setdefault(np.packbits(finite[:, j]).tobytes(), []).append(j)
    rank_groups = []
    for cols in groups.values():
        rows = np.flatnonzero(finite[:, cols[0]])
        r = average_ranks(x[np.ix_(rows, cols)])
        rank_groups.append((rows, np.asarray(cols), r - (len(rows) + 1) / 2.0))
    return MetadataDesign(n, tuple(categorical), tuple(values), np.asarray(value_column, np.int64), onehot, known,
                          tuple(numeric), finite, z, mean, sd, tuple(rank_groups))
