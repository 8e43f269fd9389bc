"""Synthetic embeddings with a known sparse structure (for tests, demos and benchmarks).

``x_b = Σ_j c_bj D_j + μ + σ ε_b``: ``D [n_atoms, M]`` random unit directions,
codes ``c_b`` with ``active`` non-negative entries (|N(0,1)| + 0.5 scaled), offset
``μ`` and Gaussian noise. An SAE with ``k = active`` and ``L ≥ n_atoms`` should
recover the rows of ``D`` as decoder directions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SyntheticData", "make_dictionary_data", "dictionary_recovery", "synthetic_table"]


@dataclass(frozen=True)
class SyntheticData:
    x: np.ndarray  # [N, M] float32
    dictionary: np.ndarray  # [n_atoms, M] unit rows
    codes: np.ndarray  # [N, n_atoms] non-negative, `active` non-zeros per row


def make_dictionary_data(n: int, dim: int = 192, n_atoms: int = 256, active: int = 8, noise: float = 0.02,
                         offset: float = 1.0, seed: int = 0) -> SyntheticData:
    """Draw ``n`` embeddings from a random ground-truth dictionary (see module doc)."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_atoms, dim))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    codes = np.zeros((n, n_atoms))
    support = np.argsort(rng.random((n, n_atoms)), axis=1)[:, :active]
    np.put_along_axis(codes, support, np.abs(rng.standard_normal((n, active))) + 0.5, axis=1)
    mu = offset * rng.standard_normal(dim) / np.sqrt(dim)
    x = codes @ d + mu + noise * rng.standard_normal((n, dim))
    return SyntheticData(x.astype(np.float32), d, codes)


def dictionary_recovery(true_dirs: np.ndarray, learned_dirs: np.ndarray, threshold: float = 0.9) -> tuple[float, float]:
    """``(fraction of true directions with max cosine ≥ threshold, mean max cosine)``.

    true_dirs ``[n, M]``, learned_dirs ``[L, M]``; both compared after unit-normalising rows.
    """
    t = true_dirs / np.linalg.norm(true_dirs, axis=1, keepdims=True)
    lrn = learned_dirs / np.linalg.norm(learned_dirs, axis=1, keepdims=True)
    best = (t @ lrn.T).max(axis=1)
    return float(np.mean(best >= threshold)), float(best.mean())


def synthetic_table(n: int, seed: int = 0, val_fraction: float = 0.1) -> pd.DataFrame:
    """A metadata table for ``n`` synthetic rows: ``id`` and a ``split`` column."""
    rng = np.random.default_rng([seed, 1])
    split = np.where(rng.random(n) < val_fraction, "val", "train")
    return pd.DataFrame({"id": [f"syn-{i:07d}" for i in range(n)], "split": split})
