"""Audio for the report: which files may be read, and the ``<audio>`` players of segments.

Audio is read only from files whose real path lies under an *audio root*
(:func:`audio_roots`, :mod:`jsae.audioroots`, the one rule of jsae): ``--audio-root``, or the folders the store was exported from
(``store.json``: ``audio_roots``, ``inputs.audio_dir``, the manifest's folder); a
``source`` such as ``../../x.wav``, an absolute path elsewhere or a link leading out of
the roots is not read (:func:`locate_audio`), and the page says so
(:class:`AudioCheck`). A segment is cut from its file and embedded as a WAV ``data:``
URI (:func:`audio_src`; with its ``spans``, the non-silent pieces ``jsae embed`` joined,
as the encoder heard them); formats neither the standard library nor soundfile can cut
are linked with a ``#t=start,end`` media fragment instead.

:func:`segment_audio` cuts the same pieces as samples (``float32 [n, channels]`` and the
sample rate), for callers that encode their own files (the feature atlas,
:mod:`jsae.atlas.clips`); :func:`segment_pieces` says which pieces of the file those are.
"""
from __future__ import annotations

import base64
import io
import json
import math
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audioroots import audio_roots, locate_audio
from .tables import Cell, finite_number

__all__ = ["AUDIO_SUFFIXES", "audio_roots", "locate_audio", "resolve_audio", "audio_src", "audio_html", "AudioCheck",
           "segment_pieces", "segment_audio", "AudioReadError", "source_text", "shown_source", "missing_audio_warning"]

#: the file suffixes played (cut into a data: URI, or linked)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")


def source_text(source: Any) -> str:
    """A metadata ``source`` cell as text ("" when missing: None, NaN)."""
    if source is None or (isinstance(source, float) and not math.isfinite(source)):
        return ""
    return str(source).strip()


def shown_source(source: Any, roots: list[Path]) -> str:
    """How a note names a segment's audio file: relative to the audio root it lies under
    (an absolute path under a root), else as the metadata gives it (relative to a root)."""
    text = source_text(source)
    p = Path(text)
    if p.is_absolute():
        for r in roots:
            if p.is_relative_to(r):
                return p.relative_to(r).as_posix()
    return text


def missing_audio_warning(n: int, roots: list[Path], option: str = "--audio-root DIR") -> str | None:
    """The one warning line of a page (report, atlas) on which ``n`` segments have no audio
    because their file was not found under the audio ``roots`` (None when ``n`` is 0)."""
    if not n:
        return None
    where = ", ".join(str(r) for r in roots) or "none"
    return (f"{n} segment(s) shown without audio: their file was not found under the audio roots ({where}); "
            f"each such cell names the file it looked for; if the files moved, pass {option} (the folder the "
            "source paths are relative to).")


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


def segment_pieces(offset: Any = 0.0, duration: Any = None, spans: Any = None,
                   max_seconds: float = 30.0) -> list[tuple[float, float]]:
    """The ``(start, end)`` seconds of the source file that make up a segment: its ``spans``
    (the non-silent pieces ``jsae embed`` joined) when it has any, else ``[offset, offset +
    duration)`` (to the end of the file, ``end = inf``, without a duration); at most
    ``max_seconds`` in all, the last piece shortened."""
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
    return kept


class AudioReadError(ValueError):
    """An audio file could not be decoded (neither the standard library nor soundfile reads it)."""


def _float_wav(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    frames, fmt = _read_wav(path, offset, duration)
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}.get(fmt["width"])
    if dtype is None:
        raise AudioReadError(f"{path}: {8 * fmt['width']}-bit WAV samples are not read")
    pcm = np.frombuffer(frames, dtype).reshape(-1, fmt["channels"]).astype(np.float32)
    scale = {1: 128.0, 2: 32768.0, 4: 2147483648.0}[fmt["width"]]
    return (pcm - 128.0 if fmt["width"] == 1 else pcm) / scale, fmt["rate"]


def _float_soundfile(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf  # optional (the embed extra)

    info = sf.info(str(path))
    start = int(round(offset * info.samplerate))
    stop = None if duration is None or not np.isfinite(duration) else start + int(round(duration * info.samplerate))
    data, sr = sf.read(str(path), start=min(start, info.frames), stop=None if stop is None else min(stop, info.frames),
                       dtype="float32", always_2d=True)
    return data, int(sr)


def segment_audio(path: Path, offset: Any = 0.0, duration: Any = None, spans: Any = None,
                  max_seconds: float = 30.0) -> tuple[np.ndarray, int]:
    """The samples of a segment as the encoder heard them: ``(float32 [n, channels] in
    [-1, 1], sample rate)``, the pieces of :func:`segment_pieces` concatenated. Read with
    soundfile (any format it decodes) or, without it, the standard library (WAV). ``path``
    must already be checked (:func:`locate_audio`). Raises :class:`AudioReadError` when
    the file cannot be decoded."""
    kept = segment_pieces(offset, duration, spans, max_seconds)
    errors = []
    for read in (_float_soundfile, _float_wav):
        try:
            parts = [read(path, a, None if not math.isfinite(b) else b - a) for a, b in kept]
        except Exception as err:  # noqa: BLE001 - not this reader's format; try the next
            errors.append(f"{type(err).__name__}")
            continue
        if len({sr for _, sr in parts}) != 1 or len({p.shape[1] for p, _ in parts}) != 1:
            raise AudioReadError(f"{path}: the pieces of the segment differ in format")
        return np.concatenate([p for p, _ in parts], axis=0).astype(np.float32, copy=False), parts[0][1]
    raise AudioReadError(f"{path} cannot be decoded ({', '.join(errors)})")


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
    kept = segment_pieces(offset, duration, spans, max_seconds)
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
    not_found: int = 0

    def cell(self, row: dict[str, Any]) -> Cell | str:
        """The audio cell of a metadata row (``source``, ``offset``, ``duration``, ``spans``):
        a player, or a note: outside the roots, ``audio not found: <source>`` (no such file
        under the roots: counted in ``not_found``), no audio root; empty without a source."""
        source = row.get("source")
        path, why = locate_audio(source, self.roots)
        if why == "outside":
            self.outside += 1
            return Cell("note", "outside the audio roots")
        if path is None:
            self.missing += 1
            if why == "missing" and source_text(source):
                self.not_found += 1
                return Cell("note", f"audio not found: {shown_source(source, self.roots)}")
            return Cell("note", "audio not played: no audio root") if why == "no roots" else ""
        src = audio_src(path, row.get("offset", 0.0), row.get("duration"), spans=row.get("spans"))
        return Cell("audio", src) if src else ""

    def warning(self) -> str | None:
        """One line summarising the segments whose audio file was not found (None when none was)."""
        return missing_audio_warning(self.not_found, self.roots)

    def notes(self) -> list[str]:
        """What the page says about the segments it did not play."""
        out = []
        if self.outside:
            roots = ", ".join(str(r) for r in self.roots)
            out.append(f"{self.outside} segment(s) not played: their source lies outside the audio roots "
                       f"({roots}); only files under these are read (jsae report --audio-root DIR adds one).")
        if self.not_found:
            out.append(f"{self.not_found} segment(s) not played: their audio file was not found under the audio roots "
                       f"({', '.join(str(r) for r in self.roots)}); each such cell names the file it looked for.")
        if self.missing and not self.roots:
            out.append("no audio played: the store names no audio folder; pass jsae report --audio-root DIR "
                       "(the folder the source paths are relative to).")
        return out
