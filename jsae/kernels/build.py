"""How the CPU kernel library is compiled: one recipe for ``pip install`` and for rebuilds.

The library is ``cpu_kernels.cc`` compiled against XLA's FFI headers, which JAX ships
(``jax.ffi.include_dir()``), by the C++ compiler Debian provides (``g++``, package
``g++``; another one with ``CXX=...``). ``-march=native``: it is built on the machine
that runs it (at install time), so it uses that CPU's vector units (AVX2/FMA here).

This module imports nothing from jsae and only ``jax.ffi`` from JAX, so ``setup.py``
can load it by path while the package is being built.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

__all__ = ["SOURCE", "LIBRARY_STEM", "library_path", "compile_command", "compile_library"]

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
LIBRARY_STEM = "_jsae_cpu"


def library_path(directory: str | Path | None = None) -> Path:
    """Where the compiled library lives: ``jsae/kernels/_jsae_cpu<EXT_SUFFIX>``."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return Path(directory or SOURCE.parent) / f"{LIBRARY_STEM}{suffix}"


def _compiler() -> str:
    cxx = os.environ.get("CXX")
    if cxx:
        return cxx
    for name in ("g++", "c++", "clang++"):
        if shutil.which(name):
            return name
    raise RuntimeError("no C++ compiler found (install Debian's g++: `apt-get install g++`, or set CXX)")


def compile_command(out: str | Path) -> list[str]:
    """The compiler command line that builds the library at ``out``."""
    import jax.ffi

    march = os.environ.get("JSAE_KERNEL_MARCH", "native")
    return [_compiler(), "-O3", f"-march={march}", "-std=c++17", "-fPIC", "-shared", "-pthread",
            f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(out)]


def compile_library(out: str | Path | None = None, *, verbose: bool = False) -> Path:
    """Compile ``cpu_kernels.cc`` to ``out`` (default: :func:`library_path`), atomically."""
    out = Path(out) if out is not None else library_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = compile_command(tmp)
    if verbose:
        print(" ".join(cmd), file=sys.stderr)
    try:
        subprocess.run(cmd, check=True, capture_output=not verbose, text=True)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{err.stderr}") from err
    os.replace(tmp, out)
    return out
