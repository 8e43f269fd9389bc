"""``python -m jsae.kernels [build|status]``: (re)build the CPU kernel library, or say whether it loads."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jsae.kernels", description=__doc__)
    ap.add_argument("command", choices=("build", "status"), nargs="?", default="status")
    args = ap.parse_args(argv)
    if args.command == "build":
        from .build import compile_library

        print(f"built {compile_library(verbose=True)}")
    from .load import available, load_error

    if available():
        print("jsae CPU kernels: loaded")
        return 0
    print(f"jsae CPU kernels: not available: {load_error()}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
