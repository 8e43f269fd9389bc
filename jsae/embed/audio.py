"""Reading audio files: any format soundfile reads, any rate, mono or multichannel.

Every recording enters the pipeline through :func:`load_audio`, which returns a mono
float32 waveform resampled to the encoder's rate (16 kHz for TitaNet and resemblyzer).

- Reading: ``soundfile`` (libsndfile 1.2: wav, flac, ogg/vorbis/opus, mp3, aiff, ...).
  Other containers (m4a, wma, ...) are refused with a message that says how to convert.
- Channels: averaged to mono (what ``librosa.to_mono`` does).
- Resampling: ``librosa.resample(res_type="soxr_hq")``, the resampler NeMo's own
  ``EncDecSpeakerLabelModel.infer_file`` uses, so 8 kHz telephony audio reaches the
  encoder exactly as it would through NeMo.
- An excerpt ``[offset, offset + duration)`` (a NeMo manifest entry) is read by seeking,
  so long calls are not read whole when only a part is wanted.

Failures raise :class:`AudioReadError` naming the file and the reason; the exporter
turns them into the "skipped" list of its summary.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jsae.errors import JsaeError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioReadError",
    "AudioInfo",
    "audio_info",
    "load_audio",
    "to_mono",
    "resample",
]

#: File name endings :func:`jsae.embed.plan.scan_audio_dir` picks up (lower case).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")


class AudioReadError(JsaeError, RuntimeError):
    """A recording cannot be used; ``reason`` is the short text the summary records."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of a file: ``sample_rate`` (Hz), ``frames`` (samples per channel), ``channels``."""

    sample_rate: int
    frames: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _open(path: Path):
    import soundfile as sf

    if not path.exists():
        raise AudioReadError(path, "file not found")
    if path.is_dir():
        raise AudioReadError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioReadError(path, "empty file (0 bytes)")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioReadError(
            path,
            f"unreadable or corrupt audio ({err}); soundfile reads wav, flac, ogg, opus and mp3 "
            "- convert other formats first (e.g. `sox in.m4a out.flac` or `ffmpeg -i in.m4a out.flac`)",
        ) from None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read only the header of ``path``; raises :class:`AudioReadError`."""
    path = Path(path)
    with _open(path) as f:
        return AudioInfo(sample_rate=int(f.samplerate), frames=int(f.frames), channels=int(f.channels))


def to_mono(x: np.ndarray) -> np.ndarray:
    """``[T]`` or ``[T, C]`` (soundfile's layout) → ``[T]`` float32, the channel mean."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    elif x.ndim != 1:
        raise ValueError(f"audio must be [samples] or [samples, channels]; got shape {x.shape}")
    return np.ascontiguousarray(x)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 ``[T]`` waveform (soxr HQ, as NeMo's ``infer_file``)."""
    if orig_sr == target_sr:
        return np.asarray(x, dtype=np.float32)
    import librosa

    y = librosa.resample(np.asarray(x, dtype=np.float32), orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")
    return np.asarray(y, dtype=np.float32)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Load ``path`` as mono float32 ``[T]`` at ``sample_rate`` Hz.

    Args:
      path: an audio file soundfile can read.
      sample_rate: the rate the caller wants (the encoder's rate), in Hz.
      offset: start of the excerpt in seconds (NeMo manifest ``offset``).
      duration: length of the excerpt in seconds; ``None`` reads to the end.

    Raises :class:`AudioReadError` for missing, empty, corrupt or sample-less files,
    for an offset past the end, and for NaN/Inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if offset < 0:
        raise AudioReadError(path, f"negative offset {offset} s")
    with _open(path) as f:
        sr = int(f.samplerate)
        total = int(f.frames)
        start = int(round(offset * sr))
        if total <= 0:
            raise AudioReadError(path, "contains no audio samples")
        if start >= total:
            raise AudioReadError(path, f"offset {offset:.3f} s lies past the end of the file ({total / sr:.3f} s)")
        frames = -1 if duration is None else max(0, int(round(duration * sr)))
        try:
            if start:
                f.seek(start)
            data = f.read(frames=frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioReadError(path, f"corrupt audio data ({err})") from None
    if data.shape[0] == 0:
        raise AudioReadError(path, "contains no audio samples in the requested range")
    x = to_mono(data)
    if not np.isfinite(x).all():
        raise AudioReadError(path, "contains NaN or Inf samples (corrupt float audio)")
    return resample(x, sr, sample_rate)
