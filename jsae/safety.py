"""The one guard every deleting code path of jsae goes through.

jsae deletes only folders it made itself: an embedding store (``--overwrite`` of
``jsae store import|synth`` and ``jsae embed``), a partial export, a corpus it built.
Before anything is removed, :func:`check_deletable` refuses (with an
:class:`UnsafeDeleteError`, one line naming the path and the fix):

* the working directory, any folder that contains it, the home folder and ``/``;
* a folder that contains one of the command's inputs (``--out`` = the folder of the
  input ``.npy``, or one above it);
* a symbolic link (the link would be followed into someone else's folder);
* anything that is not recognised as what the command made: the ``is_ours`` test
  of the caller (e.g. :func:`is_store_dir`: every entry is a store file).

:func:`remove_tree` is check + ``shutil.rmtree``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from .errors import JsaeError

__all__ = ["UnsafeDeleteError", "STORE_ENTRIES", "is_store_dir", "check_deletable", "check_writable_folder",
           "remove_tree"]

#: names a store folder may hold (``jsae store import``/``synth`` and a ``jsae embed`` export,
#: finished or not; ``clips``: the segments' compressed audio bundled with a store, named by
#: its ``clip`` column); temp files of these names (``store.json.tmp``, ``plan.json.tmp-123``) count too
STORE_ENTRIES = ("embeddings.zarr", "metadata.parquet", "store.json", "plan.json", "plan.parquet",
                 "progress", "summary.json", "clips")
_FORMATS = {"store.json": "jsae-store", "plan.json": "jsae-embed-plan"}


class UnsafeDeleteError(JsaeError, ValueError):
    """A delete was refused: the target is not something jsae made, or holds the user's files."""


def _is_relative_to(path: Path, other: Path) -> bool:
    try:
        path.relative_to(other)
        return True
    except ValueError:
        return False


def _entry_known(name: str, known: Iterable[str]) -> bool:
    return any(name == k or name.startswith(k + ".tmp") for k in known)


def is_store_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder that holds nothing but a jsae embedding store (finished,
    partial, or an interrupted ``jsae embed``): every entry has a store file name, and a
    ``store.json``/``plan.json`` present is one that jsae wrote."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    if not entries:
        return False
    for entry in entries:
        if not _entry_known(entry.name, STORE_ENTRIES):
            return False
    for name, fmt in _FORMATS.items():
        marker = path / name
        if marker.exists():
            try:
                info = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            if not isinstance(info, dict) or info.get("format") != fmt:
                return False
    return True


def _protected(target: Path, inputs: Iterable[str | os.PathLike]) -> str | None:
    """Why ``target`` (resolved) must never be deleted, or None."""
    cwd = Path.cwd().resolve()
    if target == Path(target.anchor):
        return "it is the file-system root"
    if _is_relative_to(cwd, target):
        return "it is the working directory" if target == cwd else "it contains the working directory"
    home = Path.home().resolve()
    if _is_relative_to(home, target):
        return "it is the home folder" if target == home else "it contains the home folder"
    for given in inputs:
        if given is None:
            continue
        src = Path(given).expanduser().resolve()
        if _is_relative_to(src, target):
            return f"it contains the input {given}" if src != target else f"it is the input {given}"
    return None


def check_deletable(path: str | os.PathLike, *, what: str, is_ours: Callable[[Path], bool],
                    inputs: Iterable[str | os.PathLike] = (), option: str = "--out") -> Path | None:
    """Refuse to delete ``path`` unless it is safe; returns its resolved path (None if absent).

    Args:
      what: what the command deletes, for the message (``an embedding store``).
      is_ours: recognises what the command made (e.g. :func:`is_store_dir`).
      inputs: the command's input files/folders: a folder holding one is never deleted.
      option: the option that named ``path``, for the message.
    """
    given = Path(path)
    if given.is_symlink():
        raise UnsafeDeleteError(f"{option} {path} is a symbolic link; refusing to delete through it. "
                                f"Give the real folder or choose another {option}.")
    if not given.exists():
        return None
    target = given.resolve()
    why = _protected(target, inputs)
    if why is None and not given.is_dir():
        why = "it is a file, not a folder"
    if why is None and not is_ours(given):
        entries = sorted(p.name for p in given.iterdir())
        why = (f"it is not {what} (it holds {', '.join(entries[:5])}"
               f"{', …' if len(entries) > 5 else ''})")
    if why is not None:
        raise UnsafeDeleteError(f"refusing to delete {option} {path}: {why}. Nothing was deleted; "
                                f"choose another {option} (a new folder or {what}).")
    return target


def check_writable_folder(path: str | os.PathLike, *, what: str, is_ours: Callable[[Path], bool],
                          option: str = "--out") -> None:
    """Refuse to write ``what`` into an existing folder that is neither empty nor ``is_ours``
    (files could be overwritten or mixed with the user's)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise UnsafeDeleteError(f"{option} {path} is a file, not a folder; choose another {option}.")
    entries = sorted(p.name for p in path.iterdir())
    if entries and not is_ours(path):
        raise UnsafeDeleteError(
            f"{option} {path} is not empty and not {what} (it holds {', '.join(entries[:5])}"
            f"{', …' if len(entries) > 5 else ''}); choose a new or empty folder."
        )


def remove_tree(path: str | os.PathLike, *, what: str, is_ours: Callable[[Path], bool],
                inputs: Iterable[str | os.PathLike] = (), option: str = "--out") -> None:
    """:func:`check_deletable`, then delete the folder."""
    if check_deletable(path, what=what, is_ours=is_ours, inputs=inputs, option=option) is not None:
        shutil.rmtree(path)
