"""Wall time of `jsae --help` (and `jsae COMMAND --help`): this working tree vs a git revision.

The revision's ``jsae/`` is exported (``git archive``) into a temporary folder; each
measurement is a fresh interpreter running ``jsae.sweeps.cli.main([..., "--help"])``
(what the ``jsae`` script runs) with that folder or this checkout first on ``sys.path``.
The two sides take turns, ``--repeats`` times each; the median is reported and the
ratio of the medians.

    python benchmarks/cli_startup.py                      # vs HEAD, `jsae --help`
    python benchmarks/cli_startup.py --rev c15146b --command probe --repeats 7
"""
from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("import sys; sys.path.insert(0, {root!r}); import jsae; assert jsae.__file__.startswith({root!r}), "
        "jsae.__file__; from jsae.sweeps.cli import main; sys.exit(main({argv!r}))")


def _time(root: Path, argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CODE.format(root=str(root), argv=argv)], check=True,
                   stdout=subprocess.DEVNULL, cwd="/")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD", help="the git revision to compare with")
    ap.add_argument("--command", nargs="*", default=[], help="the command whose --help is timed (default: jsae's)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    argv = [*args.command, "--help"]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.rev, "jsae"], cwd=ROOT, capture_output=True, check=True)
        tarfile.open(fileobj=io.BytesIO(archive.stdout)).extractall(tmp)
        sides = {args.rev: Path(tmp), "working tree": ROOT}
        for root in sides.values():
            _time(root, argv)  # warm the file cache
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, root in sides.items():
                times[name].append(_time(root, argv))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"`jsae {' '.join(argv)}`, median of {args.repeats} fresh interpreters (s):")
    for name, t in times.items():
        print(f"  {name:>14}: {med[name]:.3f}   ({', '.join(f'{x:.2f}' for x in t)})")
    print(f"  ratio {args.rev} / working tree: {med[args.rev] / med['working tree']:.1f}×")


if __name__ == "__main__":
    main()
