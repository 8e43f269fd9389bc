"""The CPU kernels' speed by instruction set: -march=x86-64-v2 vs x86-64-v3 vs native.

Compiles ``jsae/kernels/cpu_kernels.cc`` once per target with jsae's own recipe
(:func:`jsae.kernels.build.compile_library`) into a temporary folder, then times every
kernel operation of the sparse TopK training path (one model per call, batch 1024,
dim 192, the given latent sizes and k) with each library, in a fresh process per
library (XLA keeps FFI registrations for the life of a process). The libraries take
turns, ``--rounds`` times, and every ratio is taken within a round, so load from other
jobs hits all of them alike; the median ratio over the rounds is reported.

    python benchmarks/kernel_march.py                       # v2, v3, native; L 800 3200; k 20 35
    python benchmarks/kernel_march.py --march x86-64-v2 x86-64-v3 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time_ops(sizes, ks, batch: int, dim: int, repeats: int) -> dict[str, float]:
    """Seconds per call of each kernel operation (fastest of ``repeats``), keyed ``op L=.. k=..``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jsae import kernels

    assert kernels.available(), kernels.load_error()
    rng = np.random.default_rng(0)
    times: dict[str, float] = {}
    for L in sizes:
        x = jnp.asarray(rng.standard_normal((batch, L), np.float32))
        w = jnp.asarray(rng.standard_normal((L, dim), np.float32) / np.sqrt(dim))
        g = jnp.asarray(rng.standard_normal((batch, dim), np.float32))
        dead = jnp.asarray(rng.random(L) < 0.05)  # AuxK: 5 % of the latents dead
        for k in ks:
            idx = jnp.asarray(np.argsort(-np.asarray(x), axis=1)[:, :k].astype(np.int32))
            v = jnp.asarray(np.abs(rng.standard_normal((batch, k), np.float32)))
            ops = {
                "top_k": (jax.jit(lambda a, k=k: kernels.top_k(a, k)), (x,)),
                "select": (jax.jit(lambda a, k=k: kernels.select(a, k, k)), (x,)),
                "masked_select (AuxK, 96)": (jax.jit(lambda a, m: kernels.masked_select(a, m, dim // 2)), (x, dead)),
                "sparse_decode": (jax.jit(kernels.sparse_decode), (w, v, idx)),
                "gather_dot": (jax.jit(kernels.gather_dot), (w, g, idx, v)),
                "scatter_outer": (jax.jit(lambda g, c, i, L=L: kernels.scatter_outer(g, c, i, L)), (g, v, idx)),
                "decoder_backward": (jax.jit(kernels.decoder_backward), (w, g, v, idx)),
            }
            for name, (fn, args) in ops.items():
                jax.block_until_ready(fn(*args))
                samples = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(*args))
                    samples.append(time.perf_counter() - t0)
                times[f"{name} L={L} k={k}"] = min(samples)
    return times


def _child(args) -> None:
    """Times the ops with the library at ``--library`` (in this fresh process)."""
    import jsae.kernels.load as load

    lib = Path(args.library)
    load.library_path = lambda directory=None, suffix="": lib if not suffix else lib.with_name("absent")
    times = _time_ops(args.latent_size, args.k, args.batch_size, args.dim, args.repeats)
    print(json.dumps({"march": load.loaded_variant().march, "times": times}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--march", nargs="+", default=["x86-64-v2", "x86-64-v3", "native"])
    ap.add_argument("--latent-size", type=int, nargs="+", default=[800, 3200])
    ap.add_argument("--k", type=int, nargs="+", default=[20, 35])
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=25, help="timed calls per op (the fastest counts)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="JSAE_KERNEL_THREADS for the timed processes")
    ap.add_argument("--library", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.library:
        return _child(args)

    sys.path.insert(0, str(ROOT))
    from jsae.kernels.build import compile_library

    with tempfile.TemporaryDirectory() as tmp:
        libs = {}
        for march in args.march:
            libs[march] = compile_library(Path(tmp) / march / "_jsae_cpu.so", march=march)
        env = dict(os.environ, JSAE_KERNEL_THREADS=str(args.threads), JSAE_KERNELS_VARIANT="baseline",
                   JAX_PLATFORMS="cpu")
        passthrough = ["--latent-size", *map(str, args.latent_size), "--k", *map(str, args.k), "--batch-size",
                       str(args.batch_size), "--dim", str(args.dim), "--repeats", str(args.repeats)]
        rounds = []
        for r in range(args.rounds):
            result = {}
            for march, lib in libs.items():
                out = subprocess.run([sys.executable, __file__, "--library", str(lib), *passthrough], env=env,
                                     cwd=ROOT, capture_output=True, text=True, check=True)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                assert got["march"] == march, (got["march"], march)
                result[march] = got["times"]
            rounds.append(result)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    base = args.march[0]
    keys = list(rounds[0][base])
    print(f"ms per call, median over {args.rounds} rounds (each the fastest of {args.repeats} calls); "
          f"speed-up = {base} time / variant time, median of the per-round ratios")
    header = ["op"] + [f"{m} ms" for m in args.march] + [f"{m} speed-up" for m in args.march[1:]]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = keys + ["all ops (sum)"]
    for key in rows:
        def t(rnd, m):
            return sum(rnd[m].values()) if key == "all ops (sum)" else rnd[m][key]
        ms = [statistics.median(t(rnd, m) for rnd in rounds) * 1e3 for m in args.march]
        ups = [statistics.median(t(rnd, base) / t(rnd, m) for rnd in rounds) for m in args.march[1:]]
        print("| " + " | ".join([key] + [f"{x:.3f}" for x in ms] + [f"{u:.2f}×" for u in ups]) + " |")


if __name__ == "__main__":
    main()
