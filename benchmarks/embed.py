"""Throughput of the embedding encoders: batch size 1 vs the batched path.

For each encoder, ``--segments`` synthetic speech-like segments of 4–8 s (16 kHz) are
embedded with ``Encoder.embed`` one at a time, then in batches of ``--batch-size``
(sorted longest first, as the exporter does). Reported: segments per second and the
real-time factor (compute seconds per second of audio; smaller is faster), the median
of ``--repeats`` timed passes after one warm-up pass.

Encoders: the tiny random TitaNet of the tests, TitaNet-L's architecture with random
weights (what a real ``titanet_large`` costs; ``--no-large`` skips it), and resemblyzer.

    python benchmarks/embed.py                       # table on stdout
    python benchmarks/embed.py --json out.json       # also the raw numbers
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embed.encoders import Encoder, get_encoder  # noqa: E402
from embed.testing import build_tiny_titanet, speechlike, titanet_large_config  # noqa: E402


def segments(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(400, 801, size=n) * 10 / 1000          # 4.00–8.00 s on the 10 ms grid
    return [speechlike(float(s), 16000, f0=float(rng.uniform(90, 250)), seed=i) for i, s in enumerate(lengths)]


def timed(encoder: Encoder, waves: list[np.ndarray], batch_size: int, repeats: int) -> float:
    order = sorted(range(len(waves)), key=lambda i: -waves[i].shape[0])
    batches = [[waves[i] for i in order[b : b + batch_size]] for b in range(0, len(order), batch_size)]
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        for batch in batches:
            encoder.embed(batch)
        if r:                                    # the first pass warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=32)
    p.add_argument("--large-segments", type=int, default=8, help="segments for TitaNet-L (slow on CPU)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-large", action="store_true", help="skip TitaNet-L")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    import torch

    tmp = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    cases = [("titanet (tiny, random)", "titanet", str(build_tiny_titanet(tmp / "tiny.nemo")), a.segments)]
    if not a.no_large:
        large = build_tiny_titanet(tmp / "large.nemo", config=titanet_large_config())
        cases.append(("titanet (TitaNet-L arch, random)", "titanet", str(large), a.large_segments))
    cases.append(("resemblyzer (pretrained)", "resemblyzer", None, a.segments))

    results = []
    for label, name, model, n in cases:
        enc = get_encoder(name).load(model, a.device)
        waves = segments(n)
        audio = sum(w.shape[0] for w in waves) / 16000
        for bs in (1, a.batch_size):
            t = timed(enc, waves, bs, a.repeats)
            results.append({"encoder": label, "batch_size": bs, "segments": n, "audio_seconds": audio,
                            "seconds": t, "segments_per_s": n / t, "real_time_factor": t / audio})
            print(f"  {label:34s} batch {bs:3d}: {n / t:8.2f} seg/s", file=sys.stderr)

    cpu = platform.processor() or platform.machine()
    head = (f"CPU: {os.cpu_count()} cores ({cpu}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"device {a.device}; {a.repeats} timed passes, median")
    print(head)
    print()
    print("| encoder | batch | segments | audio s | seg/s | real-time factor | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        base = next(x for x in results if x["encoder"] == r["encoder"] and x["batch_size"] == 1)
        print(f"| {r['encoder']} | {r['batch_size']} | {r['segments']} | {r['audio_seconds']:.1f} | "
              f"{r['segments_per_s']:.2f} | {r['real_time_factor']:.4f} | "
              f"{base['seconds'] / r['seconds']:.2f}x |")
    if a.json:
        a.json.write_text(json.dumps({"machine": head, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
