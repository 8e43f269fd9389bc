"""Segmentation: non-silent stretches of a recording, cut into pieces of 4–8 s.

The paper (Sec. IV-A) embeds "4–8 second long segments taken from the original call
using SoX to select non-silent sections". We do the same in three steps:

1. **Activity detection** — :func:`nonsilent_stretches`: an *energy* detector,
   ``librosa.effects.split``, on frames of 25 ms every 10 ms. A frame is non-silent
   when its RMS is within ``top_db`` of the recording's loudest frame *and* above the
   absolute floor ``floor_db`` (dBFS), so a recording of pure line noise gives nothing.
   Gaps shorter than ``min_silence`` seconds (pauses between words) do not break a
   stretch — SoX's ``silence`` effect has the same duration rule.

   Why an energy detector and librosa: the paper selected *non-silent* audio with SoX's
   energy rule, not speech: its hold-music class ("these audios were not silent, rather
   they contain either noise or music") only exists because music passes the detector.
   Speech detectors (webrtcvad, silero-vad) would drop that music. librosa is actively
   maintained, already installed with NeMo and resemblyzer, works at any sample rate and
   needs no model weights; webrtcvad (last release 2017) only takes 8/16/32/48 kHz in
   10/20/30 ms frames and needs ``setuptools<81`` to build and import.

2. **Joining** (``mode="joined"``, the default) — :func:`join_stretches`: the
   non-silent stretches of a recording are concatenated, silence removed, as SoX's
   ``silence`` effect does before the paper cut its segments. With ``max_gap`` set, a
   silence longer than ``max_gap`` seconds starts a new *run* (speech on either side of
   a long hold is not joined); ``max_gap=None`` joins the whole recording. A run's
   concatenation is then cut like one stretch (step 3), so a segment can consist of
   several **source spans** of the recording (:attr:`Segment.spans`) and its audio is
   the concatenation of their samples. Conversational speech — utterances of 1–3 s
   with pauses — is kept almost whole this way; cutting each stretch on its own keeps
   only utterances that are themselves ``min_seconds`` long.

   ``mode="contiguous"`` skips this step: every stretch is cut on its own and a
   segment is one contiguous piece of the recording (the behaviour before joining
   became the default).

   **Short recordings** (``joined`` only): a recording (or manifest excerpt) whose
   non-silent audio *in all* is shorter than ``min_seconds`` but at least ``min_keep``
   seconds becomes one segment of all its non-silent stretches joined, flagged
   :attr:`Segment.short` (with ``max_gap`` set: only when no silence in it is longer
   than ``max_gap``, i.e. it is one run). Clips of a few prompts (telephone prompts,
   read sentences) are often 2–4 s of speech; dropping them loses the clips of the
   speakers or languages that speak faster or record shorter prompts. Only a whole
   recording is promoted: a long recording still gives ``min_seconds``..``max_seconds``
   segments only, and a short run or leftover piece of it is dropped as before.
   ``min_keep == min_seconds`` is the strict rule (no short segments).

3. **Cutting** — :func:`split_stretch`: a stretch (or joined run) of length ``L`` shorter than
   ``min_seconds`` is dropped; otherwise it is cut into ``n = ceil(L / max_seconds)``
   equal, contiguous pieces, each of length ``L / n`` (``≤ max_seconds`` and, when
   ``min_seconds ≤ max_seconds / 2`` as with 4–8 s, always ``≥ min_seconds``). When equal
   pieces would be shorter than ``min_seconds`` (e.g. 6–8 s and ``L = 17`` s), the stretch
   gives ``floor(L / max_seconds)`` pieces of ``max_seconds`` from its start and the rest
   (``< min_seconds``) is dropped (never promoted to a short segment).

All times are integer **milliseconds** (10 ms resolution), so offsets and durations are
exact, row ids built from them are stable, and a segment of ``d`` ms is exactly
``d * sample_rate / 1000`` samples at the encoder rate. A segment's ``duration_ms`` is
the audio it holds (the sum of its spans); its ``offset_ms`` is its first span's start.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from jsae.errors import BadValueError

__all__ = ["SegmentConfig", "Segment", "Segmentation", "nonsilent_stretches", "intervals_to_stretches",
           "split_stretch", "join_stretches", "cut_run", "segment_recording", "find_segments", "MODES",
           "DEFAULT_MIN_KEEP"]

HOP_MS = 10
FRAME_MS = 25
#: ``joined``: stretches concatenated (silence removed) before cutting; ``contiguous``: each stretch cut alone
MODES = ("joined", "contiguous")
#: default ``min_keep`` (seconds): a recording with less non-silent audio than this gives no segment
DEFAULT_MIN_KEEP = 2.0


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of the segmenter (recorded in ``store.json``).

    Attributes:
      min_seconds: shortest segment kept, seconds (paper: 4).
      max_seconds: longest segment, seconds (paper: 8); longer stretches are cut.
      top_db: a frame is silent when its RMS is more than ``top_db`` dB below the
        loudest frame of the recording.
      floor_db: ... or when its RMS is below ``floor_db`` dBFS (full scale = 0 dB).
      min_silence: silent gaps shorter than this (seconds) do not end a stretch.
      mode: ``"joined"`` (default): the non-silent stretches of a recording are
        concatenated (silence removed, as SoX's ``silence`` effect does) and the
        concatenation is cut into segments, which may consist of several source spans;
        ``"contiguous"``: each stretch is cut on its own, a stretch shorter than
        ``min_seconds`` is dropped (the behaviour before ``joined``).
      max_gap: ``joined`` only: a silence longer than this (seconds) is not joined
        across — the stretches after it start a new run. ``None`` (default): join the
        whole recording.
      min_keep: ``joined`` only: a recording whose non-silent audio in all is shorter
        than ``min_seconds`` but at least ``min_keep`` seconds becomes one *short*
        segment (:attr:`Segment.short`); ``0 < min_keep <= min_seconds``, and
        ``min_keep == min_seconds`` drops such recordings (the strict rule). ``None``
        (default): :data:`DEFAULT_MIN_KEEP` (2 s), or ``min_seconds`` if that is smaller.
    """

    min_seconds: float = 4.0
    max_seconds: float = 8.0
    top_db: float = 40.0
    floor_db: float = -55.0
    min_silence: float = 0.3
    mode: str = "joined"
    max_gap: float | None = None
    min_keep: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_seconds", "max_seconds", "top_db", "floor_db", "min_silence"):
            value = getattr(self, name)
            if not math.isfinite(float(value)):
                raise BadValueError(f"--{name.replace('_', '-')} must be a finite number; got {value}.")
        if not (self.min_seconds > 0):
            raise BadValueError(f"--min-seconds must be > 0; got {self.min_seconds}.")
        if self.max_seconds < self.min_seconds:
            raise BadValueError(
                f"--max-seconds ({self.max_seconds}) must be at least --min-seconds ({self.min_seconds})."
            )
        if self.top_db <= 0:
            raise BadValueError(f"--top-db must be > 0 dB; got {self.top_db}.")
        if self.floor_db >= 0:
            raise BadValueError(f"--floor-db is in dBFS and must be < 0; got {self.floor_db}.")
        if self.min_silence < 0:
            raise BadValueError(f"--min-silence must be >= 0 seconds; got {self.min_silence}.")
        if self.mode not in MODES:
            raise BadValueError(f"--segment-mode must be one of {', '.join(MODES)}; got {self.mode!r}.")
        if self.max_gap is not None:
            if self.mode != "joined":
                raise BadValueError("--max-gap applies to --segment-mode joined only; drop it or use joined.")
            if not (math.isfinite(float(self.max_gap)) and self.max_gap >= 0):
                raise BadValueError(f"--max-gap must be a number of seconds >= 0; got {self.max_gap}.")
        if self.min_keep is None:
            object.__setattr__(self, "min_keep", float(min(DEFAULT_MIN_KEEP, self.min_seconds)))
        elif not (math.isfinite(float(self.min_keep)) and 0 < self.min_keep <= self.min_seconds):
            raise BadValueError(
                f"--min-keep must be > 0 and at most --min-seconds ({self.min_seconds:g}); got {self.min_keep}. "
                f"Give a value in (0, {self.min_seconds:g}]; --min-keep {self.min_seconds:g} keeps no recording "
                "shorter than --min-seconds."
            )
        else:
            object.__setattr__(self, "min_keep", float(self.min_keep))

    @property
    def min_ms(self) -> int:
        return int(round(self.min_seconds * 1000))

    @property
    def max_ms(self) -> int:
        return int(round(self.max_seconds * 1000))

    @property
    def min_keep_ms(self) -> int:
        return int(round(self.min_keep * 1000))

    @property
    def max_gap_ms(self) -> int | None:
        return None if self.max_gap is None else int(round(self.max_gap * 1000))

    def to_dict(self) -> dict:
        return {"detector": "librosa.effects.split (RMS energy)", "frame_ms": FRAME_MS, "hop_ms": HOP_MS,
                **asdict(self)}


