"""Input normalisation, fitted on training data and stored with the checkpoint.

``apply``: ``x_n = (x − μ) / s``; ``invert``: ``x = x_n · s + μ``. Kinds:

* ``none``: μ = 0, s = 1.
* ``scale``: μ = 0, s = sqrt(mean_b ‖x_b‖² / M) (a scalar): rows have mean squared
  norm M, as in the OpenAI recipe.
* ``center_scale``: μ = mean(x), s = sqrt(mean_b ‖x_b − μ‖² / M) (a scalar).
* ``standardize``: μ = mean(x), s = per-dimension std (a vector).

A scalar ``s`` leaves the normalised MSE unchanged between the two spaces.
Every public function of a loaded sweep takes and returns raw embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadValueError

__all__ = ["Normalizer", "fit_normalizer", "geometric_median"]


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


def fit_normalizer(x: np.ndarray, kind: str = "center_scale") -> Normalizer:
    """Fit a :class:`Normalizer` on training rows ``x [N, M]`` (float64 statistics)."""
    x = np.asarray(x, np.float64)
    m = x.shape[1]
    zeros, ones = np.zeros(m), np.ones(m)
    if kind == "none":
        return Normalizer(kind, zeros, ones)
    if kind == "scale":
        s = np.sqrt(np.mean(np.sum(x * x, axis=1)) / m)
        return Normalizer(kind, zeros, np.full(m, max(s, 1e-12)))
    mu = x.mean(axis=0)
    if kind == "center_scale":
        s = np.sqrt(np.mean(np.sum((x - mu) ** 2, axis=1)) / m)
        return Normalizer(kind, mu, np.full(m, max(s, 1e-12)))
    if kind == "standardize":
        return Normalizer(kind, mu, np.maximum(x.std(axis=0), 1e-12))
    raise BadValueError(f"unknown normalisation {kind!r}; use none, scale, center_scale or standardize.")


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
