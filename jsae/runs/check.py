"""What ``jsae sweep --out DIR`` may write into.

* :func:`check_run_dir` — a run directory must be absent, empty, or a jsae run (which
  is then resumed); anything else (``--out .`` in a project folder, a folder with the
  user's own ``config.yaml`` or ``metrics.json``) is refused before anything is written.
* :func:`is_jsae_run` — recognises a run by what a sweep writes: a ``sweep.json`` with
  its keys, or a jsae ``config.yaml`` next to ``checkpoints/``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import JsaeError
from .layout import CHECKPOINT_DIR, CONFIG_FILE, LOCK_NAME, SWEEP_FILE, SWEEP_KEYS

__all__ = ["RunDirError", "is_jsae_run", "check_run_dir"]

#: left by a sweep that could not start (its run lock): the folder still counts as empty
_IGNORED = {LOCK_NAME}


class RunDirError(JsaeError, ValueError):
    """A run directory that jsae must not write into, or cannot load."""


def _sweep_json_is_ours(path: Path) -> bool:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and SWEEP_KEYS <= set(info)


def _config_yaml_is_ours(path: Path) -> bool:
    from ..config import ConfigError, load_config

    try:  # plain YAML only: an alias bomb in a folder's config.yaml is refused, never expanded
        load_config(path)
    except (OSError, ValueError, ConfigError):
        return False
    return True


def is_jsae_run(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a run written by ``jsae sweep`` (finished or interrupted)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / SWEEP_FILE).is_file() and _sweep_json_is_ours(path / SWEEP_FILE):
        return True
    return (path / CHECKPOINT_DIR).is_dir() and (path / CONFIG_FILE).is_file() \
        and _config_yaml_is_ours(path / CONFIG_FILE)


def check_run_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse a run directory that is neither absent, empty, nor a jsae run.

    ``jsae sweep`` writes ``config.yaml``, ``metrics.json``, ``sweep.json``, figures and
    ``checkpoints/`` into it; in any other non-empty folder these would overwrite the
    user's files. Raises :class:`RunDirError` (nothing is written).
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise RunDirError(f"{option} {path} is a dangling symbolic link; choose another {option}.")
        return
    if not path.is_dir():
        raise RunDirError(f"{option} {path} is a file, not a folder; choose a new or empty folder for the run.")
    entries = sorted(p.name for p in path.iterdir() if p.name not in _IGNORED)
    if not entries or is_jsae_run(path):
        return
    shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
    raise RunDirError(
        f"{option} {path} is neither empty nor a jsae run (it holds {shown}); a sweep would overwrite files "
        f"there (config.yaml, metrics.json, …). Choose a new or empty folder, e.g. {option} runs/NAME."
    )
