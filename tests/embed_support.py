"""Shared by the ``test_embed_*`` files: a tiny TitaNet built once, and test recordings."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from stand_ins import build_tiny_titanet, silence, speechlike

REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def tiny_titanet() -> Path:
    """A tiny random TitaNet ``.nemo`` (seed 0), built once per test process."""
    folder = Path(tempfile.mkdtemp(prefix="tiny-titanet-"))
    atexit.register(shutil.rmtree, folder, True)
    return build_tiny_titanet(folder / "tiny.nemo", seed=0)


def recording(parts: list[tuple], sample_rate: int = 16000,
              seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate ``("speech", seconds, f0)`` and ``("silence", seconds)`` parts.

    Returns the waveform ``[T]`` and the ``(start, end)`` seconds of every speech part.
    """
    pieces, spans, t = [], [], 0.0
    for i, part in enumerate(parts):
        kind, seconds = part[0], part[1]
        if kind == "speech":
            pieces.append(speechlike(seconds, sample_rate, f0=part[2], seed=seed * 100 + i))
            spans.append((t, t + seconds))
        else:
            pieces.append(silence(seconds, sample_rate, seed=seed * 100 + i))
        t += seconds
    return np.concatenate(pieces), spans


def write_recording(path: Path, parts: list[tuple], sample_rate: int = 16000, seed: int = 0,
                    channels: int = 1, subtype: str | None = None) -> list[tuple[float, float]]:
    """Write :func:`recording` to ``path``; returns the speech spans (seconds)."""
    x, spans = recording(parts, sample_rate, seed)
    if channels > 1:
        x = np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sample_rate, subtype=subtype)
    return spans
