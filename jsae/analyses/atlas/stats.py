"""Feature atlas, per-latent statistics: activation summary, enrichment and numeric correlates.

Each is vectorised over a model's latents: :func:`sorted_activations`, :func:`firing_summary`,
:func:`activation_quantiles` and :func:`activation_histograms` (from the codes alone);
:func:`enrichment` (every categorical value of a
:class:`~jsae.analyses.atlas.metadata.MetadataDesign`, :class:`Enrichment`); :func:`numeric_effects`
(Cohen's d, Welch's test, Spearman's rho with every numeric column, :class:`NumericEffects`)
with the Benjamini–Hochberg q-values of :func:`bh_qvalues`. The formulas: :mod:`jsae.analyses.atlas`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .metadata import MetadataDesign, average_ranks

__all__ = ["sorted_activations", "firing_summary", "activation_quantiles", "activation_histograms", "Enrichment",
           "enrichment", "bh_qvalues", "NumericEffects", "numeric_effects"]


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
    categorical value of ``design`` (:mod:`jsae.analyses.atlas`): ``hits = activeᵀ · onehot``,
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
    every numeric column of ``design`` (:mod:`jsae.analyses.atlas`), with BH q-values over all
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
