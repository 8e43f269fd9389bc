"""This process's resident memory as Linux reports it (``/proc/self/status``), for the benchmarks
and tests that measure peaks in a child process. Standard library only (no JAX, no numpy), so
importing it adds nothing to what those processes measure.

    from jsae.rss import proc_status
    proc_status("VmRSS")   # resident now, bytes
    proc_status("VmHWM")   # peak resident (high-water mark) since start, or since the peak was
                           # reset by writing "5" to /proc/self/clear_refs
"""
from __future__ import annotations

__all__ = ["proc_status"]


def proc_status(field: str) -> int | None:
    """The ``field`` line of ``/proc/self/status`` (a kB value such as ``VmRSS`` or ``VmHWM``)
    in bytes; None when the file has no such line."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None
