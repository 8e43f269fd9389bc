"""Labelled embeddings for the analyses: the rows of a store with a binary label.

A labelled store has a metadata column ``split`` (``train``/``test``, other values
ignored), a label column (``lang``, ``kind``, ...) and possibly more columns
(``gender``, ``source``, ``offset``, ``duration``). :func:`load_labelled` reads the
rows of one split as raw embeddings ``x [B, M]`` with a boolean target
``y [B]`` (``label == positive``).

Helpers shared by the analyses live here too: :func:`models_with` picks the models
of a sweep, :func:`raw_directions` gives their decoder directions in the raw space.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .store import EmbeddingStore, StoreError, open_store
from .sweep import Sweep

__all__ = ["LabelledSplit", "load_labelled", "as_store", "model_index", "raw_directions", "ALL_SPLITS"]

#: pass as ``split`` to use every row (every split value)
ALL_SPLITS = "all"


@dataclass(frozen=True)
class LabelledSplit:
    """Rows of a store with a binary target.

    Attributes:
      x: raw embeddings ``[B, M]`` float32. y: ``[B]`` bool, ``label == positive``.
      rows: ``[B]`` row indices into the store. table: their metadata rows.
      label, positive, negative: what ``y`` means (``negative`` is ``None`` when
        every other value counts as negative).
    """

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    table: pd.DataFrame
    label: str
    positive: str
    negative: str | None

    def __len__(self) -> int:
        return len(self.y)

    def column(self, name: str) -> np.ndarray:
        """A metadata column of these rows as strings."""
        if name not in self.table.columns:
            raise StoreError(f"no metadata column {name!r}; columns: {list(self.table.columns)}")
        return self.table[name].astype(str).to_numpy()


def as_store(store: EmbeddingStore | str) -> EmbeddingStore:
    """An opened store from a store or its path."""
    return store if isinstance(store, EmbeddingStore) else open_store(store)


def load_labelled(store: EmbeddingStore | str, label: str, positive: str, *, negative: str | None = None,
                  split: str | Sequence[str] | None = "train", split_column: str = "split") -> LabelledSplit:
    """The rows of ``split`` with ``y = (label == positive)``.

    ``negative``: keep only rows whose label is ``positive`` or ``negative``
    (``None``: every other value is negative). ``split``: a value of the
    ``split_column``, a list of values, or ``"all"``/``None`` for every row.
    Refuses a split without positives or without negatives, naming the counts.
    """
    store = as_store(store)
    meta = store.metadata
    if label not in meta.columns:
        raise StoreError(f"store {store.path} has no label column {label!r}; columns: {list(meta.columns)}")
    values = meta[label].astype(str)
    mask = np.ones(len(meta), bool)
    if split is not None and split != ALL_SPLITS:
        if split_column not in meta.columns:
            raise StoreError(f"store {store.path} has no {split_column!r} column to select split={split!r}; "
                             "add one (train/test) to the metadata table.")
        wanted = [split] if isinstance(split, str) else list(split)
        mask &= meta[split_column].astype(str).isin(wanted).to_numpy()
    if negative is not None:
        mask &= values.isin([str(positive), str(negative)]).to_numpy()
    rows = np.flatnonzero(mask)
    y = (values.to_numpy()[rows] == str(positive))
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        seen = sorted(values[mask].unique().tolist())[:10] if mask.any() else []
        raise StoreError(
            f"store {store.path}, split={split!r}: {n_pos} rows with {label}={positive!r} and {n_neg} "
            f"{'with ' + label + '=' + repr(negative) if negative is not None else 'others'}; both are needed. "
            f"Values of {label!r} there: {seen}."
        )
    return LabelledSplit(x=store.read(rows), y=y, rows=rows, table=meta.iloc[rows].reset_index(drop=True),
                         label=label, positive=str(positive), negative=None if negative is None else str(negative))


def model_index(sweep: Sweep, k: int | None = None, latent_size: int | None = None) -> list[tuple[int, int, int]]:
    """``(spec_index, group_index, index_in_group)`` of the models with this k / latent size."""
    out, i = [], 0
    for gi, g in enumerate(sweep.groups):
        for mi, m in enumerate(g.models):
            if (k is None or m.k == k) and (latent_size is None or m.latent_size == latent_size):
                out.append((i, gi, mi))
            i += 1
    if not out:
        have = ", ".join(m.name for m in sweep.specs)
        raise KeyError(f"no model with k={k} latent_size={latent_size} in {sweep.run_dir}; models: {have}")
    return out


def raw_directions(sweep: Sweep, group: int) -> np.ndarray:
    """Unit decoder directions of a group's models in the raw space: ``[n, L, M]``.

    The raw-space effect of latent ℓ is ``d_ℓ ⊙ s`` (``s`` the normalisation
    scale), normalised here to unit length.
    """
    d = np.asarray(sweep.group_params[group].W_dec, np.float64) * np.asarray(sweep.normalizer.scale)
    return d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
