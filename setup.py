"""Builds jsae's CPU kernel libraries (jsae/kernels/cpu_kernels.cc) at install time, and
puts the bundled configs and demo data into the wheel.

Everything else about the package is in pyproject.toml. The compile recipe lives in
jsae/kernels/build.py (loaded by path: the package is not importable yet). Without a
C++ compiler the install still succeeds; jsae then warns once and trains on XLA's
slower top_k and dense path (`python -m jsae.kernels build` builds the library later).
"""
import runpy
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent

# (source under the project root, glob) → jsae/_bundled/<same relative path> in the wheel.
# The top-level configs/ and data/ stay the one source of truth; jsae.resources finds them in
# jsae/_bundled/ when installed from a wheel and in place in a checkout (data/synthetic: the
# store configs/default.yaml names, so `jsae sweep default` runs from any folder).
BUNDLED = (("configs", "*.yaml"), ("data/demo", "**/*"), ("data/synthetic", "**/*"))


class BuildPyWithResources(build_py):
    """build_py, plus a copy of configs/*.yaml, data/demo/** and data/synthetic/** into jsae/_bundled/.

    Why a copy at build time: the repository keeps configs/ and data/ at the top level
    (its layout says so), and package data must lie inside a package to be importable.
    Symlinks would break on checkouts without them (Windows, some archives), a
    package-dir mapping would make configs/ a Python package and needs a data-only
    package per folder of the zarr stores, and [tool.setuptools.data-files] installs
    outside the package where nothing can find it. An editable install (`pip install
    -e .`) skips the copy: jsae.resources reads the checkout in place, so edits to
    configs/ take effect without reinstalling. The sdist carries both folders
    (MANIFEST.in), so a wheel built from it gets the same copy.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest_root = Path(self.build_lib) / "jsae" / "_bundled"
        shutil.rmtree(dest_root, ignore_errors=True)  # no stale files from an earlier build
        for folder, pattern in BUNDLED:
            src = HERE / folder
            files = sorted(p for p in src.glob(pattern) if p.is_file() and "__pycache__" not in p.parts)
            if not files:
                raise RuntimeError(f"{src} has no {pattern} files to bundle; build from a checkout or the sdist")
            for path in files:
                out = dest_root / folder / path.relative_to(src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out)


class BuildKernels(build_ext):
    """Compiles the kernel libraries with jsae's own recipe (plain shared libraries for ctypes).

    One extension per library slot of jsae/kernels/build.py (on x86-64: the x86-64-v2
    baseline and the x86-64-v3 variant, chosen between at load time); a slot the plan
    leaves out (JSAE_KERNELS_MARCH=native builds one library) is an empty placeholder.
    """

    def build_extension(self, ext):
        out = Path(self.get_ext_fullpath(ext.name))
        variant = KERNEL_RECIPE["build_plan"]()[ext.name.removeprefix(KERNEL_STEM)]
        if variant is None:
            KERNEL_RECIPE["write_placeholder"](out)
            return
        try:
            KERNEL_RECIPE["compile_library"](out, march=variant.march)
        except Exception as err:  # no compiler, no jax headers: install anyway, warn at run time
            print(f"warning: jsae CPU kernels ({variant.name}) not built ({err}); training falls back to "
                  "XLA's top_k", file=sys.stderr)
            # An empty placeholder keeps setuptools' copy steps happy; jsae ignores it when it won't load.
            KERNEL_RECIPE["write_placeholder"](out)


# The kernel recipe, loaded by path (the package is not importable yet); one extension per library slot.
KERNEL_RECIPE = runpy.run_path(str(HERE / "jsae" / "kernels" / "build.py"))
KERNEL_STEM = f"jsae.kernels.{KERNEL_RECIPE['LIBRARY_STEM']}"


setup(
    ext_modules=[Extension(f"{KERNEL_STEM}{v.suffix}",
                           sources=["jsae/kernels/cpu_kernels.cc", "jsae/kernels/march_tag.cc"])
                 for v in KERNEL_RECIPE["variants"]()],
    cmdclass={"build_ext": BuildKernels, "build_py": BuildPyWithResources},
)
