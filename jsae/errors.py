"""One base class for every error jsae raises on purpose.

A :class:`JsaeError` is a problem with the user's input, files or environment
(a bad config value, a store that is not a store, a checkpoint that fails its
checksum, …). Its message is one line that names the offending value and the fix;
the ``jsae`` CLI prints it as ``jsae: error: …`` and exits non-zero. Anything that
is *not* a JsaeError is a bug and keeps its traceback.

The subclasses below also derive from the built-in exception the code raised before
(``ValueError``, ``KeyError``, ``IndexError``, ``FileNotFoundError``), so callers that
catch those keep working.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Iterator, TextIO

__all__ = ["JsaeError", "BadValueError", "NotFoundError", "OutOfRangeError", "MissingPathError",
           "Interrupted", "StoppedAtOnce", "StorageError", "storage_problem", "storage_error", "writing_to",
           "signal_exit_status", "one_line", "print_error", "EXIT_ERROR", "EXIT_PEER_LOST"]

#: exit status of a CLI that stops on a :class:`JsaeError`
EXIT_ERROR = 2
#: exit status of one process of a distributed sweep that stopped because another one ended
#: (:class:`jsae.cluster.PeerLostError`): ``jsae launch`` reports the other one, the cause
EXIT_PEER_LOST = 3


def signal_exit_status(signum: int) -> int:
    """``128 + signum``: what a shell reports for a process ended by that signal (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signum)


class JsaeError(Exception):
    """Base class of jsae's deliberate errors; the message says what was wrong and how to fix it."""


class BadValueError(JsaeError, ValueError):
    """A value given by the user (an option, a label value, a mode) is not valid here."""


class NotFoundError(JsaeError, KeyError):
    """Something the user named (a model, a latent size, a column) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutOfRangeError(JsaeError, IndexError):
    """An index the user gave (a latent) is out of range."""


class MissingPathError(JsaeError, FileNotFoundError):
    """A file or folder the user named does not exist or is not what it should be."""

    def __str__(self) -> str:  # FileNotFoundError(msg) prints msg; keep that for one argument
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class Interrupted(JsaeError):
    """A command stopped cleanly on SIGINT / SIGTERM after keeping what it could.

    The message is one line saying what was kept and to run the same command again;
    ``exit_status`` is ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). The CLI prints
    it as ``PROG: MESSAGE`` (no ``error:``) and exits with that status.
    """

    def __init__(self, message: str, exit_status: int = 130):
        super().__init__(message)
        self.exit_status = int(exit_status)


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT / SIGTERM while a command was already stopping: it stops at once,
    keeping only what was saved before (the next run resumes from there).

    A :class:`KeyboardInterrupt`, so that no ``except Exception`` swallows it;
    ``exit_status`` is ``128 + signal``.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped at once by a second signal ({_signal_name(signum)}); only what was saved "
                         "before is kept; run the same command to resume")
        self.signum = int(signum)
        self.exit_status = signal_exit_status(signum)


class StorageError(JsaeError, OSError):
    """Writing failed because of the disk or the file system (full, quota, read-only, no
    permission); the message names what was being written, what is kept and how to finish."""

    def __str__(self) -> str:  # OSError(msg) prints msg; keep that
        return str(self.args[0]) if self.args else ""


#: errno → the one-line words for it and the fix
_STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free space (or choose a folder on a larger disk)"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota (or choose another folder)"),
    errno.EROFS: ("read-only file system", "choose a writable folder"),
    errno.EACCES: ("permission denied", "choose a folder you can write to (or fix its permissions)"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to (or fix its permissions)"),
}
#: how tensorstore / orbax word the same errors (they raise ValueError with this text)
_STORAGE_TEXT = {
    errno.ENOSPC: ("No space left on device", f"os_error_code='{errno.ENOSPC}'", "os_error_code=28"),
    errno.EDQUOT: ("Disk quota exceeded", f"os_error_code='{errno.EDQUOT}'"),
    errno.EROFS: ("Read-only file system", f"os_error_code='{errno.EROFS}'"),
    errno.EACCES: ("Permission denied", f"os_error_code='{errno.EACCES}'"),
}


def storage_problem(err: BaseException | None) -> tuple[int, str | None] | None:
    """``(errno, filename)`` when ``err`` (or an exception it was raised from) is a full disk,
    an exceeded quota, a read-only file system or a denied permission; else ``None``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _STORAGE_ERRNOS:
            return err.errno, err.filename if isinstance(err.filename, str) else None
        text = str(err)
        for code, needles in _STORAGE_TEXT.items():
            if any(n in text for n in needles):
                return code, None
        err = err.__cause__ or err.__context__
    return None


def storage_error(err: BaseException, what: str, kept: str | None = None,
                  finish: str | None = None, *, name_file: bool = True) -> "StorageError | None":
    """A one-line :class:`StorageError` for ``err`` if it is a storage problem (see
    :func:`storage_problem`), else ``None``. ``what``: what was being written (``"the
    report /x/report.html"``); ``kept``: what is unchanged or complete; ``finish``: how to
    finish (default: fix the cause and run the same command again); ``name_file=False``: leave out
    the file the error names (one inside a temporary folder that is removed)."""
    found = storage_problem(err)
    if found is None:
        return None
    code, filename = found
    words, fix = _STORAGE_ERRNOS[code]
    where = f" ({filename})" if name_file and filename and filename not in what else ""
    kept = kept or "files written before are unchanged (every file is replaced only when complete)"
    finish = finish or f"{fix} and run the same command again"
    return StorageError(f"{words} while writing {what}{where}; {kept}; {finish}")


@contextlib.contextmanager
def writing_to(what: str | os.PathLike, kept: str | None = None, finish: str | None = None, *,
               name_file: bool = True) -> Iterator[None]:
    """Run the block; a storage problem inside it (:func:`storage_problem`) becomes a one-line
    :class:`StorageError` ``… while writing <what>; <kept>; <finish>`` (``name_file``: as in
    :func:`storage_error`)."""
    try:
        yield
    except JsaeError:
        raise
    except Exception as err:
        converted = storage_error(err, os.fspath(what), kept, finish, name_file=name_file)
        if converted is None:
            raise
        raise converted from err


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def one_line(message: object) -> str:
    """The message on one line: lines joined by ``; ``, runs of spaces collapsed."""
    lines = [" ".join(line.split()) for line in str(message).splitlines()]
    lines = [line for line in lines if line]
    out = ""
    for line in lines:
        if not out:
            out = line
        elif out.endswith((":", ";", ",")):
            out = f"{out} {line}"
        else:
            out = f"{out}; {line}"
    return out


def print_error(err: BaseException, prog: str = "jsae", file: TextIO | None = None) -> int:
    """Print ``PROG: error: MESSAGE`` as one line on stderr; returns :data:`EXIT_ERROR`."""
    print(f"{prog}: error: {one_line(err)}", file=file or sys.stderr)
    return EXIT_ERROR
