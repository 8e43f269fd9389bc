"""The export plan: every segment of every input recording, in a fixed row order.

Inputs are either a NeMo manifest (JSON lines with ``audio_filepath``, optional
``offset`` and ``duration`` in seconds, and any label fields: ``label``, ``lang``,
``gender``, ``music``, ``split``, ...; relative paths are resolved against the
manifest's folder) or a folder searched recursively for audio files (sorted by
relative path). Each input entry is a :class:`Recording`.

:func:`make_plan` reads every recording once (mono, at the encoder rate), finds its
segments (:mod:`jsae.embed.segment`) and returns a table with one row per segment:

========== ===================================================================
``id``        ``<source>:<offset in ms>`` — unique, deterministic
``source``    the file as the manifest names it, or relative to ``--audio-dir``
``offset``    segment start in the *file*, seconds (manifest offset included):
              the start of its first source span
``duration``  seconds of audio in the segment (the sum of its spans)
``spans``     its source spans in the file, a JSON string ``[[start, end], ...]`` in
              seconds (manifest offset included); one span for a contiguous segment,
              several for a joined one (``--segment-mode joined``), whose audio is
              the concatenation of the spans
``short``     ``True`` for a segment that is a whole recording (or manifest entry)
              with less non-silent audio than ``--min-seconds`` (at least
              ``--min-keep``; :attr:`jsae.embed.segment.Segment.short`), ``False`` for a
              ``--min-seconds``..``--max-seconds`` segment
labels        the recording's manifest fields, one column each
``_...``      private columns the exporter needs to re-read the audio
========== ===================================================================

Recordings that cannot be used (unreadable, corrupt, empty, less non-silent audio
than ``--min-keep``) are listed in ``skipped`` with their reason, and the rest go on.

**Accounting.** :attr:`Plan.recordings` has, per input recording, the non-silent
seconds found, the seconds kept in segments and dropped, the segments and the short
ones among them; :attr:`Plan.labels` the same summed per value of every label column
(:func:`label_accounting`; missing and empty values are left out), and
:func:`imbalance_warnings` names a label value that kept less of its audio than the
column as a whole (more than :data:`IMBALANCE_POINTS` percentage points below the
overall kept fraction) — dropping audio unevenly unbalances labelled classes.
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

from jsae.embed.audio import AUDIO_EXTENSIONS, AudioReadError, load_audio
from jsae.embed.segment import SegmentConfig, segment_recording

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
    "IMBALANCE_POINTS",
    "MAX_LABEL_VALUES",
    "label_accounting",
    "imbalance_warnings",
]

log = logging.getLogger("jsae.embed")

#: columns every plan (and so every store made by ``jsae embed``) starts with
PUBLIC_COLUMNS = ("id", "source", "offset", "duration", "spans", "short")
#: manifest keys that describe where the audio is rather than a label
MANIFEST_AUDIO_KEYS = ("audio_filepath", "offset", "duration")
#: label names that would collide with :data:`PUBLIC_COLUMNS` are stored as ``manifest_<name>``
RESERVED_COLUMNS = ("id", "source")
#: a label value whose kept fraction (seconds kept in segments / non-silent seconds found)
#: is more than this many percentage points below the overall kept fraction of its label
#: column (all values together) is warned about
IMBALANCE_POINTS = 10
#: label columns with more distinct values than this (ids, transcripts) are not accounted per value
MAX_LABEL_VALUES = 1000


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


def _decode_line(manifest: Path, lineno: int, raw: bytes) -> str:
    """One manifest line as text: UTF-8 (a byte-order mark on the first line is dropped); other
    bytes are a :class:`ManifestError` naming the line, the byte and the fix."""
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as err:
        byte = raw[err.start:err.start + 1].hex()
        raise ManifestError(
            f"{manifest}:{lineno}: not UTF-8 text (byte 0x{byte} at column {err.start + 1}); a NeMo manifest is "
            f"UTF-8 JSON lines: convert it (e.g. iconv -f latin1 -t utf-8 {manifest} > fixed.jsonl) and give the "
            "converted file."
        ) from None


def read_manifest(manifest: str | os.PathLike) -> list[Recording]:
    """Parse a NeMo manifest into recordings (manifest order)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist.")
    base = manifest.resolve().parent
    out: list[Recording] = []
    with manifest.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = _decode_line(manifest, lineno, raw).strip()
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
      recordings: per input recording (input order): ``source``, ``offset`` (of the
        manifest excerpt), ``seconds`` (``None`` if unreadable), ``nonsilent_seconds``,
        ``kept_seconds``, ``dropped_seconds``, ``segments``, ``short_segments`` (1 when the
        recording is one short segment, see :attr:`jsae.embed.segment.Segment.short`).
      labels: :func:`label_accounting` of the recordings.
    """

    table: pd.DataFrame
    skipped: list[dict[str, str]]
    files_total: int
    input_seconds: float
    recordings: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return len(self.table)

    @property
    def audio_seconds(self) -> float:
        return float(self.table["duration"].sum()) if len(self.table) else 0.0

    def totals(self) -> dict[str, Any]:
        """Kept/dropped totals over all recordings (seconds, segments, files)."""
        return totals(self.recordings)

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


def _seconds(ms: int) -> float:
    return round(ms / 1000.0, 3)


def _spans_json(spans) -> str:
    return json.dumps([[a, b] for a, b in spans], separators=(",", ":"))


def _too_short(result, config: SegmentConfig) -> str:
    """Why a recording gave no segment (``result``: its :class:`~jsae.embed.segment.Segmentation`)."""
    longest, total = result.longest_ms / 1000.0, result.nonsilent_ms / 1000.0
    if config.mode == "contiguous":
        return f"longest non-silent stretch {longest:.2f} s < --min-seconds {config.min_seconds:g} s"
    if config.min_keep < config.min_seconds and total < config.min_keep:
        return f"{total:.2f} s of non-silent audio in all < --min-keep {config.min_keep:g} s"
    if config.max_gap is None:
        return f"{longest:.2f} s of non-silent audio in all < --min-seconds {config.min_seconds:g} s"
    what = (f"longest run of non-silent audio (gaps <= --max-gap {config.max_gap:g} s) {longest:.2f} s "
            f"< --min-seconds {config.min_seconds:g} s")
    if config.min_keep < config.min_seconds and total < config.min_seconds:
        what += f"; its {total:.2f} s in all are split by silences longer than --max-gap, so not one short segment"
    return what


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
    accounts: list[dict[str, Any]] = []
    input_seconds = 0.0
    seen: dict[str, int] = {}
    iterator = progress(recordings) if progress else recordings
    for rec in iterator:
        account = {"source": rec.source, "offset": rec.offset, "seconds": None, "nonsilent_seconds": 0.0,
                   "kept_seconds": 0.0, "dropped_seconds": 0.0, "segments": 0, "short_segments": 0}
        accounts.append(account)
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
        result = segment_recording(x, sample_rate, config)
        segments = result.segments
        account.update(seconds=round(seconds, 3), nonsilent_seconds=_seconds(result.nonsilent_ms),
                       kept_seconds=_seconds(result.kept_ms),
                       dropped_seconds=_seconds(result.nonsilent_ms - result.kept_ms), segments=len(segments),
                       short_segments=sum(1 for seg in segments if seg.short))
        if not segments:
            skipped.append({"source": rec.source,
                            "reason": f"too short: {_too_short(result, config)} (recording {seconds:.2f} s)"})
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
                "spans": _spans_json(((rec_offset_ms + a) / 1000.0, (rec_offset_ms + b) / 1000.0)
                                     for a, b in seg.parts),
                "short": bool(seg.short),
                "_path": str(rec.path), "_rec_offset_ms": rec_offset_ms, "_rec_duration_ms": rec_duration_ms,
                "_seg_offset_ms": seg.offset_ms, "_duration_ms": seg.duration_ms, "_spans_ms": _spans_json(seg.parts),
                "_file_bytes": size,
            })
            row_labels.append(rec.labels)
    table = pd.DataFrame(rows, columns=list(PUBLIC_COLUMNS) + ["_path", "_rec_offset_ms", "_rec_duration_ms",
                                                               "_seg_offset_ms", "_duration_ms", "_spans_ms",
                                                               "_file_bytes"])
    labels = _label_columns(row_labels)
    if labels:
        label_df = pd.DataFrame(labels, index=table.index)
        n = len(PUBLIC_COLUMNS)
        table = pd.concat([table.iloc[:, :n], label_df, table.iloc[:, n:]], axis=1)
    return Plan(table=table, skipped=skipped, files_total=len(recordings), input_seconds=input_seconds,
                recordings=accounts, labels=label_accounting([r.labels for r in recordings], accounts))


_COUNTS = ("nonsilent_seconds", "kept_seconds", "dropped_seconds", "segments", "short_segments")


def _kept_fraction(nonsilent: float, kept: float) -> float:
    return kept / nonsilent if nonsilent > 0 else 0.0


def totals(accounts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of per-recording accounts: ``files``, ``files_kept`` (with a segment), ``files_skipped``,
    ``nonsilent_seconds``, ``kept_seconds``, ``dropped_seconds``, ``segments``, ``short_segments``,
    ``kept_fraction``."""
    out: dict[str, Any] = {"files": len(accounts), "files_kept": sum(1 for a in accounts if a["segments"]),
                           "files_skipped": sum(1 for a in accounts if not a["segments"])}
    for key in _COUNTS:
        total = sum(a.get(key, 0) for a in accounts)
        out[key] = round(total, 3) if isinstance(total, float) else total
    out["kept_fraction"] = round(_kept_fraction(out["nonsilent_seconds"], out["kept_seconds"]), 4)
    return out


