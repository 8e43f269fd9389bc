"""Whole-grid training throughput: jsae's one-program grid vs a sequential PyTorch loop.

Both train the same models (default: the paper's 84, K 5..35 × L 100..1200) on
the same synthetic 192-d data and batch size; each reports whole-grid samples/s
(samples through *every* model per second), measured in the same run, and the
ratio jsae / PyTorch. The PyTorch baseline is the plain OpenAI-style recipe, one
model after another: dense encoder, torch.topk + ReLU, scatter into a dense code,
dense decoder, NMSE + AuxK, backward, decoder-gradient projection, Adam, row
renormalisation.

    python benchmarks/grid_train.py                       # paper grid, batch 4096
    python benchmarks/grid_train.py --batch-size 1024 --steps 3 --k 5 20 --latent-size 100 400
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def jsae_samples_per_s(ks, sizes, x, batch_size, steps, warmup, matmul_dtype="float32", padded=False,
                       topk_path="auto"):
    """Whole-grid samples/s of the jsae trainer (``topk_path``: auto | sparse | dense).

    ``padded=True`` times the alternative layout instead: every model in one vmap at
    the largest latent size (what padding L and masking would cost).
    """
    import jax
    import jax.numpy as jnp

    from jsae.config import GridConfig, OptimConfig, SAEConfig
    from jsae.core.activation import TopK
    from jsae.core.spec import ModelSpec
    from jsae.training.grid import GroupSpec, GridTrainer, make_groups
    from jsae.training.data import batch_indices

    groups = make_groups(GridConfig(k=tuple(ks), latent_size=tuple(sizes)))
    if padded:
        L = max(sizes)
        groups = (GroupSpec(L, "topk", tuple(ModelSpec(L, TopK(k)) for _ in sizes for k in sorted(ks))),)
    trainer = GridTrainer(groups, x.shape[1], SAEConfig(dead_after_samples=batch_size * 2), OptimConfig(),
                          matmul_dtype=matmul_dtype, topk_path=topk_path)
    state = trainer.pad(trainer.init(jax.random.key(0), np.zeros(x.shape[1], np.float32)))
    run = trainer.jit_run_steps()
    x_dev = jnp.asarray(x)
    t0 = time.perf_counter()
    for call in range(max(1, warmup)):  # compile, then warm up (dead latents appear: AuxK on)
        state, m = run(state, x_dev, jnp.asarray(batch_indices(0, call * steps, steps, len(x), batch_size)))
        jax.block_until_ready(state)
        if call == 0:
            compile_s = time.perf_counter() - t0
    idx = jnp.asarray(batch_indices(0, warmup * steps, steps, len(x), batch_size))
    t0 = time.perf_counter()
    state, m = run(state, x_dev, idx)
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    return steps * batch_size / dt, dt / steps, compile_s, sum(trainer.sparse)


def encoder_gemm_seconds(sizes, n_k, x, batch_size, repeats=3):
    """One float32 GEMM [B, M]·[M, Σ L] — the encoder forward of the whole grid, the floor of a step."""
    import jax
    import jax.numpy as jnp

    w = jnp.asarray(np.random.default_rng(0).standard_normal((x.shape[1], n_k * sum(sizes))), jnp.float32)
    xb = jnp.asarray(x[:batch_size])
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(xb, w))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(f(xb, w))
    return (time.perf_counter() - t0) / repeats


def torch_samples_per_s(ks, sizes, x, batch_size, steps, warmup, device="cpu"):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    dim = x.shape[1]
    xt = torch.from_numpy(x).to(device)
    models = []
    for L in sizes:
        for k in ks:
            d = torch.randn(L, dim, device=device)
            d /= d.norm(dim=1, keepdim=True)
            p = {"W_enc": d.T.clone().requires_grad_(), "b_enc": torch.zeros(L, requires_grad=True, device=device),
                 "W_dec": d.clone().requires_grad_(), "b_pre": torch.zeros(dim, requires_grad=True, device=device)}
            opt = torch.optim.Adam(p.values(), lr=5e-4, betas=(0.9, 0.999), eps=6.25e-10)
            models.append((k, L, p, opt, torch.zeros(L, dtype=torch.long, device=device)))
    k_aux, dead_after = dim // 2, batch_size * 2

    def nmse(r, t):
        return ((r - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()

    def step(xb):
        for k, L, p, opt, since in models:
            pre = (xb - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
            top = torch.topk(pre, k, dim=-1)
            v = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
            recon = v @ p["W_dec"] + p["b_pre"]
            loss = nmse(recon, xb)
            dead = since >= dead_after
            if dead.any():
                aux = torch.topk(torch.where(dead, pre, torch.tensor(-float("inf"), device=device)), min(k_aux, L),
                                 dim=-1)
                va = torch.zeros_like(pre).scatter(-1, aux.indices, torch.relu(aux.values).nan_to_num(0))
                loss = loss + nmse(va @ p["W_dec"], xb - recon.detach()) / 32
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                g, d = p["W_dec"].grad, p["W_dec"]
                g -= (g * d).sum(1, keepdim=True) * d
                opt.step()
                d /= d.norm(dim=1, keepdim=True)
                fired = torch.zeros(L, dtype=torch.bool, device=device)
                fired[top.indices[top.values > 1e-3]] = True
                since.add_(len(xb)).masked_fill_(fired, 0)

    rng = np.random.default_rng(0)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        step(xt[torch.from_numpy(rng.integers(0, len(x), batch_size)).to(device)])
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(xt[torch.from_numpy(rng.integers(0, len(x), batch_size)).to(device)])
    sync()
    dt = time.perf_counter() - t0
    return steps * batch_size / dt, dt / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 15, 20, 25, 30, 35])
    ap.add_argument("--latent-size", type=int, nargs="+", default=list(range(100, 1300, 100)))
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (one compiled call, as in training)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls (jsae) / steps (pytorch) first")
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--matmul-dtype", default="float32")
    ap.add_argument("--topk-path", nargs="+", default=["auto", "dense"],
                    help="jsae variants to time: auto (sparse kernels where they pay off), sparse, dense")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--torch-device", default="cpu", help="device of the PyTorch loop (cuda on a GPU machine)")
    ap.add_argument("--compare-padded", action="store_true",
                    help="also time one vmap over every model padded to the largest latent size")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from jsae.synthetic import make_dictionary_data

    x = make_dictionary_data(args.rows, dim=192, n_atoms=512, active=16, seed=0).x
    n_models = len(args.k) * len(args.latent_size)
    import jax

    print(f"{n_models} models, batch {args.batch_size}, {args.steps} timed steps; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} CPUs; {platform.processor()}")
    gemm = encoder_gemm_seconds(args.latent_size, len(args.k), x, args.batch_size)
    print(f"one encoder GEMM of the whole grid: {gemm * 1000:.1f} ms")
    result = {"models": n_models, "batch_size": args.batch_size, "steps": args.steps, "gemm_ms": gemm * 1000,
              "device": jax.devices()[0].platform, "jsae": {}}
    for path in args.topk_path:
        j_sps, j_step, compile_s, n_sparse = jsae_samples_per_s(args.k, args.latent_size, x, args.batch_size,
                                                                args.steps, args.warmup, args.matmul_dtype,
                                                                topk_path=path)
        print(f"jsae grid ({path}; {n_sparse}/{len(args.latent_size)} groups sparse): {j_sps:10.0f} samples/s "
              f"({j_step * 1000:8.1f} ms/step = {j_step / gemm:.2f} GEMMs; first call {compile_s:.1f} s)")
        result["jsae"][path] = {"samples_per_s": j_sps, "ms_per_step": j_step * 1000, "gemms_per_step": j_step / gemm,
                                "sparse_groups": n_sparse}
    j_sps = result["jsae"][args.topk_path[0]]["samples_per_s"]
    if args.compare_padded:
        p_sps, p_step, _, _ = jsae_samples_per_s(args.k, args.latent_size, x, args.batch_size, args.steps, args.warmup,
                                              args.matmul_dtype, padded=True)
        print(f"jsae padded to L={max(args.latent_size)}: {p_sps:10.0f} samples/s ({p_step * 1000:8.1f} ms/step); "
              f"grouped / padded = {j_sps / p_sps:.2f}x")
        result |= {"padded_samples_per_s": p_sps, "grouped_over_padded": j_sps / p_sps}
    if not args.skip_torch:
        t_sps, t_step = torch_samples_per_s(args.k, args.latent_size, x, args.batch_size, args.steps,
                                            min(args.warmup, 2), device=args.torch_device)
        print(f"pytorch loop:     {t_sps:10.0f} samples/s  ({t_step * 1000:8.1f} ms/step)")
        print(f"a pytorch step = {t_step / gemm:.2f} GEMMs")
        for path, r in result["jsae"].items():
            print(f"ratio jsae ({path}) / pytorch: {r['samples_per_s'] / t_sps:.2f}x")
        result |= {"torch_samples_per_s": t_sps, "torch_ms_per_step": t_step * 1000, "ratio": j_sps / t_sps}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
