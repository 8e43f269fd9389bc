"""How the CPU kernel library is compiled: one recipe for ``pip install`` and for rebuilds.

The library is ``cpu_kernels.cc`` (plus ``march_tag.cc``, which records the ``-march``
it was built with as the C string ``JsaeKernelsMarch``) compiled against XLA's FFI
headers, which JAX ships (``jax.ffi.include_dir()``), by the C++ compiler Debian
provides (``g++``, package ``g++``; another one with ``CXX=...``).

Which instruction sets: a wheel may run on another CPU than the one that built it, so
nothing is built for the building CPU unless asked. On x86-64 two libraries are built
(measured: benchmarks/kernel_march.py, the AVX2/FMA code paths make the kernels
several times faster than the SSE4.2 baseline):

* ``_jsae_cpu<EXT_SUFFIX>`` with ``-march=x86-64-v2`` (SSE4.2, POPCNT: any x86-64 CPU
  since 2009), the baseline that always loads;
* ``_jsae_cpu_v3<EXT_SUFFIX>`` with ``-march=x86-64-v3`` (AVX2, FMA, BMI1/2, F16C,
  LZCNT, MOVBE: Intel Haswell and AMD Excavator onwards), loaded instead where the CPU
  has every one of those features (:func:`choose_variant` on ``/proc/cpuinfo``'s flags).

Elsewhere (aarch64, …) one library with the compiler's default target. ``-march=X``
for one library built for X only on request: ``JSAE_KERNELS_MARCH=native pip install
-e .`` or ``python -m jsae.kernels build --march native`` (the library then runs only
on CPUs with the features of X; ``_jsae_cpu_v3`` is left empty, and the loader uses the
one library). ``-frecord-gcc-switches`` keeps the full compiler options in the
library's ``.GCC.command.line`` section (``readelf -p .GCC.command.line``).

This module imports nothing from jsae and only ``jax.ffi`` from JAX (inside
:func:`compile_command`), so ``setup.py`` can load it by path while the package is
being built.
"""
from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SOURCE", "TAG_SOURCE", "LIBRARY_STEM", "ENV_MARCH", "Variant", "X86_64_V2", "X86_64_V3", "machine",
           "variants", "requested_march", "build_plan", "library_path", "compile_command", "compile_library",
           "write_placeholder", "build_all", "cpu_flags", "choose_variant"]

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
TAG_SOURCE = Path(__file__).with_name("march_tag.cc")
LIBRARY_STEM = "_jsae_cpu"
#: ``JSAE_KERNELS_MARCH=native`` (or any ``-march`` value): build one library for that target only
ENV_MARCH = "JSAE_KERNELS_MARCH"
_ENV_MARCH_OLD = "JSAE_KERNEL_MARCH"  # the earlier spelling, still read

#: the x86-64 micro-architecture levels (x86-64 psABI) as Linux's /proc/cpuinfo names their
#: features: ``pni`` is SSE3, ``lahf_lm`` LAHF/SAHF in 64-bit mode, ``abm`` LZCNT; OSXSAVE is
#: not listed, but Linux lists ``avx`` only where the OS saves the AVX state (XSAVE enabled).
X86_64_V2 = frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"})
X86_64_V3 = X86_64_V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}


@dataclass(frozen=True)
class Variant:
    """One library: ``name`` (``v2``, ``v3``, ``default``, or the requested ``-march``), the
    ``-march`` it is compiled with (``None``: the compiler's default), its file-name suffix
    after ``_jsae_cpu`` and the /proc/cpuinfo flags a CPU needs to run it."""

    name: str
    march: str | None
    suffix: str
    requires: frozenset[str] = frozenset()


_X86 = (Variant("v2", "x86-64-v2", "", X86_64_V2), Variant("v3", "x86-64-v3", "_v3", X86_64_V3))
_OTHER = (Variant("default", None, ""),)