def _label_missing(value: Any) -> bool:
    """``None``, NaN, or a string that is empty or only whitespace: no value for this label."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def _label_key(value: Any) -> str | None:
    """A label value as a summary key; ``None`` when it is not a class (float, nested)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int)):
        return json.dumps(value)
    return None


def label_accounting(labels: list[dict[str, Any]], accounts: list[dict[str, Any]]) -> dict[str, dict[str, dict]]:
    """Per label column and value: :func:`totals` of the recordings with that value.

    ``labels[i]`` are recording ``i``'s manifest fields, ``accounts[i]`` its account.
    Columns are named as in the store's table (``manifest_<name>`` for reserved names).
    Only class-like columns are accounted: string, boolean or integer values, at least
    two and at most :data:`MAX_LABEL_VALUES` distinct ones; recordings without the
    field, or with a missing value (``None``, NaN, an empty or blank string), are left out
    of that column.
    """
    names: list[str] = []
    for rec in labels:
        names.extend(k for k in rec if k not in names)
    out: dict[str, dict[str, dict]] = {}
    for name in names:
        groups: dict[str, list[dict[str, Any]]] = {}
        ok = True
        for rec, account in zip(labels, accounts):
            if _label_missing(rec.get(name)):
                continue
            key = _label_key(rec[name])
            if key is None:
                ok = False
                break
            groups.setdefault(key, []).append(account)
        if not ok or not 2 <= len(groups) <= MAX_LABEL_VALUES:
            continue
        column = f"manifest_{name}" if name in RESERVED_COLUMNS or name in PUBLIC_COLUMNS else name
        out[column] = {key: totals(groups[key]) for key in sorted(groups)}
    return out


