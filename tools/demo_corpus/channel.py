"""Signal processing: to 8 kHz, tidy pauses, set the level, and the telephone channel.

The telephone channel (:func:`telephone`) follows the path a call centre's audio takes:

1. line noise: white Gaussian noise at ``noise_dbfs`` (−68…−60 dBFS RMS per recording);
2. the transmit filter: 300–3400 Hz band-pass (Butterworth, 4th order per edge, causal);
3. G.711 μ-law: 8-bit companding with μ = 255 (the continuous μ-law curve quantised to
   256 levels — G.711 uses a 15-segment piecewise-linear version of the same curve),
   encode and decode;
4. the receive filter: the same band-pass again, so the μ-law quantisation noise above
   3.4 kHz is removed as a handset's D/A filter would;
5. clip to [−1, 1].

All input reaches 8 kHz first (:func:`to_8k`, polyphase resampling) so the band above
4 kHz never exists. :func:`median_f0` is a small YIN pitch estimate used to check the gender
labels; :func:`count_segments` counts the segments ``jsae embed`` will cut from a recording
by running the embed segmenter itself (:func:`jsae.embed.segment.segment_recording` with
:data:`CORPUS_SEGMENTS`: ``joined`` mode, 4–8 s, recordings under 4 s of speech dropped —
``jsae embed --min-keep 4``) on the audio as the
exporter reads it back — quantised as the WAV is written (:func:`as_written`) and resampled
to :data:`EMBED_SAMPLE_RATE` with :func:`jsae.embed.audio.resample` — so the counts cannot drift
from the exporter (it needs librosa, as ``jsae embed`` does).
"""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
from scipy import signal

from jsae.embed.segment import SegmentConfig, Segmentation

__all__ = [
    "CORPUS_SEGMENTS",
    "EMBED_SAMPLE_RATE",
    "SAMPLE_RATE",
    "WAV_ENCODINGS",
    "active_rms",
    "as_written",
    "compress_pauses",
    "count_segments",
    "mulaw_decode",
    "mulaw_encode",
    "median_f0",
    "pcm16",
    "segment_audio",
    "set_level",
    "telephone",
    "to_8k",
]

SAMPLE_RATE = 8000
#: the rate ``jsae embed`` segments at: the encoder's (resemblyzer and TitaNet: 16 kHz)
EMBED_SAMPLE_RATE = 16000
#: the WAV encodings the builder writes (``--wav-encoding``)
WAV_ENCODINGS = ("pcm16", "ulaw")
BAND = (300.0, 3400.0)
MU = 255.0


def to_8k(x: np.ndarray, sr: int, alpha: float = 1.0) -> np.ndarray:
    """Resample ``x`` (at ``sr`` Hz) to 8 kHz, treating it as if recorded at ``alpha * sr``.

    ``alpha > 1`` raises formants and pitch by ``alpha`` and shortens the audio by
    ``1/alpha`` (a shorter vocal tract); the pretended rate is rounded to 50 Hz.
    """
    src = int(round(sr * alpha / 50.0)) * 50
    ratio = Fraction(SAMPLE_RATE, src)
    if ratio == 1:
        return np.asarray(x, dtype=np.float32)
    y = signal.resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator)
    return y.astype(np.float32)


