"""Builds jsae's CPU kernel library (jsae/kernels/cpu_kernels.cc) at install time.

Everything else about the package is in pyproject.toml. The compile recipe lives in
jsae/kernels/build.py (loaded by path: the package is not importable yet). Without a
C++ compiler the install still succeeds; jsae then warns once and trains on XLA's
slower top_k and dense path (`python -m jsae.kernels build` builds the library later).
"""
import runpy
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


class BuildKernels(build_ext):
    """Compiles the kernel library with jsae's own recipe (a plain shared library for ctypes)."""

    def build_extension(self, ext):
        recipe = runpy.run_path(str(HERE / "jsae" / "kernels" / "build.py"))
        out = Path(self.get_ext_fullpath(ext.name))
        try:
            recipe["compile_library"](out)
        except Exception as err:  # no compiler, no jax headers: install anyway, warn at run time
            print(f"warning: jsae CPU kernels not built ({err}); training falls back to XLA's top_k",
                  file=sys.stderr)
            # An empty placeholder keeps setuptools' copy steps happy; jsae ignores it when it won't load.
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"")


setup(
    ext_modules=[Extension("jsae.kernels._jsae_cpu", sources=["jsae/kernels/cpu_kernels.cc"])],
    cmdclass={"build_ext": BuildKernels},
)
