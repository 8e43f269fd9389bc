"""What ``train.log`` costs: the paper grid's step time with no training logs, with TensorBoard
event files and with a W&B run (offline), measured in one invocation.

Every run is a real ``train_sweep`` of ``configs/paper_grid.yaml`` (84 TopK models) on the
synthetic store ``data/synthetic``, ``train.steps_per_call`` as configured, into a fresh run
folder; only ``train.log`` differs between runs, and the variants are interleaved (none,
tensorboard, wandb, none, tensorboard, …) so that a shared machine's drift hits all alike.
The first host call of a run compiles (JAX's persistent compilation cache, in a temporary
folder, makes every later run load the program instead); the timed part is every host call
after it: the wall time between the starts of consecutive calls' hooks (one call's compute plus
the previous call's hooks: history, logs, progress, divergence check), summed and divided by
the steps. The logging hook's own time per call is measured too (directly, not as a
difference of noisy wall times): its share of the step time is the overhead that does not
depend on the machine's noise.

``--batch-size`` (default 256, the config's is 4096) makes a step short, so the fixed
per-call cost of writing the logs weighs more than at the paper's batch: a worst case that
fits into a few minutes on two cores.

    python benchmarks/logging_overhead.py                          # 2 repeats × none/tensorboard/wandb
    python benchmarks/logging_overhead.py --steps 300 --repeats 3 --variants none tensorboard
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(variant: str, work: Path, args: argparse.Namespace, index: int) -> dict:
    import jsae.training.loop as loop
    from jsae.config import load_config
    from jsae.resources import config_path
    from jsae.training.logs import TrainingLogs

    starts: list[float] = []
    hook_seconds: list[float] = []
    plain_history, plain_hook = loop.record_history, TrainingLogs.hook

    def timed_history(history, grid):  # the first hook: when each call's hooks start
        hook = plain_history(history, grid)

        def first(call):
            starts.append(time.perf_counter())
            hook(call)
        return first

    def timed_logs(self, call):
        t0 = time.perf_counter()
        plain_hook(self, call)
        hook_seconds.append(time.perf_counter() - t0)

    spc = load_config(config_path(args.config)).train.steps_per_call
    steps = spc + args.steps  # the first call compiles
    log = "[]" if variant == "none" else f"[{variant}]"
    cfg = load_config(config_path(args.config), [
        f"data.store={ROOT / 'data' / 'synthetic'}", f"train.steps={steps}", f"train.batch_size={args.batch_size}",
        f"train.checkpoint_every={steps}", "train.progress=false", f"train.log={log}"])
    loop.record_history, TrainingLogs.hook = timed_history, timed_logs
    try:
        t0 = time.perf_counter()
        loop.train_sweep(cfg, work / f"run-{index}-{variant}")
        total = time.perf_counter() - t0
    finally:
        loop.record_history, TrainingLogs.hook = plain_history, plain_hook
    timed = starts[-1] - starts[0]  # calls 2 … N and the hooks of calls 1 … N-1
    timed_steps = steps - spc
    logged = sum(hook_seconds[:-1])  # the hooks inside the timed span
    return {"variant": variant, "ms_per_step": 1e3 * timed / timed_steps, "calls": len(starts),
            "log_hook_ms_per_call": 1e3 * logged / max(len(hook_seconds) - 1, 1),
            "log_hook_share": logged / timed, "run_seconds": total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="paper_grid", help="a bundled config name or a YAML file")
    p.add_argument("--steps", type=int, default=150, help="timed steps per run, after the first (compiling) call")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["none", "tensorboard", "wandb"],
                   choices=["none", "tensorboard", "wandb"])
    p.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temp dir)")
    args = p.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="jsae-logs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(work))
    os.environ.setdefault("WANDB_SILENT", "true")
    import jax

    jax.config.update("jax_compilation_cache_dir", str(work / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    rows = []
    for r in range(args.repeats):
        for variant in args.variants:
            row = _run(variant, work, args, r) | {"repeat": r}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}, "
                      f"jax {jax.__version__} {jax.default_backend()}",
           "config": args.config, "batch_size": args.batch_size, "timed_steps": args.steps, "runs": rows}
    base = {r["repeat"]: r["ms_per_step"] for r in rows if r["variant"] == "none"}
    for variant in args.variants:
        mine = [r for r in rows if r["variant"] == variant]
        out[variant] = {
            "ms_per_step": statistics.median(r["ms_per_step"] for r in mine),
            "log_hook_ms_per_call": statistics.median(r["log_hook_ms_per_call"] for r in mine),
            "log_hook_share": statistics.median(r["log_hook_share"] for r in mine)}
        if base and variant != "none":
            out[variant]["wall_ratio"] = statistics.median(r["ms_per_step"] / base[r["repeat"]] for r in mine)
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
