"""The export plan: every segment of every input recording, in a fixed row order.

Inputs are either a NeMo manifest (JSON lines with ``audio_filepath``, optional
``offset`` and ``duration`` in seconds, and any label fields: ``label``, ``lang``,
``gender``, ``music``, ``split``, ...; relative paths are resolved against the
manifest's folder) or a folder searched recursively for audio files (sorted by
relative path). Each input entry is a :class:`Recording`.

:func:`make_plan` reads every recording once (mono, at the encoder rate), finds its
segments (:mod:`embed.segment`) and returns a table with one row per segment:

========== ===================================================================
``id``        ``<source>:<offset in ms>`` — unique, deterministic
``source``    the file as the manifest names it, or relative to ``--audio-dir``
``offset``    segment start in the *file*, seconds (manifest offset included)
``duration``  segment length, seconds
labels        the recording's manifest fields, one column each
``_...``      private columns the exporter needs to re-read the audio
========== ===================================================================

Recordings that cannot be used (unreadable, corrupt, empty, no non-silent stretch of
``min_seconds``) are listed in ``skipped`` with their reason, and the rest go on.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from jsae.errors import JsaeError, MissingPathError

from embed.audio import AUDIO_EXTENSIONS, AudioReadError, load_audio
from embed.segment import SegmentConfig, find_segments

__all__ = [
    "ManifestError",
    "Recording",
    "Plan",
    "read_manifest",
    "scan_audio_dir",
    "make_plan",
    "shard_bounds",
    "PUBLIC_COLUMNS",
    "RESERVED_COLUMNS",
]

log = logging.getLogger("embed")

#: columns every plan (and so every store made by ``jsae embed``) starts with
PUBLIC_COLUMNS = ("id", "source", "offset", "duration")
#: manifest keys that describe where the audio is rather than a label
MANIFEST_AUDIO_KEYS = ("audio_filepath", "offset", "duration")
#: label names that would collide with :data:`PUBLIC_COLUMNS` are stored as ``manifest_<name>``
RESERVED_COLUMNS = ("id", "source")


class ManifestError(JsaeError, ValueError):
    """A manifest line cannot be parsed; names the file, line and fix."""


@dataclass(frozen=True)
class Recording:
    """One input: ``path`` (absolute), ``source`` (its name in ids and tables), an excerpt
    ``[offset, offset + duration)`` in seconds (``duration=None``: to the end), and labels."""

    path: Path
    source: str
    offset: float = 0.0
    duration: float | None = None
    labels: dict[str, Any] = field(default_factory=dict)


def _source_name(path: Path, base: Path, given: str) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return given


def read_manifest(manifest: str | os.PathLike) -> list[Recording]:
    """Parse a NeMo manifest into recordings (manifest order)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist.")
    base = manifest.resolve().parent
    out: list[Recording] = []
    with manifest.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(
                    f"{manifest}:{lineno}: not valid JSON ({err}); each line must be one JSON object."
                ) from None
            if not isinstance(entry, dict) or "audio_filepath" not in entry:
                raise ManifestError(
                    f"{manifest}:{lineno}: each line needs an \"audio_filepath\" field "
                    f"(NeMo manifest format); got {line[:120]!r}."
                )
            given = str(entry["audio_filepath"])
            path = Path(given).expanduser()
            path = (path if path.is_absolute() else base / path).resolve()
            try:
                offset = float(entry.get("offset") or 0.0)
                duration = entry.get("duration")
                duration = None if duration in (None, "") else float(duration)
            except (TypeError, ValueError):
                raise ManifestError(
                    f"{manifest}:{lineno}: \"offset\" and \"duration\" must be numbers (seconds)."
                ) from None
            if offset < 0 or (duration is not None and duration <= 0):
                raise ManifestError(
                    f"{manifest}:{lineno}: need offset >= 0 and duration > 0; got {offset}, {duration}."
                )
            labels = {k: v for k, v in entry.items() if k not in MANIFEST_AUDIO_KEYS}
            out.append(Recording(path=path, source=_source_name(path, base, given), offset=offset,
                                 duration=duration, labels=labels))
    if not out:
        raise ManifestError(f"manifest {manifest} has no entries.")
    return out


