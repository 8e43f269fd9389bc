"""Labelled embeddings for the analyses: the rows of a store with a binary label.

A labelled store has a metadata column ``split`` (``train``/``test``, other values
ignored), a label column (``lang``, ``kind``, ...) and possibly more columns
(``gender``, ``source``, ``offset``, ``duration``). :func:`load_labelled` reads the
rows of one split as raw embeddings ``x [B, M]`` with a boolean target
``y [B]`` (``label == positive``).

Helpers shared by the analyses live here too: :func:`load_train_test` reads both
splits of an analysis, :func:`check_dim` refuses embeddings of another dimension.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..models import ModelBatch
from ..store import EmbeddingStore, StoreError, open_store
from .defaults import ALL_SPLITS, TEST_SPLIT, TRAIN_SPLIT  # ALL_SPLITS: pass as ``split`` to use every row

__all__ = ["LabelledSplit", "load_labelled", "load_train_test", "check_dim", "as_store", "ALL_SPLITS"]


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


def _preview(values: Sequence[Any], limit: int = 20) -> str:
    """``['a', 'b', ...]`` with at most ``limit`` items and the total when cut."""
    values = list(values)
    text = repr(values[:limit])
    return text if len(values) <= limit else f"{text[:-1]}, ...] ({len(values)} values)"


def _counts(series: pd.Series) -> dict[str, int]:
    """``{value: rows}`` of a column, most frequent first."""
    return {str(k): int(v) for k, v in series.astype(str).value_counts().items()}


def check_dim(models: ModelBatch, store: EmbeddingStore | None = None, x: np.ndarray | None = None,
              what: str | None = None) -> None:
    """Refuse embeddings whose dimension is not the one ``models`` were trained on.

    Checks ``store.dim`` and/or ``x.shape[-1]``; the :class:`StoreError` names both
    dimensions and where the models' training data came from.
    """
    want = models.dim
    src = models.info.data_source
    trained = f" (its training data: {src})" if src else ""
    origin = f"sweep {models.run_dir}" if models.run_dir else "the models"
    checks = [] if store is None else [(store.dim, f"store {store.path}")]
    if x is not None:
        checks.append((int(np.shape(x)[-1]), what or "the given embeddings"))
    for got, name in checks:
        if got != want:
            raise StoreError(
                f"{name} holds {got}-d embeddings but {origin} was trained on {want}-d ones"
                f"{trained}; use a store written by the same encoder as the sweep's training data, or train a "
                f"sweep on this store (jsae sweep CONFIG data.store=...).")


def load_labelled(store: EmbeddingStore | str, label: str, positive: str, *, negative: str | None = None,
                  split: str | Sequence[str] | None = TRAIN_SPLIT, split_column: str = "split") -> LabelledSplit:
    """The rows of ``split`` with ``y = (label == positive)``.

    ``negative``: keep only rows whose label is ``positive`` or ``negative``
    (``None``: every other value is negative). ``split``: a value of the
    ``split_column``, a list of values, or ``"all"``/``None`` for every row.

    Raises :class:`StoreError`, naming what is there and how to fix it, for a
    label column that does not exist, a ``positive``/``negative`` value the column
    never takes, a missing ``split_column``, a split with no rows, and a split
    without positives or without negatives (with the class counts of every split).
    """
    store = as_store(store)
    meta = store.metadata
    if label not in meta.columns:
        raise StoreError(f"store {store.path} has no label column {label!r}; columns: {list(meta.columns)}. "
                         "Pass one of them as the label (CLI: --label).")
    values = meta[label].astype(str)
    present = set(values.unique().tolist())
    positive = str(positive)
    negative = None if negative is None else str(negative)
    for role, value in (("positive", positive), ("negative", negative)):
        if value is not None and value not in present:
            raise StoreError(f"store {store.path}: label column {label!r} has no value {value!r} (the {role} "
                             f"class); its values: {_preview(sorted(present))}. Pass one of them as {role}= "
                             f"(CLI: --{role}).")
    if negative is not None and negative == positive:
        raise StoreError(f"positive and negative are both {positive!r}; give two different values of {label!r}.")
    mask = np.ones(len(meta), bool)
    if split is not None and split != ALL_SPLITS:
        wanted = [split] if isinstance(split, str) else [str(s) for s in split]
        if split_column not in meta.columns:
            raise StoreError(f"store {store.path} has no {split_column!r} column to select split={split!r}; "
                             f"columns: {list(meta.columns)}. Add a {split_column!r} column (train/test per row) "
                             "to the metadata table (jsae store import ... --metadata TABLE).")
        in_split = meta[split_column].astype(str).isin(wanted).to_numpy()
        if not in_split.any():
            raise StoreError(f"store {store.path} has no rows with {split_column} in {wanted}; {split_column} "
                             f"values there (rows): {_counts(meta[split_column])}. Mark some rows "
                             f"{' or '.join(map(repr, wanted))} in the metadata column {split_column!r}, or choose "
                             "a split that exists (CLI: --train-split / --test-split).")
        mask &= in_split
    if negative is not None:
        mask &= values.isin([positive, negative]).to_numpy()
    rows = np.flatnonzero(mask)
    y = (values.to_numpy()[rows] == positive)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        neg_name = f"{label}={negative!r}" if negative is not None else f"{label}!={positive!r}"
        missing = f"{label}={positive!r}" if n_pos == 0 else neg_name
        neg_rows = values == negative if negative is not None else values != positive
        by_split = ""
        if split_column in meta.columns:
            sv = meta[split_column].astype(str)
            by_split = (f" Rows by {split_column}: {label}={positive!r} {_counts(sv[values == positive])}, "
                        f"{neg_name} {_counts(sv[neg_rows])}.")
        where = f"split {split!r}" if split is not None and split != ALL_SPLITS else "the store"
        raise StoreError(
            f"store {store.path}: {where} has no rows with {missing} ({n_pos} with {label}={positive!r}, "
            f"{n_neg} with {neg_name}); both classes are needed.{by_split} Put rows of both classes into "
            f"{where} (metadata column {split_column!r}) or choose other values/splits.")
    return LabelledSplit(x=store.read(rows), y=y, rows=rows, table=meta.iloc[rows].reset_index(drop=True),
                         label=label, positive=positive, negative=negative)


def load_train_test(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str, *,
                    negative: str | None = None, train_split: str = TRAIN_SPLIT, test_split: str = TEST_SPLIT,
                    train: LabelledSplit | None = None,
                    test: LabelledSplit | None = None) -> tuple[EmbeddingStore, LabelledSplit, LabelledSplit]:
    """``(store, train, test)`` for an analysis of ``models``, dimensions checked.

    ``train``/``test`` given by the caller are used as they are (and checked too).
    """
    store = as_store(store)
    check_dim(models, store if train is None or test is None else None)
    train = train or load_labelled(store, label, positive, negative=negative, split=train_split)
    test = test or load_labelled(store, label, positive, negative=negative, split=test_split)
    check_dim(models, x=train.x, what="the train rows")
    check_dim(models, x=test.x, what="the test rows")
    return store, train, test
