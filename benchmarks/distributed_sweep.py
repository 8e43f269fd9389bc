"""The paper grid on a paper-sized store, as one process and as 2 and 4 local processes (``jsae launch``).

A synthetic ``--rows × --dim`` store (1.1 M × 192 by default, the paper's 1.1 M segments),
streamed (``data.stream=true``: every process reads the same batches from the store); the
paper grid (84 TopK models, batch 4096). For each process count N, ``jsae launch -n N``
runs this file's child, which trains ``--steps`` steps (``--steps-per-call`` per host call)
and records, per process, the wall time of every host call and its peak resident memory.
One step's time is the median host call after the first (which compiles) divided by the
steps per call; an epoch is ``rows × (1 − val_fraction) / batch`` steps, projected from
that. All runs are in one invocation, so the ratios compare like with like on a shared
machine. Each process drives ``--devices-per-process`` CPU devices (default 1).

    python benchmarks/distributed_sweep.py                       # 1.1 M rows, 1 / 2 / 4 processes
    python benchmarks/distributed_sweep.py --rows 200000 --steps 6 --processes 1 2

On one machine the processes share its cores, so this measures what sharding the grid costs
(collectives, per-process memory), not the speed-up of more machines.
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


def _child(args: argparse.Namespace) -> None:
    from jsae.cluster import initialize, process_index
    from jsae.config import load_config
    from jsae.resources import config_path
    from jsae.rss import proc_status
    import jsae.training.loop as loop

    initialize()
    calls: list[float] = []
    plain = loop.record_history

    def timed(history, grid):  # the sweep's own history hook, plus each host call's wall time
        hook = plain(history, grid)

        def both(call):
            calls.append(call.seconds)
            hook(call)
        return both

    loop.record_history = timed
    cfg = load_config(config_path("paper_grid"), [
        f"data.store={args.store}", "data.stream=true", f"train.steps={args.steps}",
        f"train.steps_per_call={args.steps_per_call}", f"train.checkpoint_every={args.steps}",
        "train.progress=false", "sae.b_pre_init=mean"])
    t0 = time.perf_counter()
    loop.train_sweep(cfg, args.run)
    out = {"process": process_index(), "calls": calls, "seconds": time.perf_counter() - t0,
           "peak_rss": proc_status("VmHWM")}
    Path(args.report).with_suffix(f".{process_index()}.json").write_text(json.dumps(out))


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_100_000)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--steps", type=int, default=9, help="steps per run (the first host call compiles)")
    p.add_argument("--steps-per-call", type=int, default=3)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--devices-per-process", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="folder for the store and runs (default: a temp dir)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)

    work = args.work or Path(tempfile.mkdtemp(prefix="jsae-dist-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    if not (store / "store.json").exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jsae.sweeps", "store", "synth", "--out", str(store), "--rows",
                        str(args.rows), "--dim", str(args.dim)], env=_env(1), check=True, stdout=subprocess.DEVNULL)
        print(f"store {args.rows} × {args.dim}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for n in args.processes:
        run = work / f"run-{n}"
        shutil.rmtree(run, ignore_errors=True)
        report = work / f"report-{n}"
        child = [sys.executable, str(Path(__file__).resolve()), "--child", "--store", str(store), "--run", str(run),
                 "--report", str(report), "--steps", str(args.steps), "--steps-per-call", str(args.steps_per_call)]
        cmd = [sys.executable, "-m", "jsae.sweeps", "launch", "-n", str(n), "--devices-per-process",
               str(args.devices_per_process), "--", *child]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=_env(args.devices_per_process), check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        per = [json.loads(report.with_suffix(f".{i}.json").read_text()) for i in range(n)]
        steady = sorted(c for c in per[0]["calls"][1:]) or per[0]["calls"]
        step = steady[len(steady) // 2] / args.steps_per_call
        epoch_steps = int(args.rows * 0.95) // 4096
        rows.append({"processes": n, "devices": n * args.devices_per_process, "step_s": step,
                     "epoch_projection_s": step * epoch_steps, "wall_s": wall,
                     "peak_rss_per_process": [q["peak_rss"] for q in per]})
        peaks = ", ".join(f"{q['peak_rss'] / 2**30:.2f}" for q in per)
        print(f"{n} process(es): {step:.2f} s/step (epoch of {epoch_steps} steps ≈ {step * epoch_steps / 60:.0f} min); "
              f"peak RSS per process {peaks} GiB; wall {wall:.0f} s", flush=True)
    base = rows[0]["step_s"]
    for r in rows:
        r["step_ratio_vs_first"] = r["step_s"] / base
    print(json.dumps(rows, indent=1))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
