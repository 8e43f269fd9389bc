"""Feature atlas, examples: the rows shown for each latent — its strongest activations
(:func:`top_examples`), seeded draws from each activation band (:func:`band_examples`) and
both as one table (:func:`examples_frame`). The rules: :mod:`jsae.analyses.atlas`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["top_examples", "band_examples", "examples_frame"]


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
    firing rows drawn without replacement from each activation band (see :mod:`jsae.analyses.atlas`),
    listed by activation, largest first; −1 / NaN where a band has fewer rows.

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
