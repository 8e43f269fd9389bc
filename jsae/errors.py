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

import sys
from typing import TextIO

__all__ = ["JsaeError", "BadValueError", "NotFoundError", "OutOfRangeError", "MissingPathError",
           "one_line", "print_error", "EXIT_ERROR"]

#: exit status of a CLI that stops on a :class:`JsaeError`
EXIT_ERROR = 2


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
