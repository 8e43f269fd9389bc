"""Peak resident memory of a short sweep, in memory and streamed, against the bytes of its rows.

For each row count N (``N × --dim`` float32 rows: ``4·N·dim`` bytes), in one run:

* a **baseline** process imports JAX and jsae, opens the store (its metadata table) and
  starts the CPU backend — what every sweep process holds before it reads a row;
* a **sweep** process (the same start, then ``train_sweep``) with ``data.stream=false``
  (every row in memory) and with ``data.stream=true`` (batches read from the store).

Each process reports its own peak resident set (``VmHWM``); the table gives the peaks,
``(sweep − baseline) / row bytes`` and the grid's estimate (:mod:`jsae.training.memory`).
The grid is small (its models take a few MiB), so the ratio is what the rows cost: in memory
the normalised training copy on the device (0.95 of the rows; on a CPU, host RAM) and one
block of reads, the training rows never being held on the host. Processes run one after
another (never two large ones at once). Linux only (``/proc/self/status``).

    python benchmarks/peak_rss_sweep.py                         # 1 M and 4 M rows × 192
    python benchmarks/peak_rss_sweep.py --rows 200000 --work /tmp/peak --keep

The stores are made with ``jsae store synth`` (``--maker synth``) or, with ``--maker blocks``
(the default, a few MiB at a time whatever N), written block by block through
:func:`jsae.store.create_array` / :func:`~jsae.store.write_rows` / :func:`~jsae.store.finalize_store`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: a short sweep on a small grid: the rows, not the models, decide the peak
GRID = ["grid.k=[8,16]", "grid.latent_size=[256,512]", "train.batch_size=1024", "train.steps=20",
        "train.steps_per_call=10", "train.checkpoint_every=20", "train.progress=false", "sae.b_pre_init=mean"]

_CHILD = r"""
import json, sys, time
from jsae.rss import proc_status
mode, run, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
import jax.numpy as jnp
from jsae.config import load_config
from jsae.store import open_store
cfg = load_config(None, overrides)
store = open_store(cfg.data.store)
jnp.zeros(1).block_until_ready()
out = {"start_rss": proc_status("VmRSS")}
if mode == "sweep":
    from jsae.training.data import planned_shape
    from jsae.training.grid import GridTrainer, make_groups
    from jsae.training.loop import train_sweep
    from jsae.training.memory import estimate_memory
    shape = planned_shape(cfg, store=store)
    grid = GridTrainer(make_groups(cfg.grid), shape[2], cfg.sae, cfg.optim, topk_path=cfg.train.topk_path)
    est = estimate_memory(cfg, *shape, groups=grid.groups, sparse=grid.sparse)
    out["estimate"] = est.total
    out["models"] = sum(v for k, v in est.parts().items() if k in ("parameters", "Adam state"))
    del store
    t0 = time.perf_counter()
    train_sweep(cfg, run)
    out["seconds"] = time.perf_counter() - t0
out["peak"] = proc_status("VmHWM")
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def make_store(path: Path, rows: int, dim: int, maker: str, block: int = 65536) -> float:
    """Write a ``rows × dim`` store at ``path`` (kept if it exists); returns the seconds it took."""
    if (path / "store.json").is_file():
        return 0.0
    t0 = time.perf_counter()
    if maker == "synth":
        subprocess.run([sys.executable, "-m", "jsae.sweeps", "store", "synth", "--out", str(path), "--rows", str(rows),
                        "--dim", str(dim), "--overwrite"], env=_env(), check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0
    import numpy as np
    import pandas as pd

    from jsae.store import create_array, finalize_store, write_rows

    path.mkdir(parents=True, exist_ok=True)
    array = create_array(path, rows, dim)
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(dim).astype(np.float32)
    for start in range(0, rows, block):
        n = min(block, rows - start)
        write_rows(array, start, rng.standard_normal((n, dim), dtype=np.float32) + centre)
    finalize_store(path, pd.DataFrame({"id": np.char.add("r", np.arange(rows).astype(str))}),
                   {"encoder": {"name": "benchmark", "dim": dim}})
    return time.perf_counter() - t0


def measure(mode: str, run: Path, overrides: list[str]) -> dict:
    """One child process: ``baseline`` or ``sweep``; its JSON report."""
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(run), *overrides], env=_env(),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} {' '.join(overrides)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000], help="row counts to measure")
    p.add_argument("--dim", type=int, default=192, help="embedding dimension")
    p.add_argument("--maker", choices=("blocks", "synth"), default="blocks", help="how the stores are written")
    p.add_argument("--work", type=Path, default=None, help="folder for the stores and runs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the stores and runs")
    args = p.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="jsae-peak-"))
    work.mkdir(parents=True, exist_ok=True)
    gib = 2**30
    results = []
    try:
        for n in args.rows:
            store = work / f"store-{n}x{args.dim}"
            made = make_store(store, n, args.dim, args.maker)
            rows_bytes = 4 * n * args.dim
            base = measure("baseline", work / "unused", [f"data.store={store}"])
            row = {"rows": n, "dim": args.dim, "row_bytes": rows_bytes, "store_seconds": round(made, 1),
                   "baseline_peak": base["peak"]}
            for stream in (False, True):
                run = work / f"run-{n}-{'stream' if stream else 'memory'}"
                shutil.rmtree(run, ignore_errors=True)
                got = measure("sweep", run, [f"data.store={store}", f"data.stream={str(stream).lower()}", *GRID])
                key = "stream" if stream else "memory"
                row[f"{key}_peak"] = got["peak"]
                row[f"{key}_ratio"] = round((got["peak"] - base["peak"]) / rows_bytes, 2)
                row[f"{key}_estimate"] = got["estimate"]
                row[f"{key}_seconds"] = round(got["seconds"], 1)
                row["models"] = got["models"]
                shutil.rmtree(run, ignore_errors=True)
            results.append(row)
            print(f"{n:>9,} rows × {args.dim} ({rows_bytes / gib:.2f} GiB): baseline {base['peak'] / gib:.2f} GiB; "
                  f"in memory {row['memory_peak'] / gib:.2f} GiB ({row['memory_ratio']:.2f}× the rows above the "
                  f"baseline; estimate {row['memory_estimate'] / gib:.2f} GiB); streamed "
                  f"{row['stream_peak'] / gib:.2f} GiB ({row['stream_ratio']:.2f}×; estimate "
                  f"{row['stream_estimate'] / gib:.2f} GiB); models {row['models'] / 2**20:.1f} MiB", flush=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
