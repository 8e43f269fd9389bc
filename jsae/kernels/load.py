"""Finding, choosing, loading and registering the CPU kernel library (``_jsae_cpu*.so``) with XLA.

:func:`available` answers whether the kernels can be used *now*: it reads
``JSAE_KERNELS`` on every call (``0`` disables them, e.g. in a test that sets the
variable), while the library itself is loaded and its FFI targets registered at most
once per process (XLA keeps registrations for the life of the process).

Which library: the baseline ``_jsae_cpu<EXT>`` says which ``-march`` it was built for
(``JsaeKernelsMarch``). When it is the portable baseline (x86-64-v2), the fastest
variant this CPU runs (:func:`jsae.kernels.build.choose_variant` on ``/proc/cpuinfo``)
is loaded instead: ``_jsae_cpu_v3<EXT>`` on a CPU with every x86-64-v3 feature. If
that library is missing or does not load, the baseline is used with one warning; on a
CPU without those features the baseline is simply the right one (no warning). A
library built for a requested target (``JSAE_KERNELS_MARCH=native``) is used as it is.
``JSAE_KERNELS_VARIANT=baseline`` (read once, at the first load) keeps the baseline.
``python -m jsae.kernels status`` says which variant is loaded.
"""
from __future__ import annotations

import ctypes
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import jax

from .build import choose_variant, cpu_flags, library_path, variants

__all__ = ["TARGETS", "ENV_DISABLE", "ENV_VARIANT", "Loaded", "available", "load_error", "on_cpu",
           "library_status", "loaded_variant", "this_cpu_flags"]

#: FFI target name → symbol exported by ``cpu_kernels.cc``
TARGETS = {"jsae_topk": "JsaeTopk", "jsae_topk_masked": "JsaeTopkMasked", "jsae_sparse_decode": "JsaeSparseDecode",
           "jsae_gather_dot": "JsaeGatherDot", "jsae_scatter_outer": "JsaeScatterOuter",
           "jsae_decoder_backward": "JsaeDecoderBackward"}
#: ``JSAE_KERNELS=0`` disables the kernels (everything falls back to XLA)
ENV_DISABLE = "JSAE_KERNELS"
#: ``JSAE_KERNELS_VARIANT=baseline`` loads the portable baseline even where a faster variant would run
ENV_VARIANT = "JSAE_KERNELS_VARIANT"
_VARIANT_CHOICES = ("auto", "baseline")


@dataclass(frozen=True)
class Loaded:
    """The library registered with XLA: its file, the ``-march`` it was built for, and
    why it is not the fastest variant for this CPU (``None`` when it is)."""

    path: Path
    march: str
    note: str | None = None


_lock = threading.Lock()
_loaded: dict[Path, Loaded | str] = {}  # baseline path → what was registered, or why nothing could be


def this_cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none: the baseline is used)."""
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return frozenset()


def _open(path: Path) -> tuple[ctypes.CDLL, str]:
    """dlopen ``path``; its ``-march`` tag (``unknown`` for a library built before the tag existed)."""
    if not path.exists() or path.stat().st_size == 0:
        raise OSError("not built")
    lib = ctypes.cdll.LoadLibrary(str(path))
    try:
        tag = ctypes.c_char.in_dll(lib, "JsaeKernelsMarch")
    except ValueError:
        return lib, "unknown"
    return lib, (ctypes.cast(ctypes.addressof(tag), ctypes.c_char_p).value or b"").decode()


def _choose(base: Path, lib: ctypes.CDLL, march: str) -> tuple[Path, ctypes.CDLL, str, str | None]:
    """The library to register: a faster variant next to the baseline where this CPU runs it."""
    baseline = variants()[0]
    mode = os.environ.get(ENV_VARIANT, "auto").strip().lower() or "auto"
    if march != (baseline.march or "default"):
        return base, lib, march, None  # built for a requested target: used as it is
    if mode == "baseline":
        return base, lib, march, f"{ENV_VARIANT}=baseline"
    best = choose_variant(this_cpu_flags())
    if best is baseline:
        return base, lib, march, None
    path = library_path(base.parent, best.suffix)
    try:
        fast, fast_march = _open(path)
    except OSError as err:
        note = (f"{path.name} (-march={best.march}) could not be loaded ({err}); using the -march={baseline.march} "
                "baseline, which is slower on this CPU (rebuild with `python -m jsae.kernels build`)")
        warnings.warn(f"jsae CPU kernels: {note}", RuntimeWarning, stacklevel=5)
        return base, lib, march, note
    return path, fast, fast_march, None


def _load(path: Path) -> str | None:
    """Load the baseline ``path`` (or the variant chosen next to it) and register its
    targets once; ``None`` on success, else the reason."""
    with _lock:
        if path in _loaded:
            state = _loaded[path]
            return state if isinstance(state, str) else None
        mode = os.environ.get(ENV_VARIANT, "auto").strip().lower() or "auto"
        if mode not in _VARIANT_CHOICES:
            return f"{ENV_VARIANT}={mode!r} is not one of {', '.join(_VARIANT_CHOICES)}; unset it or set it to one"
        if not path.exists() or path.stat().st_size == 0:
            return (f"{path.name} is not built (reinstall with `pip install -e .` where a C++ compiler is present, "
                    "or run `python -m jsae.kernels build`)")  # not cached: a library built later is picked up
        try:
            lib, march = _open(path)
            chosen, lib, march, note = _choose(path, lib, march)
            for target, symbol in TARGETS.items():
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        except (OSError, AttributeError) as err:
            why = f"{path.name} could not be loaded ({err}); rebuild it with `python -m jsae.kernels build`"
            _loaded[path] = why
            return why
        _loaded[path] = Loaded(chosen, march, note)
        return None


def library_status() -> str | None:
    """Why the kernels cannot be used now (``None``: they can)."""
    if os.environ.get(ENV_DISABLE, "1") == "0":
        return f"disabled by {ENV_DISABLE}=0"
    return _load(library_path())


def available() -> bool:
    """Whether the kernel library is built, loaded, registered with XLA and not disabled."""
    return library_status() is None


def load_error() -> str | None:
    """Why :func:`available` is False (``None`` when the kernels are usable)."""
    return library_status()


def loaded_variant() -> Loaded | None:
    """The library registered in this process (loading it if need be); ``None`` if none loads."""
    path = library_path()
    _load(path)
    state = _loaded.get(path)
    return state if isinstance(state, Loaded) else None


def on_cpu() -> bool:
    """True when JAX's default backend is the CPU (where these kernels run)."""
    return jax.default_backend() == "cpu"
