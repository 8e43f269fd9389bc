"""Feature atlas, decoder geometry: each latent's nearest decoder neighbours in its own model
(:func:`decoder_neighbours`) and its best match in every other model of the batch
(:func:`cross_model_matches`, universality's best cosine match). The rules: :mod:`jsae.analyses.atlas`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..universality import best_cosine_match

__all__ = ["decoder_neighbours", "cross_model_matches"]


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
