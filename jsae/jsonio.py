"""Atomic file writes and strict JSON, shared by every writer of jsae (no JAX, no pandas).

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: a temporary file in the same
  folder, flushed and fsynced, renamed over the target, then the folder fsynced. A
  reader sees the old file or the new one, never a half-written one, even if the
  process is killed or the disk fills up mid-write (the temporary file is removed and
  the error — e.g. ``OSError(ENOSPC)`` — propagates; the old file is intact).
* :func:`to_jsonable`: numpy scalars/arrays → Python, NaN/Inf → ``None`` (strict JSON),
  paths → str, DataFrames → records; :func:`json_bytes`: strict JSON of that.
* :func:`finite_number`: a value as a finite float, or a default (a NaN/Inf or a value
  that is no number is missing, as in strict JSON).
"""
from __future__ import annotations

import json
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "to_jsonable", "json_bytes", "finite_number"]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as a plain open() gives
    except OSError as err:
        err.filename = str(path)  # name the file being replaced, not the temporary one
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError) and err.filename in (str(tmp), None):
            err.filename = str(path)  # name the file being replaced, not the temporary one
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """A strict-JSON copy of ``obj``: numpy scalars/arrays → Python, NaN/Inf → ``None``,
    paths → str, sets/tuples → lists, pandas DataFrames → lists of records."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    pd = sys.modules.get("pandas")  # a DataFrame exists only if pandas is imported: never import it here
    if pd is not None and isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict(orient="records"))
    return obj


def json_bytes(obj: Any, *, indent: int | None = 1) -> bytes:
    """Strict JSON of :func:`to_jsonable` ``(obj)`` with a final newline, UTF-8."""
    return (json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n").encode("utf-8")


def finite_number(value: Any, default: float | None) -> float | None:
    """``float(value)`` when it is a finite number, else ``default``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default
