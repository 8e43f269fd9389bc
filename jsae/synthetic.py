"""Synthetic embeddings with a known sparse structure (for tests, demos and benchmarks).

``x_b = Σ_j c_bj D_j + μ + σ ε_b``: ``D [n_atoms, M]`` random unit directions,
codes ``c_b`` with ``active`` non-negative entries (|N(0,1)| + 0.5 scaled), offset
``μ`` and Gaussian noise. An SAE with ``k = active`` and ``L ≥ n_atoms`` should
recover the rows of ``D`` as decoder directions.

:func:`make_dictionary_data` returns every row (and the codes) at once;
:func:`dictionary_blocks` gives the same rows, bit for bit, a block at a time, in memory
proportional to the block (``jsae store synth`` of millions of rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

__all__ = ["SyntheticData", "LabelledData", "make_dictionary_data", "dictionary_blocks", "make_labelled_data",
           "dictionary_recovery", "synthetic_table"]


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


def _fork(rng: np.random.Generator) -> np.random.Generator:
    """A generator at the same point of the same stream as ``rng`` (which is not advanced)."""
    bits = type(rng.bit_generator)()
    bits.state = rng.bit_generator.state
    return np.random.Generator(bits)


def dictionary_blocks(n: int, dim: int = 192, n_atoms: int = 256, active: int = 8, noise: float = 0.02,
                      offset: float = 1.0, seed: int = 0, rows_per_block: int = 8192) -> Iterator[np.ndarray]:
    """The rows of ``make_dictionary_data(n, dim, n_atoms, active, noise, offset, seed).x``,
    ``rows_per_block`` at a time (float32 ``[k, dim]`` blocks, in order), equal bit for bit.

    :func:`make_dictionary_data` draws, from one generator, the dictionary, then all ``n ×
    n_atoms`` uniforms that pick each row's support, then all ``n × active`` code values, the
    offset and all ``n × dim`` noise values. Here each of those streams is read block by block
    from a copy of the generator placed at its start (the uniforms take one draw each, so the
    generator skips them with ``advance``; the code values are drawn once to be skipped), so
    memory is one float32 block and the float64 temporaries of :data:`_DRAW_ROWS` rows, not
    ``O(n × n_atoms)``.
    """
    if rows_per_block < 1:
        raise ValueError(f"rows_per_block must be >= 1; got {rows_per_block}")
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_atoms, dim))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    uniforms = _fork(rng)                      # the support stream: n × n_atoms doubles, one draw each
    rng.bit_generator.advance(n * n_atoms)
    values = _fork(rng)                        # the code values: n × active normals (a varying number of draws)
    for start in range(0, n, rows_per_block):
        rng.standard_normal(min(rows_per_block, n - start) * active)
    mu = offset * rng.standard_normal(dim) / np.sqrt(dim)
    for start in range(0, n, rows_per_block):  # rng now draws the noise
        block = np.empty((min(rows_per_block, n - start), dim), np.float32)
        for a in range(0, block.shape[0], _DRAW_ROWS):   # float64 temporaries for _DRAW_ROWS rows at a time
            k = min(_DRAW_ROWS, block.shape[0] - a)
            codes = np.zeros((k, n_atoms))
            support = np.argsort(uniforms.random((k, n_atoms)), axis=1)[:, :active]
            np.put_along_axis(codes, support, np.abs(values.standard_normal((k, active))) + 0.5, axis=1)
            block[a:a + k] = codes @ d + mu + noise * rng.standard_normal((k, dim))
        yield block


#: rows :func:`dictionary_blocks` draws at once (its float64 temporaries: about ``_DRAW_ROWS × (4 n_atoms +
#: 4 dim) × 8`` bytes)
_DRAW_ROWS = 1024


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


@dataclass(frozen=True)
class LabelledData:
    """Synthetic embeddings with a planted binary feature and a planted split.

    ``x [N, M]``, ``table`` (one row per embedding: ``id``, ``split`` ∈ {sae, train,
    test}, ``lang`` ∈ {es, en}, ``gender`` ∈ {f, m}, ``speaker``, ``source``,
    ``offset``, ``duration``), and the planted unit directions.
    """

    x: np.ndarray  # [N, M] float32
    table: pd.DataFrame
    feature: np.ndarray  # [M] unit direction p added to every positive ("es") row
    subgroups: dict  # {"f": [M], "m": [M]} unit directions g added to the positive rows of that sub-group
    dictionary: np.ndarray  # [n_atoms, M] the background atoms


def make_labelled_data(n_sae: int = 4000, n_train: int = 600, n_test: int = 400, *, dim: int = 24,
                       n_atoms: int = 24, active: int = 3, positive_fraction: float = 0.3,
                       feature_scale: float = 2.5, split_scale: float = 1.0, noise: float = 0.02,
                       n_sources: int = 20, seed: int = 0) -> LabelledData:
    """Background dictionary data plus a planted language feature and a planted split.

    Every row is ``x = Σ_j c_j D_j + μ + σ ε`` (as :func:`make_dictionary_data`).
    Positive rows (``lang = es``) also get ``feature_scale · p + split_scale · g_s``
    where ``s`` is the row's ``gender`` (f/m): the positives form two close clusters,
    ``p + g_f`` and ``p + g_m``; negative rows (``en``) get a gender label but no
    planted direction. ``p, g_f, g_m`` are orthonormal, and the background is
    projected onto their orthogonal complement (so the planted feature is exactly
    separable from the background).

    A TopK SAE with few latents merges the two clusters into one "es" latent; with
    enough latents it splits it into an "es/f" and an "es/m" latent (the paper's
    Section V-B). Rows: ``n_sae`` unlabelled-use rows (``split = sae``,
    ``positive_fraction`` of them positive), then a balanced labelled ``train``
    and ``test`` split.
    """
    rng = np.random.default_rng([seed, 21])
    n = n_sae + n_train + n_test
    base = make_dictionary_data(n, dim=dim, n_atoms=n_atoms, active=active, noise=noise, seed=seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, 3)))
    p, g_f, g_m = q.T
    # The background lives in the orthogonal complement of the planted directions.
    x = base.x.astype(np.float64)
    x -= (x @ q) @ q.T
    atoms = base.dictionary - (base.dictionary @ q) @ q.T
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    split = np.array(["sae"] * n_sae + ["train"] * n_train + ["test"] * n_test)
    positive = np.concatenate([rng.random(n_sae) < positive_fraction,
                               rng.permutation(np.arange(n_train) < n_train // 2),
                               rng.permutation(np.arange(n_test) < n_test // 2)])
    female = rng.random(n) < 0.5
    x[positive] += feature_scale * p
    x[positive & female] += split_scale * g_f
    x[positive & ~female] += split_scale * g_m
    source_idx = rng.integers(0, n_sources, n)
    table = pd.DataFrame({
        "id": [f"lab-{i:06d}" for i in range(n)],
        "split": split,
        "lang": np.where(positive, "es", "en"),
        "gender": np.where(female, "f", "m"),
        "speaker": [f"spk{i % 97:03d}" for i in range(n)],
        "source": [f"call_{s:03d}.wav" for s in source_idx],
        "offset": np.round(rng.uniform(0.0, 1.5, n), 3),
        "duration": np.full(n, 0.5),
    })
    return LabelledData(x.astype(np.float32), table, p, {"f": g_f, "m": g_m}, atoms)