@dataclass(frozen=True)
class Segment:
    """A piece of a recording: ``offset_ms`` from the start of the recording, ``duration_ms`` of audio.

    ``spans``: for a joined segment made of several pieces of the recording, its source
    spans ``((start_ms, end_ms), ...)`` in time order (``offset_ms`` = the first start,
    ``duration_ms`` = the sum of their lengths); ``()`` for a contiguous segment, whose
    only span is ``[offset_ms, offset_ms + duration_ms)``. :meth:`from_spans` builds either.

    ``short``: the segment is a whole recording shorter than ``min_seconds`` (at least
    ``min_keep``; see the module docstring), not a piece of ``min_seconds``..``max_seconds``.
    """

    offset_ms: int
    duration_ms: int
    spans: tuple[tuple[int, int], ...] = ()
    short: bool = False

    @classmethod
    def from_spans(cls, spans, short: bool = False) -> "Segment":
        spans = tuple((int(s), int(e)) for s, e in spans if e > s)
        if not spans:
            raise ValueError("a segment needs at least one non-empty span")
        if len(spans) == 1:
            return cls(spans[0][0], spans[0][1] - spans[0][0], short=short)
        return cls(spans[0][0], sum(e - s for s, e in spans), spans, short=short)

    @property
    def parts(self) -> tuple[tuple[int, int], ...]:
        """The source spans ``((start_ms, end_ms), ...)``; one for a contiguous segment."""
        return self.spans or ((self.offset_ms, self.offset_ms + self.duration_ms),)

    @property
    def end_ms(self) -> int:
        """End of the last source span (``offset_ms + duration_ms`` for a contiguous segment)."""
        return self.parts[-1][1]


