"""Audio for the report: which files may be read, and the ``<audio>`` players of segments.

Audio is read only from files whose real path lies under an *audio root*
(:func:`audio_roots`): ``--audio-root``, or the folders the store was exported from
(``store.json``: ``audio_roots``, ``inputs.audio_dir``, the manifest's folder); a
``source`` such as ``../../x.wav``, an absolute path elsewhere or a link leading out of
the roots is not read (:func:`locate_audio`), and the page says so
(:class:`AudioCheck`). A segment is cut from its file and embedded as a WAV ``data:``
URI (:func:`audio_src`; with its ``spans``, the non-silent pieces ``jsae embed`` joined,
as the encoder heard them); formats neither the standard library nor soundfile can cut
are linked with a ``#t=start,end`` media fragment instead.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .tables import Cell, finite_number

__all__ = ["AUDIO_SUFFIXES", "audio_roots", "locate_audio", "resolve_audio", "audio_src", "audio_html", "AudioCheck"]

#: the file suffixes played (cut into a data: URI, or linked)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")


def audio_roots(store_info: dict | None = None, audio_root: str | Path | Iterable[str | Path] | None = None
                ) -> list[Path]:
    """The folders audio may be read from: ``audio_root`` (the ``--audio-root`` option) and
    the folders the store was exported from (``store.json``: ``audio_roots``,
    ``inputs.audio_dir``, the manifest's folder), as real paths; the file-system root
    is never one."""
    given = [audio_root] if isinstance(audio_root, (str, os.PathLike)) else list(audio_root or [])
    info = store_info or {}
    inputs = info.get("inputs") or {}
    stored = list(info.get("audio_roots") or [])
    if inputs.get("audio_dir"):
        stored.append(inputs["audio_dir"])
    if inputs.get("manifest"):
        stored.append(Path(str(inputs["manifest"])).parent)
    roots: list[Path] = []
    for r in given + stored:
        try:
            p = Path(str(r)).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if p.is_dir() and p != Path(p.anchor) and p not in roots:
            roots.append(p)
    return roots


def locate_audio(source: Any, roots: Sequence[Path]) -> tuple[Path | None, str]:
    """``(real path, "")`` of the audio file ``source`` names if it lies under one of ``roots``;
    otherwise ``(None, reason)`` with reason ``"outside"`` (it exists but its real path is not
    under a root: ``../``, an absolute path elsewhere, a link leading out), ``"missing"`` or
    ``"no roots"``."""
    text = "" if source is None else str(source)
    if not text or "\0" in text:
        return None, "missing"
    if not roots:
        return None, "no roots"
    p = Path(text).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in roots]
    outside = False
    for c in candidates:
        try:
            real = c.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if not real.is_file():
            continue
        for r in roots:
            try:
                real.relative_to(r)
            except ValueError:
                continue
            return real, ""
        outside = True
    return None, "outside" if outside else "missing"


def resolve_audio(source: str, store_dir: Path | None = None, store_info: dict | None = None,
                  audio_root: str | Path | None = None) -> Path | None:
    """The audio file a ``source`` entry names, if it exists under an audio root
    (:func:`audio_roots`); ``None`` otherwise. ``store_dir`` is not a root (kept for
    compatibility)."""
    return locate_audio(source, audio_roots(store_info, audio_root))[0]


def _read_wav(path: Path, offset: float, duration: float | None) -> tuple[bytes, dict[str, int]]:
    """Raw frames of ``[offset, offset + duration)`` of a WAV file and its format."""
    with wave.open(str(path), "rb") as src:
        sr, n = src.getframerate(), src.getnframes()
        start = min(n, max(0, int(round(offset * sr))))
        count = n - start if duration is None or not np.isfinite(duration) else int(round(duration * sr))
        src.setpos(start)
        fmt = {"channels": src.getnchannels(), "width": src.getsampwidth(), "rate": sr}
        return src.readframes(max(0, count)), fmt


def _read_soundfile(path: Path, offset: float, duration: float | None) -> tuple[bytes, dict[str, int]]:
    import soundfile as sf  # optional (the embed extra)

    info = sf.info(str(path))
    start = int(round(offset * info.samplerate))
    stop = None if duration is None or not np.isfinite(duration) else start + int(round(duration * info.samplerate))
    data, sr = sf.read(str(path), start=start, stop=stop, dtype="int16", always_2d=True)
    return data.astype("<i2").tobytes(), {"channels": data.shape[1], "width": 2, "rate": sr}


def _wav_bytes(frames: bytes, fmt: dict[str, int]) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as dst:
        dst.setnchannels(fmt["channels"])
        dst.setsampwidth(fmt["width"])
        dst.setframerate(fmt["rate"])
        dst.writeframes(frames)
    return buf.getvalue()


def _spans(value: Any) -> list[tuple[float, float]] | None:
    """A segment's source spans (metadata ``spans``: JSON ``[[start, end], ...]`` seconds), or ``None``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    try:
        spans = json.loads(value) if isinstance(value, str) else list(value)
        out = [(float(a), float(b)) for a, b in spans]
    except (TypeError, ValueError):
        return None
    return [(a, b) for a, b in out if math.isfinite(a) and math.isfinite(b) and b > a] or None


def audio_src(path: Path | None, offset: Any = 0.0, duration: Any = None, max_seconds: float = 30.0,
              spans: Any = None) -> str | None:
    """The ``src`` of an ``<audio>`` element for ``[offset, offset + duration)`` of ``path``
    (``None`` if there is none) — or, given a segment's ``spans`` (its non-silent source
    pieces, joined by ``jsae embed``), those pieces concatenated, as the encoder heard them.
    WAV files (and, with soundfile installed, any format it reads) are cut into a ``data:``
    URI; other audio files are linked with a media fragment (first span start to last span
    end). At most ``max_seconds`` are played. ``path`` must already be checked
    (:func:`locate_audio`)."""
    if path is None or path.suffix.lower() not in AUDIO_SUFFIXES:
        return None
    pieces = _spans(spans)
    if pieces is None:
        start = max(0.0, finite_number(offset, 0.0) or 0.0)
        dur = finite_number(duration, None)
        pieces = [(start, start + min(dur, max_seconds) if dur is not None and dur > 0 else math.inf)]
    kept, left = [], max_seconds
    for a, b in pieces:  # at most max_seconds in all
        if left <= 0:
            break
        b = min(b, max(a, 0.0) + left)
        kept.append((max(a, 0.0), b))
        left -= b - max(a, 0.0)
    for read in (_read_wav, _read_soundfile):
        try:
            parts = [read(path, a, None if not math.isfinite(b) else b - a) for a, b in kept]
        except Exception:  # noqa: BLE001 - not this reader's format; try the next
            continue
        data = _wav_bytes(b"".join(f for f, _ in parts), parts[0][1])
        return "data:audio/wav;base64," + base64.b64encode(data).decode()
    start, end = kept[0][0], kept[-1][1]
    return path.as_uri() + f"#t={start:g}" + (f",{end:g}" if math.isfinite(end) else "")


def audio_html(path: Path | None, offset: float = 0.0, duration: float | None = None,
               max_seconds: float = 30.0) -> str:
    """An ``<audio>`` element (escaped) for ``[offset, offset + duration)`` of ``path`` ('' if none)."""
    from markupsafe import escape

    src = audio_src(path, offset, duration, max_seconds)
    return "" if src is None else f'<audio controls preload="none" src="{escape(src)}"></audio>'



@dataclass
class AudioCheck:
    """The audio cells of one page section, and what could not be played.

    ``roots``: the audio roots (:func:`audio_roots`); ``outside`` / ``missing``: the
    segments not played because their file lies outside them / was not found.
    """

    roots: list[Path] = field(default_factory=list)
    outside: int = 0
    missing: int = 0

    def cell(self, row: dict[str, Any]) -> Cell | str:
        """The audio cell of a metadata row (``source``, ``offset``, ``duration``, ``spans``):
        a player, a note (outside the roots) or empty (no file)."""
        path, why = locate_audio(row.get("source"), self.roots)
        if why == "outside":
            self.outside += 1
            return Cell("note", "outside the audio roots")
        if path is None:
            self.missing += 1
            return ""
        src = audio_src(path, row.get("offset", 0.0), row.get("duration"), spans=row.get("spans"))
        return Cell("audio", src) if src else ""

    def notes(self) -> list[str]:
        """What the page says about the segments it did not play."""
        out = []
        if self.outside:
            roots = ", ".join(str(r) for r in self.roots)
            out.append(f"{self.outside} segment(s) not played: their source lies outside the audio roots "
                       f"({roots}); only files under these are read (jsae report --audio-root DIR adds one).")
        if self.missing and not self.roots:
            out.append("no audio played: the store names no audio folder; pass jsae report --audio-root DIR "
                       "(the folder the source paths are relative to).")
        return out
