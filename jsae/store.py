"""The embedding store: a tensorstore zarr3 array ``[N, M]`` plus a metadata table.

Layout of a store directory::

    STORE/
      embeddings.zarr/   zarr3 array [N, M] float32, sharding codec:
                         one shard = ``rows_per_shard`` rows (the write unit),
                         one inner chunk = ``rows_per_chunk`` rows (the read unit)
      metadata.parquet   one row per embedding, in the same row order: ``id`` (str)
                         and any label columns (``split`` = train/val/test if present)
      store.json         {"format": "jsae-store", "version": 1, "num_rows": N, "dim": M,
                          "complete": true, "encoder": {...}, "integrity": {...}, ...}

zarr3 has no string dtype, so ids and labels live in the table. A store counts as
readable only when ``store.json`` says ``"complete": true``: writers (``write_store``,
the resumable exporter in ``jsae/embed/``) set it last, so an interrupted write is never
mistaken for a finished one.

Integrity: every inner chunk and every shard index carries a crc32c checksum (a flipped bit
is a read error, never a changed value), and ``store.json``'s ``integrity`` binds the parts
together: the array's dtype and shape, every shard file (``c/<i>/0``: its rows, size, a
BLAKE2b-256 hash of its bytes and of its last 4 KiB) and the metadata table (size and hash
of ``metadata.parquet``). :func:`open_store` checks every shard's size and last bytes (no
full read) and the table's hash, and refuses a missing, truncated or replaced part in one
line naming it, its rows and the fix; every read error becomes such a :class:`StoreError`;
:func:`verify_store` (``jsae store verify``) re-hashes every byte. A store written before
(no ``integrity``) still opens, with one warning that ``jsae store verify --record STORE``
adds the hashes.

Numbers: a row enters a store only when its squared norm ``Σx²`` (float64 sum of the float32
values) is at most :data:`MAX_SQUARED_NORM`, half of float32's largest value — NaN, Inf and rows
whose squares would overflow float32 in training are refused naming the first row; reads check
the same.

Writing: :func:`write_store` takes an array or :class:`RowBlocks` (:func:`npy_rows` streams a
``.npy`` file) and writes one shard at a time into a temporary folder that takes the store's
place only when complete (:func:`jsae.safety.replace_folder`): memory holds one shard of rows,
and a full disk, a read-only folder or a killed process leaves no partial store (the next write
in the same folder removes a killed run's temporary folder). A full disk or a read-only or
forbidden folder is one line naming the store and what is kept.

Public API: :func:`write_store`, :func:`open_store`, :class:`EmbeddingStore`,
:func:`validate_embeddings`, :func:`create_array`, :func:`write_rows`,
:func:`finalize_store`, :func:`add_columns`, :func:`verify_store`, :func:`read_table`, :func:`load_npy`,
:func:`npy_rows`, :class:`RowBlocks`, :class:`StoreError`,
:class:`InvalidEmbeddingsError`. Replacing a store (``overwrite``) goes through
:func:`jsae.safety.check_deletable`: only a folder holding nothing but a store is deleted, and
only when every file inside is one a store writer makes (:func:`check_store_files`: a user's
file inside ``embeddings.zarr/`` or a symbolic link is refused by name); no writer writes or
deletes through a symbolic link inside a store.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import tensorstore as ts

from .errors import JsaeError, storage_error, writing_to
from .safety import STORE_ENTRIES, UnsafeDeleteError, check_deletable, clean_staged, is_store_dir, replace_folder

__all__ = [
    "ARRAY_NAME",
    "META_NAME",
    "INFO_NAME",
    "FORMAT_NAME",
    "StoreError",
    "InvalidEmbeddingsError",
    "EmbeddingStore",
    "validate_embeddings",
    "validate_metadata",
    "MAX_SQUARED_NORM",
    "RowBlocks",
    "npy_rows",
    "store_foreign_files",
    "check_store_files",
    "check_can_write",
    "create_array",
    "open_array",
    "write_rows",
    "finalize_store",
    "add_columns",
    "verify_store",
    "DESCRIPTOR_PREFIXES",
    "is_descriptor",
    "write_store",
    "open_store",
    "read_table",
    "load_npy",
]

ARRAY_NAME = "embeddings.zarr"
META_NAME = "metadata.parquet"
INFO_NAME = "store.json"
FORMAT_NAME = "jsae-store"
FORMAT_VERSION = 1
DEFAULT_ROWS_PER_SHARD = 8192
DEFAULT_ROWS_PER_CHUNK = 512
#: the hash ``store.json``'s ``integrity`` records of every shard file and of the metadata table
HASH_NAME = "blake2b-256"
#: the bytes at the end of a shard (its index and last chunks) hashed separately, checked at every open
TAIL_BYTES = 4096
#: the namespaces of the per-segment descriptor columns ``jsae embed`` / ``jsae describe`` add
#: (``acoustic.*`` openSMILE eGeMAPS, ``vad.*`` silero-vad, ``describe.error``): measurements,
#: not labels — segment tables leave them out and no analysis takes them for a grouping
DESCRIPTOR_PREFIXES = ("acoustic.", "vad.", "describe.")


def is_descriptor(column: object) -> bool:
    """Whether a metadata column is a descriptor (:data:`DESCRIPTOR_PREFIXES`)."""
    return str(column).startswith(DESCRIPTOR_PREFIXES)


class StoreError(JsaeError, ValueError):
    """A store is missing, incomplete or inconsistent; the message says how to fix it."""


class InvalidEmbeddingsError(StoreError):
    """Embeddings that must not enter a store (NaN/Inf, squares beyond float32, wrong shape); names the row."""


#: the largest squared norm ``Σ x_i²`` a stored row may have: half of float32's largest value (≈ 1.7e38)
MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 2
#: rows checked at once (bounds the temporary float64 squares: ``CHECK_ROWS × M × 8`` bytes)
CHECK_ROWS = 8192


def _check_shape(x: np.ndarray, dim: int | None, row_offset: int, what: str) -> None:
    """Refuse an array that is not 2-D, has another dimension than ``dim`` or is not real numbers."""
    if x.ndim != 2:
        raise InvalidEmbeddingsError(
            f"{what} must be a 2-D array [rows, dim]; got shape {x.shape}. "
            "Stack one embedding per row."
        )
    if dim is not None and x.shape[1] != dim:
        raise InvalidEmbeddingsError(
            f"{what} have dimension {x.shape[1]} but {dim} is expected "
            f"(rows {row_offset}..{row_offset + x.shape[0] - 1}); every row must be a "
            f"{dim}-d embedding from the same encoder."
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InvalidEmbeddingsError(f"{what} must be real numbers; got dtype {x.dtype}.")


def _why_refused(given: np.ndarray, row32: np.ndarray, squared: float) -> tuple[str, str]:
    """Why one row is refused (``given``: the row as given, ``row32``: as float32) and the fix."""
    bad = np.flatnonzero(~np.isfinite(row32))
    if bad.size:
        col = int(bad[0])
        value = given[col]
        if np.isnan(value):
            kind = "NaN"
        elif not np.isfinite(value):
            kind = "Inf"
        else:
            kind = f"{float(value):g}, beyond float32's range (±3.4e38)"
        return f"contains {kind} (column {col})", "Drop or re-compute those rows before storing them."
    col = int(np.argmax(np.abs(row32)))
    return (f"has the squared norm Σx² = {squared:.3g} (its largest value {float(row32[col]):g} is in column {col}), "
            f"beyond {MAX_SQUARED_NORM:.3g} (half of float32's largest value): its squares would overflow float32 "
            "(Inf) in training",
            "Rescale the embeddings (e.g. divide them all by their largest norm) or drop those rows before storing "
            "them.")


class _Refusals:
    """The rows a check refused, over any number of blocks: the first one's reason, how many, the first ten.

    A row is refused unless its squared norm ``Σ x_i²``, summed in float64 over the float32
    values that are stored, is at most :data:`MAX_SQUARED_NORM` (half of float32's largest
    value). One comparison catches NaN, ±Inf and overflow; the float64 sum itself never
    overflows (at most ``M × 3.4e38²``). Why half: every square and every partial sum of the
    row is then finite in float32 too, in any order of summation and with rounding (all terms
    are non-negative, so a partial sum is at most the total, and float32 rounding adds less than
    a factor 2 for any ``M`` below 2²²) — training's squared norms and errors of a row cannot
    become Inf.
    """

    def __init__(self, what: str):
        self.what, self.count, self.first = what, 0, []
        self.reason: str | None = None
        self.fix = ""

    def check(self, given: np.ndarray, x32: np.ndarray, names: np.ndarray) -> bool:
        """Check the float32 block ``x32`` (``given``: as given; ``names``: its store rows);
        True when every row is accepted."""
        for s in range(0, x32.shape[0], CHECK_ROWS):
            block = x32[s:s + CHECK_ROWS]
            squared = np.einsum("ij,ij->i", block, block, dtype=np.float64)
            bad = np.flatnonzero(~(squared <= MAX_SQUARED_NORM))  # NaN compares False
            if not bad.size:
                continue
            if self.reason is None:
                i = int(bad[0])
                self.reason, self.fix = _why_refused(given[s + i], block[i], float(squared[i]))
                self.reason = f"row {int(names[s + i])} {self.reason}"
            self.count += int(bad.size)
            self.first.extend(int(names[s + i]) for i in bad[:max(0, 10 - len(self.first))])
        return self.count == 0

    def raise_if_any(self) -> None:
        if self.count:
            raise InvalidEmbeddingsError(
                f"{self.what}: {self.reason}; {self.count} row(s) in total are refused (NaN, Inf or squares beyond "
                f"float32), first ones: {self.first}. {self.fix}"
            )


def validate_embeddings(
    x: np.ndarray, *, dim: int | None = None, row_offset: int = 0, what: str = "embeddings",
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Check a block of embeddings and return it as float32 ``[n, M]``.

    Raises :class:`InvalidEmbeddingsError` naming the first bad row (counted from
    ``row_offset``, or ``rows[i]`` when the block's store rows are given) and the
    reason: not 2-D, wrong dimension ``M``, NaN or Inf, or a squared norm ``Σx²`` beyond
    :data:`MAX_SQUARED_NORM` (its squares would overflow float32; see :class:`_Refusals`) —
    checked *after* the cast to float32, so a float64 value beyond float32's range (it
    would be stored as Inf) is refused too. Checked :data:`CHECK_ROWS` rows at a time: the
    only full-size copy is the cast, when ``x`` is not float32 already.
    """
    x = np.asarray(x)
    _check_shape(x, dim, row_offset, what)
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32, copy=False)  # cast first: what is stored is what is checked
    names = np.asarray(rows, dtype=np.int64) if rows is not None else np.arange(x.shape[0]) + row_offset
    refusals = _Refusals(what)
    if not refusals.check(x, x32, names):
        refusals.raise_if_any()
    return x32


