"""The one guard every deleting code path of jsae goes through.

jsae deletes only folders it made itself: an embedding store (``--overwrite`` of
``jsae store import|synth`` and ``jsae embed``), a partial export, a corpus it built.
Before anything is removed, :func:`check_deletable` refuses (with an
:class:`UnsafeDeleteError`, one line naming the path and the fix):

* the working directory, any folder that contains it, the home folder, ``/`` and a mount
  point (it cannot be removed; a folder inside it can);
* a folder that contains one of the command's inputs (``--out`` = the folder of the
  input ``.npy``, or one above it);
* a symbolic link (the link would be followed into someone else's folder);
* anything that is not recognised as what the command made: the ``is_ours`` test
  of the caller (e.g. :func:`is_store_dir`: every entry is a store file).

:func:`remove_tree` is check + ``shutil.rmtree``.

**No writing or deleting through a link.** :func:`check_no_link` refuses a folder that is, or
lies below, a symbolic link inside the folder the command owns (``RUN/analysis`` and
``RUN/analysis/<name>`` inside a run; ``--out`` itself): a link there would make jsae write
into, or replace, someone else's folder. The refusal names the link and its target; the
target is never touched.

**A folder replaced as one unit.** :func:`replace_folder` hands out a new temporary sibling
``.NAME.new-PID-HEX8`` to write into; when everything is written, the previous folder (if
any) is renamed aside to ``.NAME.old-PID-HEX8``, the new one renamed to ``NAME``, and the
previous one removed. A reader sees the complete old folder or the complete new one (for an
instant, between the two renames, none). On any failure (an exception, a full disk, a
signal) the temporary folder is removed and ``NAME`` is as it was. The siblings a killed
process left are removed by the next replacement in the same parent
(:func:`clean_staged`): a new folder of a finished process is removed, a previous folder set
aside whose replacement never arrived is put back. Their names start with a dot: readers of
outputs skip hidden folders.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import JsaeError, writing_to

__all__ = ["UnsafeDeleteError", "STORE_ENTRIES", "is_store_dir", "check_deletable", "check_writable_folder",
           "remove_tree", "check_no_link", "check_folder_path", "clean_staged", "replace_folder",
           "process_alive"]

#: names a store folder may hold (``jsae store import``/``synth`` and a ``jsae embed`` export,
#: finished or not; ``clips``: the segments' compressed audio bundled with a store, named by
#: its ``clip`` column); temp files of these names (``store.json.tmp``, ``plan.json.tmp-123``) count too
STORE_ENTRIES = ("embeddings.zarr", "metadata.parquet", "store.json", "plan.json", "plan.parquet",
                 "progress", "summary.json", "clips")
_FORMATS = {"store.json": "jsae-store", "plan.json": "jsae-embed-plan"}


class UnsafeDeleteError(JsaeError, ValueError):
    """A delete was refused: the target is not something jsae made, or holds the user's files."""


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
    if cwd.is_relative_to(target):
        return "it is the working directory" if target == cwd else "it contains the working directory"
    home = Path.home().resolve()
    if home.is_relative_to(target):
        return "it is the home folder" if target == home else "it contains the home folder"
    if os.path.ismount(target):
        return "it is a mount point (it cannot be removed or replaced; give a folder inside it)"
    for given in inputs:
        if given is None:
            continue
        src = Path(given).expanduser().resolve()
        if src.is_relative_to(target):
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
    check_folder_path(path, option=option)
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


# ----------------------------------------------------------------------------- links and whole-folder writes


def check_no_link(path: str | os.PathLike, *, below: str | os.PathLike | None = None,
                  fix: str = "give the real folder or choose another --out") -> None:
    """Refuse (one-line :class:`UnsafeDeleteError`) when ``path``, or any folder between
    ``below`` (excluded: e.g. the run directory the user named) and ``path``, is a symbolic
    link: jsae would write into, or replace, the folder it points to. ``below=None`` checks
    ``path`` alone. The message names the link, its target and ``fix``."""
    path = Path(path)
    chain = [path]
    if below is not None:
        base = Path(below)
        try:
            rel = path.relative_to(base)
        except ValueError:
            rel = None
        if rel is not None:
            chain = [base.joinpath(*rel.parts[:i]) for i in range(len(rel.parts), 0, -1)]
    for p in reversed(chain):
        if p.is_symlink():
            raise UnsafeDeleteError(f"{p} is a symbolic link to {os.path.realpath(p)}; jsae never writes or "
                                    f"deletes through a link (the folder it points to is untouched): {fix}.")