@dataclass(frozen=True)
class Segmentation:
    """The result of :func:`segment_recording` for one recording.

    Attributes:
      segments: the segments, in time order.
      stretches: the non-silent stretches ``[(start_ms, end_ms), ...]`` found.
      longest_ms: the longest stretch (``contiguous``) or joined run (``joined``), ms —
        it explains an empty result.
    """

    segments: list[Segment]
    stretches: list[tuple[int, int]]
    longest_ms: int

    @property
    def nonsilent_ms(self) -> int:
        return sum(e - s for s, e in self.stretches)

    @property
    def kept_ms(self) -> int:
        return sum(seg.duration_ms for seg in self.segments)


def nonsilent_stretches(x: np.ndarray, sample_rate: int, config: SegmentConfig) -> list[tuple[int, int]]:
    """Non-silent stretches of a mono waveform ``x`` ``[T]`` at ``sample_rate`` Hz.

    Returns ``[(start_ms, end_ms), ...]`` in time order, on the 10 ms grid, clipped to the
    recording, with gaps shorter than ``config.min_silence`` merged.
    """
    import librosa

    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return []
    hop = max(1, int(round(sample_rate * HOP_MS / 1000)))
    frame = max(hop, int(round(sample_rate * FRAME_MS / 1000)))
    floor_amp = 10.0 ** (config.floor_db / 20.0)
    floor_ref = floor_amp * 10.0 ** (config.top_db / 20.0)

    def ref(rms: np.ndarray) -> float:
        # threshold = max(loudest - top_db, floor_db), expressed as librosa's reference level
        return max(float(np.max(rms)), floor_ref)

    intervals = librosa.effects.split(x, top_db=config.top_db, ref=ref, frame_length=frame, hop_length=hop)
    return intervals_to_stretches(intervals, x.shape[0], sample_rate, config.min_silence)


