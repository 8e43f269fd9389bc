"""Which audio files jsae may read: the allowed *audio roots* of a store and the check that a
``source`` lies under one of them (used by ``jsae describe``, the report and the atlas alike).

Audio is read only from files whose real path lies under an audio root
(:func:`audio_roots`): the ``--audio-root`` option, or the folders the store was exported
from (``store.json``: ``audio_roots``, ``inputs.audio_dir``, the manifest's folder). A
``source`` such as ``../../x.wav``, an absolute path elsewhere or a link leading out of the
roots is not read (:func:`locate_audio` says why).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["audio_roots", "locate_audio"]


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
