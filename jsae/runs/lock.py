"""One writer per run directory: an exclusive ``fcntl.flock`` on ``RUN/.lock``.

The kernel releases the lock when the process dies, so a killed sweep never leaves a
stale lock behind; the file holds the pid of the holder, for the refusal message.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from ..errors import JsaeError
from .layout import LOCK_NAME

__all__ = ["RunLockedError", "run_lock", "lock_holder", "locked_error"]


class RunLockedError(JsaeError):
    """Another process holds the run directory's lock (a second sweep on one ``--out``)."""


def locked_error(run_dir: Path, holder: str) -> RunLockedError:
    return RunLockedError(f"another sweep (pid {holder}) is writing to {run_dir}; wait for it to finish (then this "
                          "command resumes or completes the run), or give a different --out.")


@contextlib.contextmanager
def run_lock(run_dir: str | Path):
    """Hold ``RUN_DIR/.lock`` (exclusive) for the ``with`` block; a second holder is refused
    at once with :class:`RunLockedError` naming the pid written in the file."""
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise locked_error(Path(run_dir), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def lock_holder(run_dir: Path) -> str | None:
    """The pid in ``RUN_DIR/.lock`` if another process holds that lock, else None; the
    file is only read (never created or written: the folder may be the user's)."""
    path = Path(run_dir) / LOCK_NAME
    if path.is_symlink() or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        return None
    finally:
        os.close(fd)  # releases a shared lock taken above
