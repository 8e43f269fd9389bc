"""Feature atlas: statistics of every latent of every model, from its activations on a store.

For one model with codes ``V [N, L]`` on ``N`` store rows (``ModelBatch.encode``; a latent
*fires* on a row when ``v > 0``) and the store's metadata table (``N`` rows):

**Activation summary** (:func:`firing_summary`, :func:`sorted_activations`,
:func:`activation_quantiles`, :func:`activation_histograms`). ``n_fires_ℓ = Σ_b [v_bℓ > 0]``,
``firing_rate = n_fires / N``, ``mean_activation`` (mean of ``v`` over the firing rows, NaN
when dead), ``max_activation`` (0 when dead); quantiles of the firing rows' activations
(numpy's ``linear`` rule, NaN when dead); a histogram of the firing rows' activations with
``n_bins`` equal bins from 0 to the latent's max — the counts of
``np.histogram(v[v > 0], bins=n_bins, range=(0, max))`` in float64, edges
``linspace(0, max, n_bins + 1)`` (all 0 and no counts for a dead latent).

**Examples** (:func:`top_examples`, :func:`band_examples`, :func:`examples_frame`). The
``n_top`` rows of largest activation (ties: the lower row first), and, Neuronpedia style,
``per_band`` rows drawn at random (a seeded generator) from each activation band of the
firing rows: with ``r`` a firing row's ascending activation rank (0 … n_fires − 1), band
``[lo, hi)`` holds the rows with ``lo · n_fires ≤ r < hi · n_fires`` (default quarters:
0–25 % the weakest firings … 75–100 % the strongest); rows already among the top examples
are not drawn again. Drawn rows are listed by activation, largest first.

**Enrichment** of every categorical metadata column (:func:`categorical_columns`,
:func:`metadata_design`, :func:`enrichment`). Missing values (NaN, None, empty or blank
strings) are no class, and a column's counts use only the rows where it has a value
(``N_c`` of them; ``n_fires_c`` firing): for latent ℓ and value ``s`` of column ``c``
with ``n_value`` rows, ``hits = |{b : v_bℓ > 0, c_b = s}|`` (all at once:
``hits = activeᵀ · onehot``), ``precision = hits / n_fires_c``, ``recall = hits / n_value``,
``base_rate = n_value / N_c``, ``lift = precision / base_rate``, ``f1 = 2PR / (P + R)``.
Without missing values ``N_c = N`` and ``n_fires_c = n_fires``. Precision, lift and F1 are
NaN for a latent that never fires on the column's rows.

**Numeric correlates** (:func:`numeric_columns`, :func:`numeric_effects`, :func:`bh_qvalues`).
For every numeric column ``x`` (rows with a non-finite value dropped, per column) and latent:
``d = (x̄_fire − x̄_rest) / s_pooled`` (Cohen's d: the firing rows' mean of ``x`` minus the
other rows', in pooled standard deviations ``s_pooled² = ((n₁−1)s₁² + (n₀−1)s₀²) / (n₁+n₀−2)``;
"sd" in the descriptions), its Welch t-test (``t``, ``df``, two-sided ``p``, as
``scipy.stats.ttest_ind(..., equal_var=False)``) and the Spearman rank correlation ``rho``
of the activation ``v`` (zeros included) with ``x`` (average ranks for ties; ``rho_p``
from ``t = ρ √((n−2)/(1−ρ²))`` with ``n − 2`` degrees of freedom, as
``scipy.stats.spearmanr``). ``q`` and ``rho_q``: Benjamini–Hochberg q-values of ``p`` /
``rho_p`` over every latent × column of the model (NaN p-values left out). Undefined
statistics (fewer than 2 rows in a group, zero variance) are NaN.

**Decoder neighbours and matches** (:func:`decoder_neighbours`, :func:`cross_model_matches`).
Cosines of the unit raw-space decoder directions (``ModelBatch.raw_directions()``): the
``n_neighbours`` most similar other latents of the same model (ties: the lower index), and
for every other model of the batch the best match (:func:`~jsae.analyses.universality.best_cosine_match`)
with ``mutual`` when that latent's own best match is this one. Only latents that fire on the
rows are candidates (as in the universality comparison).

**Descriptions** (:func:`best_label`, :func:`best_correlate`, :func:`describe_latents`): one
line per latent, from the statistics only (see :func:`describe_latents` for the rules), e.g.
``kind = music: P 1.00, R 0.99; vad.speech_prob −2.3 sd``.

>>> atlas = latent_atlas(sweep, store)                 # every model of a sweep, every latent
>>> atlas["k20_L200"].latents[["latent", "firing_rate", "description"]]
>>> atlas.frame("enrichment")                          # every model, one table, a ``model`` column
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import BadValueError, NotFoundError
from ..models import ModelBatch
from ..store import EmbeddingStore, StoreError
from .labelled import as_store, check_dim
from .universality import best_cosine_match

__all__ = [
    "EXCLUDED_COLUMNS", "AtlasOptions", "MetadataDesign", "Enrichment", "NumericEffects", "ModelAtlas",
    "AtlasResult", "categorical_columns", "numeric_columns", "metadata_design", "sorted_activations",
    "firing_summary", "activation_quantiles", "activation_histograms", "top_examples", "band_examples",
    "examples_frame", "average_ranks", "enrichment", "bh_qvalues", "numeric_effects", "decoder_neighbours",
    "cross_model_matches", "best_label", "best_correlate", "format_rate", "describe_latents", "model_atlas",
    "latent_atlas",
]

#: metadata columns left out of enrichment and correlation unless named explicitly
EXCLUDED_COLUMNS = ("id", "source", "spans", "offset", "duration", "split", "clip", "describe.error")


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class AtlasOptions:
    """Parameters of :func:`latent_atlas` (each checked on construction).

    Statistics: ``n_bins`` (histogram bins), ``quantiles`` (of the firing activations, in
    (0, 1)), ``n_top`` (top examples), ``bands`` (``(lo, hi)`` fractions of the firing
    rows' activation ranks) with ``per_band`` rows each, ``seed`` (band draws),
    ``n_neighbours`` (decoder neighbours per latent).
    Metadata: ``exclude`` (columns never used unless named in ``categorical`` /
    ``numeric``), ``categorical`` / ``numeric`` (the columns to use; ``None``: detected,
    :func:`categorical_columns`, :func:`numeric_columns`), ``max_values`` (most distinct
    values of a detected categorical column).
    Descriptions (:func:`describe_latents`): ``min_hits``, ``min_precision``, ``min_gain``,
    ``alpha``, ``min_abs_d``, ``rare_rate``, ``dense_rate``.
    Encoding: ``block_rows`` rows per encoding call.
    """

    n_bins: int = 20
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 0.99)
    n_top: int = 10
    bands: tuple[tuple[float, float], ...] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
    per_band: int = 3
    seed: int = 0
    n_neighbours: int = 5
    exclude: tuple[str, ...] = EXCLUDED_COLUMNS
    categorical: tuple[str, ...] | None = None
    numeric: tuple[str, ...] | None = None
    max_values: int = 50
    min_hits: int = 5
    min_precision: float = 0.5
    min_gain: float = 0.5
    alpha: float = 0.05
    min_abs_d: float = 0.5
    rare_rate: float = 0.005
    dense_rate: float = 0.5
    block_rows: int = 8192

    def __post_init__(self):
        for name in ("n_bins", "block_rows"):
            if int(getattr(self, name)) < 1:
                raise BadValueError(f"{name}={getattr(self, name)} must be at least 1.")
        for name in ("n_top", "per_band", "n_neighbours", "min_hits", "max_values"):
            if int(getattr(self, name)) < 0:
                raise BadValueError(f"{name}={getattr(self, name)} must be 0 or more.")
        if any(not 0 < q < 1 for q in self.quantiles):
            raise BadValueError(f"quantiles={self.quantiles} must lie strictly between 0 and 1.")
        if any(not 0 <= lo < hi <= 1 for lo, hi in self.bands):
            raise BadValueError(f"bands={self.bands} must be (lo, hi) pairs with 0 ≤ lo < hi ≤ 1.")
        for name in ("min_precision", "min_gain", "alpha", "rare_rate", "dense_rate"):
            if not 0 <= float(getattr(self, name)) <= 1:
                raise BadValueError(f"{name}={getattr(self, name)} must lie in [0, 1].")
        if self.min_abs_d < 0:
            raise BadValueError(f"min_abs_d={self.min_abs_d} must be 0 or more.")
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        object.__setattr__(self, "bands", tuple((float(lo), float(hi)) for lo, hi in self.bands))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        for name in ("categorical", "numeric"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))


# ----------------------------------------------------------------------------- metadata


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


# ----------------------------------------------------------------------------- activations


def sorted_activations(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order [N, L], values [N, L])``: each latent's rows by activation, largest first
    (ties: the lower row first), and the activations in that order (float64)."""
    v = np.asarray(codes, np.float64)
    order = np.argsort(-v, axis=0, kind="stable")
    return order, np.take_along_axis(v, order, axis=0)


def firing_summary(codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per latent of ``codes [N, L]``: ``n_fires`` (rows with ``v > 0``), ``firing_rate``
    (``n_fires / N``), ``mean_activation`` (over the firing rows; NaN when dead),
    ``max_activation`` (0 when dead); each ``[L]``."""
    v = np.asarray(codes, np.float64)
    on = v > 0
    n = on.sum(axis=0)
    total = np.where(on, v, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / n, np.nan)
    return {"n_fires": n.astype(np.int64), "firing_rate": n / max(v.shape[0], 1), "mean_activation": mean,
            "max_activation": np.where(on, v, 0.0).max(axis=0, initial=0.0)}


def activation_quantiles(sorted_values: np.ndarray, n_fires: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """``[L, len(quantiles)]`` quantiles of each latent's firing activations (numpy's
    ``linear`` rule: ``a[⌊h⌋] + (h − ⌊h⌋)(a[⌊h⌋+1] − a[⌊h⌋])``, ``h = q (n_fires − 1)`` over
    the ascending firing values ``a``); NaN for a dead latent.

    ``sorted_values [N, L]``: descending per latent (:func:`sorted_activations`).
    """
    q = np.asarray(quantiles, np.float64)
    n = np.asarray(n_fires)
    L = sorted_values.shape[1]
    if L == 0 or not q.size:
        return np.zeros((L, q.size))
    h = q[None, :] * np.maximum(n[:, None] - 1, 0)  # [L, Q] ascending position
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n[:, None] - 1, 0))
    # ascending position i ↔ descending row n − 1 − i
    rows_lo = np.clip(n[:, None] - 1 - lo, 0, None)
    rows_hi = np.clip(n[:, None] - 1 - hi, 0, None)
    cols = np.arange(L)[:, None]
    a, b = sorted_values[rows_lo, cols], sorted_values[rows_hi, cols]
    out = a + (h - lo) * (b - a)
    return np.where(n[:, None] > 0, out, np.nan)


def activation_histograms(codes: np.ndarray, max_activation: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``(counts [L, n_bins] int64, edges [L, n_bins + 1])``: histograms of each latent's
    firing activations (float64) with equal bins from 0 to its max, the counts of
    ``np.histogram(v[v > 0], bins=n_bins, range=(0, max))`` (bin ``i``: ``edges_i ≤ v <
    edges_{i+1}``, the last bin closed). A dead latent has edges 0 and no counts."""
    v = np.asarray(codes, np.float64)
    L = v.shape[1]
    mx = np.asarray(max_activation, np.float64)
    # np.linspace(0, max, n_bins + 1) per latent, in its own arithmetic (i · step, the last edge = max),
    # as np.histogram builds them (a vectorised linspace rounds differently once one max is 0)
    edges = np.arange(n_bins + 1)[None, :] * (mx / n_bins)[:, None]
    edges[:, -1] = mx
    rows, cols = np.nonzero(v > 0)
    vals = v[rows, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        idx = np.floor(vals * (n_bins / mx[cols])).astype(np.int64)
    idx = np.clip(idx, 0, n_bins - 1)
    # the same one-step corrections as np.histogram: the edges decide
    e = edges[cols]
    idx -= vals < e[np.arange(len(idx)), idx]
    idx += (vals >= e[np.arange(len(idx)), idx + 1]) & (idx != n_bins - 1)
    counts = np.bincount(cols * n_bins + idx, minlength=L * n_bins).reshape(L, n_bins)
    return counts.astype(np.int64), edges


# ----------------------------------------------------------------------------- examples


def top_examples(order: np.ndarray, sorted_values: np.ndarray, n_fires: np.ndarray,
                 n_top: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [L, n_top], activations [L, n_top])``: each latent's ``n_top`` firing rows of
    largest activation, largest first (ties: the lower row); padded with −1 / NaN when it
    fires on fewer rows. ``order`` / ``sorted_values``: :func:`sorted_activations`."""
    N, L = order.shape
    t = min(n_top, N)
    rows = np.full((L, n_top), -1, np.int64)
    acts = np.full((L, n_top), np.nan)
    ok = np.arange(t)[None, :] < np.asarray(n_fires)[:, None]  # [L, t]
    rows[:, :t] = np.where(ok, order[:t].T, -1)
    acts[:, :t] = np.where(ok, sorted_values[:t].T, np.nan)
    return rows, acts


def band_examples(order: np.ndarray, sorted_values: np.ndarray, n_fires: np.ndarray,
                  bands: Sequence[tuple[float, float]], per_band: int, *, skip: int = 0,
                  seed: int | Sequence[int] = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [L, n_bands, per_band], activations [L, n_bands, per_band])``: ``per_band``
    firing rows drawn without replacement from each activation band (see the module
    docstring), listed by activation, largest first; −1 / NaN where a band has fewer rows.

    ``skip``: the ``skip`` strongest rows (the top examples) are never drawn. ``seed``:
    of the uniform keys ``[P, L]`` (``P = max n_fires``) whose ``per_band`` smallest in a
    band are drawn, so the draw is a function of the seed and the shapes.
    """
    N, L = order.shape
    nb = len(bands)
    rows = np.full((L, nb, per_band), -1, np.int64)
    acts = np.full((L, nb, per_band), np.nan)
    n = np.asarray(n_fires)
    P = int(n.max()) if L else 0
    if P == 0 or per_band == 0 or nb == 0:
        return rows, acts
    keys = np.random.default_rng(seed).random((P, L))
    pos = np.arange(P)[:, None]
    rank = n[None, :] - 1 - pos  # ascending activation rank of descending position
    base = (pos < n[None, :]) & (pos >= skip)
    kk = min(per_band, P)
    for b, (lo, hi) in enumerate(bands):
        cand = base & (rank >= lo * n[None, :]) & (rank < hi * n[None, :])
        masked = np.where(cand, keys, np.inf)
        pick = np.argpartition(masked, kk - 1, axis=0)[:kk] if kk < P else np.arange(P)[:, None].repeat(L, 1)
        ok = np.isfinite(np.take_along_axis(masked, pick, axis=0))
        pick = np.sort(np.where(ok, pick, P), axis=0)  # by position = by activation, largest first
        ok = pick < P
        safe = np.minimum(pick, P - 1)
        rows[:, b, :kk] = np.where(ok, np.take_along_axis(order[:P], safe, axis=0), -1).T
        acts[:, b, :kk] = np.where(ok, np.take_along_axis(sorted_values[:P], safe, axis=0), np.nan).T
    return rows, acts


def _band_label(lo: float, hi: float) -> str:
    return f"{lo * 100:g}-{hi * 100:g}%"


def examples_frame(top_rows: np.ndarray, top_acts: np.ndarray, band_rows: np.ndarray, band_acts: np.ndarray,
                   bands: Sequence[tuple[float, float]], row_ids: np.ndarray | None = None) -> pd.DataFrame:
    """The examples as one table: ``latent, group`` (``top`` or the band, ``0-25%``),
    ``rank`` (within the group, from 0), ``row`` (``row_ids[position]``: the store row;
    default the position), ``activation``; padding left out; by latent, then group."""
    L, t = top_rows.shape
    nb, pb = band_rows.shape[1], band_rows.shape[2]
    labels = np.array(["top"] + [_band_label(lo, hi) for lo, hi in bands], dtype=object)
    g_top = np.zeros((L, t), np.int64)
    g_band = np.broadcast_to(np.arange(1, nb + 1)[None, :, None], (L, nb, pb))
    latent = np.concatenate([np.broadcast_to(np.arange(L)[:, None], (L, t)),
                             np.broadcast_to(np.arange(L)[:, None], (L, nb * pb))], axis=1)
    group = np.concatenate([g_top, g_band.reshape(L, -1)], axis=1)
    rank = np.concatenate([np.broadcast_to(np.arange(t), (L, t)),
                           np.broadcast_to(np.arange(pb), (L, nb, pb)).reshape(L, -1)], axis=1)
    rows = np.concatenate([top_rows, band_rows.reshape(L, -1)], axis=1)
    acts = np.concatenate([top_acts, band_acts.reshape(L, -1)], axis=1)
    keep = rows.ravel() >= 0
    pos = rows.ravel()[keep]
    ids = pos if row_ids is None else np.asarray(row_ids)[pos]
    return pd.DataFrame({"latent": latent.ravel()[keep], "group": labels[group.ravel()[keep]],
                         "rank": rank.ravel()[keep], "row": ids.astype(np.int64),
                         "activation": acts.ravel()[keep]})


# ----------------------------------------------------------------------------- enrichment


@dataclass(frozen=True)
class Enrichment:
    """Enrichment of every latent × categorical value (:func:`enrichment`); arrays ``[L, V]``
    but ``n_value``, ``n_known``, ``base_rate`` (``[V]``)."""

    design: MetadataDesign
    n_value: np.ndarray
    n_known: np.ndarray
    base_rate: np.ndarray
    n_fires: np.ndarray
    hits: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    lift: np.ndarray
    f1: np.ndarray

    def frame(self) -> pd.DataFrame:
        """One row per latent × value (latent-major, then columns in design order, values
        sorted): ``latent, column, value, n_value, n_known, n_fires, hits, precision, recall,
        lift, f1``."""
        L, V = self.hits.shape
        d = self.design
        cols = np.array(d.categorical, dtype=object)[d.value_column] if V else np.zeros(0, object)
        return pd.DataFrame({
            "latent": np.repeat(np.arange(L), V), "column": np.tile(cols, L),
            "value": np.tile(np.array(d.values, dtype=object), L),
            "n_value": np.tile(self.n_value, L), "n_known": np.tile(self.n_known, L),
            "n_fires": self.n_fires.ravel(), "hits": self.hits.ravel(), "precision": self.precision.ravel(),
            "recall": self.recall.ravel(), "lift": self.lift.ravel(), "f1": self.f1.ravel()})


def enrichment(active: np.ndarray, design: MetadataDesign) -> Enrichment:
    """Counts and scores of every latent of ``active [N, L]`` (bool, ``v > 0``) on every
    categorical value of ``design`` (module docstring): ``hits = activeᵀ · onehot``,
    ``n_fires_c = activeᵀ · known`` (firing rows with a value in the column)."""
    a = np.asarray(active, np.float64)
    hits = a.T @ design.onehot  # [L, V]
    fires_c = (a.T @ design.known)[:, design.value_column]  # [L, V]
    n_value = design.onehot.sum(axis=0)
    n_known = design.known.sum(axis=0)[design.value_column]
    with np.errstate(invalid="ignore", divide="ignore"):
        base = n_value / n_known
        precision = np.where(fires_c > 0, hits / fires_c, np.nan)
        recall = hits / n_value
        lift = precision / base
        f1 = np.where(hits > 0, 2 * precision * recall / (precision + recall), np.where(fires_c > 0, 0.0, np.nan))
    return Enrichment(design, n_value.astype(np.int64), n_known.astype(np.int64), base,
                      np.rint(fires_c).astype(np.int64), np.rint(hits).astype(np.int64), precision, recall, lift, f1)


# ----------------------------------------------------------------------------- numeric correlates


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values of the finite entries of ``p`` (any shape) as one family:
    ``q_(i) = min_{j ≥ i} min(1, p_(j) m / j)`` over the ``m`` finite p-values sorted
    ascending; NaN where ``p`` is not finite."""
    p = np.asarray(p, np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    pv = p[ok]
    m = pv.size
    if m:
        order = np.argsort(pv, kind="stable")
        scaled = pv[order] * m / np.arange(1, m + 1)
        qs = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        out = np.empty(m)
        out[order] = qs
        q[ok] = out
    return q


@dataclass(frozen=True)
class NumericEffects:
    """Every latent × numeric column (:func:`numeric_effects`); arrays ``[L, K]`` but
    ``n`` (``[K]``: rows with a finite value)."""

    design: MetadataDesign
    n: np.ndarray
    n_fires: np.ndarray
    mean_fire: np.ndarray
    mean_rest: np.ndarray
    d: np.ndarray
    t: np.ndarray
    df: np.ndarray
    p: np.ndarray
    q: np.ndarray
    rho: np.ndarray
    rho_p: np.ndarray
    rho_q: np.ndarray

    def frame(self) -> pd.DataFrame:
        """One row per latent × column (latent-major): ``latent, column, n, n_fires, mean_fire,
        mean_rest`` (the column's means, its own units), ``d`` (sd), ``t, df, p, q`` (Welch),
        ``rho, rho_p, rho_q`` (Spearman)."""
        L, K = self.d.shape
        out = {"latent": np.repeat(np.arange(L), K),
               "column": np.tile(np.array(self.design.numeric, dtype=object), L),
               "n": np.tile(self.n, L)}
        for name in ("n_fires", "mean_fire", "mean_rest", "d", "t", "df", "p", "q", "rho", "rho_p", "rho_q"):
            out[name] = getattr(self, name).ravel()
        return pd.DataFrame(out)


def _welch(n1, m1, v1, n0, m0, v0):
    """Welch's t, degrees of freedom and two-sided p (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = v1 / n1, v0 / n0
        se2 = a + b
        ok = (n1 >= 2) & (n0 >= 2) & (se2 > 0)
        t = np.where(ok, (m1 - m0) / np.sqrt(se2), np.nan)
        df = np.where(ok, se2 ** 2 / (a ** 2 / (n1 - 1) + b ** 2 / (n0 - 1)), np.nan)
        p = np.where(ok, 2 * stats.t.sf(np.abs(t), df), np.nan)
    return t, df, p


def _spearman(codes: np.ndarray, design: MetadataDesign) -> tuple[np.ndarray, np.ndarray]:
    """``(rho [L, K], p [L, K])``: Spearman correlation of each latent's activation with each
    column over its finite rows (one ranking of the codes per group of columns sharing rows)."""
    L, K = codes.shape[1], len(design.numeric)
    rho = np.full((L, K), np.nan)
    p = np.full((L, K), np.nan)
    for rows, cols, rx in design.rank_groups:
        n = len(rows)
        rv = average_ranks(codes if n == codes.shape[0] else codes[rows]) - (n + 1) / 2.0  # [n, L]
        cov = rv.T @ rx  # [L, g]
        norm = np.sqrt((rv * rv).sum(axis=0))[:, None] * np.sqrt((rx * rx).sum(axis=0))[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(norm > 0, np.clip(cov / norm, -1.0, 1.0), np.nan)
            dof = n - 2
            t = r * np.sqrt(dof / ((1.0 + r) * (1.0 - r)))
            pr = np.where(np.isfinite(r) & (dof > 0), 2 * stats.t.sf(np.abs(t), max(dof, 1)), np.nan)
        rho[:, cols] = r
        p[:, cols] = pr
    return rho, p


def numeric_effects(codes: np.ndarray, design: MetadataDesign) -> NumericEffects:
    """Cohen's d, Welch's test and Spearman's rho of every latent of ``codes [N, L]`` with
    every numeric column of ``design`` (module docstring), with BH q-values over all
    latents × columns. Group sums are three products ``activeᵀ · [finite, z, z²]``."""
    v = np.asarray(codes, np.float64)
    a = (v > 0).astype(np.float64)
    fin = design.finite.astype(np.float64)
    z = design.z
    n1 = a.T @ fin
    s1 = a.T @ z
    ss1 = a.T @ (z * z)
    n = fin.sum(axis=0)[None, :]
    n0, s0, ss0 = n - n1, z.sum(axis=0)[None, :] - s1, (z * z).sum(axis=0)[None, :] - ss1
    with np.errstate(invalid="ignore", divide="ignore"):
        m1, m0 = s1 / n1, s0 / n0
        v1 = np.maximum(ss1 - n1 * m1 ** 2, 0.0) / (n1 - 1)
        v0 = np.maximum(ss0 - n0 * m0 ** 2, 0.0) / (n0 - 1)
        pooled = np.sqrt(((n1 - 1) * v1 + (n0 - 1) * v0) / (n1 + n0 - 2))
        ok = (n1 >= 2) & (n0 >= 2) & (pooled > 0)
        d = np.where(ok, (m1 - m0) / pooled, np.nan)
    t, df, p = _welch(n1, m1, v1, n0, m0, v0)
    rho, rho_p = _spearman(v, design)
    mean, sd = design.mean[None, :], design.sd[None, :]
    return NumericEffects(design, n[0].astype(np.int64), np.rint(n1).astype(np.int64),
                          np.where(n1 > 0, mean + sd * m1, np.nan), np.where(n0 > 0, mean + sd * m0, np.nan),
                          d, t, df, p, bh_qvalues(p), rho, rho_p, bh_qvalues(rho_p))


# ----------------------------------------------------------------------------- decoder geometry


def decoder_neighbours(directions: np.ndarray, n: int, candidates: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(index [L, n], cosine [L, n])``: each latent's ``n`` most similar other latents by
    the cosine of the decoder directions ``[L, M]`` (rows unit-normalised here), most
    similar first (ties: the lower index); only ``candidates`` ([L] bool, default all) are
    neighbours; −1 / NaN pad when there are fewer."""
    d = np.asarray(directions, np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    L = d.shape[0]
    c = d @ d.T
    c[np.arange(L), np.arange(L)] = -np.inf
    if candidates is not None:
        c[:, ~np.asarray(candidates, bool)] = -np.inf
    m = min(n, max(L - 1, 0))
    idx = np.full((L, n), -1, np.int64)
    cos = np.full((L, n), np.nan)
    if m:
        order = np.argsort(-c, axis=1, kind="stable")[:, :m]
        best = np.take_along_axis(c, order, axis=1)
        ok = np.isfinite(best)
        idx[:, :m] = np.where(ok, order, -1)
        cos[:, :m] = np.where(ok, best, np.nan)
    return idx, cos


def cross_model_matches(names: Sequence[str], directions: Sequence[np.ndarray],
                        alive: Sequence[np.ndarray] | None = None) -> dict[str, pd.DataFrame]:
    """Best decoder match of every latent in every other model (universality's
    :func:`~jsae.analyses.universality.best_cosine_match`, among the other model's
    ``alive`` latents; default all).

    Returns ``{name: DataFrame(latent, model, match, cosine, mutual)}``: one row per latent ×
    other model (latent-major, models in the given order); ``mutual``: the match's own best
    match in this model is this latent. ``match`` is −1 (``cosine`` NaN) when the other
    model has no alive latent.
    """
    alive = [np.ones(len(d), bool) for d in directions] if alive is None else [np.asarray(a, bool) for a in alive]
    best: dict[tuple[int, int], np.ndarray] = {}
    score: dict[tuple[int, int], np.ndarray] = {}
    for i, da in enumerate(directions):
        for j, db in enumerate(directions):
            if i == j:
                continue
            keep = np.flatnonzero(alive[j])
            if keep.size:
                idx, cos = best_cosine_match(np.asarray(da, np.float64), np.asarray(db, np.float64)[keep])
                best[i, j], score[i, j] = keep[idx], cos
            else:
                best[i, j], score[i, j] = np.full(len(da), -1, np.int64), np.full(len(da), np.nan)
    out = {}
    for i, name in enumerate(names):
        others = [j for j in range(len(names)) if j != i]
        L = len(directions[i])
        if not others:
            out[name] = pd.DataFrame({"latent": np.zeros(0, np.int64), "model": np.zeros(0, object),
                                      "match": np.zeros(0, np.int64), "cosine": np.zeros(0),
                                      "mutual": np.zeros(0, bool)})
            continue
        match = np.stack([best[i, j] for j in others], axis=1)  # [L, m]
        cos = np.stack([score[i, j] for j in others], axis=1)
        mutual = np.stack([np.where(best[i, j] >= 0, best[j, i][np.maximum(best[i, j], 0)] == np.arange(L), False)
                           for j in others], axis=1)
        out[name] = pd.DataFrame({"latent": np.repeat(np.arange(L), len(others)),
                                  "model": np.tile(np.array([names[j] for j in others], dtype=object), L),
                                  "match": match.ravel(), "cosine": cos.ravel(), "mutual": mutual.ravel()})
    return out


# ----------------------------------------------------------------------------- descriptions


def best_label(enr: Enrichment, *, min_hits: int = 5, min_precision: float = 0.5,
               min_gain: float = 0.5) -> np.ndarray:
    """``[L]`` the index of each latent's label value (into ``enr.design.values``), −1 for none.

    Eligible values: ``hits ≥ min_hits``, ``precision ≥ min_precision`` and precision at
    least ``min_gain`` of the way from the value's base rate to 1,
    ``(precision − base_rate) / (1 − base_rate) ≥ min_gain``. Among those the highest F1,
    then the highest lift, then the first in design order (columns, then sorted values).
    """
    L, V = enr.hits.shape
    if V == 0:
        return np.full(L, -1, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = (enr.precision - enr.base_rate[None, :]) / (1.0 - enr.base_rate[None, :])
    ok = (enr.hits >= min_hits) & (enr.precision >= min_precision) & (gain >= min_gain)
    f1 = np.where(ok, enr.f1, -np.inf)
    lift = np.where(ok, enr.lift, -np.inf)
    pos = np.broadcast_to(np.arange(V), (L, V))
    first = np.lexsort((pos, -lift, -f1), axis=-1)[:, 0]
    return np.where(ok[np.arange(L), first], first, -1)


def best_correlate(eff: NumericEffects, *, alpha: float = 0.05, min_abs_d: float = 0.5,
                   min_hits: int = 5) -> np.ndarray:
    """``[L]`` the index of each latent's numeric correlate (into ``eff.design.numeric``),
    −1 for none. Eligible columns: ``q < alpha`` (BH over the model's latents × columns),
    ``|d| ≥ min_abs_d`` and at least ``min_hits`` firing rows with a value. Among those the
    largest ``|d|``, then the smallest ``p``, then the first column."""
    L, K = eff.d.shape
    if K == 0:
        return np.full(L, -1, np.int64)
    ok = (eff.q < alpha) & (np.abs(eff.d) >= min_abs_d) & (eff.n_fires >= min_hits)
    size = np.where(ok, np.abs(eff.d), -np.inf)
    p = np.where(ok, eff.p, np.inf)
    pos = np.broadcast_to(np.arange(K), (L, K))
    first = np.lexsort((pos, p, -size), axis=-1)[:, 0]
    return np.where(ok[np.arange(L), first], first, -1)


def format_rate(rate: float) -> str:
    """A share as a percentage: ``63 %`` (≥ 10 %), ``4.1 %`` (≥ 1 %), ``0.12 %`` (2 significant digits)."""
    pct = 100.0 * float(rate)
    if pct >= 10:
        return f"{pct:.0f} %"
    if pct >= 1:
        return f"{pct:.1f} %"
    return f"{pct:.2g} %"


def _signed(x: float) -> str:
    return f"{x:+.1f}".replace("-", "\u2212")


def describe_latents(firing_rate: np.ndarray, n_fires: np.ndarray,
                     label: Sequence[tuple[str, str, float, float] | None],
                     correlate: Sequence[tuple[str, float] | None], *, rare_rate: float = 0.005,
                     dense_rate: float = 0.5) -> tuple[list[str], list[str]]:
    """``(status [L], description [L])``, one line per latent from its statistics only.

    ``status``: ``dead`` (never fires), ``rare`` (``firing_rate < rare_rate``), ``dense``
    (``firing_rate ≥ dense_rate``) or ``""``. ``label``: ``(column, value, precision,
    recall)`` of :func:`best_label` or ``None``; ``correlate``: ``(column, d)`` of
    :func:`best_correlate` or ``None``. The description joins with ``"; "``:

    * ``dead: never fires`` (nothing else);
    * ``rare: fires on 0.12 % of rows`` / ``dense: fires on 63 % of rows`` when so;
    * ``column = value: P 1.00, R 0.99`` (the label);
    * ``column −2.3 sd`` (the correlate: Cohen's d, signed, one decimal);
    * ``no label or correlate: fires on 4.1 % of rows`` when none of the above.
    """
    status, out = [], []
    for rate, n, lab, cor in zip(firing_rate, n_fires, label, correlate):
        if n == 0:
            status.append("dead")
            out.append("dead: never fires")
            continue
        st = "rare" if rate < rare_rate else "dense" if rate >= dense_rate else ""
        parts = [f"{st}: fires on {format_rate(rate)} of rows"] if st else []
        if lab is not None:
            parts.append(f"{lab[0]} = {lab[1]}: P {lab[2]:.2f}, R {lab[3]:.2f}")
        if cor is not None:
            parts.append(f"{cor[0]} {_signed(cor[1])} sd")
        if not parts:
            parts.append(f"no label or correlate: fires on {format_rate(rate)} of rows")
        status.append(st)
        out.append("; ".join(parts))
    return status, out


# ----------------------------------------------------------------------------- assembly


@dataclass
class ModelAtlas:
    """The atlas of one model (``L`` latents, ``N`` rows).

    Attributes:
      name, spec: the model (``spec``: :meth:`ModelSpec.to_dict`, empty for bare codes).
      latents: one row per latent: ``latent, n_fires, firing_rate, mean_activation,
        max_activation, q25 … q99`` (:attr:`AtlasOptions.quantiles`), ``label_column,
        label_value, label_precision, label_recall, label_f1, label_lift, label_hits``
        (:func:`best_label`; None / NaN without one), ``correlate_column, correlate_d,
        correlate_p, correlate_q, correlate_rho`` (:func:`best_correlate`), ``neighbour,
        neighbour_cosine`` (the nearest decoder neighbour; −1 / NaN without directions),
        ``match_model, match_latent, match_cosine`` (the best match over the other models,
        filled by :func:`latent_atlas`), ``status, description`` (:func:`describe_latents`).
      enrichment: :meth:`Enrichment.frame`. correlations: :meth:`NumericEffects.frame`.
      hist_counts ``[L, n_bins]`` int64, hist_edges ``[L, n_bins + 1]``: :func:`activation_histograms`.
      examples: :func:`examples_frame` (``row``: store rows).
      neighbours: ``latent, rank, neighbour, cosine`` (padding left out).
      matches: :func:`cross_model_matches` (empty for one model).
    """

    name: str
    spec: dict[str, Any]
    latents: pd.DataFrame
    enrichment: pd.DataFrame
    correlations: pd.DataFrame
    hist_counts: np.ndarray
    hist_edges: np.ndarray
    examples: pd.DataFrame
    neighbours: pd.DataFrame
    matches: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class AtlasResult:
    """The atlas of every model: ``models`` (``{name: ModelAtlas}``, batch order), ``rows``
    (the store rows used, ``[N]``), ``categorical`` / ``numeric`` (the metadata columns
    used) and ``params`` (the options and counts)."""

    models: dict[str, ModelAtlas]
    rows: np.ndarray
    categorical: list[str]
    numeric: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def __getitem__(self, name: str) -> ModelAtlas:
        try:
            return self.models[name]
        except KeyError:
            raise NotFoundError(f"no model {name!r} in the atlas; models: {', '.join(self.models)}") from None

    def frame(self, what: str) -> pd.DataFrame:
        """One table of every model: ``what`` is ``latents``, ``enrichment``, ``correlations``,
        ``examples``, ``neighbours`` or ``matches``; a ``model`` column first."""
        if what not in ("latents", "enrichment", "correlations", "examples", "neighbours", "matches"):
            raise BadValueError(f"what={what!r} is not a table of the atlas; use latents, enrichment, "
                                "correlations, examples, neighbours or matches.")
        parts = [getattr(m, what).assign(**{"model": name}) for name, m in self.models.items()]
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        return df[["model", *[c for c in df.columns if c != "model"]]] if len(df.columns) else df


def _quantile_name(q: float) -> str:
    return "q" + f"{q * 100:g}".replace(".", "_")


def model_atlas(codes: np.ndarray, design: MetadataDesign, options: AtlasOptions = AtlasOptions(), *,
                directions: np.ndarray | None = None, name: str = "model", spec: dict[str, Any] | None = None,
                row_ids: np.ndarray | None = None, seed: int | Sequence[int] | None = None) -> ModelAtlas:
    """Every statistic of one model's ``codes [N, L]`` on the rows of ``design`` (same order).

    ``directions``: its unit raw-space decoder directions ``[L, M]`` (neighbours; none
    without). ``row_ids``: store row of each position (examples). ``seed``: of the band
    draws (default ``options.seed``). ``matches`` stays empty (:func:`latent_atlas` fills it).
    """
    v = np.asarray(codes, np.float64)
    if v.ndim != 2 or v.shape[0] != design.n_rows:
        raise BadValueError(f"codes of shape {v.shape} do not match the {design.n_rows} metadata rows.")
    L = v.shape[1]
    o = options
    summ = firing_summary(v)
    order, svals = sorted_activations(v)
    quant = activation_quantiles(svals, summ["n_fires"], o.quantiles)
    counts, edges = activation_histograms(v, summ["max_activation"], o.n_bins)
    t_rows, t_acts = top_examples(order, svals, summ["n_fires"], o.n_top)
    b_rows, b_acts = band_examples(order, svals, summ["n_fires"], o.bands, o.per_band, skip=o.n_top,
                                   seed=o.seed if seed is None else seed)
    examples = examples_frame(t_rows, t_acts, b_rows, b_acts, o.bands, row_ids)
    enr = enrichment(v > 0, design)
    eff = numeric_effects(v, design)
    lab = best_label(enr, min_hits=o.min_hits, min_precision=o.min_precision, min_gain=o.min_gain)
    cor = best_correlate(eff, alpha=o.alpha, min_abs_d=o.min_abs_d, min_hits=o.min_hits)
    alive = summ["n_fires"] > 0
    if directions is not None:
        nb_idx, nb_cos = decoder_neighbours(directions, o.n_neighbours, alive)
    else:
        nb_idx, nb_cos = np.full((L, o.n_neighbours), -1, np.int64), np.full((L, o.n_neighbours), np.nan)
    ar = np.arange(L)

    def pick(arr, idx, fill=np.nan):
        return np.where(idx >= 0, arr[ar, np.maximum(idx, 0)], fill) if arr.shape[1] else np.full(L, fill)

    value_col = np.array(design.categorical, dtype=object)[design.value_column] if design.values else None
    labels = [None if j < 0 else (value_col[j], design.values[j], enr.precision[i, j], enr.recall[i, j])
              for i, j in enumerate(lab)]
    cors = [None if j < 0 else (design.numeric[j], eff.d[i, j]) for i, j in enumerate(cor)]
    status, desc = describe_latents(summ["firing_rate"], summ["n_fires"], labels, cors, rare_rate=o.rare_rate,
                                    dense_rate=o.dense_rate)
    latents = pd.DataFrame({"latent": ar, **summ,
                            **{_quantile_name(q): quant[:, i] for i, q in enumerate(o.quantiles)}})
    latents["label_column"] = [None if x is None else x[0] for x in labels]
    latents["label_value"] = [None if x is None else x[1] for x in labels]
    for key in ("precision", "recall", "f1", "lift"):
        latents[f"label_{key}"] = pick(getattr(enr, key), lab)
    hits = pick(enr.hits, lab, 0)
    latents["label_hits"] = pd.array([int(h) if j >= 0 else None for h, j in zip(hits, lab)], dtype="Int64")
    latents["correlate_column"] = [None if x is None else x[0] for x in cors]
    for key in ("d", "p", "q", "rho"):
        latents[f"correlate_{key}"] = pick(getattr(eff, key), cor)
    latents["neighbour"] = nb_idx[:, 0] if o.n_neighbours else -1
    latents["neighbour_cosine"] = nb_cos[:, 0] if o.n_neighbours else np.nan
    latents["match_model"] = None
    latents["match_latent"] = -1
    latents["match_cosine"] = np.nan
    latents["status"] = status
    latents["description"] = desc
    keep = nb_idx.ravel() >= 0
    neighbours = pd.DataFrame({"latent": np.repeat(ar, o.n_neighbours)[keep],
                               "rank": np.tile(np.arange(o.n_neighbours), L)[keep],
                               "neighbour": nb_idx.ravel()[keep], "cosine": nb_cos.ravel()[keep]})
    return ModelAtlas(name, dict(spec or {}), latents, enr.frame(), eff.frame(), counts, edges, examples, neighbours)


def _best_match_columns(matches: pd.DataFrame, L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per latent the match of highest cosine over the other models (the first model on ties)."""
    model = np.full(L, None, dtype=object)
    latent = np.full(L, -1, np.int64)
    cos = np.full(L, np.nan)
    if len(matches):
        m = len(matches) // L
        c = matches["cosine"].to_numpy(np.float64).reshape(L, m)
        j = np.argmax(np.where(np.isfinite(c), c, -np.inf), axis=1)
        ok = np.isfinite(c[np.arange(L), j])
        flat = np.arange(L) * m + j
        model[ok] = matches["model"].to_numpy(object)[flat][ok]
        latent[ok] = matches["match"].to_numpy(np.int64)[flat][ok]
        cos[ok] = c[np.arange(L), j][ok]
    return model, latent, cos


def _rows_and_table(models: ModelBatch, data: EmbeddingStore | str | np.ndarray, table: pd.DataFrame | None,
                    rows: np.ndarray | None) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, str]:
    """``(x [N, M], table [N rows], store rows [N], source)`` of the atlas input."""
    if isinstance(data, np.ndarray):
        if table is None:
            raise BadValueError("an embedding array needs its metadata table (table=, one row per embedding).")
        x = np.asarray(data, np.float32)
        if x.ndim != 2 or len(table) != len(x):
            raise BadValueError(f"embeddings of shape {x.shape} and a table of {len(table)} rows do not match; "
                                "give one metadata row per embedding.")
        ids = np.arange(len(x)) if rows is None else np.asarray(rows, np.int64)
        if rows is not None:
            x, table = x[ids], table.iloc[ids]
        check_dim(models, x=x)
        return x, table.reset_index(drop=True), ids, "array"
    store = as_store(data)
    check_dim(models, store=store)
    meta = store.metadata if table is None else table
    if len(meta) != store.num_rows:
        raise StoreError(f"the table has {len(meta)} rows but store {store.path} has {store.num_rows}.")
    ids = np.arange(store.num_rows) if rows is None else np.asarray(rows, np.int64)
    x = store.read() if rows is None else store.read(ids)
    return x, meta.iloc[ids].reset_index(drop=True), ids, str(store.path)


def latent_atlas(models: ModelBatch, data: EmbeddingStore | str | np.ndarray, table: pd.DataFrame | None = None, *,
                 rows: Sequence[int] | None = None, options: AtlasOptions | None = None,
                 **overrides: Any) -> AtlasResult:
    """The feature atlas of every latent of every model of ``models`` (a Sweep or any ModelBatch).

    Args:
      data: a store (or its path; ``table`` defaults to its metadata) or raw embeddings
        ``x [N, M]`` with their ``table`` (``N`` rows).
      rows: the store rows to use (default all); examples name store rows.
      options: :class:`AtlasOptions`; ``overrides``: fields of it (``n_top=20``).
    Every model is encoded once (:meth:`ModelBatch.encode`, ``block_rows`` rows at a time;
    all codes are held, ``N · ΣL`` float32); the metadata matrices are built once; each
    model's statistics are vectorised over its latents (:func:`model_atlas`), then the
    matches across models (:func:`cross_model_matches`) fill ``matches`` and the
    ``match_*`` columns of ``latents``. Band draws of model ``i`` use seed ``(seed, i)``.
    """
    o = replace(options or AtlasOptions(), **overrides) if overrides else (options or AtlasOptions())
    models.warn_if_unfinished("feature atlas")
    x, meta, ids, source = _rows_and_table(models, data, table, None if rows is None else np.asarray(rows))
    cat = list(o.categorical) if o.categorical is not None else categorical_columns(meta, exclude=o.exclude,
                                                                                   max_values=o.max_values)
    num = list(o.numeric) if o.numeric is not None else numeric_columns(meta, exclude=o.exclude)
    design = metadata_design(meta, cat, num)
    codes = models.encode(x, block_rows=o.block_rows)
    directions = models.raw_directions()
    out: dict[str, ModelAtlas] = {}
    for i, (spec, v, d) in enumerate(zip(models.specs, codes, directions)):
        out[spec.name] = model_atlas(v, design, o, directions=d, name=spec.name, spec=spec.to_dict(), row_ids=ids,
                                     seed=(o.seed, i))
    alive = [out[n].latents["n_fires"].to_numpy() > 0 for n in models.names]
    for name, m in cross_model_matches(models.names, directions, alive).items():
        atlas = out[name]
        atlas.matches = m
        mm, ml, mc = _best_match_columns(m, len(atlas.latents))
        atlas.latents["match_model"], atlas.latents["match_latent"], atlas.latents["match_cosine"] = mm, ml, mc
    params = {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in o.__dict__.items()},
              "source": source, "n_rows": int(len(ids)), "models": models.names,
              "run_dir": None if models.run_dir is None else str(models.run_dir), "step": models.step}
    return AtlasResult(out, ids, cat, num, params)
