"""Finding, loading and registering the CPU kernel library (``_jsae_cpu*.so``) with XLA.

:func:`available` answers whether the kernels can be used *now*: it reads
``JSAE_KERNELS`` on every call (``0`` disables them, e.g. in a test that sets the
variable), while the library itself is loaded and its FFI targets registered at most
once per process (XLA keeps registrations for the life of the process).
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import jax

from .build import library_path

__all__ = ["TARGETS", "ENV_DISABLE", "available", "load_error", "on_cpu", "library_status"]

#: FFI target name → symbol exported by ``cpu_kernels.cc``
TARGETS = {"jsae_topk": "JsaeTopk", "jsae_topk_masked": "JsaeTopkMasked", "jsae_sparse_decode": "JsaeSparseDecode",
           "jsae_gather_dot": "JsaeGatherDot", "jsae_scatter_outer": "JsaeScatterOuter",
           "jsae_decoder_backward": "JsaeDecoderBackward"}
#: ``JSAE_KERNELS=0`` disables the kernels (everything falls back to XLA)
ENV_DISABLE = "JSAE_KERNELS"

_lock = threading.Lock()
_loaded: dict[Path, str | None] = {}  # library path → None (registered) or why it could not be


def _load(path: Path) -> str | None:
    """Load ``path`` and register its targets once; ``None`` on success, else the reason."""
    with _lock:
        if path in _loaded:
            return _loaded[path]
        if not path.exists() or path.stat().st_size == 0:
            why = (f"{path.name} is not built (reinstall with `pip install -e .` where a C++ compiler is present, "
                   "or run `python -m jsae.kernels build`)")
        else:
            try:
                lib = ctypes.cdll.LoadLibrary(str(path))
                for target, symbol in TARGETS.items():
                    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
                why = None
            except (OSError, AttributeError) as err:
                why = f"{path.name} could not be loaded ({err}); rebuild it with `python -m jsae.kernels build`"
        if why is not None and not path.exists():
            return why  # not cached: a library built later in this process is picked up
        _loaded[path] = why
        return why


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


def on_cpu() -> bool:
    """True when JAX's default backend is the CPU (where these kernels run)."""
    return jax.default_backend() == "cpu"