def _frame_rms(x: np.ndarray, frame: int, hop: int, center: bool = True) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = np.pad(x, (frame // 2, frame // 2))
    if x.size < frame:
        return np.zeros(0)
    n = 1 + (x.size - frame) // hop
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(n) * hop
    return np.sqrt(np.maximum(c[starts + frame] - c[starts], 0.0) / frame)


def compress_pauses(x: np.ndarray, rng: np.random.Generator, *, sr: int = SAMPLE_RATE,
                    rel_db: float = -35.0, max_pause: float = 0.2,
                    new_pause: tuple[float, float] = (0.06, 0.16), margin: float = 0.03) -> np.ndarray:
    """Trim the silence around one utterance and shorten every inner pause above ``max_pause`` s.

    Silence is a 10 ms frame more than ``-rel_db`` dB below the utterance's loudest frame.
    A long inner pause (a synthesiser's comma or full-stop pause) keeps its first and last
    few ms, to a new length drawn from ``new_pause`` — so an utterance stays one
    non-silent stretch for a segmenter that splits at pauses ≥ 0.3 s.
    """
    hop = sr // 100
    rms = _frame_rms(x, hop, hop, center=False)
    if rms.size == 0 or rms.max() <= 0:
        return np.zeros(0, dtype=np.float32)
    active = rms > rms.max() * 10.0 ** (rel_db / 20.0)
    idx = np.flatnonzero(active)
    first, last = idx[0], idx[-1]
    keep = int(margin * sr)
    start, end = max(0, first * hop - keep), min(x.size, (last + 1) * hop + keep)
    pieces = []
    pos = start
    # inner pauses: runs of inactive frames between first and last
    inactive = ~active[first:last + 1]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], inactive.astype(np.int8), [0]])))
    for a, b in zip(edges[0::2], edges[1::2]):
        a_s, b_s = (first + a) * hop, (first + b) * hop
        if (b_s - a_s) <= max_pause * sr:
            continue
        new_len = int(rng.uniform(*new_pause) * sr)
        half = new_len // 2
        pieces.append(x[pos:a_s + half])
        pos = b_s - (new_len - half)
    pieces.append(x[pos:end])
    return np.concatenate(pieces).astype(np.float32)


def active_rms(x: np.ndarray, sr: int = SAMPLE_RATE, rel_db: float = -35.0) -> float:
    """RMS over the frames within ``-rel_db`` dB of the loudest (speech, not pauses)."""
    hop = sr // 100
    rms = _frame_rms(x, hop, hop, center=False)
    if rms.size == 0 or rms.max() <= 0:
        return 0.0
    act = rms[rms > rms.max() * 10.0 ** (rel_db / 20.0)]
    return float(np.sqrt(np.mean(act ** 2)))


