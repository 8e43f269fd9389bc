"""The training rows of a sweep: which rows, the validation split, batches, and a fingerprint.

* :func:`select_rows` — the store rows a config trains on (``data.splits``, ``data.max_rows``);
* :func:`planned_shape` — how many training and validation rows of which dimension, without
  reading them (what :mod:`jsae.training.memory` needs before anything is read or compiled);
* :func:`prepare_data` — those rows split into training and validation (a random
  ``train.val_fraction`` of them, drawn from the seed). The validation rows are read into one
  float32 array; the training rows of a store stay in the store as :class:`StoreRows`, an
  array-like that reads the rows a slice asks for: the normaliser, the fingerprint and the
  variance check read them in blocks, and in memory (``data.stream=false``) they are read
  block by block straight into the device copy, so the host never holds every row;
* :func:`check_rows_vary` — refuses rows that are all identical (variance 0: nothing to learn,
  and the fraction of variance explained would be 0 / 0);
* :func:`batch_indices` — the rows of each step's batch, a function of ``(seed, step)`` only,
  so a resumed run sees the batches an uninterrupted one sees;
* :func:`data_fingerprint` — what a run was trained on, checked when it is resumed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ConfigError, DataConfig, SweepConfig
from ..store import EmbeddingStore, StoreError, open_store, validate_embeddings

__all__ = ["TrainingData", "StoreRows", "select_rows", "open_training_store", "planned_shape", "prepare_data", "read_rows",
           "check_rows_vary", "all_identical", "validation_row_count", "check_validation_rows", "batch_indices",
           "data_fingerprint", "fingerprint_text", "FINGERPRINT_VERSION", "BLOCK_ROWS", "READ_SPAN_ROWS"]

#: rows per block when reading, fitting and hashing (8192 × 192 float32 = 6 MiB)
BLOCK_ROWS = 8192
#: the most store rows one read may span: the store decodes every chunk a read touches at once, so
#: a read of rows spread over the whole store (a streamed batch) would hold all of it decoded
READ_SPAN_ROWS = 65536


def select_rows(data: DataConfig, store: EmbeddingStore) -> np.ndarray:
    """The store rows a sweep trains on (before the validation split): rows whose ``split``
    is one of ``data.splits`` (all when empty), the first ``data.max_rows`` of them (all when null)."""
    rows = np.arange(store.num_rows)
    if data.splits:
        if "split" not in store.metadata.columns:
            raise StoreError(f"data.splits={list(data.splits)} but store {store.path} has no 'split' column.")
        rows = rows[store.metadata["split"].astype(str).isin(data.splits).to_numpy()]
    if data.max_rows:
        rows = rows[: data.max_rows]
    return rows


class StoreRows:
    """Rows ``rows [n]`` (ascending store row indices) of ``store`` as a read-only float32
    array-like ``[n, M]``: indexing reads them (``view[a:b]``, ``view[idx]`` for integer indices
    of any shape, giving ``idx.shape + (M,)``) with :func:`read_rows`, each distinct row once.

    Nothing is held but the indices: code written for a host array that reads it in slices
    (:func:`~jsae.core.normalize.row_moments`, :func:`all_identical`, :func:`data_fingerprint`,
    :func:`~jsae.training.loop.rows_on_device`) reads the store block by block instead.
    """

    def __init__(self, store: EmbeddingStore, rows: np.ndarray):
        self.store, self.rows = store, np.asarray(rows)
        self.shape = (len(self.rows), int(store.dim))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            want = self.rows[key]
        else:
            key = np.asarray(key)
            if key.dtype.kind not in "iu":
                raise TypeError(f"StoreRows takes a slice or integer indices, not {key.dtype}")
            want = self.rows[key.ravel()]
        uniq, inverse = np.unique(want, return_inverse=True)
        out = read_rows(self.store, uniq)
        out = out if len(uniq) == len(want) and np.array_equal(uniq, want) else out[inverse]
        return out if isinstance(key, slice) else out.reshape(key.shape + (self.shape[1],))


@dataclass
class TrainingData:
    """Embeddings split into train/val (float32), with the store rows they came from.

    ``train``: the training rows — a host array when the rows came as an array, a
    :class:`StoreRows` view of the store when they come from one and are held in memory
    (``data.stream=false``: the sweep reads them into the device), ``None`` when streaming
    (batches are then read from ``store`` by row). ``fit`` holds the rows that fit the
    normalisation and ``b_pre`` (``train`` itself unless streaming: a sample of
    ``data.fit_rows`` rows).
    """

    train: np.ndarray | StoreRows | None  # [N_train, M]
    val: np.ndarray  # [N_val, M]
    train_rows: np.ndarray  # [N_train] store row indices
    val_rows: np.ndarray  # [N_val]
    source: str
    fit: np.ndarray | StoreRows  # [N_fit, M]
    store: EmbeddingStore | None = None

    @property
    def n_train(self) -> int:
        return len(self.train_rows)

    def training_rows(self) -> np.ndarray | StoreRows:
        """Every training row, in order: ``train``, or a :class:`StoreRows` view when streaming."""
        return self.train if self.train is not None else StoreRows(self.store, self.train_rows)

    def read_batches(self, idx: np.ndarray) -> np.ndarray:
        """Raw rows for batch positions ``idx [S, B]`` (indices into the training rows): ``[S, B, M]``."""
        return self.training_rows()[idx]


def open_training_store(cfg: SweepConfig, data: np.ndarray | None = None) -> EmbeddingStore | None:
    """The configured store, opened (metadata only, no rows read); ``None`` when ``data`` is given."""
    return None if data is not None else open_store(cfg.data.store)


def planned_shape(cfg: SweepConfig, data: np.ndarray | None = None,
                  store: EmbeddingStore | None = None) -> tuple[int, int, int]:
    """``(n_train, n_val, dim)`` that :func:`prepare_data` will give, without reading a row.

    ``store``: the opened store (default: :func:`open_training_store`). When the rows are too
    few for the validation split this counts none for validation; prepare_data says why.
    """
    if data is not None:
        shape = np.shape(data)
        n, dim = (int(shape[0]), int(shape[1])) if len(shape) == 2 else (0, 0)
    else:
        store = store if store is not None else open_training_store(cfg)
        n, dim = len(select_rows(cfg.data, store)), store.dim
    n_val = int(round(cfg.train.val_fraction * n))
    n_val = n_val if 0 < n_val < n else 0
    return n - n_val, n_val, dim


def read_pieces(rows: np.ndarray, block_rows: int = BLOCK_ROWS,
                span_rows: int = READ_SPAN_ROWS) -> list[tuple[int, int]]:
    """``[(start, stop), …]`` cutting ascending store rows ``rows`` into pieces of at most
    ``block_rows`` entries that each span fewer than ``span_rows`` store rows (one entry at least)."""
    pieces, start, n = [], 0, len(rows)
    while start < n:
        stop = min(start + block_rows, n, int(np.searchsorted(rows, rows[start] + span_rows, side="left")))
        stop = max(stop, start + 1)
        pieces.append((start, stop))
        start = stop
    return pieces


def read_rows(store: EmbeddingStore, rows: np.ndarray, block_rows: int = BLOCK_ROWS,
              span_rows: int = READ_SPAN_ROWS) -> np.ndarray:
    """Store rows ``rows [n]`` (ascending) as one float32 ``[n, M]`` array, read piece by piece
    (:func:`read_pieces`).

    Reading in pieces into the result keeps the peak at the result plus one piece: one
    ``store.read`` of every row would hold the rows twice plus its checks, and a read of rows
    spread over the store decodes every chunk it touches at once (a streamed batch of random
    rows: the whole store). A piece spans fewer than ``span_rows`` store rows.
    """
    out = np.empty((len(rows), store.dim), np.float32)
    for start, stop in read_pieces(rows, block_rows, span_rows):
        out[start:stop] = store.read(rows[start:stop])
    return out


def prepare_data(cfg: SweepConfig, data: np.ndarray | None = None, *,
                 store: EmbeddingStore | None = None) -> TrainingData:
    """Load the configured store (or take ``data [N, M]``) and split off validation rows.

    ``store``: the opened store (default: :func:`open_training_store`). A
    ``train.val_fraction`` that leaves no validation row (or no training row) of the
    rows found is a one-line :class:`~jsae.config.ConfigError` naming the value and the
    row count (:func:`validation_row_count`), raised before any training. Reads only the
    validation rows (and, streaming, the ``data.fit_rows`` sample); the training rows of a store
    are a :class:`StoreRows` view, and ``fit`` is ``train`` unless streaming.
    """
    x = None
    if data is not None:
        x = validate_embeddings(data, what="training data")
        rows = np.arange(len(x))
        source = "array"
        where = "the data array"
    else:
        store = store if store is not None else open_training_store(cfg)
        rows = select_rows(cfg.data, store)
        source = str(store.path)
        where = source
    if len(rows) == 0:
        raise StoreError(f"no training rows in {source} (after data.splits / data.max_rows); nothing to train on.")
    perm = np.random.default_rng([cfg.train.seed, 7]).permutation(len(rows))
    n_val = validation_row_count(cfg.train.val_fraction, len(rows), where)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if len(train_idx) < cfg.train.batch_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is larger than the {len(train_idx)} training rows; "
            f"lower it, e.g. train.batch_size={max(1, len(train_idx) // 4)}."
        )
    if x is not None:  # an array: its rows, once each
        train = x[train_idx]
        return TrainingData(train, x[val_idx], rows[train_idx], rows[val_idx], source, fit=train)
    val = read_rows(store, rows[val_idx])
    if not cfg.data.stream:
        train = StoreRows(store, rows[train_idx])
        return TrainingData(train, val, rows[train_idx], rows[val_idx], source, fit=train, store=store)
    fit_idx = np.sort(np.random.default_rng([cfg.train.seed, 5]).permutation(len(train_idx))[: cfg.data.fit_rows])
    fit = read_rows(store, rows[train_idx][fit_idx])
    return TrainingData(None, val, rows[train_idx], rows[val_idx], source, fit=fit, store=store)


def all_identical(x: np.ndarray, block_rows: int = BLOCK_ROWS) -> bool:
    """Whether every row of ``x [N, M]`` equals the first (variance exactly 0), compared block by
    block; stops at the first block that differs (for real data: the first)."""
    if len(x) == 0:
        return False
    first = x[:1]
    return all(np.array_equal(x[s:s + block_rows], np.broadcast_to(first, x[s:s + block_rows].shape))
               for s in range(0, len(x), block_rows))


def check_rows_vary(td: TrainingData) -> None:
    """Refuse training (or validation) rows that are all identical: one :class:`~jsae.store.StoreError` line.

    With variance 0 there is nothing for a model to learn, every latent ends up dead, and the
    fraction of variance explained ``1 − Σ‖x̂ − x‖² / Σ‖x − x̄‖²`` is 0 / 0 (it used to read 1.000).
    Streamed, the training rows checked are those that fit the normaliser (``td.fit``).
    """
    if all_identical(td.fit):
        n = len(td.fit)
        which = (f"all {n} training rows" if td.train is not None
                 else f"the {n} training rows sampled to fit the normaliser (data.fit_rows)")
        raise StoreError(f"{which} of {td.source} are identical (variance 0): there is nothing to learn and the "
                         "fraction of variance explained would be undefined (0 / 0); check the store (`jsae store "
                         "info`: an encoder that returned one constant vector?) or choose other rows "
                         "(data.splits, data.max_rows).")
    if all_identical(td.val):
        raise StoreError(f"the {len(td.val)} validation rows of {td.source} are identical (variance 0): the "
                         "fraction of variance explained would be undefined (0 / 0); raise train.val_fraction or "
                         "change train.seed so that validation draws varied rows.")


def validation_row_count(val_fraction: float, n: int, source: str) -> int:
    """The validation rows ``round(val_fraction × n)`` of ``n`` training rows of ``source``;
    a :class:`~jsae.config.ConfigError` (one line naming ``train.val_fraction`` and ``n``)
    when that leaves fewer than two validation rows (the fraction of variance explained
    divides by their spread about their mean: one row has none) or no training row."""
    frac = val_fraction
    n_val = int(round(frac * n))
    if n_val < 2:
        need = 1.5 / n
        raise ConfigError(
            f"train.val_fraction={frac:g} of the {n} training rows of {source} gives {n_val} validation "
            f"row{'' if n_val == 1 else 's'} (round({frac:g} × {n}) = {n_val}); metrics need at least two (the "
            "fraction of variance explained divides by their spread about their mean): raise "
            f"train.val_fraction above {need:.3g} or use a store with more rows."
        )
    if n_val >= n:
        raise ConfigError(
            f"train.val_fraction={frac:g} of the {n} training rows of {source} leaves no training row; "
            "lower train.val_fraction or use a store with more rows."
        )
    return n_val


def check_validation_rows(cfg: "SweepConfig") -> None:
    """Refuse a config whose ``train.val_fraction`` leaves no validation row of its store
    (the run would train and then fail to compute its metrics); see :func:`validation_row_count`."""
    store = open_store(cfg.data.store)
    if cfg.data.splits and "split" not in store.metadata.columns:
        return  # train_sweep names this problem itself
    n = len(select_rows(cfg.data, store))
    if n == 0:
        return  # train_sweep names this problem itself
    validation_row_count(cfg.train.val_fraction, n, str(store.path))


FINGERPRINT_VERSION = 1


def data_fingerprint(td: TrainingData, block_rows: int = BLOCK_ROWS) -> dict[str, Any]:
    """What the run was trained on: ``{"n_train", "n_val", "dim", "blake2b"}``.

    ``blake2b`` (128-bit) is over the float32 little-endian bytes of the training
    rows, then the validation rows, in the order training uses them (after
    ``data.splits``/``data.max_rows`` and the validation split), preceded by the row
    counts and dimension. Rows in a store are read ``block_rows`` at a time (nothing
    is loaded at once); in memory, streamed or from an array, the same rows give the
    same fingerprint.
    """
    dim = int(td.fit.shape[1])
    h = hashlib.blake2b(digest_size=16)
    h.update(f"jsae-data-fingerprint-{FINGERPRINT_VERSION} {td.n_train} {len(td.val)} {dim}\n".encode())

    def feed(block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype="<f4")
        if block.size:
            h.update(block.reshape(-1).view(np.uint8))

    train = td.training_rows()
    for start in range(0, td.n_train, block_rows):
        feed(train[start:start + block_rows])
    for start in range(0, len(td.val), block_rows):
        feed(td.val[start:start + block_rows])
    return {"n_train": int(td.n_train), "n_val": int(len(td.val)), "dim": dim, "blake2b": h.hexdigest()}


def fingerprint_text(fp: dict[str, Any]) -> str:
    return f"{fp.get('n_train')}+{fp.get('n_val')} rows × {fp.get('dim')}, blake2b {str(fp.get('blake2b'))[:16]}"


def batch_indices(seed: int, start: int, count: int, n: int, batch_size: int) -> np.ndarray:
    """Rows of the batches of steps ``[start, start + count)``: ``[count, batch_size]`` int32.

    Each epoch is a permutation drawn from ``(seed, epoch)``; the last partial batch
    of an epoch is dropped. A batch depends only on ``(seed, step)``.
    """
    per_epoch = n // batch_size
    out = np.empty((count, batch_size), np.int32)
    cache: dict[int, np.ndarray] = {}
    for i, step in enumerate(range(start, start + count)):
        epoch, j = divmod(step, per_epoch)
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([seed, 11, epoch]).permutation(n).astype(np.int32)
        out[i] = cache[epoch][j * batch_size:(j + 1) * batch_size]
    return out
