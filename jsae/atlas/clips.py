"""The atlas's audio: one small compressed file per store row shown as an example, cut once.

:func:`make_clips` gives every row an audio file ``OUT/audio/<key>.<ext>`` (``key``:
:func:`clip_key`, the store row and a short hash of its id), or a short reason why it has
none. For each row, in this order:

* **copied**: the store's metadata has a ``clip`` column naming an already cut, already
  compressed segment file (relative to the store folder); it is copied byte for byte, never
  re-encoded. Its real path must lie inside the store folder or under an audio root.
* **cut**: else the segment is cut from ``source`` (+ ``offset``, ``duration``, ``spans``:
  the joined pieces as the encoder heard them, :func:`jsae.report.audio.segment_audio`),
  read only from files under the allowed audio roots (:func:`jsae.report.audio.audio_roots`
  and :func:`~jsae.report.audio.locate_audio`, as the report does), mixed down to mono,
  resampled to the nearest rate Opus takes (8/12/16/24/48 kHz, the nearest at or above the
  source's; :func:`scipy.signal.resample_poly`) and written as Ogg/Opus with soundfile at
  :data:`COMPRESSION_LEVEL` (about 14 kbit/s for speech). Rows are cut in parallel in a
  process pool (``min(cpu_count, 4)`` workers) with a progress bar.
* **reused**: a file cut or copied by an earlier build into the same folder is kept when the
  index ``audio/clips.json`` records the same origin for it (mode, source file, its size and
  modification time, offset, duration, spans, encoder settings).
* **unavailable**: a source outside the roots, missing, undecodable or empty gets no file
  but a reason (:data:`REASONS`); never an error.

Every file is written to a temporary name in ``audio/`` and renamed into place. A clip that
cannot be *written* (a full disk, a read-only folder, no permission: any ``OSError`` while
writing) is never blamed on its audio: the ``OSError`` propagates (naming the clip, never its
temporary name) and stops the build, which the atlas site reports as one
:class:`~jsae.errors.StorageError` line; the clips written before it stay recorded in the
index for the next build.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..jsonio import atomic_write_text, to_jsonable
from ..report.audio import AUDIO_SUFFIXES, AudioReadError, audio_roots, locate_audio, segment_audio, shown_source
from ..report.tables import finite_number
from ..safety import process_alive

__all__ = ["AUDIO_DIR", "INDEX_NAME", "OPUS_RATES", "COMPRESSION_LEVEL", "MAX_SECONDS", "REASONS", "Clip",
           "ClipReport", "clip_key", "make_clips", "encode_opus", "opus_level", "opus_rate", "prune_clips", "read_index",
           "remove_leftovers"]

#: the folder of the clips inside the atlas folder, and its index
AUDIO_DIR = "audio"
INDEX_NAME = "clips.json"
#: the sample rates Ogg/Opus takes
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
#: soundfile's ``compression_level`` for Opus (libsndfile maps 0 → 256 kbit/s … 1 → 6 kbit/s
#: linearly): 0.968 ≈ 14 kbit/s, enough for speech in a browser player
COMPRESSION_LEVEL = 0.968
#: the longest clip cut (seconds)
MAX_SECONDS = 30.0
#: what changes a cut file: recorded in the index, a change re-cuts
ENCODER = {"format": "OGG", "subtype": "OPUS", "compression_level": COMPRESSION_LEVEL, "channels": 1,
           "max_seconds": MAX_SECONDS}
#: why a row has no audio (shown on the page as "audio not available: …")
REASONS = {
    "outside": "outside the allowed roots",
    "missing": "file not found",
    "no roots": "no audio roots (pass --audio-root DIR)",
    "no source": "no source in the metadata",
    "undecodable": "cannot be decoded",
    "empty": "empty segment",
    "not audio": "not an audio file",
}
#: fewer cuts than this are done in this process (a pool's start costs more)
POOL_MIN = 8


def clip_key(row: int, row_id: Any) -> str:
    """The file-name stem of a row's clip: ``<row>-<8 hex digits of SHA-1(id)>`` (safe on
    every file system, unique per row, and changed when the row's id changes)."""
    return f"{int(row)}-{hashlib.sha1(str(row_id).encode('utf-8', 'replace')).hexdigest()[:8]}"