@dataclass(frozen=True)
class RowBlocks:
    """Embeddings given a block at a time, so that a store larger than memory can be written.

    ``blocks(k)`` yields consecutive real arrays ``[≤ k, dim]`` that together are rows
    ``0 .. num_rows - 1`` in order (:func:`npy_rows` reads a ``.npy`` file so; ``jsae store
    synth`` draws synthetic rows so). ``what`` names the rows in messages.
    """

    num_rows: int
    dim: int
    blocks: Callable[[int], Iterable[np.ndarray]]
    what: str = "embeddings"


def _row_blocks(embeddings: "np.ndarray | RowBlocks") -> RowBlocks:
    """``embeddings`` as :class:`RowBlocks` (an array: after its shape and dtype are checked)."""
    if isinstance(embeddings, RowBlocks):
        return embeddings
    x = np.asarray(embeddings)
    _check_shape(x, None, 0, "embeddings")
    return RowBlocks(int(x.shape[0]), int(x.shape[1]),
                     lambda k: (x[s:s + k] for s in range(0, x.shape[0], k)))


def validate_metadata(table: pd.DataFrame, num_rows: int) -> pd.DataFrame:
    """Check a metadata table against ``num_rows`` embeddings; add ``id`` if absent."""
    if len(table) != num_rows:
        raise StoreError(
            f"metadata table has {len(table)} rows but there are {num_rows} embeddings; "
            "the table needs exactly one row per embedding, in the same order."
        )
    table = table.reset_index(drop=True).copy()
    twice = table.columns[table.columns.duplicated()]
    if len(twice):
        raise StoreError(f"metadata: two columns are named {twice[0]!r}; column names must be unique. Rename one "
                         "of them and try again.")
    for column in table.columns:
        if table[column].dtype == object:
            _check_one_type(table[column], column)
    if "id" not in table.columns:
        table.insert(0, "id", [str(i) for i in range(num_rows)])
    table["id"] = table["id"].astype(str)
    dup = table["id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise StoreError(f"metadata: id {table['id'][row]!r} at row {row} is not unique; ids must be unique.")
    if "split" in table.columns:
        table["split"] = table["split"].astype(str)
    return table


def _kind(value: Any) -> str | None:
    """The kind of a table value as parquet sees it (``None`` for a missing value)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, float, np.number)):
        return "number"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def _check_one_type(column: pd.Series, name: Any) -> None:
    """Refuse a column that parquet cannot store as one type (e.g. numbers and text mixed, as a
    ``.jsonl`` table gives when some values are quoted): names the column and the first two rows
    of different kinds."""
    import pyarrow as pa

    try:
        pa.array(column, from_pandas=True)
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        reason = " ".join(str(err).split())[:160]
    values = column.to_numpy(dtype=object)
    first = next(((i, k) for i, k in enumerate(map(_kind, values)) if k is not None), None)
    other = None if first is None else next(
        ((i, k) for i, k in enumerate(map(_kind, values)) if k is not None and k != first[1]), None)
    if first is None or other is None:
        raise StoreError(f"metadata column {name!r} cannot be stored ({reason}); give it one type (all text or all "
                         "numbers) and try again.")
    (i, kind), (j, kind_j) = first, other
    raise StoreError(f"metadata column {name!r} mixes types: row {i} holds {kind} {values[i]!r} but row {j} holds "
                     f"{kind_j} {values[j]!r}; a column holds one type: write every value of {name!r} as text "
                     "(quote the numbers) or every one as a number, and try again.")


def _array_spec(path: Path, shape: Sequence[int] | None = None, rows_per_shard: int = 0,
                rows_per_chunk: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "driver": "zarr3",
        # absolute: TensorStore refuses a relative path with `..` (a store given as ../data/store)
        "kvstore": {"driver": "file", "path": os.path.abspath(path)},
        # every shard is a file, also one of zeros: a missing shard is damage, never "all fill value"
        "store_data_equal_to_fill_value": True,
    }
    if shape is not None:
        n, m = shape
        spec["metadata"] = {
            "shape": [int(n), int(m)],
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [rows_per_shard, int(m)]}},
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [rows_per_chunk, int(m)],
                        "codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "zstd", "configuration": {"level": 1}},
                            {"name": "crc32c"},  # a flipped bit is a read error, not another value
                        ],
                        "index_codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "crc32c"},
                        ],
                    },
                }
            ],
        }
    return spec


def create_array(store_dir: str | os.PathLike, num_rows: int, dim: int, *,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                 rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK) -> ts.TensorStore:
    """Create (or replace) the ``[num_rows, dim]`` float32 array of a store.

    ``rows_per_shard`` is the write unit: writers that own whole shards (rows
    ``[s * rows_per_shard, (s + 1) * rows_per_shard)``) never conflict.
    """
    if num_rows <= 0:
        raise StoreError(f"cannot create an empty store (num_rows={num_rows}); there is nothing to store.")
    if dim <= 0:
        raise StoreError(f"embedding dimension must be positive; got {dim}.")
    rows_per_chunk = max(1, min(rows_per_chunk, rows_per_shard))
    if rows_per_shard % rows_per_chunk:
        raise StoreError(
            f"rows_per_shard ({rows_per_shard}) must be a multiple of rows_per_chunk ({rows_per_chunk})."
        )
    path = Path(store_dir) / ARRAY_NAME
    spec = _array_spec(path, (num_rows, dim), rows_per_shard, rows_per_chunk)
    return ts.open(spec, create=True, delete_existing=True).result()


def open_array(store_dir: str | os.PathLike, *, write: bool = False) -> ts.TensorStore:
    """Open the embeddings array of a store (read-only unless ``write``)."""
    path = Path(store_dir) / ARRAY_NAME
    if not path.exists():
        raise StoreError(f"{store_dir}: no {ARRAY_NAME} inside; is this an embedding store?")
    mode = {"read": True, "write": True} if write else {"read": True}
    return ts.open(_array_spec(path), **mode).result()


def write_rows(array: ts.TensorStore, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` at ``[start, start + len(rows))`` in one transaction.

    A transaction turns writes that cover parts of several shards into one
    read-modify-write per shard, instead of one rewrite per partial write.
    """
    rows = validate_embeddings(rows, dim=int(array.shape[1]), row_offset=start)
    stop = start + rows.shape[0]
    if start < 0 or stop > array.shape[0]:
        raise StoreError(f"rows [{start}, {stop}) lie outside the array of {array.shape[0]} rows.")
    with ts.Transaction() as txn:
        array.with_transaction(txn)[start:stop, :].write(rows).result()


def _read_info(store_dir: Path) -> dict[str, Any]:
    info_path = store_dir / INFO_NAME
    if not info_path.exists():
        raise StoreError(
            f"{store_dir}: no {INFO_NAME}; not a jsae embedding store. Create one with "
            "`jsae store import X.npy --out STORE` or `jsae embed ... --out STORE`."
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"{info_path} cannot be read ({type(err).__name__}); the store is corrupt.") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        info = info if isinstance(info, dict) else {}
        raise StoreError(f"{info_path}: format {info.get('format')!r} is not {FORMAT_NAME!r}.")
    return info


def _write_info(store_dir: Path, info: Mapping[str, Any]) -> None:
    """Replace ``store.json`` atomically (a temp file renamed over it)."""
    tmp = store_dir / f"{INFO_NAME}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(info, indent=2, default=str))
        os.replace(tmp, store_dir / INFO_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- integrity

def _hasher() -> Any:
    return hashlib.blake2b(digest_size=32)


def _hash_file(path: Path, bar: Any = None) -> str:
    h = _hasher()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
            if bar is not None:
                bar.update(len(block))
    return h.hexdigest()


def _tail_digest(path: Path, size: int) -> str:
    h = _hasher()
    with open(path, "rb") as f:
        f.seek(max(0, size - TAIL_BYTES))
        h.update(f.read(TAIL_BYTES))
    return h.hexdigest()


@dataclass(frozen=True)
class _Layout:
    """Where the rows of a store's array lie: shard ``i`` is the file ``key(i)``."""

    store_dir: Path
    num_rows: int
    rows_per_shard: int
    separator: str

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.rows_per_shard)

    def key(self, i: int) -> str:
        return self.separator.join(("c", str(i), "0"))

    def path(self, i: int) -> Path:
        return self.store_dir / ARRAY_NAME / Path(*self.key(i).split(self.separator))

    def rows(self, i: int) -> tuple[int, int]:
        return i * self.rows_per_shard, min((i + 1) * self.rows_per_shard, self.num_rows)

    def name(self, i: int) -> str:
        start, stop = self.rows(i)
        return f"shard {ARRAY_NAME}/{self.key(i).replace(self.separator, '/')} (rows {start}..{stop - 1})"

    def shard_of_file(self, path: str) -> int | None:
        try:
            rel = Path(path).resolve().relative_to((self.store_dir / ARRAY_NAME).resolve())
        except (ValueError, OSError):
            return None
        parts = rel.parts
        if len(parts) == 3 and parts[0] == "c" and parts[1].isdigit():
            return int(parts[1])
        return None


def _layout(store_dir: Path, num_rows: int) -> _Layout:
    """The shard layout from ``embeddings.zarr/zarr.json`` (what tensorstore reads)."""
    meta_path = store_dir / ARRAY_NAME / "zarr.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        rows_per_shard = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        encoding = meta.get("chunk_key_encoding") or {"name": "default"}
        separator = (encoding.get("configuration") or {}).get("separator", "/")
        if encoding.get("name") != "default" or rows_per_shard <= 0:
            raise ValueError(encoding.get("name"))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise StoreError(f"{meta_path} cannot be read as a jsae array ({type(err).__name__}); the store is "
                         "corrupt.") from None
    return _Layout(store_dir, num_rows, rows_per_shard, separator)


def _fix(store_dir: Path, info: Mapping[str, Any]) -> str:
    """How to make a damaged store again, from what ``store.json`` says made it."""
    if info.get("producer") == "jsae embed":
        return (f"re-run the same `jsae embed ... --out {store_dir}` command with --overwrite "
                "(or restore the store from a backup)")
    synth = info.get("synthetic")
    if isinstance(synth, dict):
        return (f"re-synthesise it: `jsae store synth --out {store_dir} --rows {info.get('num_rows')} --dim "
                f"{info.get('dim')} --atoms {synth.get('atoms')} --active {synth.get('active')} --noise "
                f"{synth.get('noise')} --seed {synth.get('seed')} --overwrite`")
    if info.get("source"):
        return (f"re-import it: `jsae store import {info['source']} [--metadata TABLE] --out {store_dir} "
                "--overwrite` (or restore it from a backup)")
    return "write it again (write_store(..., overwrite=True)) or restore it from a backup"


def _damaged(store_dir: Path, info: Mapping[str, Any], what: str) -> StoreError:
    return StoreError(f"{store_dir}: {what}; the store is damaged and is not read. Fix: {_fix(store_dir, info)}.")


def _table_record(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "hash": _hash_file(path)}


def _integrity(store_dir: Path, array: ts.TensorStore, *, bar: Any = None) -> dict[str, Any]:
    """Hash every shard file and the metadata table (what ``store.json``'s ``integrity`` holds)."""
    n, m = (int(s) for s in array.shape)
    layout = _layout(store_dir, n)
    shards = []
    for i in range(layout.num_shards):
        path = layout.path(i)
        if not path.is_file():
            raise StoreError(f"{store_dir}: {layout.name(i)} was not written; the store is incomplete. Write it "
                             "again.")
        size = path.stat().st_size
        start, stop = layout.rows(i)
        shards.append({"key": layout.key(i), "rows": [start, stop], "size": size,
                       "hash": _hash_file(path, bar), "tail": _tail_digest(path, size)})
    return {"hash": HASH_NAME, "dtype": str(np.dtype(array.dtype.numpy_dtype)), "shape": [n, m],
            "rows_per_shard": layout.rows_per_shard, "metadata": _table_record(store_dir / META_NAME),
            "shards": shards}


_LEGACY_WARNED: set[str] = set()


def _check_array(store_dir: Path, info: Mapping[str, Any], array: ts.TensorStore) -> _Layout:
    """What every open checks without reading the data: dtype, shape, every shard's size and last bytes."""
    n, m = (int(s) for s in array.shape)
    record = info.get("integrity")
    dtype = str(np.dtype(array.dtype.numpy_dtype))
    want = record.get("dtype", "float32") if isinstance(record, dict) else "float32"
    if dtype != want:
        raise _damaged(store_dir, info, f"{ARRAY_NAME} holds {dtype} values but store.json records {want} "
                                        f"({ARRAY_NAME}/zarr.json was edited or {ARRAY_NAME} replaced)")
    layout = _layout(store_dir, n)
    if not isinstance(record, dict):
        key = os.path.abspath(store_dir)
        if key not in _LEGACY_WARNED:
            _LEGACY_WARNED.add(key)
            warnings.warn(f"{store_dir} was written before jsae recorded checksums in store.json, so a damaged "
                          f"shard may go unnoticed; `jsae store verify --record {store_dir}` adds them.",
                          UserWarning, stacklevel=3)
        for i in range(layout.num_shards):  # an old store: every shard was written, so it must be there
            if not layout.path(i).is_file():
                raise _damaged(store_dir, info, f"{layout.name(i)} is missing")
        return layout
    if [n, m] != list(record.get("shape", [n, m])) or layout.rows_per_shard != record.get("rows_per_shard"):
        raise _damaged(store_dir, info, f"{ARRAY_NAME} is [{n}, {m}] in shards of {layout.rows_per_shard} rows but "
                                        f"store.json records {record.get('shape')} in shards of "
                                        f"{record.get('rows_per_shard')} rows ({ARRAY_NAME} was replaced)")
    shards = record.get("shards") or []
    if len(shards) != layout.num_shards:
        raise _damaged(store_dir, info, f"store.json records {len(shards)} shards but the array has "
                                        f"{layout.num_shards}")
    for i, entry in enumerate(shards):
        path = layout.path(i)
        if not path.is_file():
            raise _damaged(store_dir, info, f"{layout.name(i)} is missing")
        size = path.stat().st_size
        if size != entry.get("size"):
            how = "truncated" if size < int(entry.get("size") or 0) else "grown"
            raise _damaged(store_dir, info, f"{layout.name(i)} has {size} bytes but store.json records "
                                            f"{entry.get('size')} ({how}, or {ARRAY_NAME} was replaced)")
        if _tail_digest(path, size) != entry.get("tail"):
            raise _damaged(store_dir, info, f"{layout.name(i)} does not hash to what store.json records (its "
                                            f"last bytes changed: damaged, or {ARRAY_NAME} was replaced)")
    return layout


def _read_table_checked(store_dir: Path, info: Mapping[str, Any]) -> pd.DataFrame:
    """``metadata.parquet``, refused unless its bytes hash to what ``store.json`` records."""
    meta_path = store_dir / META_NAME
    if not meta_path.exists():
        raise StoreError(f"{store_dir}: {META_NAME} is missing; the store is corrupt.")
    try:
        data = meta_path.read_bytes()
    except OSError as err:
        raise StoreError(f"{meta_path} cannot be read ({err.strerror or type(err).__name__}); the store is corrupt. "
                         f"Fix: {_fix(store_dir, info)}.") from None
    record = info.get("integrity")
    if isinstance(record, dict):
        digest = _hasher()
        digest.update(data)
        accepted = [r.get("hash") for r in (record.get("metadata"), record.get("metadata_next")) if r]
        if digest.hexdigest() not in accepted:
            raise StoreError(f"{store_dir}: {META_NAME} is not the table store.json records (its hash differs: "
                             "it was replaced, reordered or edited outside jsae), so its rows may not match the "
                             f"embeddings; put back the store's own table, or {_fix(store_dir, info)}.")
    return _parse_table(meta_path, data, lambda: _fix(store_dir, info))


def _parse_table(meta_path: Path, data: bytes, fix: Callable[[], str]) -> pd.DataFrame:
    """A store's table from its bytes; unreadable ones (truncated, junk, not parquet) are one
    :class:`StoreError` line naming the file and ``fix()``."""
    import pyarrow as pa

    try:
        return pd.read_parquet(io.BytesIO(data))
    except (OSError, ValueError, TypeError, KeyError, IndexError, pa.ArrowException) as err:
        reason = " ".join(str(err).split())[:120]
        raise StoreError(f"{meta_path} cannot be read as a table ({type(err).__name__}: {reason}); the store is "
                         f"corrupt. Fix: {fix()}.") from None


_TS_FILE = re.compile(r'local file "([^"]+)"')


def _read_error(store_dir: Path, info: Mapping[str, Any], layout: _Layout, err: Exception,
                rows: tuple[int, int]) -> StoreError:
    """A tensorstore read error as one line naming the shard, its rows and the fix."""
    text = " ".join(str(err).split())
    match = _TS_FILE.search(text)
    shard = layout.shard_of_file(match.group(1)) if match else None
    if shard is None:
        first, last = rows[0] // layout.rows_per_shard, max(rows[0], rows[1] - 1) // layout.rows_per_shard
        where = layout.name(first) if first == last else (
            f"shards {layout.key(first)}..{layout.key(last)} (rows {rows[0]}..{rows[1] - 1})")
    else:
        where = layout.name(shard)
    if "Digest mismatch" in text and "shard index" in text:
        why = "its index fails its checksum (truncated or damaged)"
    elif "Digest mismatch" in text:
        why = "a chunk fails its checksum (damaged bytes)"
    elif "Shard index entry" in text or ("DATA_LOSS" in text and "byte range" in text):
        why = "its index points outside the shard file (the index is damaged, or the file truncated)"
    elif "shard index" in text or "OUT_OF_RANGE" in text:
        why = "its index cannot be read (truncated or damaged)"
    elif "decompress" in text.lower() or "ZSTD" in text:
        why = "a chunk does not decompress (damaged bytes)"
    else:
        why = text.split(" [", 1)[0][:160]
    return _damaged(store_dir, info, f"{where} cannot be read: {why}")


def verify_store(store_dir: str | os.PathLike, *, record: bool = False,
                 progress: bool | None = None) -> dict[str, Any]:
    """Re-hash every shard file and the metadata table against ``store.json``.

    Returns ``{"shards": count, "bytes": hashed, "bad": [(shard, problem), ...], "recorded": bool}``;
    a store with bad parts is *not* raised on (the caller names them). ``record``: a store written
    before the hashes existed gets them, after every shard was read in full through tensorstore
    (checksums, decoding) — refused while any part is bad. Recorded hashes are never replaced.
    ``progress``: a tqdm bar over the bytes (``None``: only on a terminal).
    """
    from tqdm.auto import tqdm

    store_dir = Path(store_dir)
    if not store_dir.exists():
        raise StoreError(f"embedding store {store_dir} does not exist.")
    info = _read_info(store_dir)
    if not info.get("complete", False):
        raise StoreError(f"{store_dir} is incomplete (an export or import did not finish); re-run the same "
                         "command to resume it.")
    array = open_array(store_dir)
    n, m = (int(s) for s in array.shape)
    layout = _layout(store_dir, n)
    integrity = info.get("integrity")
    legacy = not isinstance(integrity, dict)
    if legacy and not record:
        raise StoreError(f"{store_dir} records no hashes (written before jsae recorded them); "
                         f"`jsae store verify --record {store_dir}` checks every shard and adds them.")
    bad: list[tuple[str, str]] = []
    dtype = str(np.dtype(array.dtype.numpy_dtype))
    want = "float32" if legacy else integrity.get("dtype")
    if dtype != want:
        bad.append((f"{ARRAY_NAME}/zarr.json", f"holds {dtype} values, not {want}"))
    if not legacy and ([n, m] != list(integrity.get("shape") or [])
                       or len(integrity.get("shards") or []) != layout.num_shards):
        bad.append((ARRAY_NAME, f"is [{n}, {m}] in {layout.num_shards} shards but store.json records "
                                f"{integrity.get('shape')} in {len(integrity.get('shards') or [])}"))
    entries = [None] * layout.num_shards if legacy else list(integrity.get("shards") or [])[:layout.num_shards]
    paths = [layout.path(i) for i in range(len(entries))]
    total = sum(p.stat().st_size for p in paths if p.is_file())
    hashed = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"verify {store_dir.name}", disable=(
            None if progress is None else not progress), dynamic_ncols=True) as bar:
        for i, (entry, path) in enumerate(zip(entries, paths)):
            if not path.is_file():
                bad.append((layout.name(i), "missing"))
                continue
            size = path.stat().st_size
            digest = _hash_file(path, bar)
            hashed += size
            if entry is not None:
                if size != entry.get("size"):
                    bad.append((layout.name(i), f"{size} bytes, store.json records {entry.get('size')}"))
                elif digest != entry.get("hash"):
                    bad.append((layout.name(i), "its bytes changed (hash differs from store.json)"))
                continue
            start, stop = layout.rows(i)  # --record on an old store: the data must decode
            try:
                array[start:stop, :].read().result()
            except ValueError as err:
                bad.append((layout.name(i), str(_read_error(store_dir, info, layout, err, (start, stop)))
                            .split(" cannot be read: ", 1)[-1].split("; the store is damaged")[0]))
    meta_path = store_dir / META_NAME
    if not meta_path.is_file():
        bad.append((META_NAME, "missing"))
    elif not legacy:
        accepted = [r.get("hash") for r in (integrity.get("metadata"), integrity.get("metadata_next")) if r]
        if _hash_file(meta_path) not in accepted:
            bad.append((META_NAME, "not the table store.json records (hash differs)"))
    recorded = False
    if record and legacy and not bad:
        table_rows = len(_parse_table(meta_path, meta_path.read_bytes(), lambda: _fix(store_dir, info)))
        if table_rows != n:
            bad.append((META_NAME, f"{table_rows} rows, the array has {n}"))
        else:
            _write_info(store_dir, {**info, "integrity": _integrity(store_dir, array)})
            recorded = True
    return {"store": str(store_dir), "shards": layout.num_shards, "bytes": hashed, "bad": bad,
            "recorded": recorded, "fix": _fix(store_dir, info)}


