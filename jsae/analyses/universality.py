"""Universality (the paper's open question 5): do two sweeps learn the same features?

Two sweeps A and B (different seeds, or two encoders of the same audio) are compared
model by model (the models with the same ``k`` and latent size in both). For every
feature ℓ of A's model the best match in B's model is:

* ``decoder`` (the two sweeps live in the same embedding space: same dimension and
  same encoder): ``max_j cos(d^A_ℓ ⊙ s_A, d^B_j ⊙ s_B)``, raw-space decoder
  directions (``s``: each sweep's normalisation scale);
* ``activation`` (different spaces, or on request): ``max_j corr(v^A_ℓ, v^B_j)``,
  Pearson correlation of the activations over shared rows (one store read by both,
  or two stores joined on their ``id`` column).

Scores per model pair, both directions: ``mean_max`` (mean over features of the best
match) and ``frac_matched`` (share of features with a best match ≥ ``threshold``,
default 0.9). Latents that never fire on the given rows are left out when rows are
given. A chance level comes with every pair: the same score against random unit
directions (decoder) or against B's activations with the rows shuffled (activation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadValueError, NotFoundError
from ..models import ModelBatch
from ..store import EmbeddingStore, StoreError
from . import defaults as D
from .defaults import METHODS
from .labelled import as_store

__all__ = ["METHODS", "best_cosine_match", "best_correlation_match", "UniversalityResult", "compare_sweeps",
           "same_space"]



def best_cosine_match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best match of every row of ``a [..., La, M]`` among the rows of ``b [..., Lb, M]``.

    Rows are unit-normalised; returns ``(index [..., La], cosine [..., La])``.
    """
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    c = a @ np.swapaxes(b, -1, -2)  # [..., La, Lb] (a BLAS product; einsum's loop is several times slower)
    idx = np.argmax(c, axis=-1)
    return idx, np.take_along_axis(c, idx[..., None], axis=-1)[..., 0]


def best_correlation_match(va: np.ndarray, vb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best Pearson-correlated latent of ``vb [..., B, Lb]`` for every latent of ``va [..., B, La]``.

    Latents that are constant over the rows get correlation NaN (A side) / are never
    chosen (B side). Returns ``(index [..., La], correlation [..., La])``.
    """
    def z(v):
        v = np.asarray(v, np.float64)
        c = v - v.mean(axis=-2, keepdims=True)
        sd = np.sqrt((c * c).sum(axis=-2, keepdims=True))
        return np.where(sd > 0, c / np.where(sd > 0, sd, 1.0), 0.0), sd[..., 0, :] > 0
    za, alive_a = z(va)
    zb, alive_b = z(vb)
    corr = np.swapaxes(za, -1, -2) @ zb  # [..., La, Lb]
    corr = np.where(alive_b[..., None, :], corr, -np.inf)
    idx = np.argmax(corr, axis=-1)
    best = np.take_along_axis(corr, idx[..., None], axis=-1)[..., 0]
    return idx, np.where(alive_a & np.isfinite(best), best, np.nan)


@dataclass
class UniversalityResult:
    """Scores of a comparison.

    Attributes:
      pairs: one row per model pair: ``name, k, latent_size, method, n_a, n_b``
        (features compared), ``mean_max_ab, frac_matched_ab`` (A→B),
        ``mean_max_ba, frac_matched_ba`` (B→A), ``control_mean_max,
        control_frac_matched`` (A→chance).
      matches: ``{name: DataFrame(latent, best_match, score, control)}`` A→B per feature.
      params: the analysis parameters and overall scores.
    """

    pairs: pd.DataFrame
    matches: dict[str, pd.DataFrame]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Mean over model pairs of the A→B ``mean_max``."""
        return float(self.pairs["mean_max_ab"].mean())

    @property
    def control_score(self) -> float:
        return float(self.pairs["control_mean_max"].mean())


def _encoder_name(models: ModelBatch) -> str | None:
    src = models.info.data_source
    if not src or src == "array":
        return None
    try:
        info = as_store(src).info
    except (StoreError, FileNotFoundError, OSError):
        return None
    enc = info.get("encoder") or {}
    return str(enc.get("name")) if isinstance(enc, dict) and enc.get("name") else None


def same_space(a: ModelBatch, b: ModelBatch) -> bool:
    """True when both batches were trained on embeddings of one space: same dimension and
    (where the training stores say) the same encoder."""
    if a.dim != b.dim:
        return False
    ea, eb = _encoder_name(a), _encoder_name(b)
    return ea is None or eb is None or ea == eb


def _shared_rows(store_a: EmbeddingStore, store_b: EmbeddingStore, max_rows: int, seed: int):
    if store_a.path == store_b.path:
        rows = np.arange(store_a.num_rows)
        ra, rb = rows, rows
    else:
        ia = pd.Series(np.arange(store_a.num_rows), index=store_a.metadata["id"].astype(str))
        ib = pd.Series(np.arange(store_b.num_rows), index=store_b.metadata["id"].astype(str))
        common = ia.index.intersection(ib.index)
        if len(common) == 0:
            raise StoreError(f"stores {store_a.path} and {store_b.path} share no row id; the activation "
                             "comparison needs the same segments embedded by both encoders (same ids).")
        ra, rb = ia[common].to_numpy(), ib[common].to_numpy()
    if max_rows and len(ra) > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(ra), max_rows, replace=False))
        ra, rb = ra[pick], rb[pick]
    return store_a.read(ra), store_b.read(rb)