def scan_audio_dir(folder: str | os.PathLike, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Recording]:
    """All audio files under ``folder`` (recursive, hidden files skipped), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPathError(f"--audio-dir {folder} is not a directory.")
    base = folder.resolve()
    exts = tuple(e.lower() for e in extensions)
    found = []
    for root, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(exts):
                found.append(Path(root) / name)
    if not found:
        raise MissingPathError(f"--audio-dir {folder}: no audio files ({', '.join(exts)}) found.")
    found.sort(key=lambda p: p.relative_to(base).as_posix())
    return [Recording(path=p, source=p.relative_to(base).as_posix()) for p in found]


@dataclass
class Plan:
    """The result of :func:`make_plan`.

    Attributes:
      table: one row per segment (see module docstring), row order = store order.
      skipped: ``[{"source": ..., "reason": ...}]`` for recordings without segments.
      files_total: number of input recordings.
      input_seconds: total length of the readable recordings, seconds.
    """

    table: pd.DataFrame
    skipped: list[dict[str, str]]
    files_total: int
    input_seconds: float

    @property
    def num_rows(self) -> int:
        return len(self.table)

    @property
    def audio_seconds(self) -> float:
        return float(self.table["duration"].sum()) if len(self.table) else 0.0

    def metadata(self) -> pd.DataFrame:
        """The public columns (what the store's metadata table holds)."""
        return self.table[[c for c in self.table.columns if not c.startswith("_")]].reset_index(drop=True)


def _label_columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per-recording labels → columns with one parquet-friendly type each."""
    names: list[str] = []
    for rec in records:
        for k in rec:
            if k not in names:
                names.append(k)
    columns: dict[str, list[Any]] = {}
    for name in names:
        values = [rec.get(name) for rec in records]
        kinds = {type(v) for v in values if v is not None}
        if not (kinds <= {str} or kinds <= {bool} or kinds <= {int, float}):
            # mixed or nested values: one string column (JSON for lists and objects)
            values = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values]
        column = f"manifest_{name}" if name in RESERVED_COLUMNS or name in PUBLIC_COLUMNS else name
        columns[column] = values
    return columns


def make_plan(
    recordings: list[Recording],
    sample_rate: int,
    config: SegmentConfig,
    *,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Plan:
    """Segment every recording once (at ``sample_rate`` Hz) and lay out the rows.

    ``progress`` wraps the iteration over recordings (e.g. a tqdm factory).
    """
    rows: list[dict[str, Any]] = []
    row_labels: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    input_seconds = 0.0
    seen: dict[str, int] = {}
    iterator = progress(recordings) if progress else recordings
    for rec in iterator:
        try:
            x = load_audio(rec.path, sample_rate, offset=rec.offset, duration=rec.duration)
            size = rec.path.stat().st_size
        except AudioReadError as err:
            skipped.append({"source": rec.source, "reason": err.reason})
            continue
        except Exception as err:  # a broken file must not stop the export
            skipped.append({"source": rec.source, "reason": f"{type(err).__name__}: {err}"})
            continue
        seconds = x.shape[0] / sample_rate
        input_seconds += seconds
        segments, longest = find_segments(x, sample_rate, config)
        if not segments:
            skipped.append({
                "source": rec.source,
                "reason": f"too short: longest non-silent stretch {longest:.2f} s < --min-seconds "
                          f"{config.min_seconds:g} s (recording {seconds:.2f} s)",
            })
            continue
        rec_offset_ms = int(round(rec.offset * 1000))
        rec_duration_ms = -1 if rec.duration is None else int(round(rec.duration * 1000))
        for seg in segments:
            abs_ms = rec_offset_ms + seg.offset_ms
            rid = f"{rec.source}:{abs_ms}"
            if rid in seen:          # overlapping manifest excerpts of one file
                seen[rid] += 1
                rid = f"{rid}#{seen[rid]}"
            else:
                seen[rid] = 1
            rows.append({
                "id": rid, "source": rec.source, "offset": abs_ms / 1000.0, "duration": seg.duration_ms / 1000.0,
                "_path": str(rec.path), "_rec_offset_ms": rec_offset_ms, "_rec_duration_ms": rec_duration_ms,
                "_seg_offset_ms": seg.offset_ms, "_duration_ms": seg.duration_ms, "_file_bytes": size,
            })
            row_labels.append(rec.labels)
    table = pd.DataFrame(rows, columns=list(PUBLIC_COLUMNS) + ["_path", "_rec_offset_ms", "_rec_duration_ms",
                                                               "_seg_offset_ms", "_duration_ms", "_file_bytes"])
    labels = _label_columns(row_labels)
    if labels:
        label_df = pd.DataFrame(labels, index=table.index)
        table = pd.concat([table.iloc[:, :4], label_df, table.iloc[:, 4:]], axis=1)
    return Plan(table=table, skipped=skipped, files_total=len(recordings), input_seconds=input_seconds)


def shard_bounds(num_rows: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of every shard of a ``num_rows`` array."""
    n = math.ceil(num_rows / rows_per_shard) if num_rows else 0
    return [(s * rows_per_shard, min((s + 1) * rows_per_shard, num_rows)) for s in range(n)]

