"""``python -m jsae.kernels [build [--march M]|status]``: (re)build the CPU kernel libraries, or say which loads.

``build`` compiles the portable libraries next to the package (on x86-64 the x86-64-v2
baseline and the x86-64-v3 variant); ``--march native`` (or ``JSAE_KERNELS_MARCH``)
builds one library for that target only. ``status`` (the default) loads the library the
loader picks for this CPU and names it, its ``-march`` and this CPU's level.
"""
from __future__ import annotations

import argparse
import sys


def _cpu_level() -> str:
    from .build import choose_variant, machine
    from .load import this_cpu_flags

    flags = this_cpu_flags()
    if not flags:
        return f"{machine()} (no /proc/cpuinfo flags: the baseline is used)"
    best = choose_variant(flags)
    return f"{machine()}, fastest variant it runs: {best.name}" + (f" (-march={best.march})" if best.march else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jsae.kernels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("build", "status"), nargs="?", default="status")
    ap.add_argument("--march", metavar="M",
                    help="build: one library for -march=M only, e.g. native (default: the portable variants, "
                         "or JSAE_KERNELS_MARCH)")
    args = ap.parse_args(argv)
    if args.command == "build":
        from .build import build_all

        for path in build_all(march=args.march, verbose=True):
            print(f"built {path}")
    elif args.march:
        ap.error("--march applies to build only")
    from .load import available, load_error, loaded_variant

    if available():
        lib = loaded_variant()
        print(f"jsae CPU kernels: loaded {lib.path.name} (-march={lib.march}); this CPU: {_cpu_level()}")
        if lib.note:
            print(f"  not the fastest variant: {lib.note}")
        return 0
    print(f"jsae CPU kernels: not available: {load_error()}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
