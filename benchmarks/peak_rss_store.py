"""Peak resident memory of writing a store: ``jsae store synth`` and ``jsae store import`` (of a
``.npy`` file), at each of ``--rows`` rows × ``--dim``, against the size of the rows (float32).

Every case runs as its own process, started through a small measuring process (a child's
``ru_maxrss`` begins at the memory of the process that started it, so the measurer must be
small); the ``.npy`` inputs are written by another process, a block at a time. Baselines,
measured in the same run: the memory of a process that only imports ``jsae.store`` (Python and
the libraries), and each command at 1 000 rows (what it loads besides the rows: pyarrow's
parquet writer, the tensorstore driver). Reported per case: the peak, the rows' size, the ratio
peak / rows and (peak - the 1 000-row run) / rows: the part that grows with the data.

    python benchmarks/peak_rss_store.py                          # 1 M and 4 M rows × 192
    python benchmarks/peak_rss_store.py --rows 200000 --json out.json

The stores and inputs live in ``--workdir`` (default: a temporary folder, removed at the end);
each store is removed after its case. 4 M × 192 rows are 3.1 GB as float32: the import case
needs about twice that on disk (the ``.npy`` and the store).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: runs argv[1:] and prints its peak resident memory (kB, Linux) and its wall seconds
_MEASURE = """
import os, subprocess, sys, time
t0 = time.time()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
code = os.waitstatus_to_exitcode(status)
print(usage.ru_maxrss, time.time() - t0)
sys.exit(code)
"""

#: writes rows × dim float32 standard normals to a .npy file, 65 536 rows at a time (no memory map)
_WRITE_NPY = """
import sys
import numpy as np
path, rows, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    for start in range(0, rows, 65536):
        rng.standard_normal((min(65536, rows - start), dim), dtype=np.float32).tofile(f)
"""


def measure(argv: list[str]) -> tuple[int, float]:
    """``(peak resident bytes, wall seconds)`` of one process running ``argv`` (from the checkout)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *argv], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    kb, seconds = proc.stdout.split()[-2:]
    return int(kb) * 1024, float(seconds)


def jsae(*args: str) -> list[str]:
    return [sys.executable, "-m", "jsae.sweeps", *args]


def run_case(kind: str, rows: int, dim: int, work: Path) -> dict:
    """One ``synth`` or ``import`` case; its store (and input) are removed afterwards."""
    out = work / f"{kind}-{rows}"
    npy = work / f"x-{rows}.npy"
    if kind == "synth":
        argv = jsae("store", "synth", "--rows", str(rows), "--dim", str(dim), "--out", str(out))
    else:
        subprocess.run([sys.executable, "-c", _WRITE_NPY, str(npy), str(rows), str(dim)], check=True)
        argv = jsae("store", "import", str(npy), "--out", str(out))
    try:
        peak, seconds = measure(argv)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        npy.unlink(missing_ok=True)
    return {"case": kind, "rows": rows, "dim": dim, "rows_bytes": rows * dim * 4, "peak_bytes": peak,
            "seconds": round(seconds, 1)}


def table(results: list[dict], imports: int, small: dict[str, int]) -> str:
    mb = 1e6
    lines = [f"baseline: a process importing jsae.store {imports / mb:.0f} MB; "
             + ", ".join(f"`jsae store {k}` of 1 000 rows {v / mb:.0f} MB" for k, v in small.items()), "",
             "| case | rows × dim | rows (MB) | peak RSS (MB) | peak / rows | (peak − 1 000-row run) / rows | s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        rows_mb, peak = r["rows_bytes"] / mb, r["peak_bytes"] / mb
        grown = (r["peak_bytes"] - small[r["case"]]) / r["rows_bytes"]
        lines.append(f"| {r['case']} | {r['rows']:,} × {r['dim']} | {rows_mb:,.0f} | {peak:,.0f} | "
                     f"{r['peak_bytes'] / r['rows_bytes']:.2f} | {grown:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000], help="row counts to measure")
    p.add_argument("--dim", type=int, default=192, help="embedding dimension")
    p.add_argument("--cases", nargs="+", choices=("synth", "import"), default=["synth", "import"])
    p.add_argument("--workdir", type=Path, help="folder for the stores and inputs (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        raise SystemExit("ru_maxrss is read in kilobytes, as Linux reports it")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="jsae-peak-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        imports, _ = measure([sys.executable, "-c", "import jsae.store"])
        small = {kind: run_case(kind, 1000, args.dim, work)["peak_bytes"] for kind in args.cases}
        results = [run_case(kind, rows, args.dim, work) for rows in args.rows for kind in args.cases]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"# peak RSS of store writes ({platform.node()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')})\n")
    print(table(results, imports, small))
    if args.json:
        args.json.write_text(json.dumps({"imports_bytes": imports, "small_run_bytes": small, "results": results},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