def intervals_to_stretches(intervals: np.ndarray, num_samples: int, sample_rate: int,
                           min_silence: float) -> list[tuple[int, int]]:
    """Sample intervals ``[[start, end), ...]`` → ``[(start_ms, end_ms), ...]`` on the 10 ms grid.

    Starts are floored and ends ceiled to the grid (clipped to the recording); gaps
    shorter than ``min_silence`` seconds are merged.
    """
    total_ms = (num_samples * 1000) // sample_rate
    stretches: list[list[int]] = []
    gap_ms = int(round(min_silence * 1000))
    for start, end in intervals:
        s = int(start) * 1000 // sample_rate // HOP_MS * HOP_MS          # floor to the grid
        e = min(-(-int(end) * 1000 // sample_rate // HOP_MS) * HOP_MS, total_ms // HOP_MS * HOP_MS)
        if e <= s:
            continue
        if stretches and s - stretches[-1][1] < gap_ms:
            stretches[-1][1] = max(stretches[-1][1], e)
        else:
            stretches.append([s, e])
    return [(s, e) for s, e in stretches]


def split_stretch(start_ms: int, end_ms: int, min_ms: int, max_ms: int) -> list[Segment]:
    """Cut one stretch ``[start_ms, end_ms)`` into segments of ``min_ms``..``max_ms`` (see module doc)."""
    length = end_ms - start_ms
    if length < min_ms:
        return []
    n = -(-length // max_ms)
    if n * min_ms <= length:
        # n equal pieces on the 10 ms grid; the last one takes the remainder (< n * 10 ms)
        piece = length // n // HOP_MS * HOP_MS
        if piece < min_ms:
            piece = length // n
        bounds = [start_ms + i * piece for i in range(n)] + [end_ms]
        segs = [Segment(bounds[i], bounds[i + 1] - bounds[i]) for i in range(n)]
        if segs[-1].duration_ms > max_ms:   # the remainder pushed it over: trim to max
            segs[-1] = Segment(segs[-1].offset_ms, max_ms)
        return segs
    return [Segment(start_ms + i * max_ms, max_ms) for i in range(length // max_ms)]


def join_stretches(stretches: list[tuple[int, int]], max_gap_ms: int | None = None) -> list[list[tuple[int, int]]]:
    """Group stretches into runs to be joined: a gap longer than ``max_gap_ms`` starts a new
    run (``None``: one run of all stretches)."""
    runs: list[list[tuple[int, int]]] = []
    for s, e in stretches:
        if runs and (max_gap_ms is None or s - runs[-1][-1][1] <= max_gap_ms):
            runs[-1].append((s, e))
        else:
            runs.append([(s, e)])
    return runs


def cut_run(run: list[tuple[int, int]], min_ms: int, max_ms: int) -> list[Segment]:
    """Cut the concatenation of the spans ``run`` with :func:`split_stretch`'s rule and map
    every piece back to the source spans it covers."""
    total = sum(e - s for s, e in run)
    out: list[Segment] = []
    for piece in split_stretch(0, total, min_ms, max_ms):
        a, b = piece.offset_ms, piece.end_ms
        spans, pos = [], 0                     # pos: start of span (s, e) on the joined time line
        for s, e in run:
            lo, hi = max(a, pos), min(b, pos + e - s)
            if lo < hi:
                spans.append((s + lo - pos, s + hi - pos))
            pos += e - s
            if pos >= b:
                break
        out.append(Segment.from_spans(spans))
    return out


def segment_recording(x: np.ndarray, sample_rate: int, config: SegmentConfig) -> Segmentation:
    """Segments of one recording ``x`` ``[T]`` (mono, ``sample_rate`` Hz), with the
    non-silent stretches they came from (see the module docstring for both modes)."""
    stretches = nonsilent_stretches(x, sample_rate, config)
    segments: list[Segment] = []
    longest = 0
    if config.mode == "contiguous":
        for s, e in stretches:
            longest = max(longest, e - s)
            segments.extend(split_stretch(s, e, config.min_ms, config.max_ms))
    else:
        runs = join_stretches(stretches, config.max_gap_ms)
        for run in runs:
            longest = max(longest, sum(e - s for s, e in run))
            segments.extend(cut_run(run, config.min_ms, config.max_ms))
        nonsilent = sum(e - s for s, e in stretches)
        if len(runs) == 1 and config.min_keep_ms <= nonsilent < config.min_ms:
            # a whole recording under min_seconds: one short segment (never a piece of a longer one)
            segments = [Segment.from_spans(stretches, short=True)]
    return Segmentation(segments=segments, stretches=stretches, longest_ms=longest)


def find_segments(x: np.ndarray, sample_rate: int, config: SegmentConfig) -> tuple[list[Segment], float]:
    """Segments of one recording ``x`` ``[T]`` (mono, ``sample_rate`` Hz).

    Returns ``(segments, longest_seconds)``; the second value (the longest stretch, or
    joined run) explains an empty result ("longest non-silent stretch 2.3 s < 4 s").
    """
    result = segment_recording(x, sample_rate, config)
    return result.segments, result.longest_ms / 1000.0