def finalize_store(store_dir: str | os.PathLike, metadata: pd.DataFrame,
                   attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the metadata table and mark the store complete (the last step of any writer).

    ``store.json`` records the integrity of what was written (:data:`HASH_NAME` of every shard
    file and of the table, the array's dtype and shape), so a later open can refuse damage.
    A store folder holding a symbolic link is refused (:func:`check_store_files`); the table
    and ``store.json`` are written to temporary files renamed into place.
    """
    store_dir = Path(store_dir)
    check_store_files(store_dir, deleting=False)   # never write through a link inside the store
    array = open_array(store_dir)
    n, m = (int(s) for s in array.shape)
    table = validate_metadata(metadata, n)
    tmp = store_dir / f"{META_NAME}.tmp-{os.getpid()}"
    try:  # a temporary file renamed over the table: a link there is replaced, never written through
        table.to_parquet(tmp, index=False)
        os.replace(tmp, store_dir / META_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "num_rows": n,
        "dim": m,
        "complete": True,
        "columns": [str(c) for c in table.columns],
        **{k: v for k, v in dict(attrs or {}).items() if k != "integrity"},
        "integrity": _integrity(store_dir, array),
    }
    _write_info(store_dir, info)
    return info


def add_columns(store: "str | os.PathLike | EmbeddingStore", frame: pd.DataFrame, *, overwrite: bool = False,
                attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Add columns to a finished store's metadata table, rows and their order unchanged.

    Args:
      store: the store folder (or an opened :class:`EmbeddingStore`; its table is read again
        from disk).
      frame: one row per store row, in store order, with an ``id`` column equal to the
        store's ids (the order check) and the columns to add.
      overwrite: replace columns the table already has (in place); without it they are
        refused, naming them, and nothing is written.
      attrs: fields merged into ``store.json`` (how the columns were made).
    The table is written to a temporary file beside it and renamed over ``metadata.parquet``
    (atomic: a reader sees the old table or the new one), then ``store.json`` (its
    ``columns`` and ``attrs``) likewise. A frame with another row count, without ``id`` or
    with the ids in another order is a :class:`StoreError` naming the first differing row.
    Returns the new ``store.json`` contents.
    """
    store_dir = Path(store.path if isinstance(store, EmbeddingStore) else store)
    opened = open_store(store_dir)
    table = opened.metadata
    n = len(table)
    if not isinstance(frame, pd.DataFrame):
        raise StoreError(f"add_columns: expected a table (pandas DataFrame), got {type(frame).__name__}.")
    if len(frame) != n:
        raise StoreError(f"{store_dir}: the new columns have {len(frame)} rows but the store has {n}; give exactly "
                         "one row per store row, in store order.")
    if "id" not in frame.columns:
        raise StoreError(f"{store_dir}: the new columns need an 'id' column equal to the store's ids, in store "
                         "order (it checks that the rows line up).")
    ids, given = table["id"].astype(str).to_numpy(), frame["id"].astype(str).to_numpy()
    if not np.array_equal(ids, given):
        row = int(np.flatnonzero(ids != given)[0])
        raise StoreError(f"{store_dir}: row {row} of the new columns has id {given[row]!r} but the store has "
                         f"{ids[row]!r}; the rows must be in store order.")
    new = [c for c in frame.columns if c != "id"]
    if not new:
        raise StoreError(f"{store_dir}: no columns to add (the table has only 'id').")
    clash = [c for c in new if c in table.columns]
    if clash and not overwrite:
        shown = ", ".join(map(str, clash[:5])) + (f", ... ({len(clash)} in all)" if len(clash) > 5 else "")
        raise StoreError(f"{store_dir} already has the column(s) {shown}; pass overwrite=True (CLI: --overwrite) "
                         "to replace them.")
    table = table.copy()
    values = frame.reset_index(drop=True)
    for c in new:
        table[c] = values[c].to_numpy()
    table = validate_metadata(table, n)
    tmp = store_dir / f"{META_NAME}.tmp-{os.getpid()}"
    try:
        table.to_parquet(tmp, index=False)
        info = _read_info(store_dir)
        integrity = info.get("integrity")
        if isinstance(integrity, dict):  # the new table's hash is accepted before the table is renamed in
            integrity = {**integrity, "metadata_next": _table_record(tmp)}
            _write_info(store_dir, {**info, "integrity": integrity})
        os.replace(tmp, store_dir / META_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = {**info, "columns": [str(c) for c in table.columns],
            **{k: v for k, v in dict(attrs or {}).items() if k != "integrity"}}
    if isinstance(integrity, dict):  # then it is the only one
        info["integrity"] = {**{k: v for k, v in integrity.items() if k != "metadata_next"},
                             "metadata": integrity["metadata_next"]}
    _write_info(store_dir, info)
    return info


# ----------------------------------------------------------------------------- what a store folder holds

#: the files a store writer makes (``jsae store import|synth``, ``jsae embed``, ``jsae describe``,
#: bundled clips), as paths relative to the store folder, after a temporary suffix is dropped
_STORE_FILE = re.compile(r"""(?x)^(?:
    store\.json | metadata\.parquet | plan\.json | plan\.parquet | summary\.json
  | embeddings\.zarr/zarr\.json | embeddings\.zarr/c(?:[./]\d+)+
  | progress/(?:shard-\d+\.(?:done|describe\.parquet) | finalize\.lock)
  | clips/\d+-[0-9a-f]{8}\.[A-Za-z0-9]+
)$""")
#: the folders a store writer makes
_STORE_FOLDER = re.compile(r"^(?:embeddings\.zarr(?:/c(?:/\d+)*)?|progress|clips)$")
#: what a writer adds to a name while the file is being written (``store.json.tmp-123``, tensorstore's ``.__lock``)
_TEMP_SUFFIX = re.compile(r"\.(?:tmp(?:-\d+)?|__lock)$")


def _known(rel: str, folder: bool) -> bool:
    """Whether the store-relative path ``rel`` is a file (``folder``: a folder) a store writer makes."""
    parts = rel.split("/")
    top = next((k for k in STORE_ENTRIES if parts[0] == k or parts[0].startswith(k + ".tmp")), None)
    if top is None:
        return False
    rel = "/".join([top, *parts[1:]])
    if folder:
        return _STORE_FOLDER.match(rel) is not None
    return _STORE_FILE.match(_TEMP_SUFFIX.sub("", rel)) is not None


def store_foreign_files(store_dir: str | os.PathLike, *, links_only: bool = False,
                        limit: int = 1) -> list[tuple[str, str]]:
    """What inside ``store_dir`` no store writer made: ``[(path relative to the store, why), ...]``
    (at most ``limit``, in name order). A symbolic link anywhere inside counts (jsae never writes
    or deletes through one); ``links_only``: only links. Empty for a folder holding only a store."""
    root = Path(store_dir)
    found: list[tuple[str, str]] = []

    def walk(folder: Path, rel: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if len(found) >= limit:
                return
            path = f"{rel}{entry.name}"
            if entry.is_symlink():
                found.append((path, f"a symbolic link to {os.path.realpath(entry.path)}"))
            elif entry.is_dir(follow_symlinks=False):
                if links_only or _known(path, folder=True):
                    walk(Path(entry.path), path + "/")
                else:
                    found.append((path + "/", "a folder no store writer makes"))
            elif not links_only and not _known(path, folder=False):
                found.append((path, "a file no store writer makes"))

    if root.is_dir() and not root.is_symlink():
        walk(root, "")
    return found


def check_store_files(store_dir: str | os.PathLike, *, deleting: bool, option: str = "--out") -> None:
    """Refuse (one-line :class:`~jsae.safety.UnsafeDeleteError`) to delete (``deleting``) a store
    folder holding anything no store writer made, or to write into one holding a symbolic link:
    nothing is deleted or written, and the message names the first such entry."""
    foreign = store_foreign_files(store_dir, links_only=not deleting)
    if not foreign:
        return
    rel, why = foreign[0]
    if deleting:
        raise UnsafeDeleteError(
            f"refusing to delete {option} {store_dir}: it holds {rel}, {why}; only a store's own files are ever "
            f"deleted, so nothing was deleted. Move {rel} out of {store_dir} and run the same command again, or "
            f"choose another {option}.")
    raise UnsafeDeleteError(
        f"refusing to write into {store_dir}: {rel} inside it is {why}, and jsae never writes through a link "
        f"(what it points to is untouched). Replace the link with the real file or folder, or choose another "
        f"{option}.")


#: the temporary folder an earlier ``write_store`` made beside its store: ``NAME.tmp-XXXXXXXX``
_LEGACY_TEMP = re.compile(r"^(?P<name>.+)\.tmp-[a-z0-9_]{8}$")
#: a legacy temporary folder untouched for this long is taken for left over (its name records no process)
LEGACY_TEMP_AGE = 3600.0


def _left_over(parent: Path, name: str) -> list[Path]:
    """The temporary folders that ``jsae store import|synth`` of jsae versions before
    :func:`jsae.safety.replace_folder` left beside the store ``name`` in ``parent`` when killed:
    ``NAME.tmp-XXXXXXXX`` folders that hold only store files and were untouched for
    :data:`LEGACY_TEMP_AGE` seconds (their name records no process to ask whether it still runs)."""
    found = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return []
    now = time.time()
    for entry in entries:
        m = _LEGACY_TEMP.match(entry.name)
        if m is None or m["name"] != name or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            newest = max([entry.stat().st_mtime] + [p.stat().st_mtime for p in entry.rglob("*")])
        except OSError:
            continue
        if now - newest >= LEGACY_TEMP_AGE and not store_foreign_files(entry):
            found.append(entry)
    return found


def _clean_left_over(store_dir: Path) -> None:
    """Clean up what killed runs left beside ``store_dir``: the temporary folders of
    :func:`jsae.safety.replace_folder` whose process has ended (:func:`jsae.safety.clean_staged`:
    never one of a running process) and older ones (:func:`_left_over`); one warning says so."""
    parent = store_dir.parent
    legacy = _left_over(parent, store_dir.name)
    size = sum(p.stat().st_size for d in legacy for p in d.rglob("*") if p.is_file())
    for folder in legacy:
        shutil.rmtree(folder, ignore_errors=True)
    staged = clean_staged(parent)
    if legacy or staged:
        warnings.warn(f"cleaned up {len(legacy) + staged} temporary folder(s) that killed jsae runs left in "
                      f"{parent}" + (f" ({size / 1e6:.1f} MB)" if size else ""), UserWarning, stacklevel=3)


def write_store(store_dir: str | os.PathLike, embeddings: "np.ndarray | RowBlocks",
                metadata: pd.DataFrame | None = None, *, attrs: Mapping[str, Any] | None = None,
                rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK, overwrite: bool = False,
                inputs: Sequence[str | os.PathLike] = ()) -> "EmbeddingStore":
    """Validate and write a whole store atomically (a temporary folder renamed into place).

    Args:
      embeddings: ``[N, M]`` real array, or :class:`RowBlocks` (:func:`npy_rows`): written one
        shard at a time, so memory holds one shard of rows, never a copy of all of them. Rows
        refused by :func:`validate_embeddings` (NaN/Inf, squares beyond float32) stop the write:
        the message names the first and counts them all; nothing is written.
      metadata: table with ``N`` rows in the same order (``id`` is added if absent).
      attrs: extra JSON-able fields for ``store.json`` (encoder name, sample rate, ...).
      overwrite: replace an existing store at ``store_dir``. Only a folder that holds
        nothing but a store is replaced (:func:`jsae.safety.check_deletable`): never the
        working directory, a folder that holds one of ``inputs``, or any other folder; and
        only when every file in it is one a store writer makes (:func:`check_store_files`: a
        file of the user's inside ``embeddings.zarr/`` or a link is refused, naming it).
      inputs: the files the store is made from (protected from ``overwrite``).
    The rows go into a temporary sibling folder (:func:`jsae.safety.replace_folder`), which
    takes the store's place only when complete: a full disk, a read-only folder or a signal
    leaves no partial store and no temporary folder, and a store already at ``store_dir``
    unchanged (the error is one line saying so). Temporary folders that killed runs left in the
    same parent are removed first (:func:`_left_over`). The store folder gets the permissions of
    any new folder (the umask).
    """
    store_dir = Path(store_dir)
    rows = _row_blocks(embeddings)
    if rows.num_rows == 0:
        raise StoreError("no embeddings given (0 rows); an empty store is refused.")
    n = rows.num_rows
    table = validate_metadata(metadata if metadata is not None else pd.DataFrame(index=range(n)), n)
    existed = store_dir.exists() or store_dir.is_symlink()
    if existed and not overwrite:
        raise StoreError(f"{store_dir} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")

    def check_replaceable() -> None:
        # only a store is ever replaced: never the working directory, a folder holding an input, or user files
        check_deletable(store_dir, what="an embedding store", is_ours=is_store_dir, inputs=inputs)
        check_store_files(store_dir, deleting=True)

    check_replaceable()
    what = f"the embedding store {store_dir}"
    kept = (f"nothing of the new store is kept; the store already at {store_dir} is unchanged" if existed else
            "nothing of the new store is kept (no partial store, no temporary folder)")
    check_can_write(store_dir.parent, what, kept)   # a read-only or forbidden folder: one line, nothing drawn or read
    with writing_to(what, kept, name_file=False):
        _clean_left_over(store_dir)
    with replace_folder(store_dir, what=what) as tmp:
        with writing_to(what, kept, name_file=False):   # names the store, not a file of the temporary folder
            _fill(tmp, rows, table, attrs, rows_per_shard, rows_per_chunk)
        if store_dir.exists() or store_dir.is_symlink():
            check_replaceable()   # again: it may have changed while the rows were written
    return open_store(store_dir)


def _fill(tmp: Path, rows: RowBlocks, table: pd.DataFrame, attrs: Mapping[str, Any] | None,
          rows_per_shard: int, rows_per_chunk: int) -> None:
    """Write a whole store into the empty folder ``tmp``: the rows a shard at a time (each block
    checked by :class:`_Refusals`; after a refused row the rest are only checked, to count them),
    then the table and ``store.json``."""
    n, m = rows.num_rows, rows.dim
    array = create_array(tmp, n, m, rows_per_shard=rows_per_shard, rows_per_chunk=rows_per_chunk)
    refusals = _Refusals(rows.what)
    start = 0
    for block in rows.blocks(rows_per_shard):
        block = np.asarray(block)
        _check_shape(block, m, start, rows.what)
        stop = start + block.shape[0]
        if stop > n:
            raise StoreError(f"{rows.what} give more than the {n} rows announced; nothing was written.")
        with np.errstate(over="ignore", invalid="ignore"):
            x32 = block.astype(np.float32, copy=False)
        if refusals.check(block, x32, np.arange(start, stop)):
            array[start:stop, :].write(x32).result()
        start = stop
    refusals.raise_if_any()
    if start != n:
        raise StoreError(f"{rows.what} give {start} rows, not the {n} announced; nothing was written.")
    finalize_store(tmp, table, {"rows_per_shard": rows_per_shard, **dict(attrs or {})})


def check_can_write(path: str | os.PathLike, what: str, kept: str = "nothing was written") -> None:
    """Refuse, before any work, to write ``what`` into ``path`` (or, when it does not exist yet,
    into the nearest folder above it that does) on a read-only file system or in a folder this
    user may not write: a one-line :class:`~jsae.errors.StorageError` naming ``what``, ``kept``
    and the fix. A path that is no folder is left to the caller's own checks."""
    folder = Path(path)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir() or os.access(folder, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    code = errno.EROFS if read_only else errno.EACCES
    raise storage_error(OSError(code, os.strerror(code), str(folder)), what, kept)


def npy_rows(path: str | os.PathLike) -> RowBlocks:
    """The embeddings of a ``.npy`` file (checked by :func:`load_npy`) as :class:`RowBlocks` read
    from the file a block at a time: memory holds one block, and no page of the file stays
    mapped (a memory map of a 3 GB file would count 3 GB of resident memory once read). A
    Fortran-ordered array is read through its memory map."""
    path = Path(path)
    x = load_npy(path)
    n, m = (int(v) for v in x.shape)
    if not isinstance(x, np.memmap) or not x.flags.c_contiguous or n * m == 0:
        return RowBlocks(n, m, lambda k: (x[s:s + k] for s in range(0, n, k)), what=f"embeddings in {path}")
    dtype, offset = x.dtype, int(x.offset)   # the map itself goes when this returns

    def blocks(k: int) -> Iterator[np.ndarray]:
        with open(path, "rb") as f:
            f.seek(offset)
            for start in range(0, n, k):
                block = np.empty((min(k, n - start), m), dtype)
                if f.readinto(block) != block.nbytes:
                    raise StoreError(f"{path} ends before row {start + block.shape[0] - 1} of the {n} rows its "
                                     "header announces (truncated); save the array again.")
                yield block

    return RowBlocks(n, m, blocks, what=f"embeddings in {path}")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a metadata table from ``.csv``, ``.parquet`` or ``.jsonl``/``.json``.

    A missing, empty or malformed file is a :class:`StoreError` naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {
        ".csv": lambda: pd.read_csv(path, dtype={"id": str}, keep_default_na=False),
        ".parquet": lambda: pd.read_parquet(path),
        ".pq": lambda: pd.read_parquet(path),
        ".jsonl": lambda: pd.read_json(path, lines=True, dtype={"id": str}),
        ".ndjson": lambda: pd.read_json(path, lines=True, dtype={"id": str}),
        ".json": lambda: pd.read_json(path, dtype={"id": str}),
    }
    if suffix not in readers:
        raise StoreError(f"unknown table format {suffix!r} for {path}; use .csv, .parquet or .jsonl.")
    if not path.is_file():
        raise StoreError(f"metadata table {path} does not exist (or is not a file).")
    try:
        table = readers[suffix]()
        header = _csv_header(path) if suffix == ".csv" else None
    except (OSError, ValueError) as err:  # pandas' EmptyDataError/ParserError and pyarrow's errors are ValueErrors
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise StoreError(f"metadata table {path} cannot be read as {suffix[1:]} ({reason}); "
                         "give a table with a header row and one row per embedding.") from None
    if not isinstance(table, pd.DataFrame):
        raise StoreError(f"metadata table {path} is not a table; give one row per embedding.")
    if header is not None:
        _check_csv_header(path, header, table)
    return table


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file as written (pandas renames a repeated ``lang`` to ``lang.1``)."""
    first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(v) for v in first.iloc[0].tolist()] if len(first) else []


def _check_csv_header(path: Path, header: list[str], table: pd.DataFrame) -> None:
    """Refuse a CSV whose header names a column twice, or that was read as one column whose name
    holds another separator (a ``;``-separated file read as comma-separated)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in seen:
            raise StoreError(f"metadata table {path}: columns {seen[name] + 1} and {i + 1} of the header are both "
                             f"named {name!r}; column names must be unique (it would be read as {name!r} and "
                             f"{name + '.1'!r}). Rename one of them and try again.")
        seen[name] = i
    if table.shape[1] == 1:
        name = str(table.columns[0])
        for sep, word in ((";", "`;`"), ("\t", "tab"), ("|", "`|`")):
            if sep in name:
                raise StoreError(f"metadata table {path} was read as one column named {name!r}: it looks "
                                 f"{word}-separated; a .csv table is comma-separated. Save it with commas (e.g. "
                                 "pandas: pd.read_csv(path, sep=None, engine='python').to_csv(new_path, index=False)) "
                                 "and try again.")


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` file of embeddings ``[N, M]`` (memory-mapped), checked to be a 2-D array of
    real numbers with at least one row. Pickled (object) arrays are never loaded."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"embeddings file {path} does not exist (or is not a file).")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        what = "a .npz archive" if magic.startswith(b"PK") else "not a NumPy .npy array"
        raise StoreError(f"{path}: cannot be read as embeddings: it is {what}. Save a float array [rows, dim] with "
                         "numpy.save(path, x.astype('float32')).")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            reason = "it holds Python objects (a pickle), which are never loaded"
        else:
            reason = "it is not a NumPy .npy array"
        raise StoreError(f"{path}: cannot be read as embeddings: {reason}. Save a float array [rows, dim] with "
                         "numpy.save(path, x.astype('float32')).") from None
    validate_embeddings(x[:0] if x.ndim == 2 else x, what=f"embeddings in {path}")
    if x.shape[0] == 0:
        raise StoreError(f"{path} holds no embeddings (0 rows); an empty store is refused.")
    return x


@dataclass
class EmbeddingStore:
    """A finished store opened for reading.

    Attributes:
      path: the store directory, absolute (not resolved through links), so what records it
        (an analysis' ``params.store``, a run's ``data.source``) holds whatever the working directory.
      info: the parsed ``store.json``.
      metadata: the table, one row per embedding (``id``, labels, ``split``...).
    """

    path: Path
    info: dict[str, Any]
    metadata: pd.DataFrame
    _array: ts.TensorStore

    @property
    def num_rows(self) -> int:
        return int(self._array.shape[0])

    @property
    def dim(self) -> int:
        return int(self._array.shape[1])

    def __len__(self) -> int:
        return self.num_rows

    def read(self, rows: slice | np.ndarray | Sequence[int] | None = None, *, check: bool = True) -> np.ndarray:
        """Read rows (a slice, an index array, or all) as float32 ``[n, M]``.

        With ``check`` the rows are validated (NaN/Inf refused, naming the row).
        """
        if rows is None:
            rows = slice(0, self.num_rows)
        if isinstance(rows, slice):
            start = rows.start or 0
            span = range(self.num_rows)[rows]
            out = self._read_ts(self._array[rows, :], (span.start, span.stop) if len(span) else (0, 1))
        else:
            idx = np.asarray(rows, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self.num_rows):
                raise StoreError(f"row index out of range [0, {self.num_rows}): {idx.min()}..{idx.max()}")
            order = np.argsort(idx, kind="stable")
            if idx.size:
                sorted_rows = self._read_ts(self._array.oindex[idx[order], :],
                                            (int(idx.min()), int(idx.max()) + 1))
            else:
                sorted_rows = np.zeros((0, self.dim), np.float32)
            out = np.empty_like(sorted_rows)
            out[order] = sorted_rows
            start = 0
        out = np.asarray(out, dtype=np.float32)
        if check:  # errors name the store row (for an index array too)
            validate_embeddings(out, dim=self.dim, row_offset=start, what=f"store {self.path}",
                                rows=None if isinstance(rows, slice) else idx)
        return out

    def _read_ts(self, view: ts.TensorStore, rows: tuple[int, int]) -> np.ndarray:
        """Read through tensorstore; a checksum mismatch, a truncated shard or any other read
        error is one :class:`StoreError` line naming the shard, its rows and the fix."""
        try:
            return view.read().result()
        except ValueError as err:
            layout = _layout(self.path, self.num_rows)
            raise _read_error(self.path, self.info, layout, err, rows) from None

    def load(self) -> np.ndarray:
        """The whole array in memory, ``[N, M]`` float32 (validated)."""
        return self.read()

    def iter_blocks(self, rows_per_block: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Stream ``(start_row, block [n, M])`` for stores larger than memory."""
        step = int(rows_per_block or self.info.get("rows_per_shard", DEFAULT_ROWS_PER_SHARD))
        for start in range(0, self.num_rows, step):
            yield start, self.read(slice(start, min(start + step, self.num_rows)))

    def rows_where(self, **equals: Any) -> np.ndarray:
        """Row indices whose metadata columns equal the given values (``split="train"``)."""
        mask = np.ones(self.num_rows, bool)
        for col, value in equals.items():
            if col not in self.metadata.columns:
                raise StoreError(
                    f"store {self.path} has no metadata column {col!r}; columns: {list(self.metadata.columns)}"
                )
            mask &= (self.metadata[col].astype(str) == str(value)).to_numpy()
        return np.flatnonzero(mask)


def open_store(store_dir: str | os.PathLike) -> EmbeddingStore:
    """Open a finished store; refuses missing, incomplete, inconsistent and damaged ones.

    Checks without reading the data: the array's dtype and shape, every shard file there with
    the size and last bytes ``store.json`` records, and the metadata table's hash. A store
    written before the hashes existed opens with one warning per store (``jsae store verify
    --record``), after checking that every shard file is there.
    """
    store_dir = Path(store_dir)
    if not store_dir.exists():
        raise StoreError(f"embedding store {store_dir} does not exist.")
    info = _read_info(store_dir)
    if not info.get("complete", False):
        raise StoreError(
            f"{store_dir} is incomplete (an export or import did not finish); "
            "re-run the same command to resume it."
        )
    try:
        array = open_array(store_dir)
    except ValueError as err:  # tensorstore: zarr.json unreadable or not a zarr3 array
        if isinstance(err, StoreError):
            raise
        raise _damaged(store_dir, info, f"{ARRAY_NAME} cannot be opened ({' '.join(str(err).split())[:160]})") \
            from None
    n, m = (int(s) for s in array.shape)
    if n == 0:
        raise StoreError(f"{store_dir} is empty (0 rows); there is nothing to train on.")
    if (n, m) != (info.get("num_rows"), info.get("dim")):
        raise StoreError(f"{store_dir}: array is [{n}, {m}] but store.json says "
                         f"[{info.get('num_rows')}, {info.get('dim')}]; the store is corrupt.")
    _check_array(store_dir, info, array)   # dtype, shape, every shard there with its size and last bytes
    table = _read_table_checked(store_dir, info)  # the table store.json binds to these embeddings
    if len(table) != n:
        raise StoreError(f"{store_dir}: metadata has {len(table)} rows but the array has {n}; the store is corrupt.")
    return EmbeddingStore(path=Path(os.path.abspath(store_dir)), info=info, metadata=table, _array=array)
