"""Feature-atlas statistics (:func:`jsae.analyses.atlas.latent_atlas`) on a synthetic grid.

16 random TopK models (k ∈ {5, 10, 20, 40} × L ∈ {100, 200, 400, 800}, dim 192) over 2 000
rows with about 100 metadata columns (90 numeric ``acoustic.*`` columns, two NaN patterns,
``vad.speech_prob``, categorical ``kind`` / ``lang`` / ``gender`` / ``speaker``, and the
excluded ``id, source, offset, duration, split``). Prints the time of the whole atlas, of the
encoding alone and of the statistics per model; measures only.

    python benchmarks/atlas_stats.py [--rows 2000] [--numeric 90] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd


def synthetic_table(n: int, n_numeric: int, rng: np.random.Generator) -> pd.DataFrame:
    cols = {"id": [f"seg{i:06d}" for i in range(n)], "source": rng.choice([f"f{i}.wav" for i in range(200)], n),
            "offset": rng.random(n) * 60, "duration": 4 + 4 * rng.random(n),
            "split": rng.choice(["train", "test"], n), "kind": rng.choice(["speech", "music", "noise"], n),
            "lang": rng.choice(["en", "es", "de", "fr", None], n), "gender": rng.choice(["f", "m", ""], n),
            "speaker": rng.choice([f"spk{i}" for i in range(40)], n), "vad.speech_prob": rng.random(n)}
    gap_a, gap_b = rng.random(n) < 0.05, rng.random(n) < 0.1
    for j in range(n_numeric):
        x = rng.standard_normal(n)
        x[gap_a if j % 3 == 1 else gap_b if j % 3 == 2 else np.zeros(n, bool)] = np.nan
        cols[f"acoustic.feature{j:02d}_sma3nz_amean"] = x
    return pd.DataFrame(cols)


def synthetic_batch(dim: int, ks, sizes, rng: np.random.Generator):
    from jsae.core.activation import TopK
    from jsae.core.normalize import Normalizer
    from jsae.core.sae import SAEParams
    from jsae.core.spec import ModelSpec
    from jsae.models import ModelBatch

    specs, params = [], []
    for L in sizes:
        for k in ks:
            w = rng.standard_normal((L, dim)).astype(np.float32)
            w /= np.linalg.norm(w, axis=1, keepdims=True)
            specs.append(ModelSpec(L, TopK(k)))
            params.append(SAEParams(W_enc=w.T.copy(), b_enc=np.zeros(L, np.float32), W_dec=w,
                                    b_pre=np.zeros(dim, np.float32)))
    return ModelBatch(specs, params, Normalizer("none", np.zeros(dim), np.ones(dim)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--numeric", type=int, default=90)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from jsae.analyses.atlas import AtlasOptions, latent_atlas, metadata_design, model_atlas, numeric_columns, \
        categorical_columns

    rng = np.random.default_rng(0)
    table = synthetic_table(args.rows, args.numeric, rng)
    x = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
    batch = synthetic_batch(args.dim, (5, 10, 20, 40), (100, 200, 400, 800), rng)
    print(f"cpus: {os.cpu_count()} (nproc), rows {args.rows}, metadata columns {table.shape[1]}, "
          f"models {len(batch)}, latents {sum(s.latent_size for s in batch.specs)}")
    for r in range(args.repeat):
        t0 = time.perf_counter()
        res = latent_atlas(batch, x, table)
        total = time.perf_counter() - t0
        print(f"run {r}: latent_atlas {total:.2f} s ({len(res.categorical)} categorical, "
              f"{len(res.numeric)} numeric columns)")
    t0 = time.perf_counter()
    codes = batch.encode(x)
    t_enc = time.perf_counter() - t0
    o = AtlasOptions()
    t0 = time.perf_counter()
    design = metadata_design(table, categorical_columns(table), numeric_columns(table))
    t_design = time.perf_counter() - t0
    directions = batch.raw_directions()
    print(f"encode (warm) {t_enc:.2f} s, metadata design {t_design:.2f} s")
    t_all = 0.0
    for name, v, d in zip(batch.names, codes, directions):
        t0 = time.perf_counter()
        model_atlas(v, design, o, directions=d, name=name)
        dt = time.perf_counter() - t0
        t_all += dt
        print(f"  {name:>9}: {dt:.2f} s")
    print(f"per-model statistics, sum: {t_all:.2f} s")
    sizes = {k: sum(len(getattr(m, k)) for m in res.models.values())
             for k in ("latents", "enrichment", "correlations", "examples", "neighbours", "matches")}
    print("table rows:", ", ".join(f"{k} {v}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
