"""One base class for every error jsae raises on purpose.

A :class:`JsaeError` is a problem with the user's input, files or environment
(a bad config value, a store that is not a store, a checkpoint that fails its
checksum, …). Its message is one line that names the offending value and the fix;
the ``jsae`` CLI prints it as ``jsae: error: …`` and exits non-zero. Anything that
is *not* a JsaeError is a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["JsaeError"]


class JsaeError(Exception):
    """Base class of jsae's deliberate errors; the message says what was wrong and how to fix it."""