def machine() -> str:
    """This interpreter's CPU architecture, normalised (``x86_64``, ``aarch64``, …)."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(m, m)


def variants(arch: str | None = None) -> tuple[Variant, ...]:
    """The library slots of ``arch`` (default: this machine), baseline first."""
    return _X86 if (arch or machine()) == "x86_64" else _OTHER


def requested_march(march: str | None = None) -> str | None:
    """The ``-march`` asked for (argument, else ``JSAE_KERNELS_MARCH``), ``None`` for the default plan."""
    march = march or os.environ.get(ENV_MARCH) or os.environ.get(_ENV_MARCH_OLD) or None
    return march.strip() if march and march.strip() not in ("", "default", "portable") else None


def build_plan(march: str | None = None, arch: str | None = None) -> dict[str, Variant | None]:
    """Library suffix → the :class:`Variant` built there (``None``: left empty).

    By default every slot of :func:`variants`; with ``march`` (or ``JSAE_KERNELS_MARCH``)
    the baseline slot built for that target and the others empty.
    """
    slots = variants(arch)
    march = requested_march(march)
    if march is None:
        return {v.suffix: v for v in slots}
    return {v.suffix: (Variant(march, march, v.suffix) if v is slots[0] else None) for v in slots}


def library_path(directory: str | Path | None = None, suffix: str = "") -> Path:
    """Where a library lives: ``jsae/kernels/_jsae_cpu<suffix><EXT_SUFFIX>``."""
    ext = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return Path(directory or SOURCE.parent) / f"{LIBRARY_STEM}{suffix}{ext}"


def _compiler() -> str:
    cxx = os.environ.get("CXX")
    if cxx:
        return cxx
    for name in ("g++", "c++", "clang++"):
        if shutil.which(name):
            return name
    raise RuntimeError("no C++ compiler found (install Debian's g++: `apt-get install g++`, or set CXX)")


def compile_command(out: str | Path, march: str | None) -> list[str]:
    """The compiler command line that builds the library at ``out`` with ``-march=<march>``
    (``None``: the compiler's default target, no ``-march`` flag)."""
    import jax.ffi

    target = [f"-march={march}"] if march else []
    return [_compiler(), "-O3", *target, "-std=c++17", "-fPIC", "-shared", "-pthread", "-frecord-gcc-switches",
            f'-DJSAE_MARCH="{march or "default"}"', f"-isystem{jax.ffi.include_dir()}", str(SOURCE), str(TAG_SOURCE),
            "-o", str(out)]


def compile_library(out: str | Path, *, march: str | None, verbose: bool = False) -> Path:
    """Compile the library to ``out`` for ``-march=<march>``, atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = compile_command(tmp, march)
    if verbose:
        print(shlex.join(cmd), file=sys.stderr)
    try:
        subprocess.run(cmd, check=True, capture_output=not verbose, text=True)
    except subprocess.CalledProcessError as err:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {SOURCE.name} for -march={march} failed:\n{err.stderr}") from err
    os.replace(tmp, out)
    return out


def write_placeholder(out: str | Path) -> Path:
    """An empty file where a library is not built (setuptools copies every slot; the loader skips empty ones)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"")
    return out


def build_all(directory: str | Path | None = None, *, march: str | None = None, verbose: bool = False) -> list[Path]:
    """Build every slot of :func:`build_plan` into ``directory`` (default: next to the source).

    Returns the libraries built; slots the plan leaves out are emptied (so a library of
    an earlier build cannot be loaded instead of the one asked for).
    """
    built = []
    for suffix, variant in build_plan(march).items():
        out = library_path(directory, suffix)
        if variant is None:
            write_placeholder(out)
        else:
            built.append(compile_library(out, march=variant.march, verbose=verbose))
    return built


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags every processor of a ``/proc/cpuinfo`` text lists (x86: ``flags``, arm: ``Features``)."""
    sets = [frozenset(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines()
            if ":" in line and line.split(":", 1)[0].strip() in ("flags", "Features")]
    return frozenset.intersection(*sets) if sets else frozenset()


def choose_variant(flags: frozenset[str] | set[str], arch: str | None = None) -> Variant:
    """The fastest slot of :func:`variants` whose every required flag is in ``flags`` (else the baseline)."""
    slots = variants(arch)
    return next((v for v in reversed(slots) if v.requires <= set(flags)), slots[0])