def set_level(x: np.ndarray, dbfs: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Scale ``x`` so its :func:`active_rms` is ``dbfs`` (dB re full scale, where |x| ≤ 1)."""
    r = active_rms(x, sr)
    if r <= 0:
        return x
    return (x * (10.0 ** (dbfs / 20.0) / r)).astype(np.float32)


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """μ-law (μ = 255) companding of ``x`` in [−1, 1] to 8-bit codes in [−127, 127] (int8)."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.round(y * 127.0).astype(np.int8)


def mulaw_decode(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`mulaw_encode`: 8-bit codes → waveform in [−1, 1] (float32)."""
    y = np.asarray(q, dtype=np.float64) / 127.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _bandpass(sr: int = SAMPLE_RATE) -> np.ndarray:
    return signal.butter(4, BAND, btype="bandpass", fs=sr, output="sos")


def telephone(x: np.ndarray, rng: np.random.Generator, noise_dbfs: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The telephone channel of the module doc, on ``x`` (8 kHz, float in [−1, 1])."""
    if sr != SAMPLE_RATE:
        raise ValueError(f"telephone() works on {SAMPLE_RATE} Hz audio; got {sr} Hz (use to_8k first).")
    sos = _bandpass(sr)
    y = np.asarray(x, dtype=np.float64) + rng.standard_normal(len(x)) * 10.0 ** (noise_dbfs / 20.0)
    y = signal.sosfilt(sos, y)
    y = mulaw_decode(mulaw_encode(y)).astype(np.float64)
    y = signal.sosfilt(sos, y)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def median_f0(x: np.ndarray, sr: int = SAMPLE_RATE, fmin: float = 40.0, fmax: float = 400.0,
              threshold: float = 0.15, max_seconds: float = 8.0) -> float | None:
    """Median fundamental frequency (Hz) of the voiced frames of ``x``, or None (YIN).

    YIN (de Cheveigné & Kawahara, 2002) on 30 ms windows every 10 ms: the cumulative-mean
    normalised difference function ``d'(τ)``; a frame's period is the first local minimum
    with ``d'(τ) < threshold`` for ``τ`` in ``[sr/fmax, sr/fmin]``, and frames without one, or
    more than 30 dB below the loudest, are unvoiced. Only the first ``max_seconds`` are used.
    """
    x = np.asarray(x[: int(max_seconds * sr)], dtype=np.float64)
    tmax, tmin = int(sr / fmin), max(2, int(sr / fmax))
    win, hop = int(0.03 * sr), int(0.01 * sr)
    span = win + tmax
    if x.size < span:
        return None
    frames = np.lib.stride_tricks.sliding_window_view(x, span)[::hop]
    energy = (frames[:, :win] ** 2).sum(axis=1)
    frames = frames[energy > energy.max() * 10 ** (-30 / 10)]
    if len(frames) == 0:
        return None
    nfft = 1 << (2 * span - 1).bit_length()
    acf = np.fft.irfft(np.fft.rfft(frames, nfft) * np.conj(np.fft.rfft(frames[:, :win], nfft)), nfft)[:, :tmax + 1]
    c = np.cumsum(frames ** 2, axis=1)
    e0 = c[:, win - 1:win]
    etau = c[:, win - 1:win + tmax] - np.concatenate([np.zeros((len(frames), 1)), c[:, :tmax]], axis=1)
    d = e0 + etau - 2.0 * acf
    d[:, 0] = 0.0
    cmean = np.cumsum(d[:, 1:], axis=1) / np.arange(1, tmax + 1)
    dn = d[:, 1:] / np.maximum(cmean, 1e-12)          # dn[:, t - 1] = d'(t)
    f0s = []
    for row in dn[:, tmin - 1:]:
        below = np.flatnonzero(row < threshold)
        if below.size == 0:
            continue
        t = int(below[0])
        while t + 1 < row.size and row[t + 1] < row[t]:
            t += 1
        f0s.append(sr / (t + tmin))
    if len(f0s) < 3:
        return None
    return float(np.median(f0s))


def pcm16(x: np.ndarray) -> np.ndarray:
    """The 16-bit PCM samples (``<i2``) the builder writes for ``x`` (float in [−1, 1])."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")


def as_written(x: np.ndarray, encoding: str = "pcm16", sr: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` as a reader (soundfile, float32) gets it back from the WAV the builder writes."""
    if encoding == "pcm16":
        return (pcm16(np.asarray(x, dtype=np.float32)).astype(np.float32) / np.float32(32768.0))
    if encoding == "ulaw":
        import io

        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, np.asarray(x, dtype=np.float32), sr, subtype="ULAW", format="WAV")
        buf.seek(0)
        y, _ = sf.read(buf, dtype="float32", always_2d=False)
        return np.asarray(y, dtype=np.float32)
    raise ValueError(f"encoding must be one of {', '.join(WAV_ENCODINGS)}; got {encoding!r}")


#: the segmentation corpus format 3 was counted (and data/demo exported) with: jsae embed's
#: defaults of the time, when a recording under 4 s of speech gave no segment (the strict
#: rule, ``--min-keep 4``). Counting with today's default (short segments from 2 s) would
#: plan other recordings, and a rebuild would no longer be the corpus data/demo came from.
CORPUS_SEGMENTS = SegmentConfig(min_keep=4.0)


def segment_audio(x: np.ndarray, sr: int = SAMPLE_RATE, config: SegmentConfig | None = None,
                  encoding: str = "pcm16") -> Segmentation:
    """What ``jsae embed --min-keep 4`` makes of ``x`` once written as a WAV: the same
    quantisation, :func:`jsae.embed.audio.resample` to :data:`EMBED_SAMPLE_RATE`, then
    :func:`jsae.embed.segment.segment_recording` (``config``: default :data:`CORPUS_SEGMENTS`)."""
    from jsae.embed.audio import resample
    from jsae.embed.segment import segment_recording

    y = resample(as_written(x, encoding, sr), sr, EMBED_SAMPLE_RATE)
    return segment_recording(y, EMBED_SAMPLE_RATE, config if config is not None else CORPUS_SEGMENTS)


def count_segments(x: np.ndarray, sr: int = SAMPLE_RATE, config: SegmentConfig | None = None,
                   encoding: str = "pcm16") -> int:
    """How many segments ``jsae embed --min-keep 4`` cuts from ``x`` written as a WAV (see :func:`segment_audio`)."""
    if np.asarray(x).size == 0:
        return 0
    return len(segment_audio(x, sr, config, encoding).segments)