def imbalance_warnings(by_label: dict[str, dict[str, dict]], points: float = IMBALANCE_POINTS,
                       mode: str | None = None) -> list[str]:
    """One message per label column where a value's kept fraction is more than ``points``
    percentage points below the column's overall kept fraction (kept / non-silent seconds
    of all its values together; see :data:`IMBALANCE_POINTS`); ``mode`` (the segmentation
    mode) picks the advice."""
    if mode == "contiguous":
        advice = "--segment-mode joined keeps speech made of short utterances"
    else:
        advice = "a smaller --min-keep or --min-seconds, or a larger --max-gap, keeps more"
    messages = []
    for column, values in by_label.items():
        nonsilent = sum(v["nonsilent_seconds"] for v in values.values())
        kept = sum(v["kept_seconds"] for v in values.values())
        if nonsilent <= 0:
            continue
        overall = kept / nonsilent
        low = sorted((k for k, v in values.items() if v["kept_fraction"] < overall - points / 100.0),
                     key=lambda k: (values[k]["kept_fraction"], k))
        if not low:
            continue
        shown = ", ".join(
            f"{column}={k} kept {100 * values[k]['kept_fraction']:.0f} % ({values[k]['kept_seconds']:.1f} of "
            f"{values[k]['nonsilent_seconds']:.1f} s, {values[k]['files_kept']} of {values[k]['files']} files)"
            for k in low[:5])
        more = f" and {len(low) - 5} more values" if len(low) > 5 else ""
        messages.append(
            f"label {column!r}: {shown}{more} — more than {points:g} points below the {100 * overall:.0f} % kept "
            f"overall ({kept:.1f} of {nonsilent:.1f} s, all values of {column!r}); the segments under-represent "
            f"{'these values' if len(low) > 1 else 'it'} (see summary.json 'segmentation_accounting'; {advice})."
        )
    return messages


def shard_bounds(num_rows: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of every shard of a ``num_rows`` array."""
    n = math.ceil(num_rows / rows_per_shard) if num_rows else 0
    return [(s * rows_per_shard, min((s + 1) * rows_per_shard, num_rows)) for s in range(n)]

