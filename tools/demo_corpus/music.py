"""Hold music: recorded tracks from a Debian package, cut into pieces.

Source: the Debian package ``singularity-music`` (Debian 12: version 007), the soundtrack of
the game *Endgame: Singularity* by Max McCracken, released under Creative Commons
Attribution-ShareAlike 3.0 (``/usr/share/doc/singularity-music/copyright``): 16 produced,
recorded tracks (Ogg Vorbis, 48 kHz stereo, ≈ 64 min; 13 full tracks of 3.5–6 min and 3
short win/lose cues). The pieces in a corpus are adaptations of that work: cut,
downmixed, resampled to 8 kHz, band-limited, μ-law coded and mixed with noise; they are
distributed under CC BY-SA 3.0 with the attribution above.

Each track is cut, from 3 s after its start to 3 s before its end, into consecutive
pieces of 8–16 s (random lengths, 0–0.5 s apart); a piece is decoded on its own with
``sox`` (``trim`` seeks, so a piece costs milliseconds).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jsae.errors import MissingPathError
from tools.demo_corpus.tools import MUSIC_DIR

__all__ = ["MUSIC_SOURCE", "Piece", "Track", "cut_pieces", "decode_piece", "list_tracks"]

MUSIC_SOURCE = {
    "package": "singularity-music",
    "path": str(MUSIC_DIR),
    "title": "Endgame: Singularity soundtrack",
    "author": "Max McCracken",
    "licence": "CC BY-SA 3.0 (/usr/share/doc/singularity-music/copyright)",
    "changes": "cut into pieces, downmixed to mono, resampled to 8 kHz, band-limited to 300-3400 Hz, "
               "mu-law coded, low-level noise added",
}


@dataclass(frozen=True)
class Track:
    """One music file: ``name`` (file name without extension, folder prefix for win/lose cues)."""

    name: str
    path: str
    seconds: float


@dataclass(frozen=True)
class Piece:
    """``[start, start + seconds)`` of ``track`` (seconds)."""

    track: Track
    start: float
    seconds: float


def _duration(path: Path) -> float:
    out = subprocess.run(["sox", "--i", "-D", str(path)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"sox cannot read {path}: {out.stderr.strip()}")
    return float(out.stdout.strip())


def list_tracks(folder: Path = MUSIC_DIR) -> list[Track]:
    """Every ``.ogg`` under ``folder``, sorted by relative path, with its duration."""
    files = sorted(folder.rglob("*.ogg"), key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise MissingPathError(f"no .ogg music under {folder}; install the Debian package singularity-music.")
    tracks = []
    for p in files:
        rel = p.relative_to(folder).with_suffix("").as_posix()
        tracks.append(Track(rel, str(p), round(_duration(p), 3)))
    return tracks


def cut_pieces(track: Track, rng: np.random.Generator, piece_seconds=(8.0, 16.0), skip: float = 3.0,
               gap=(0.0, 0.5)) -> list[Piece]:
    """Consecutive pieces of ``track`` (see module doc)."""
    pieces = []
    t = skip
    end = track.seconds - skip
    while True:
        d = round(float(rng.uniform(*piece_seconds)), 2)
        if t + d > end:
            break
        pieces.append(Piece(track, round(t, 2), d))
        t += d + float(rng.uniform(*gap))
    return pieces


def decode_piece(piece: Piece, sample_rate: int = 8000) -> np.ndarray:
    """The piece as mono float32 at ``sample_rate`` (sox: trim, downmix, very-high-quality resample)."""
    cmd = ["sox", piece.track.path, "-t", "f32", "-", "trim", f"{piece.start}", f"{piece.seconds}",
           "remix", "-", "rate", "-v", str(sample_rate)]
    out = subprocess.run(cmd, capture_output=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"sox failed on {piece.track.path}: {out.stderr.decode('utf-8', 'replace')[-400:]}")
    return np.frombuffer(out.stdout, dtype="<f4").astype(np.float32)