def check_folder_path(path: str | os.PathLike, *, option: str = "--out") -> None:
    """Refuse a ``path`` that must be a folder but is an existing file (one line naming the
    file and another path to give instead: ``<path without its suffix>-out``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        other = path.with_name(f"{path.stem or path.name}-out")
        raise UnsafeDeleteError(f"{option} {path} is a file, but {option} must be a folder (the command writes "
                                f"several files into it); the file is untouched; give a folder path instead, "
                                f"e.g. {option} {other}.")


#: a temporary sibling of :func:`replace_folder`: ``.NAME.new-PID-HEX8`` (being written) or
#: ``.NAME.old-PID-HEX8`` (the previous folder, set aside)
_STAGED = re.compile(r"^\.(?P<name>.+)\.(?P<state>new|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (another user's process counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_staged(parent: str | os.PathLike) -> int:
    """Remove the temporary siblings (:func:`replace_folder`) that finished processes left in
    ``parent``; a previous folder set aside whose replacement never arrived (killed between the
    two renames) is renamed back. Those of running processes are left alone. Returns how many
    were handled."""
    parent = Path(parent)
    if not parent.is_dir():
        return 0
    done = 0
    for entry in sorted(parent.iterdir(), key=lambda e: e.name):
        m = _STAGED.match(entry.name)
        if m is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or process_alive(pid):
            continue
        final = parent / m["name"]
        if m["state"] == "old" and not os.path.lexists(final):
            os.rename(entry, final)  # complete: it was only set aside
        else:
            shutil.rmtree(entry, ignore_errors=True)
        done += 1
    return done


def _swap_in(new: Path, final: Path, aside: Path) -> None:
    """Rename ``new`` to ``final``; a ``final`` already there is renamed to ``aside`` first (and
    put back if the second rename fails), then removed."""
    if not os.path.lexists(final):
        os.rename(new, final)
        return
    check_no_link(final)
    if not final.is_dir():
        raise UnsafeDeleteError(f"{final} is a file, not a folder; it was left as it is: move it away or choose "
                                "another folder.")
    os.rename(final, aside)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def replace_folder(final: str | os.PathLike, *, what: str | None = None) -> Iterator[Path]:
    """Write the folder ``final`` as one unit (see the module docstring): yields an empty
    temporary sibling to write into; when the block ends it takes the place of ``final``.
    If the block (or the swap) fails, the temporary folder is removed and ``final`` is
    unchanged. ``what`` (``"the export /x/ex1"``): a full disk, an exceeded quota, a
    read-only folder or a denied permission becomes a one-line
    :class:`~jsae.errors.StorageError` naming it and saying that ``final`` is unchanged. The
    caller checks ``final`` first (:func:`check_deletable`: it is what the command made, no
    link, no protected folder or mount point)."""
    final = Path(final)
    kept = f"{final} is unchanged" if os.path.lexists(final) else f"nothing was written to {final}"
    with writing_to(what or str(final), kept=f"{kept} (the new folder is written aside and takes its place only "
                                              "when complete)"):
        parent = final.parent
        parent.mkdir(parents=True, exist_ok=True)
        clean_staged(parent)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        new = parent / f".{final.name}.new-{tag}"
        try:
            os.mkdir(new)
            yield new
            _swap_in(new, final, parent / f".{final.name}.old-{tag}")
        except BaseException as err:
            shutil.rmtree(new, ignore_errors=True)
            if isinstance(err, OSError) and isinstance(err.filename, str) and err.filename.startswith(str(new)):
                err.filename = None  # the message names what was written (``what``), not a removed temporary file
            raise
