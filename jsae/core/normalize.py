"""Input normalisation, fitted on training data and stored with the checkpoint.

``apply``: ``x_n = (x − μ) / s``; ``invert``: ``x = x_n · s + μ``. Kinds:

* ``none``: μ = 0, s = 1.
* ``scale``: μ = 0, s = sqrt(mean_b ‖x_b‖² / M) (a scalar): rows have mean squared
  norm M, as in the OpenAI recipe.
* ``center_scale``: μ = mean(x), s = sqrt(mean_b ‖x_b − μ‖² / M) (a scalar).
* ``standardize``: μ = mean(x), s = per-dimension std (a vector).

A scalar ``s`` leaves the normalised MSE unchanged between the two spaces.
Every public function of a loaded sweep takes and returns raw embeddings.

The statistics are float64 sums over blocks of rows (:func:`row_moments`, two passes:
the mean, then the squared deviations from it), so fitting ``[N, M]`` float32 rows holds
one float64 block at a time, never a float64 copy of the rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadValueError

__all__ = ["Normalizer", "RowMoments", "row_moments", "fit_normalizer", "normalizer_from_moments",
           "geometric_median", "BLOCK_ROWS"]

#: rows per float64 block of :func:`row_moments` (8192 × 192 × 8 B = 12 MiB)
BLOCK_ROWS = 8192


@dataclass(frozen=True)
class Normalizer:
    kind: str
    mean: np.ndarray  # [M]
    scale: np.ndarray  # [M] (constant for the scalar kinds)

    def apply(self, x):
        """Raw ``[..., M]`` → normalised (numpy or jax arrays)."""
        return (x - self.mean.astype(np.float32)) / self.scale.astype(np.float32)

    def invert(self, x):
        """Normalised ``[..., M]`` → raw."""
        return x * self.scale.astype(np.float32) + self.mean.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        return cls(kind=d["kind"], mean=np.asarray(d["mean"], np.float64), scale=np.asarray(d["scale"], np.float64))


@dataclass(frozen=True)
class RowMoments:
    """Per-dimension statistics of rows ``x [N, M]`` (float64): what a normaliser and the
    variance checks need, from one read of the rows in blocks.

    ``mean = Σ_b x_b / N``; ``sq_dev = Σ_b (x_b − mean)²`` (the centred sum of squares,
    from a second pass, not ``Σx² − N·mean²``, which cancels catastrophically);
    ``sq = Σ_b x_b²``.
    """

    n: int
    mean: np.ndarray  # [M]
    sq_dev: np.ndarray  # [M]
    sq: np.ndarray  # [M]

    @property
    def variance_sum(self) -> float:
        """``Σ_b ‖x_b − mean‖²``: the total variance times N."""
        return float(np.sum(self.sq_dev))


def row_moments(x: np.ndarray, block_rows: int = BLOCK_ROWS) -> RowMoments:
    """:class:`RowMoments` of ``x [N, M]``, in float64 blocks of ``block_rows`` rows (two passes)."""
    n, m = int(x.shape[0]), int(x.shape[1])
    total, sq = np.zeros(m), np.zeros(m)
    for start in range(0, n, block_rows):
        b = np.asarray(x[start:start + block_rows], np.float64)
        total += b.sum(axis=0)
        sq += np.einsum("bm,bm->m", b, b)
    b = None  # the block is not kept through the second pass
    mean = total / max(n, 1)
    sq_dev = np.zeros(m)
    for start in range(0, n, block_rows):
        d = np.asarray(x[start:start + block_rows], np.float64) - mean
        sq_dev += np.einsum("bm,bm->m", d, d)
    return RowMoments(n, mean, sq_dev, sq)


def normalizer_from_moments(mom: RowMoments, kind: str = "center_scale") -> Normalizer:
    """The :class:`Normalizer` of ``kind`` for rows with moments ``mom`` (see the module doc)."""
    m = len(mom.mean)
    n = max(mom.n, 1)
    zeros, ones = np.zeros(m), np.ones(m)
    if kind == "none":
        return Normalizer(kind, zeros, ones)
    if kind == "scale":  # mean_b ‖x_b‖² / M
        s = float(np.sqrt(np.sum(mom.sq) / n / m))
        return Normalizer(kind, zeros, np.full(m, max(s, 1e-12)))
    if kind == "center_scale":  # mean_b ‖x_b − μ‖² / M
        s = float(np.sqrt(np.sum(mom.sq_dev) / n / m))
        return Normalizer(kind, mom.mean.copy(), np.full(m, max(s, 1e-12)))
    if kind == "standardize":
        return Normalizer(kind, mom.mean.copy(), np.maximum(np.sqrt(mom.sq_dev / n), 1e-12))
    raise BadValueError(f"unknown normalisation {kind!r}; use none, scale, center_scale or standardize.")


def fit_normalizer(x: np.ndarray, kind: str = "center_scale", *, moments: RowMoments | None = None) -> Normalizer:
    """Fit a :class:`Normalizer` on training rows ``x [N, M]`` (float64 statistics, in blocks).

    ``moments``: :func:`row_moments` of ``x`` when already computed (the rows are then not read).
    """
    if kind not in ("none", "scale", "center_scale", "standardize"):
        raise BadValueError(f"unknown normalisation {kind!r}; use none, scale, center_scale or standardize.")
    return normalizer_from_moments(moments if moments is not None else row_moments(x), kind)


def geometric_median(x: np.ndarray, iters: int = 100, tol: float = 1e-7) -> np.ndarray:
    """Weiszfeld's algorithm: ``argmin_c Σ_b ‖x_b − c‖`` for ``x [N, M]`` (float64)."""
    x = np.asarray(x, np.float64)
    c = x.mean(axis=0)
    for _ in range(iters):
        d = np.linalg.norm(x - c, axis=1)
        w = 1.0 / np.maximum(d, 1e-12)
        c_new = (w[:, None] * x).sum(axis=0) / w.sum()
        if np.linalg.norm(c_new - c) <= tol * max(1.0, np.linalg.norm(c)):
            return c_new
        c = c_new
    return c