def compare_sweeps(sweep_a: ModelBatch, sweep_b: ModelBatch, *, store: EmbeddingStore | str | None = None,
                   store_b: EmbeddingStore | str | None = None, method: str = D.UNIVERSALITY_METHOD,
                   threshold: float = D.UNIVERSALITY_THRESHOLD, max_rows: int = D.UNIVERSALITY_MAX_ROWS,
                   seed: int = 0) -> UniversalityResult:
    """Compare the features of two sweeps (or any two ModelBatches) model by model (see the
    module docstring): every model of A with a namesake (same k or l1_coef, same latent size) in B.

    ``store``: rows for activation matching and for leaving out dead latents
    (read by both sweeps, or by A only when ``store_b`` holds B's embeddings of the
    same segments, joined on ``id``). ``method``: ``auto`` (decoder when
    :func:`same_space` and no ``store_b``, else activation), ``decoder`` or
    ``activation``.
    """
    sweep_a.warn_if_unfinished("universality comparison")
    sweep_b.warn_if_unfinished("universality comparison")
    if method not in METHODS:
        raise BadValueError(f"method={method!r} is not one of {METHODS}")
    if method == "auto":
        method = "decoder" if same_space(sweep_a, sweep_b) and store_b is None else "activation"
    if method == "decoder" and sweep_a.dim != sweep_b.dim:
        raise BadValueError(f"decoder matching needs one embedding space; dims are {sweep_a.dim} and "
                            f"{sweep_b.dim}. Use method='activation' with a store of shared segments.")
    xa = xb = None
    if store is not None:
        sa = as_store(store)
        sb = as_store(store_b) if store_b is not None else sa
        xa, xb = _shared_rows(sa, sb, max_rows, seed)
        if xa.shape[1] != sweep_a.dim or xb.shape[1] != sweep_b.dim:
            raise StoreError(f"store dims ({xa.shape[1]}, {xb.shape[1]}) do not match the sweeps "
                             f"({sweep_a.dim}, {sweep_b.dim}); give each sweep its own store "
                             "(store_b / --data-b).")
    elif method == "activation":
        raise StoreError("activation matching needs rows both sweeps can encode: pass store= (CLI: --data STORE, "
                         "and --data-b STORE_B for a second encoder's embeddings of the same segments).")
    rng = np.random.default_rng([seed, 5])
    in_b = set(sweep_b.names)
    shared = [n for n in sweep_a.names if n in in_b]
    rows, matches = [], {}
    if shared:
        a, b = sweep_a.select(names=shared), sweep_b.select(names=shared)
        va_all = a.encode(xa) if xa is not None else [None] * len(shared)
        vb_all = b.encode(xb) if xb is not None else [None] * len(shared)
        for name, va, vb in zip(shared, va_all, vb_all):
            ma, mb = a[name], b[name]
            L = ma.latent_size
            alive_a = (va > 0).any(axis=0) if va is not None else np.ones(L, bool)
            alive_b = (vb > 0).any(axis=0) if vb is not None else np.ones(L, bool)
            if method == "decoder":
                da, db = ma.raw_directions(), mb.raw_directions()  # [L, M]
                # Dead latents of the other side are never a match.
                idx_ab, s_ab = best_cosine_match(da, np.where(alive_b[:, None], db, 0.0))
                _, s_ba = best_cosine_match(db, np.where(alive_a[:, None], da, 0.0))
                rand = rng.standard_normal(db.shape)
                rand[~alive_b] = 0.0
                _, ctrl = best_cosine_match(da, rand)
            else:
                idx_ab, s_ab = best_correlation_match(va, vb)
                _, s_ba = best_correlation_match(vb, va)
                _, ctrl = best_correlation_match(va, vb[rng.permutation(vb.shape[0])])
            sab, sba, sc = s_ab[alive_a], s_ba[alive_b], ctrl[alive_a]
            rows.append({**ma.spec.to_dict(), "method": method, "n_a": int(alive_a.sum()),
                         "n_b": int(alive_b.sum()),
                         "mean_max_ab": float(np.nanmean(sab)) if sab.size else float("nan"),
                         "frac_matched_ab": float(np.mean(sab >= threshold)) if sab.size else float("nan"),
                         "mean_max_ba": float(np.nanmean(sba)) if sba.size else float("nan"),
                         "frac_matched_ba": float(np.mean(sba >= threshold)) if sba.size else float("nan"),
                         "control_mean_max": float(np.nanmean(sc)) if sc.size else float("nan"),
                         "control_frac_matched": float(np.mean(sc >= threshold)) if sc.size else float("nan")})
            matches[name] = pd.DataFrame({"latent": np.flatnonzero(alive_a), "best_match": idx_ab[alive_a],
                                          "score": s_ab[alive_a], "control": ctrl[alive_a]})
    if not rows:
        raise NotFoundError(f"no model of {sweep_a.run_dir} has a counterpart (same k and latent size) in "
                       f"{sweep_b.run_dir}; models: {sweep_a.names} vs {sweep_b.names}")
    df = pd.DataFrame(rows)
    params = {"run_a": str(sweep_a.run_dir), "run_b": str(sweep_b.run_dir), "method": method,
              "threshold": threshold, "store": None if store is None else str(as_store(store).path),
              "store_b": None if store_b is None else str(as_store(store_b).path),
              "n_rows": None if xa is None else int(len(xa)), "seed": seed,
              "control": "random unit directions" if method == "decoder" else "B's activations, rows shuffled"}
    res = UniversalityResult(df, matches, params)
    res.params.update({"score": res.score, "control_score": res.control_score,
                       "frac_matched": float(df["frac_matched_ab"].mean()),
                       "control_frac_matched": float(df["control_frac_matched"].mean())})
    return res
