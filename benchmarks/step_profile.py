"""Where a grid training step's time goes, piece by piece, in encoder-GEMM equivalents.

Each piece of the step is jitted on its own for every latent-size group of the grid
(vmapped over the group's models, as the trainer runs it), timed (fastest of
``--repeats`` calls), summed over the groups and divided by the time of one float32
GEMM ``[B, M]·[M, Σ L]`` — the encoder forward of the whole grid, the floor of a step.
Pieces of the dense path (XLA) and of the sparse path (jsae.kernels) are timed side by
side in the same run.

    python benchmarks/step_profile.py                      # paper grid, batch 4096
    python benchmarks/step_profile.py --k 5 35 --latent-size 100 1200 --batch-size 1024
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _best(fn, *args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def profile(ks, sizes, batch_size: int, repeats: int, dead_fraction: float) -> dict[str, float]:
    """Seconds per piece, summed over the latent-size groups of the grid."""
    import jax
    import jax.numpy as jnp
    import optax

    from jsae import kernels
    from jsae.core import sae
    from jsae.config import GridConfig, OptimConfig, SAEConfig
    from jsae.training.grid import GridTrainer, make_groups
    from jsae.synthetic import make_dictionary_data

    dim = 192
    x = jnp.asarray(make_dictionary_data(batch_size, dim=dim, n_atoms=512, active=16, seed=0).x)
    groups = make_groups(GridConfig(k=list(ks), latent_size=list(sizes)))
    trainer = GridTrainer(groups, dim, SAEConfig(), OptimConfig())
    state = trainer.init(jax.random.key(0), np.zeros(dim, np.float32))
    k_aux = dim // 2
    rng = np.random.default_rng(0)
    totals: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        totals[name] = totals.get(name, 0.0) + seconds

    for g, gs in zip(groups, state.groups):
        p = gs.params
        k = jnp.asarray(g.activations().k)
        n, L, K = g.size, g.latent_size, g.k_max
        dead = jnp.asarray(rng.random((n, L)) < dead_fraction)
        pre_fn = jax.jit(jax.vmap(lambda p: sae.pre_activation(p, x)))
        pre = pre_fn(p)
        add("encoder GEMM (forward)", _best(pre_fn, p, repeats=repeats))
        # dense path (XLA)
        add("dense: lax.top_k", _best(jax.jit(lambda a: jax.lax.top_k(a, K)), pre, repeats=repeats))
        add("dense: AuxK lax.top_k", _best(jax.jit(lambda a, d: jax.lax.top_k(jnp.where(d[:, None], a, -jnp.inf),
                                                                                min(k_aux, L))),
                                           pre, dead, repeats=repeats))
        v = jnp.maximum(pre, 0.0)
        add("dense: decode GEMM", _best(jax.jit(jax.vmap(lambda p, v: v @ p.W_dec)), p, v, repeats=repeats))
        gx = jnp.broadcast_to(x, (n,) + x.shape)
        add("dense: 3 backward GEMMs", _best(jax.jit(jax.vmap(lambda p, v, g: (g @ p.W_dec.T, v.T @ g, x.T @ v))),
                                             p, v, gx, repeats=repeats))
        # sparse path (kernels)
        sel_fn = jax.jit(jax.vmap(lambda a, kk: kernels.select(a, kk, K)))
        vals, idx = sel_fn(pre, k)
        add("sparse: select", _best(sel_fn, pre, k, repeats=repeats))
        aux_fn = jax.jit(jax.vmap(lambda a, d: kernels.masked_select(a, d, min(k_aux, L))))
        add("sparse: AuxK select (dead latents only)", _best(aux_fn, pre, dead, repeats=repeats))
        vals = jnp.maximum(vals, 0.0)
        add("sparse: decode", _best(jax.jit(jax.vmap(lambda p, v, i: kernels.sparse_decode(p.W_dec, v, i))),
                                    p, vals, idx, repeats=repeats))
        add("sparse: decoder backward (fused gather-dot + scatter)", _best(jax.jit(jax.vmap(
            lambda p, v, i, g: kernels.decoder_backward(p.W_dec, g, v, i))), p, vals, idx, gx, repeats=repeats))
        add("sparse: encoder backward (scatter + transpose)", _best(jax.jit(jax.vmap(
            lambda p, v, i: (lambda o: (o[0].T, p.W_enc @ o[1]))(kernels.scatter_outer(x - p.b_pre, v, i, L)))),
            p, vals, idx, repeats=repeats))
        # both paths
        grads = jax.tree.map(lambda a: a * 1e-3, p)

        def update(p, grads, opt):
            grads = sae.project_decoder_grad(p, grads)
            upd, opt = trainer.tx.update(grads, opt, p)
            return sae.normalize_decoder(optax.apply_updates(p, upd)), opt

        add("Adam + decoder projection/renorm", _best(jax.jit(jax.vmap(update)), p, grads, gs.opt_state,
                                                      repeats=repeats))
    return totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 15, 20, 25, 30, 35])
    ap.add_argument("--latent-size", type=int, nargs="+", default=list(range(100, 1300, 100)))
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dead-fraction", type=float, default=0.05, help="dead latents per model for AuxK")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import jax

    from grid_train import encoder_gemm_seconds  # the same floor as the grid benchmark (same folder)

    from jsae.synthetic import make_dictionary_data

    x = make_dictionary_data(args.batch_size, dim=192, n_atoms=512, active=16, seed=0).x
    gemm = encoder_gemm_seconds(args.latent_size, len(args.k), x, args.batch_size, repeats=args.repeats)
    totals = profile(args.k, args.latent_size, args.batch_size, args.repeats, args.dead_fraction)
    print(f"{len(args.k) * len(args.latent_size)} models, batch {args.batch_size}; jax {jax.__version__}; "
          f"{os.cpu_count()} CPUs; whole-grid encoder GEMM {gemm * 1000:.0f} ms")
    print(f"{'piece':50} {'ms':>8} {'GEMMs':>6}")
    for name, sec in totals.items():
        print(f"{name:50} {sec * 1000:8.1f} {sec / gemm:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gemm_s": gemm, "pieces_s": totals}, f, indent=1)


if __name__ == "__main__":
    main()
