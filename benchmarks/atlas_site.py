"""The feature-atlas site (`jsae atlas`, :mod:`jsae.atlas`) on a synthetic grid: seconds, files, size.

16 random TopK models (k ∈ {5, 10, 20, 40} × L ∈ {100, 200, 400, 800}, dim 256; 6 000 latents)
written as a run directory (model files), a store of 2 000 rows with about 30 metadata columns
(``id, source, offset, duration, spans, split``, a ``clip`` column naming an already cut Ogg/Opus
file in the store folder, categorical ``kind / lang / gender / speaker``, 19 numeric
``acoustic.*`` columns with missing values, ``vad.speech_prob``, ``n_turns``). Then
``jsae atlas RUN --data STORE --out DIR`` as a fresh process, timed from start to exit:

1. pages only (``--no-audio``);
2. with audio: every example row's clip copied from the ``clip`` column (into a new folder);
3. the same again into that folder (every clip reused).

Prints the machine (``nproc``), the seconds of each, the number of files and their total size.
Measures only; nothing is asserted.

    python benchmarks/atlas_site.py [--rows 2000] [--dim 256] [--keep DIR]
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

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
KS, SIZES = (5, 10, 20, 40), (100, 200, 400, 800)


def synthetic_table(n: int, rng: np.random.Generator) -> pd.DataFrame:
    cols = {"id": [f"seg{i:06d}" for i in range(n)], "source": [f"rec{i % 200:03d}.wav" for i in range(n)],
            "offset": np.round(rng.random(n) * 60, 2), "duration": np.round(4 + 4 * rng.random(n), 2)}
    cols["spans"] = [json.dumps([[o, round(o + d, 2)]]) for o, d in zip(cols["offset"], cols["duration"])]
    cols["clip"] = [f"clips/seg{i:06d}.opus" for i in range(n)]
    cols.update({"split": rng.choice(["train", "test"], n), "kind": rng.choice(["speech", "music", "noise"], n),
                 "lang": rng.choice(["en", "es", "de", "fr", None], n), "gender": rng.choice(["f", "m", ""], n),
                 "speaker": rng.choice([f"spk{i}" for i in range(40)], n), "vad.speech_prob": rng.random(n),
                 "n_turns": rng.integers(1, 5, n)})
    gap = rng.random(n) < 0.05
    for j in range(19):
        x = rng.standard_normal(n)
        if j % 3 == 1:
            x[gap] = np.nan
        cols[f"acoustic.feature{j:02d}_amean"] = x
    return pd.DataFrame(cols)


def write_run(run: Path, dim: int, rng: np.random.Generator) -> None:
    from jsae.core.activation import TopK
    from jsae.core.normalize import Normalizer
    from jsae.core.spec import ModelSpec
    from jsae.runs.modelfiles import write_model_files

    run.mkdir(parents=True)
    shutil.copyfile(REPO / "configs" / "default.yaml", run / "config.yaml")
    models = []
    specs = [ModelSpec(L, TopK(k)) for L in SIZES for k in KS]
    for s in specs:
        w = rng.standard_normal((s.latent_size, dim)).astype(np.float32)
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        models.append((s.to_dict(), {"W_enc": w.T.copy(), "b_enc": np.zeros(s.latent_size, np.float32), "W_dec": w,
                                     "b_pre": np.zeros(dim, np.float32)}))
    write_model_files(run, models, normalizer=Normalizer("none", np.zeros(dim), np.ones(dim)), step=1,
                      total_steps=1, complete=True)
    (run / "sweep.json").write_text(json.dumps({"step": 1, "total_steps": 1, "complete": True, "dim": dim,
                                                "models": [s.to_dict() for s in specs]}))


def write_clips(store: Path, table: pd.DataFrame, rng: np.random.Generator) -> None:
    """One 4–8 s Ogg/Opus file per row (20 distinct encodings, copied: encoding 2 000 takes minutes)."""
    import soundfile as sf

    from jsae.atlas.clips import COMPRESSION_LEVEL

    folder = store / "clips"
    folder.mkdir()
    sr = 16000
    made = []
    for i in range(20):
        t = np.arange(int((4 + 0.2 * i) * sr)) / sr
        x = 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
        x = (x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        path = folder / f"_base{i}.opus"
        sf.write(str(path), x, sr, format="OGG", subtype="OPUS", compression_level=COMPRESSION_LEVEL)
        made.append(path)
    for i, name in enumerate(table["clip"]):
        shutil.copyfile(made[i % len(made)], store / name)


def folder_stats(folder: Path) -> tuple[int, int, int]:
    """(files, bytes, largest file's bytes) under ``folder``."""
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    return len(sizes), sum(sizes), max(sizes, default=0)


def jsae_atlas(run: Path, store: Path, out: Path, *extra: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jsae.sweeps", "atlas", str(run), "--data", str(store), "--out", str(out),
                           *extra], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"jsae atlas failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return seconds, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (default: a temporary folder)")
    args = ap.parse_args()
    from jsae.store import write_store

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        rng = np.random.default_rng(0)
        table = synthetic_table(args.rows, rng)
        x = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
        shutil.rmtree(root / "store", ignore_errors=True)   # this benchmark's own folder (--keep reruns)
        store = write_store(root / "store", x, table).path
        write_clips(store, table, rng)
        if (root / "run").exists():
            shutil.rmtree(root / "run")
        write_run(root / "run", args.dim, rng)
        print(f"machine: {os.cpu_count()} CPUs (nproc), python {sys.version.split()[0]}; rows {args.rows}, "
              f"metadata columns {table.shape[1]}, models {len(KS) * len(SIZES)}, latents "
              f"{len(KS) * sum(SIZES)}, dim {args.dim}")
        for name, extra in (("pages only (--no-audio)", ("--no-audio",)), ("with audio (clips copied)", ()),
                            ("again into the same folder (clips reused)", ())):
            out = root / ("atlas-noaudio" if extra else "atlas")
            if name.startswith("pages") or name.startswith("with"):
                shutil.rmtree(out, ignore_errors=True)
            seconds, stdout = jsae_atlas(root / "run", store, out, *extra)
            files, size, largest = folder_stats(out)
            audio = folder_stats(out / "audio") if (out / "audio").exists() else (0, 0, 0)
            pages = [p.stat().st_size for p in out.glob("*/latent-*.html")]
            print(f"\n{name}: {seconds:.1f} s (a fresh process, start to exit)")
            print("  " + "\n  ".join(stdout.strip().splitlines()))
            print(f"  files {files}, total {size / 1e6:.1f} MB (audio: {audio[0]} files, {audio[1] / 1e6:.1f} MB); "
                  f"latent pages: {len(pages)}, median {np.median(pages) / 1e3:.1f} kB, largest "
                  f"{max(pages) / 1e3:.1f} kB; largest file {largest / 1e6:.2f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
