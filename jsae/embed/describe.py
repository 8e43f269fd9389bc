"""Acoustic descriptors of segments: openSMILE's eGeMAPS and silero-vad's speech probability.

Every segment of a store can carry, besides its embedding, what a phonetician would
measure on its audio: pitch, loudness, voice quality, formants, spectral balance and
rhythm (the 88 functionals of the extended Geneva Minimalistic Acoustic Parameter Set,
eGeMAPS v02, Eyben et al. 2016, computed by openSMILE through the ``opensmile`` package)
and whether it is speech at all (the neural voice-activity detector ``silero-vad``, whose
weights ship in its wheel). They are metadata columns, one row per segment; a feature
atlas relates SAE latents to them.

**The audio.** Descriptors are computed on the segment's actual audio — the concatenation
of its source spans (metadata ``spans``; one span for a contiguous segment), the same
samples the encoder saw — resampled to :data:`DESCRIBE_RATE` (16 kHz) for both tools.
``jsae embed`` computes them while it exports (:mod:`jsae.embed.export`); ``jsae describe
STORE`` adds them to an existing store whose audio is reachable (:func:`describe_store`,
audio located as ``jsae report`` does: only under the store's audio folders and
``--audio-root``).

**Failures** are per row: a segment whose audio cannot be read, or on which a tool
raises, gets NaN descriptors (all of them, or those of the failing tool) and the reason
in ``describe.error``; the other rows are described.

**Extra.** The tools are the ``describe`` extra (``pip install -e '.[describe]'``:
``opensmile``, ``silero-vad``); they are imported inside the functions, so ``import
embed`` stays light. Importing ``silero_vad`` sets torch to one thread; the caller's
thread count is restored after loading it, and the detector runs on one thread (its
own setting; about ten times faster than two on a busy 2-core machine).

**Same numbers either way.** ``jsae describe`` reads each file from a sample where the
file's and the 16 kHz sample grids meet, so the resampled samples are those ``jsae embed``
cut from the whole file: the two give the same columns (up to float rounding in the
detector's batches) for files read whole (``--audio-dir``, manifest entries without an
offset) and for any 16 kHz file. For a manifest excerpt (``offset``) of a file at another
rate, ``jsae embed`` resampled from the excerpt's start, which ``jsae describe`` does not
know: the two then differ by a fraction of a sample in timing (a few per cent at most in
the frame-based functionals).

Columns (all float32 but ``describe.error``). ``acoustic.<name>`` is the eGeMAPS v02
functional ``<name>`` as openSMILE names it, over the whole segment. In the names,
``sma3``: smoothed over 3 frames; ``nz`` / "voiced": over voiced frames only (F0 > 0);
"unvoiced": over unvoiced frames; ``amean``: mean; ``stddevNorm``: coefficient of
variation (std / mean, unitless); percentiles and the 20th–80th percentile range over
frames; rising / falling slopes: of the contour's rising / falling parts, per second.
Units: ``st`` semitones above 27.5 Hz (F0 = 27.5 Hz · 2^(st/12)); ``sone``: openSMILE's
loudness (summed auditory spectrum, not calibrated to a listening level); ``dB``
levels and level differences (alpha ratio: 50–1000 Hz over 1–5 kHz energy; Hammarberg
index: strongest peak in 0–2 kHz over 2–5 kHz; ``H1-H2``, ``H1-A3``: first harmonic over
the second / over the strongest harmonic near F3; formant levels relative to the F0
harmonic; ``equivalentSoundLevel_dBp``: relative, not a calibrated SPL); ``dB/Hz``:
linear-regression slope of the log power spectrum in the band; jitter is a fraction of
the period (0.01 = 1 %); ``1``: unitless. As in openSMILE, a voiced-frame functional of a
segment without voiced frames is 0 (F0 mean 0 st means "no pitch found", not 27.5 Hz).

=========================================================== ===================================================== ======
column                                                      meaning                                               unit
=========================================================== ===================================================== ======
``acoustic.F0semitoneFrom27.5Hz_sma3nz_amean``              pitch F0, mean                                        st
``acoustic.F0semitoneFrom27.5Hz_sma3nz_stddevNorm``         pitch F0, std / mean                                  1
``acoustic.F0semitoneFrom27.5Hz_sma3nz_percentile20.0``     pitch F0, 20th percentile                             st
``acoustic.F0semitoneFrom27.5Hz_sma3nz_percentile50.0``     pitch F0, median                                      st
``acoustic.F0semitoneFrom27.5Hz_sma3nz_percentile80.0``     pitch F0, 80th percentile                             st
``acoustic.F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2``       pitch F0, 20th-80th percentile range                  st
``acoustic.F0semitoneFrom27.5Hz_sma3nz_meanRisingSlope``    pitch F0, mean rising slope                           st/s
``acoustic.F0semitoneFrom27.5Hz_sma3nz_stddevRisingSlope``  pitch F0, std of rising slopes                        st/s
``acoustic.F0semitoneFrom27.5Hz_sma3nz_meanFallingSlope``   pitch F0, mean falling slope                          st/s
``acoustic.F0semitoneFrom27.5Hz_sma3nz_stddevFallingSlope`` pitch F0, std of falling slopes                       st/s
``acoustic.loudness_sma3_amean``                            loudness, mean                                        sone
``acoustic.loudness_sma3_stddevNorm``                       loudness, std / mean                                  1
``acoustic.loudness_sma3_percentile20.0``                   loudness, 20th percentile                             sone
``acoustic.loudness_sma3_percentile50.0``                   loudness, median                                      sone
``acoustic.loudness_sma3_percentile80.0``                   loudness, 80th percentile                             sone
``acoustic.loudness_sma3_pctlrange0-2``                     loudness, 20th-80th percentile range                  sone
``acoustic.loudness_sma3_meanRisingSlope``                  loudness, mean rising slope                           sone/s
``acoustic.loudness_sma3_stddevRisingSlope``                loudness, std of rising slopes                        sone/s
``acoustic.loudness_sma3_meanFallingSlope``                 loudness, mean falling slope                          sone/s
``acoustic.loudness_sma3_stddevFallingSlope``               loudness, std of falling slopes                       sone/s
``acoustic.spectralFlux_sma3_amean``                        spectral flux, mean                                   1
``acoustic.spectralFlux_sma3_stddevNorm``                   spectral flux, std / mean                             1
``acoustic.mfcc1_sma3_amean``                               MFCC 1, mean                                          1
``acoustic.mfcc1_sma3_stddevNorm``                          MFCC 1, std / mean                                    1
``acoustic.mfcc2_sma3_amean``                               MFCC 2, mean                                          1
``acoustic.mfcc2_sma3_stddevNorm``                          MFCC 2, std / mean                                    1
``acoustic.mfcc3_sma3_amean``                               MFCC 3, mean                                          1
``acoustic.mfcc3_sma3_stddevNorm``                          MFCC 3, std / mean                                    1
``acoustic.mfcc4_sma3_amean``                               MFCC 4, mean                                          1
``acoustic.mfcc4_sma3_stddevNorm``                          MFCC 4, std / mean                                    1
``acoustic.jitterLocal_sma3nz_amean``                       jitter, mean                                          1
``acoustic.jitterLocal_sma3nz_stddevNorm``                  jitter, std / mean                                    1
``acoustic.shimmerLocaldB_sma3nz_amean``                    shimmer, mean                                         dB
``acoustic.shimmerLocaldB_sma3nz_stddevNorm``               shimmer, std / mean                                   1
``acoustic.HNRdBACF_sma3nz_amean``                          harmonics-to-noise ratio, mean                        dB
``acoustic.HNRdBACF_sma3nz_stddevNorm``                     harmonics-to-noise ratio, std / mean                  1
``acoustic.logRelF0-H1-H2_sma3nz_amean``                    H1-H2 (1st minus 2nd harmonic), mean                  dB
``acoustic.logRelF0-H1-H2_sma3nz_stddevNorm``               H1-H2 (1st minus 2nd harmonic), std / mean            1
``acoustic.logRelF0-H1-A3_sma3nz_amean``                    H1-A3 (1st harmonic minus F3 peak), mean              dB
``acoustic.logRelF0-H1-A3_sma3nz_stddevNorm``               H1-A3 (1st harmonic minus F3 peak), std / mean        1
``acoustic.F1frequency_sma3nz_amean``                       F1 centre frequency, mean                             Hz
``acoustic.F1frequency_sma3nz_stddevNorm``                  F1 centre frequency, std / mean                       1
``acoustic.F1bandwidth_sma3nz_amean``                       F1 bandwidth, mean                                    Hz
``acoustic.F1bandwidth_sma3nz_stddevNorm``                  F1 bandwidth, std / mean                              1
``acoustic.F1amplitudeLogRelF0_sma3nz_amean``               F1 level relative to the F0 harmonic, mean            dB
``acoustic.F1amplitudeLogRelF0_sma3nz_stddevNorm``          F1 level relative to the F0 harmonic, std / mean      1
``acoustic.F2frequency_sma3nz_amean``                       F2 centre frequency, mean                             Hz
``acoustic.F2frequency_sma3nz_stddevNorm``                  F2 centre frequency, std / mean                       1
``acoustic.F2bandwidth_sma3nz_amean``                       F2 bandwidth, mean                                    Hz
``acoustic.F2bandwidth_sma3nz_stddevNorm``                  F2 bandwidth, std / mean                              1
``acoustic.F2amplitudeLogRelF0_sma3nz_amean``               F2 level relative to the F0 harmonic, mean            dB
``acoustic.F2amplitudeLogRelF0_sma3nz_stddevNorm``          F2 level relative to the F0 harmonic, std / mean      1
``acoustic.F3frequency_sma3nz_amean``                       F3 centre frequency, mean                             Hz
``acoustic.F3frequency_sma3nz_stddevNorm``                  F3 centre frequency, std / mean                       1
``acoustic.F3bandwidth_sma3nz_amean``                       F3 bandwidth, mean                                    Hz
``acoustic.F3bandwidth_sma3nz_stddevNorm``                  F3 bandwidth, std / mean                              1
``acoustic.F3amplitudeLogRelF0_sma3nz_amean``               F3 level relative to the F0 harmonic, mean            dB
``acoustic.F3amplitudeLogRelF0_sma3nz_stddevNorm``          F3 level relative to the F0 harmonic, std / mean      1
``acoustic.alphaRatioV_sma3nz_amean``                       alpha ratio, voiced, mean                             dB
``acoustic.alphaRatioV_sma3nz_stddevNorm``                  alpha ratio, voiced, std / mean                       1
``acoustic.hammarbergIndexV_sma3nz_amean``                  Hammarberg index, voiced, mean                        dB
``acoustic.hammarbergIndexV_sma3nz_stddevNorm``             Hammarberg index, voiced, std / mean                  1
``acoustic.slopeV0-500_sma3nz_amean``                       spectral slope 0-500 Hz, voiced, mean                 dB/Hz
``acoustic.slopeV0-500_sma3nz_stddevNorm``                  spectral slope 0-500 Hz, voiced, std / mean           1
``acoustic.slopeV500-1500_sma3nz_amean``                    spectral slope 500-1500 Hz, voiced, mean              dB/Hz
``acoustic.slopeV500-1500_sma3nz_stddevNorm``               spectral slope 500-1500 Hz, voiced, std / mean        1
``acoustic.spectralFluxV_sma3nz_amean``                     spectral flux, voiced, mean                           1
``acoustic.spectralFluxV_sma3nz_stddevNorm``                spectral flux, voiced, std / mean                     1
``acoustic.mfcc1V_sma3nz_amean``                            MFCC 1, voiced, mean                                  1
``acoustic.mfcc1V_sma3nz_stddevNorm``                       MFCC 1, voiced, std / mean                            1
``acoustic.mfcc2V_sma3nz_amean``                            MFCC 2, voiced, mean                                  1
``acoustic.mfcc2V_sma3nz_stddevNorm``                       MFCC 2, voiced, std / mean                            1
``acoustic.mfcc3V_sma3nz_amean``                            MFCC 3, voiced, mean                                  1
``acoustic.mfcc3V_sma3nz_stddevNorm``                       MFCC 3, voiced, std / mean                            1
``acoustic.mfcc4V_sma3nz_amean``                            MFCC 4, voiced, mean                                  1
``acoustic.mfcc4V_sma3nz_stddevNorm``                       MFCC 4, voiced, std / mean                            1
``acoustic.alphaRatioUV_sma3nz_amean``                      alpha ratio, unvoiced, mean                           dB
``acoustic.hammarbergIndexUV_sma3nz_amean``                 Hammarberg index, unvoiced, mean                      dB
``acoustic.slopeUV0-500_sma3nz_amean``                      spectral slope 0-500 Hz, unvoiced, mean               dB/Hz
``acoustic.slopeUV500-1500_sma3nz_amean``                   spectral slope 500-1500 Hz, unvoiced, mean            dB/Hz
``acoustic.spectralFluxUV_sma3nz_amean``                    spectral flux, unvoiced, mean                         1
``acoustic.loudnessPeaksPerSec``                            loudness peaks per second (~ syllable rate)           1/s
``acoustic.VoicedSegmentsPerSec``                           voiced stretches per second                           1/s
``acoustic.MeanVoicedSegmentLengthSec``                     mean voiced stretch length                            s
``acoustic.StddevVoicedSegmentLengthSec``                   std of voiced stretch lengths                         s
``acoustic.MeanUnvoicedSegmentLength``                      mean unvoiced stretch length                          s
``acoustic.StddevUnvoicedSegmentLength``                    std of unvoiced stretch lengths                       s
``acoustic.equivalentSoundLevel_dBp``                       equivalent sound level (mean energy)                  dB
``vad.speech_prob``                                         speech probability (silero-vad), mean of 32 ms frames 0-1
``vad.speech_fraction``                                     share of 32 ms frames with speech probability > 0.5   0-1
``describe.error``                                          why descriptors are NaN; empty when all were computed text
=========================================================== ===================================================== ======
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from jsae.audioroots import audio_roots, locate_audio
from jsae.errors import JsaeError, MissingPathError
from jsae.jsonio import finite_number

from jsae.embed.audio import AudioInfo, AudioReadError, audio_info, load_audio, resample

__all__ = [
    "DESCRIBE_RATE",
    "VAD_FRAME",
    "VAD_THRESHOLD",
    "EGEMAPS_NAMES",
    "ACOUSTIC_COLUMNS",
    "VAD_COLUMNS",
    "ERROR_COLUMN",
    "VALUE_COLUMNS",
    "COLUMNS",
    "INSTALL_HINT",
    "DescribeError",
    "DescribeUnavailableError",
    "check_available",
    "egemaps",
    "frame_probabilities",
    "vad",
    "describe_waves",
    "audio_roots",
    "locate_audio",
    "segment_spans",
    "describe_store",
]

#: the rate both tools get (Hz); silero-vad takes 16 or 8 kHz, eGeMAPS is defined on 16 kHz speech
DESCRIBE_RATE = 16000
#: silero-vad's frame at 16 kHz: 512 samples = 32 ms
VAD_FRAME = 512
#: a frame counts as speech when its probability is above this (silero-vad's default threshold)
VAD_THRESHOLD = 0.5
#: openSMILE's names of the 88 eGeMAPS v02 functionals, in its order
EGEMAPS_NAMES = (
    "F0semitoneFrom27.5Hz_sma3nz_amean", "F0semitoneFrom27.5Hz_sma3nz_stddevNorm",
    "F0semitoneFrom27.5Hz_sma3nz_percentile20.0", "F0semitoneFrom27.5Hz_sma3nz_percentile50.0",
    "F0semitoneFrom27.5Hz_sma3nz_percentile80.0", "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2",
    "F0semitoneFrom27.5Hz_sma3nz_meanRisingSlope", "F0semitoneFrom27.5Hz_sma3nz_stddevRisingSlope",
    "F0semitoneFrom27.5Hz_sma3nz_meanFallingSlope", "F0semitoneFrom27.5Hz_sma3nz_stddevFallingSlope",
    "loudness_sma3_amean", "loudness_sma3_stddevNorm", "loudness_sma3_percentile20.0",
    "loudness_sma3_percentile50.0", "loudness_sma3_percentile80.0", "loudness_sma3_pctlrange0-2",
    "loudness_sma3_meanRisingSlope", "loudness_sma3_stddevRisingSlope", "loudness_sma3_meanFallingSlope",
    "loudness_sma3_stddevFallingSlope", "spectralFlux_sma3_amean", "spectralFlux_sma3_stddevNorm",
    "mfcc1_sma3_amean", "mfcc1_sma3_stddevNorm", "mfcc2_sma3_amean", "mfcc2_sma3_stddevNorm", "mfcc3_sma3_amean",
    "mfcc3_sma3_stddevNorm", "mfcc4_sma3_amean", "mfcc4_sma3_stddevNorm", "jitterLocal_sma3nz_amean",
    "jitterLocal_sma3nz_stddevNorm", "shimmerLocaldB_sma3nz_amean", "shimmerLocaldB_sma3nz_stddevNorm",
    "HNRdBACF_sma3nz_amean", "HNRdBACF_sma3nz_stddevNorm", "logRelF0-H1-H2_sma3nz_amean",
    "logRelF0-H1-H2_sma3nz_stddevNorm", "logRelF0-H1-A3_sma3nz_amean", "logRelF0-H1-A3_sma3nz_stddevNorm",
    "F1frequency_sma3nz_amean", "F1frequency_sma3nz_stddevNorm", "F1bandwidth_sma3nz_amean",
    "F1bandwidth_sma3nz_stddevNorm", "F1amplitudeLogRelF0_sma3nz_amean", "F1amplitudeLogRelF0_sma3nz_stddevNorm",
    "F2frequency_sma3nz_amean", "F2frequency_sma3nz_stddevNorm", "F2bandwidth_sma3nz_amean",
    "F2bandwidth_sma3nz_stddevNorm", "F2amplitudeLogRelF0_sma3nz_amean", "F2amplitudeLogRelF0_sma3nz_stddevNorm",
    "F3frequency_sma3nz_amean", "F3frequency_sma3nz_stddevNorm", "F3bandwidth_sma3nz_amean",
    "F3bandwidth_sma3nz_stddevNorm", "F3amplitudeLogRelF0_sma3nz_amean", "F3amplitudeLogRelF0_sma3nz_stddevNorm",
    "alphaRatioV_sma3nz_amean", "alphaRatioV_sma3nz_stddevNorm", "hammarbergIndexV_sma3nz_amean",
    "hammarbergIndexV_sma3nz_stddevNorm", "slopeV0-500_sma3nz_amean", "slopeV0-500_sma3nz_stddevNorm",
    "slopeV500-1500_sma3nz_amean", "slopeV500-1500_sma3nz_stddevNorm", "spectralFluxV_sma3nz_amean",
    "spectralFluxV_sma3nz_stddevNorm", "mfcc1V_sma3nz_amean", "mfcc1V_sma3nz_stddevNorm", "mfcc2V_sma3nz_amean",
    "mfcc2V_sma3nz_stddevNorm", "mfcc3V_sma3nz_amean", "mfcc3V_sma3nz_stddevNorm", "mfcc4V_sma3nz_amean",
    "mfcc4V_sma3nz_stddevNorm", "alphaRatioUV_sma3nz_amean", "hammarbergIndexUV_sma3nz_amean",
    "slopeUV0-500_sma3nz_amean", "slopeUV500-1500_sma3nz_amean", "spectralFluxUV_sma3nz_amean",
    "loudnessPeaksPerSec", "VoicedSegmentsPerSec", "MeanVoicedSegmentLengthSec", "StddevVoicedSegmentLengthSec",
    "MeanUnvoicedSegmentLength", "StddevUnvoicedSegmentLength", "equivalentSoundLevel_dBp",
)
ACOUSTIC_COLUMNS = tuple(f"acoustic.{name}" for name in EGEMAPS_NAMES)
VAD_COLUMNS = ("vad.speech_prob", "vad.speech_fraction")
ERROR_COLUMN = "describe.error"
#: the float32 columns
VALUE_COLUMNS = ACOUSTIC_COLUMNS + VAD_COLUMNS
#: every column a described store gets, in order
COLUMNS = VALUE_COLUMNS + (ERROR_COLUMN,)
#: how to install the tools
INSTALL_HINT = "pip install -e '.[describe]' (the packages opensmile and silero-vad)"
#: rows of one file read at once at most this many seconds apart (bounds the memory of long recordings)
_READ_SPAN_SECONDS = 600.0
#: audio read before and after a segment's spans, so that the resampler's edges fall outside them
_READ_MARGIN_SECONDS = 0.5


class DescribeError(JsaeError, ValueError):
    """Audio the descriptors cannot be computed on (empty, not finite, too short)."""


class DescribeUnavailableError(JsaeError, ImportError):
    """opensmile or silero-vad is not installed (or its model cannot be loaded)."""


# ----------------------------------------------------------------------------- the tools

@dataclass
class _Tools:
    smile: Any           # opensmile.Smile (eGeMAPSv02, functionals)
    vad_model: Any       # silero-vad's TorchScript model (stateful: used under _LOCK)
    versions: dict[str, str]


_LOCK = threading.RLock()
_TOOLS: list[_Tools] = []


def _tools() -> _Tools:
    """Load both tools once per process; :class:`DescribeUnavailableError` if one is missing."""
    with _LOCK:
        if _TOOLS:
            return _TOOLS[0]
        from importlib.metadata import PackageNotFoundError, version

        try:
            import opensmile
        except ImportError as err:
            raise DescribeUnavailableError(f"acoustic descriptors need opensmile ({err}); install: {INSTALL_HINT}") \
                from None
        try:
            import torch
        except ImportError as err:
            raise DescribeUnavailableError(f"silero-vad needs torch ({err}); install: {INSTALL_HINT}") from None
        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad      # its import sets torch.set_num_threads(1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)     # torch.jit.load's
                model = load_silero_vad()
        except ImportError as err:
            raise DescribeUnavailableError(f"acoustic descriptors need silero-vad ({err}); install: {INSTALL_HINT}") \
                from None
        except Exception as err:  # noqa: BLE001 - a broken installation: its model file
            raise DescribeUnavailableError(f"silero-vad's model cannot be loaded ({type(err).__name__}: {err}); "
                                           f"reinstall it: {INSTALL_HINT}") from None
        finally:
            torch.set_num_threads(threads)
        smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                feature_level=opensmile.FeatureLevel.Functionals)
        if tuple(smile.feature_names) != EGEMAPS_NAMES:
            raise DescribeUnavailableError(f"opensmile {opensmile.__version__} gives other eGeMAPS v02 features than "
                                           "the 88 jsae knows; install the version the describe extra pins")
        versions = {}
        for name in ("opensmile", "silero-vad"):
            try:
                versions[name] = version(name)
            except PackageNotFoundError:
                versions[name] = "unknown"
        _TOOLS.append(_Tools(smile, model, versions))
        return _TOOLS[0]


def check_available() -> dict[str, Any]:
    """Load the tools (once) and say what computes the columns: ``{"feature_set",
    "sample_rate", "vad_threshold", "versions": {"opensmile", "silero-vad"}}``.
    Raises :class:`DescribeUnavailableError` naming the missing package and the install line."""
    tools = _tools()
    return {"feature_set": "eGeMAPSv02 functionals", "sample_rate": DESCRIBE_RATE,
            "vad_threshold": VAD_THRESHOLD, "versions": dict(tools.versions)}


def _at_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 ``[T]`` at :data:`DESCRIBE_RATE`; :class:`DescribeError` for empty or non-finite audio."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise DescribeError(f"audio must be mono [samples]; got shape {x.shape}")
    if x.shape[0] == 0:
        raise DescribeError("no audio samples")
    if not np.isfinite(x).all():
        raise DescribeError("audio contains NaN or Inf samples")
    return resample(x, int(sample_rate), DESCRIBE_RATE)


# ----------------------------------------------------------------------------- one segment

def egemaps(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """The 88 eGeMAPS v02 functionals of one mono waveform.

    Args:
      audio: float ``[T]`` (full scale = 1).
      sample_rate: its rate in Hz (resampled to 16 kHz first).
    Returns ``{"acoustic.<name>": value}`` in :data:`ACOUSTIC_COLUMNS` order (meanings and
    units: the module's table). Raises :class:`DescribeError` for empty, non-finite or
    too short audio (openSMILE yields no frame).
    """
    x = _at_rate(audio, sample_rate)
    smile = _tools().smile
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")           # "Segment too short, filling with NaN": checked below
        row = smile.process_signal(x, DESCRIBE_RATE).iloc[0]
    values = row.reindex(list(EGEMAPS_NAMES)).to_numpy(dtype=np.float64)
    if np.isnan(values).all():
        raise DescribeError(f"segment too short for openSMILE ({x.shape[0] / DESCRIBE_RATE:.3f} s)")
    return dict(zip(ACOUSTIC_COLUMNS, (float(v) for v in values)))


def frame_probabilities(waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """silero-vad's speech probability of every 32 ms frame of each 16 kHz waveform.

    ``waves``: mono float32 ``[T_i]`` at :data:`DESCRIBE_RATE`, each at least one frame
    (:data:`VAD_FRAME` samples). They are run as one batch, zero-padded at the end to the
    longest; the detector is causal, so a clip's frames do not depend on its padding or its
    batch-mates (up to float rounding, ~1e-7). Returns ``[ceil(T_i / 512)]`` float32 arrays.
    """
    import torch

    lengths = [int(np.asarray(w).shape[0]) for w in waves]
    if not waves:
        return []
    if min(lengths) < VAD_FRAME:
        raise DescribeError(f"segment shorter than one speech-detector frame ({min(lengths)} < {VAD_FRAME} samples)")
    batch = np.zeros((len(waves), max(lengths)), np.float32)
    for i, w in enumerate(waves):
        batch[i, : lengths[i]] = w
    model = _tools().vad_model
    threads = torch.get_num_threads()
    with _LOCK, torch.inference_mode():
        # one thread, as silero-vad sets itself: the small recurrent model is fastest so (measured
        # 10x faster than with 2 threads on a busy 2-core machine); the caller's setting is restored
        torch.set_num_threads(1)
        try:
            probs = model.audio_forward(torch.from_numpy(batch), DESCRIBE_RATE).numpy()
        finally:
            torch.set_num_threads(threads)
    return [np.asarray(probs[i, : -(-n // VAD_FRAME)], np.float32) for i, n in enumerate(lengths)]


def _vad_stats(probs: np.ndarray) -> tuple[float, float]:
    return float(np.mean(probs)), float(np.mean(probs > VAD_THRESHOLD))


def vad(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Speech probability of one mono waveform (resampled to 16 kHz): ``{"vad.speech_prob":
    mean of the frame probabilities, "vad.speech_fraction": share of frames above 0.5}``."""
    (probs,) = frame_probabilities([_at_rate(audio, sample_rate)])
    return dict(zip(VAD_COLUMNS, _vad_stats(probs)))


# ----------------------------------------------------------------------------- many segments

def _reason(tool: str, err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, JsaeError):
        text = f"{type(err).__name__}: {text}"
    return f"{tool}: {text[:300]}"


def describe_waves(waves: Sequence[np.ndarray], sample_rate: int, *, batch_size: int = 16) -> pd.DataFrame:
    """The descriptors of many segments, one row each.

    Args:
      waves: mono float ``[T_i]`` waveforms (a segment's joined spans), any lengths.
      sample_rate: their rate in Hz.
      batch_size: segments per speech-detector call (grouped by length; the result does
        not depend on it beyond float rounding).
    Returns a frame of ``len(waves)`` rows and :data:`COLUMNS`: float32 values, NaN where a
    tool failed on that segment, whose reason (``"opensmile: …"``, ``"silero-vad: …"``,
    ``"audio: …"``) is in ``describe.error`` ('' when all were computed). A missing tool
    raises :class:`DescribeUnavailableError` instead (nothing is computed).
    """
    _tools()
    n = len(waves)
    values = np.full((n, len(VALUE_COLUMNS)), np.nan, np.float32)
    errors: list[list[str]] = [[] for _ in range(n)]
    xs: list[np.ndarray | None] = []
    for i, w in enumerate(waves):
        try:
            xs.append(_at_rate(w, sample_rate))
        except Exception as err:  # noqa: BLE001 - one bad segment must not stop the rest
            xs.append(None)
            errors[i].append(_reason("audio", err))
    n_acoustic = len(ACOUSTIC_COLUMNS)
    for i, x in enumerate(xs):
        if x is None:
            continue
        try:
            values[i, :n_acoustic] = list(egemaps(x, DESCRIBE_RATE).values())
        except DescribeUnavailableError:
            raise
        except Exception as err:  # noqa: BLE001
            errors[i].append(_reason("opensmile", err))
    ok = sorted((i for i, x in enumerate(xs) if x is not None), key=lambda i: (-xs[i].shape[0], i))
    for b in range(0, len(ok), max(1, batch_size)):
        idx = ok[b : b + max(1, batch_size)]
        try:
            probs: list[np.ndarray | None] = list(frame_probabilities([xs[i] for i in idx]))
        except DescribeUnavailableError:
            raise
        except Exception:  # noqa: BLE001 - find the segment(s) the batch failed on
            probs = []
            for i in idx:
                try:
                    probs.append(frame_probabilities([xs[i]])[0])
                except DescribeUnavailableError:
                    raise
                except Exception as err:  # noqa: BLE001
                    probs.append(None)
                    errors[i].append(_reason("silero-vad", err))
        for i, p in zip(idx, probs):
            if p is not None:
                values[i, n_acoustic:] = _vad_stats(p)
    frame = pd.DataFrame(values, columns=list(VALUE_COLUMNS))
    frame[ERROR_COLUMN] = ["; ".join(e) for e in errors]
    return frame


# ----------------------------------------------------------------------------- a store's audio

def segment_spans(row: dict[str, Any]) -> list[tuple[float, float | None]]:
    """A metadata row's source spans in seconds of its file: ``spans`` (JSON ``[[start, end],
    ...]``, written by ``jsae embed``), else ``[offset, offset + duration)`` (``end`` None:
    to the end of the file; no ``offset``: 0). Raises :class:`DescribeError` for spans that
    are not increasing finite pairs."""
    spans = row.get("spans")
    if isinstance(spans, str) and spans.strip():
        try:
            pairs = [(float(a), float(b)) for a, b in json.loads(spans)]
        except (TypeError, ValueError) as err:
            raise DescribeError(f"spans {spans[:60]!r} are not [[start, end], ...] seconds ({err})") from None
        if not pairs or not all(math.isfinite(a) and math.isfinite(b) and 0 <= a < b for a, b in pairs):
            raise DescribeError(f"spans {spans[:60]!r} are not increasing [start, end] pairs in seconds")
        return list(pairs)
    start = finite_number(row.get("offset"), None) or 0.0
    duration = finite_number(row.get("duration"), None)
    if start < 0 or (duration is not None and duration <= 0):
        raise DescribeError(f"offset {row.get('offset')!r} / duration {row.get('duration')!r} give no audio")
    return [(start, None if duration is None else start + duration)]


def _read_groups(rows: list[int], spans: dict[int, list], limit: float) -> list[list[int]]:
    """Rows of one file (sorted by start) split where one read would span more than ``limit`` s."""
    order = sorted(rows, key=lambda i: (spans[i][0][0], i))
    groups: list[list[int]] = []
    lo = None
    for i in order:
        start = spans[i][0][0]
        ends = [e for _, e in spans[i]]
        if groups and lo is not None and None not in ends and max(ends) - lo <= limit:
            groups[-1].append(i)
            continue
        groups.append([i])
        lo = start if None not in ends else None       # a row to the end of the file is read alone
    return groups


def _read_window(lo: float, hi: float | None, info: AudioInfo) -> tuple[float, float | None, int]:
    """Where to read spans ``[lo, hi]`` s of a file: ``(offset s, duration s or None, first
    16 kHz sample)``. The read starts :data:`_READ_MARGIN_SECONDS` early, on a sample where
    the file's and the 16 kHz sample grids meet, so that the resampled samples are those of
    the whole file resampled (what ``jsae embed`` cut for a file read whole) and the
    resampler's edge lies outside the spans; it ends a margin late, or at the end of the file."""
    sr = info.sample_rate
    step = sr // math.gcd(sr, DESCRIBE_RATE)          # input samples per whole number of 16 kHz samples
    first = max(0, int((lo - _READ_MARGIN_SECONDS) * sr) // step * step)
    duration = None
    if hi is not None and hi + _READ_MARGIN_SECONDS < info.seconds:
        duration = (math.ceil((hi + _READ_MARGIN_SECONDS) * sr) - first) / sr
    return first / sr, duration, first * DESCRIBE_RATE // sr


def _cut(audio: np.ndarray, base: int, spans: list[tuple[float, float | None]]) -> np.ndarray:
    """The joined spans of one segment from ``audio`` (16 kHz, whose first sample is sample
    ``base`` of the file at 16 kHz), cut as :mod:`jsae.embed.export` does (sample = round(seconds * rate))."""
    pieces = []
    for start, end in spans:
        a = round(start * DESCRIBE_RATE) - base
        if end is None:
            pieces.append(audio[a:])
            continue
        n = round((end - start) * DESCRIBE_RATE)
        w = audio[a : a + n]
        if w.shape[0] != n:
            raise DescribeError(f"span [{start:g}, {end:g}] s runs past the end of the file")
        pieces.append(w)
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def describe_store(
    store: str | os.PathLike,
    *,
    audio_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Add the descriptor columns (:data:`COLUMNS`) to a finished store, for every row.

    Each row's audio is its ``source`` file under an audio root (:func:`audio_roots`,
    :func:`locate_audio`), cut at its spans (:func:`segment_spans`), read at 16 kHz. A row
    whose file is missing, outside the roots, unreadable or too short gets NaN and the
    reason in ``describe.error``; if no row can be described nothing is written. The table
    is replaced atomically (:func:`jsae.store.add_columns`), rows and their order unchanged.

    Args:
      overwrite: replace descriptor columns the store already has (else refused first, before
        any audio is read).
      batch_size: segments per speech-detector call.
      progress: a tqdm bar over the segments.
    Returns ``{"store", "rows", "described", "failed": [{"id", "source", "reason"}],
    "audio_seconds", "wall_seconds", "tools"}``.
    """
    from jsae.store import StoreError, add_columns, open_store

    t0 = time.time()
    opened = open_store(store)
    meta = opened.metadata
    have = [c for c in COLUMNS if c in meta.columns]
    if have and not overwrite:
        raise StoreError(f"{opened.path} already has the descriptor columns ({have[0]}, ... {len(have)} of "
                         f"{len(COLUMNS)}); pass --overwrite to compute them again.")
    if "source" not in meta.columns:
        raise StoreError(f"{opened.path}: the metadata has no 'source' column, so its audio is unknown; descriptors "
                         "need source (and offset, duration or spans) for each row.")
    roots = audio_roots(opened.info, audio_root)
    if audio_root is not None and not Path(audio_root).expanduser().is_dir():
        raise MissingPathError(f"--audio-root {audio_root} is not a folder.")
    if not roots:
        raise MissingPathError(f"{opened.path}: the store names no audio folder that exists here; pass --audio-root "
                               "DIR (the folder its source paths are relative to).")
    tools = check_available()
    n = len(meta)
    values = np.full((n, len(VALUE_COLUMNS)), np.nan, np.float32)
    errors = [""] * n
    records = meta.to_dict("records")
    spans: dict[int, list] = {}
    by_file: dict[Path, list[int]] = {}
    shown_roots = ", ".join(str(r) for r in roots)
    for i, r in enumerate(records):
        path, why = locate_audio(r.get("source"), roots)
        if path is None:
            errors[i] = (f"audio: {r.get('source')} lies outside the audio roots ({shown_roots}); add one with "
                         "--audio-root" if why == "outside"
                         else f"audio: {r.get('source')} not found under the audio roots ({shown_roots})")
            continue
        try:
            spans[i] = segment_spans(r)
        except DescribeError as err:
            errors[i] = _reason("audio", err)
            continue
        by_file.setdefault(path, []).append(i)
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc="describe", unit="seg", disable=not progress, dynamic_ncols=True)
    bar.update(n - sum(len(v) for v in by_file.values()))
    pending: list[tuple[int, np.ndarray]] = []
    audio_seconds = 0.0

    def flush() -> None:
        nonlocal audio_seconds
        if not pending:
            return
        frame = describe_waves([w for _, w in pending], DESCRIBE_RATE, batch_size=batch_size)
        for (i, w), vals, err in zip(pending, frame[list(VALUE_COLUMNS)].to_numpy(np.float32), frame[ERROR_COLUMN]):
            values[i], errors[i] = vals, err
            audio_seconds += w.shape[0] / DESCRIBE_RATE
        bar.update(len(pending))
        pending.clear()

    try:
        for path, rows in by_file.items():
            for group in _read_groups(rows, spans, _READ_SPAN_SECONDS):
                lo = min(spans[i][0][0] for i in group)
                ends = [e for i in group for _, e in spans[i]]
                hi = None if None in ends else max(ends)
                try:
                    offset, duration, base = _read_window(lo, hi, audio_info(path))
                    audio = load_audio(path, DESCRIBE_RATE, offset=offset, duration=duration)
                except (AudioReadError, OSError) as err:
                    reason = err.reason if isinstance(err, AudioReadError) else f"{type(err).__name__}: {err}"
                    for i in group:
                        errors[i] = f"audio: {records[i].get('source')}: {reason}"
                    bar.update(len(group))
                    continue
                for i in group:
                    try:
                        pending.append((i, _cut(audio, base, spans[i])))
                    except DescribeError as err:
                        errors[i] = _reason("audio", err)
                        bar.update(1)
                    if len(pending) >= max(batch_size, 1):
                        flush()
        flush()
    finally:
        bar.close()
    failed = [{"id": str(records[i].get("id")), "source": str(records[i].get("source")), "reason": e}
              for i, e in enumerate(errors) if e]
    if len(failed) == n:
        first = "; ".join(f"{f['id']}: {f['reason']}" for f in failed[:3])
        raise StoreError(f"no segment of {opened.path} could be described, nothing written. First reasons: {first}")
    result = pd.DataFrame(values, columns=list(VALUE_COLUMNS))
    result[ERROR_COLUMN] = errors
    result.insert(0, "id", meta["id"].astype(str).to_numpy())
    summary = {"producer": "jsae describe", **tools, "rows": n, "failed": len(failed)}
    add_columns(opened.path, result, overwrite=overwrite, attrs={"describe": summary})
    return {"store": str(opened.path), "rows": n, "described": n - len(failed), "failed": failed,
            "audio_seconds": audio_seconds, "wall_seconds": time.time() - t0, "tools": tools}