@dataclass
class Clip:
    """A row's audio: ``file`` (the name inside ``audio/``) or ``None`` with ``reason``;
    ``status``: ``cut``, ``copied``, ``reused`` or ``unavailable``."""

    row: int
    key: str
    file: str | None = None
    reason: str = ""
    status: str = "unavailable"
    #: the file a ``missing`` clip looked for (relative to its audio root or the store), for its note
    detail: str = ""

    def note(self) -> str:
        """Why the row has no audio, as its page says it (``file not found: PATH``)."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass
class ClipReport:
    """What :func:`make_clips` did: ``clips`` (``{row: Clip}``) and the counts."""

    clips: dict[int, Clip] = field(default_factory=dict)
    roots: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {s: 0 for s in ("cut", "copied", "reused", "unavailable")}
        reasons: dict[str, int] = {}
        for c in self.clips.values():
            out[c.status] += 1
            if c.status == "unavailable":
                reasons[c.reason] = reasons.get(c.reason, 0) + 1
        out["reasons"] = reasons
        return out

    def not_found(self) -> int:
        """How many rows have no audio because their file was not found."""
        return sum(1 for c in self.clips.values() if c.status == "unavailable" and c.reason == REASONS["missing"])


def _text(value: Any) -> str:
    """A metadata cell as text; missing (None, NaN, NA) is ``""``."""
    if isinstance(value, str):
        return value.strip()
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return str(value).strip()


def _spans_value(value: Any) -> Any:
    """``spans`` as JSON-able data (recorded in the index; read by :func:`segment_audio`)."""
    if value is None or isinstance(value, float):
        return None if value is None or not math.isfinite(value) else value
    if isinstance(value, str):
        return value
    try:
        return [[float(a), float(b)] for a, b in value]
    except (TypeError, ValueError):
        return None


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _locate_clip(value: str, store_dir: Path, roots: Sequence[Path]) -> tuple[Path | None, str]:
    """The real path of a ``clip`` entry (relative to the store folder, or absolute) if it
    lies inside the store folder or under an audio root; else ``(None, reason key)``."""
    if "\0" in value:
        return None, "missing"
    p = Path(value).expanduser()
    p = p if p.is_absolute() else store_dir / p
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        return None, "missing"
    if not real.is_file():
        return None, "missing"
    try:
        base = store_dir.resolve()
    except OSError:
        base = store_dir
    if not (real.is_relative_to(base) or any(real.is_relative_to(r) for r in roots)):
        return None, "outside"
    if real.suffix.lower() not in AUDIO_SUFFIXES:
        return None, "not audio"
    return real, ""


def remove_leftovers(folder: Path, pattern: str, pid_of) -> int:
    """Remove the entries of ``folder`` matching ``pattern`` that a killed build left
    (``pid_of(name)``: the process that made it, or None; only those of finished processes
    go). Returns how many were removed."""
    removed = 0
    for entry in folder.glob(pattern):
        pid = pid_of(entry.name)
        if pid is None or pid == os.getpid() or process_alive(pid) or entry.is_symlink():
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def _tmp_pid(name: str) -> int | None:
    """The process of a temporary clip ``.NAME.PID.HEX8.tmp``."""
    parts = name.split(".")
    try:
        return int(parts[-3]) if name.startswith(".") and name.endswith(".tmp") and len(parts) >= 5 else None
    except ValueError:
        return None


def read_index(audio_dir: Path) -> dict[str, dict[str, Any]]:
    """``{key: record}`` of ``audio/clips.json`` (empty when absent or unreadable)."""
    try:
        info = json.loads((audio_dir / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    clips = info.get("clips") if isinstance(info, dict) else None
    return {str(k): v for k, v in clips.items() if isinstance(v, dict)} if isinstance(clips, dict) else {}


def _write_index(audio_dir: Path, index: dict[str, dict[str, Any]]) -> None:
    atomic_write_text(audio_dir / INDEX_NAME, json.dumps({"format": "jsae-atlas-clips", "version": 1,
                                                          "clips": to_jsonable(dict(sorted(index.items())))},
                                                         indent=1, allow_nan=False))


def opus_rate(sr: int) -> int:
    """The Opus sample rate for audio of rate ``sr``: the smallest of :data:`OPUS_RATES` at or
    above it (48 kHz for anything faster)."""
    return next((r for r in OPUS_RATES if r >= sr), OPUS_RATES[-1])


def opus_level(kbps: float) -> float:
    """soundfile's ``compression_level`` for about ``kbps`` kbit/s (libsndfile maps 0 → 256
    and 1 → 6 kbit/s linearly)."""
    return float(min(1.0, max(0.0, (256.0 - kbps) / 250.0)))


def _write_atomic(dest: Path, fill: Callable[[BinaryIO], Any]) -> None:
    """Write ``dest`` through a temporary file in its folder, filled by ``fill(file)`` and
    renamed into place. An ``OSError`` propagates naming ``dest`` (not the temporary file,
    which is removed)."""
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            fill(f)
        os.replace(tmp, dest)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename in (str(tmp), None):
            err.filename = str(dest)
        raise


def encode_opus(samples: np.ndarray, sr: int, dest: Path, *, compression_level: float = COMPRESSION_LEVEL) -> float:
    """Write ``samples`` (``[n]`` or ``[n, channels]``, float) as a mono Ogg/Opus file
    ``dest`` (through a temporary file renamed into place) at ``compression_level``
    (:func:`opus_level`); returns its duration in seconds.

    The file is encoded in memory first, so the two failures stay apart: samples libsndfile
    cannot encode raise ``RuntimeError`` / ``ValueError``; writing the file raises
    ``OSError`` (with its ``errno``, naming ``dest``), which libsndfile writing to a path
    would have hidden in a ``RuntimeError``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    x = np.asarray(samples, np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    rate = opus_rate(int(sr))
    if rate != sr:
        g = math.gcd(rate, int(sr))
        x = resample_poly(x, rate // g, int(sr) // g).astype(np.float32)
    x = np.clip(x, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="OGG", subtype="OPUS", compression_level=compression_level)
    data = buf.getvalue()
    _write_atomic(Path(dest), lambda f: f.write(data))
    return len(x) / rate


def _cut(job: tuple[str, str, Any, Any, Any, str]) -> tuple[str, str, float]:
    """Cut one segment (in a pool worker): ``(key, reason key or "", seconds)``.

    Audio that cannot be read or encoded is ``undecodable``; an ``OSError`` writing the clip
    (:func:`encode_opus`) is the disk's, not the audio's, and propagates."""
    key, source, offset, duration, spans, dest = job
    try:
        samples, sr = segment_audio(Path(source), offset, duration, spans, max_seconds=MAX_SECONDS)
    except (AudioReadError, OSError, ValueError, RuntimeError):
        return key, "undecodable", 0.0
    if samples.shape[0] == 0:
        return key, "empty", 0.0
    try:
        seconds = encode_opus(samples, sr, Path(dest))
    except (ValueError, RuntimeError):  # encoding; an OSError is writing, and propagates
        return key, "undecodable", 0.0
    return key, "", seconds


def _copy(src: Path, dest: Path) -> bool:
    """Copy ``src`` to ``dest`` byte for byte (a temporary file renamed into place); ``False``
    when ``src`` cannot be opened. An ``OSError`` writing ``dest`` propagates."""
    try:
        fsrc = open(src, "rb")
    except OSError:
        return False
    with fsrc:
        _write_atomic(dest, lambda f: shutil.copyfileobj(fsrc, f))
    return True


def make_clips(store, rows: Iterable[int], out_dir: str | Path, *, audio_root: str | Path | None = None,
               workers: int | None = None, progress: bool | None = None) -> ClipReport:
    """Give every store row of ``rows`` its clip in ``out_dir/audio/`` (see the module docstring).

    ``store``: an :class:`~jsae.store.EmbeddingStore` (its metadata: ``clip``, or ``source``
    with ``offset``/``duration``/``spans``; its ``store.json`` names the audio roots).
    ``audio_root``: another folder audio may be read from (``--audio-root``); relative
    ``source`` paths are relative to a root. ``workers``: processes cutting (default
    ``min(cpu_count, 4)``). ``progress``: the progress bar (``None``: on a terminal only).
    An ``OSError`` writing a clip propagates (the module docstring).
    """
    audio_dir = Path(out_dir) / AUDIO_DIR
    new = not audio_dir.exists()
    audio_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(audio_dir, ".*.tmp", _tmp_pid)  # the temporary files of a killed build
    store_dir = Path(store.path)
    roots = audio_roots(store.info, audio_root)
    meta = store.metadata
    cols = set(meta.columns)
    index = read_index(audio_dir)
    if not (audio_dir / INDEX_NAME).is_file():
        # the index first: a first build stopped by a full disk leaves a folder the next build
        # knows as its own (``audio/`` with its index), or none at all
        try:
            _write_index(audio_dir, index)
        except BaseException:
            if new:
                with contextlib.suppress(OSError):
                    audio_dir.rmdir()
            raise
    report = ClipReport(roots=roots)
    copies: list[tuple[Clip, Path, dict[str, Any]]] = []
    cuts: list[tuple[Clip, tuple, dict[str, Any]]] = []
    ids = meta["id"].to_numpy(object) if "id" in cols else np.arange(len(meta)).astype(object)
    for row in sorted({int(r) for r in rows}):
        rec = meta.iloc[row]
        clip = Clip(row, clip_key(row, ids[row]))
        report.clips[row] = clip
        clip_value = _text(rec["clip"]) if "clip" in cols else ""
        if clip_value:
            real, why = _locate_clip(clip_value, store_dir, roots)
            if real is None:
                clip.reason, clip.detail = REASONS[why], clip_value if why == "missing" else ""
                continue
            record = {"mode": "copy", "source": str(real), **_stat(real)}
            name = clip.key + real.suffix.lower()
            job: Any = real
        else:
            source = _text(rec["source"]) if "source" in cols else ""
            if not source:
                clip.reason = REASONS["no source"]
                continue
            real, why = locate_audio(source, roots)
            if real is None:
                clip.reason, clip.detail = REASONS[why], shown_source(source, roots) if why == "missing" else ""
                continue
            offset = finite_number(rec["offset"], None) if "offset" in cols else None
            duration = finite_number(rec["duration"], None) if "duration" in cols else None
            spans = _spans_value(rec["spans"]) if "spans" in cols else None
            record = {"mode": "cut", "source": str(real), **_stat(real), "offset": offset, "duration": duration,
                      "spans": spans, "encoder": ENCODER}
            name = clip.key + ".opus"
            job = (clip.key, str(real), offset, duration, spans, str(audio_dir / name))
        record = json.loads(json.dumps(to_jsonable(record)))  # as the index reads back
        old = index.get(clip.key)
        if old is not None and old.get("file") == name and {k: old.get(k) for k in record} == record \
                and (audio_dir / name).is_file():
            clip.file, clip.status = name, "reused"
            continue
        record["file"] = name
        (copies if record["mode"] == "copy" else cuts).append((clip, job, record))
    todo = len(copies) + len(cuts)
    try:
        _make(audio_dir, index, copies, cuts, workers, progress)
    except BaseException:  # e.g. a full disk: record the clips written so far for the next build (if it can)
        if todo:
            with contextlib.suppress(OSError):
                _write_index(audio_dir, index)
        raise
    if todo or not (audio_dir / INDEX_NAME).is_file():
        _write_index(audio_dir, index)
    return report


def _make(audio_dir: Path, index: dict[str, dict[str, Any]], copies: list[tuple[Clip, Path, dict[str, Any]]],
          cuts: list[tuple[Clip, tuple, dict[str, Any]]], workers: int | None, progress: bool | None) -> None:
    """Copy and cut the clips of :func:`make_clips`, recording each one written in ``index``;
    an ``OSError`` writing a clip propagates (pending cuts are cancelled)."""
    from tqdm import tqdm

    todo = len(copies) + len(cuts)
    disable = True if not todo or progress is False else (None if progress is None else False)  # None: a tty only
    with tqdm(total=todo, desc="atlas audio", unit="clip", disable=disable) as bar:
        for clip, src, record in copies:
            if _copy(src, audio_dir / record["file"]):
                clip.file, clip.status = record["file"], "copied"
                index[clip.key] = record
            else:
                clip.reason = REASONS["missing"]
            bar.update(1)
        by_key = {clip.key: (clip, record) for clip, _, record in cuts}

        def done(key: str, why: str, seconds: float) -> None:
            clip, record = by_key[key]
            if why:
                clip.reason = REASONS[why]
                index.pop(key, None)
            else:
                clip.file, clip.status = record["file"], "cut"
                index[key] = {**record, "seconds": round(seconds, 4)}
            bar.update(1)

        n_workers = max(1, min(os.cpu_count() or 1, 4) if workers is None else int(workers))
        left = {job[0]: job for _, job, _ in cuts}
        if len(cuts) >= POOL_MIN and n_workers > 1:
            import multiprocessing
            from concurrent.futures.process import BrokenProcessPool

            # spawn: the parent holds JAX's threads, which a fork would copy in a broken state
            try:
                with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                    futures = [pool.submit(_cut, job) for job in left.values()]
                    try:
                        for f in as_completed(futures):
                            key, why, sec = f.result()  # a worker's OSError (writing its clip) is raised here
                            left.pop(key, None)
                            done(key, why, sec)
                    except BaseException:
                        for f in futures:  # cut no more: only the cuts already running finish
                            f.cancel()
                        raise
            except BrokenProcessPool:  # workers could not start (e.g. a script without a __main__ guard)
                pass
        for job in list(left.values()):  # few clips, or what a broken pool left
            done(*_cut(job))


def prune_clips(out_dir: str | Path, keep: Iterable[str]) -> int:
    """Remove the clips of ``out_dir/audio/`` that the index lists but ``keep`` (file names)
    does not (an earlier atlas's rows no page shows now); returns how many were removed."""
    audio_dir = Path(out_dir) / AUDIO_DIR
    index = read_index(audio_dir)
    keep = set(keep)
    removed = 0
    for key, record in list(index.items()):
        name = str(record.get("file", ""))
        if name in keep:
            continue
        path = audio_dir / name
        if name and "/" not in name and "\\" not in name and path.is_file() and not path.is_symlink():
            path.unlink()
            removed += 1
        index.pop(key)
    if removed or len(index) != len(read_index(audio_dir)):
        _write_index(audio_dir, index)
    return removed
