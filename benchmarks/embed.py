"""Throughput of the embedding encoders: batch size 1 vs the batched path.

For each encoder, ``--segments`` synthetic speech-like segments of 4–8 s (16 kHz) are
embedded with ``Encoder.embed`` in batches of each of ``--batch-sizes`` (1 = one at a
time; sorted longest first, as the exporter does). Reported: segments per second and
the real-time factor (compute seconds per second of audio; smaller is faster); each batch
is timed ``--repeats`` times after a warm-up pass and its fastest time counts, the passes
of all batch sizes interleaved (robust to other load on the machine); for TitaNet also the share of padding
in the batches (an export sorts a whole shard of 1024 rows, so its batches hold
near-equal lengths and almost no padding; a benchmark of a few dozen segments has more).

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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The tiny TitaNet and the synthetic audio are the tests' stand-ins (tests/stand_ins.py, not
# installed): this benchmark runs from a checkout.
sys.path.insert(0, str(REPO / "tests"))

from jsae.embed.encoders import Encoder, get_encoder  # noqa: E402
from stand_ins import build_tiny_titanet, speechlike, titanet_large_config  # noqa: E402


def segments(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(400, 801, size=n) * 10 / 1000          # 4.00–8.00 s on the 10 ms grid
    return [speechlike(float(s), 16000, f0=float(rng.uniform(90, 250)), seed=i) for i, s in enumerate(lengths)]


def batches_of(waves: list[np.ndarray], batch_size: int) -> list[list[np.ndarray]]:
    order = sorted(range(len(waves)), key=lambda i: -waves[i].shape[0])
    return [[waves[i] for i in order[b : b + batch_size]] for b in range(0, len(order), batch_size)]


def padding(batches: list[list[np.ndarray]]) -> float:
    """Fraction of the padded batch samples that are padding."""
    real = sum(w.shape[0] for b in batches for w in b)
    padded = sum(len(b) * max(w.shape[0] for w in b) for b in batches)
    return 1.0 - real / padded


def timed(encoder: Encoder, waves: list[np.ndarray], batch_sizes: list[int], repeats: int) -> dict[int, float]:
    """Seconds for one pass over ``waves`` per batch size: each batch's fastest time over
    ``repeats`` passes (after a warm-up pass), summed. Passes of all sizes are interleaved,
    so that other load on the machine affects them alike and a disturbed batch is retimed."""
    plans = {bs: batches_of(waves, bs) for bs in batch_sizes}
    best = {bs: [float("inf")] * len(batches) for bs, batches in plans.items()}
    for r in range(repeats + 1):
        for bs, batches in plans.items():
            for i, batch in enumerate(batches):
                t0 = time.perf_counter()
                encoder.embed(batch)
                if r:                                    # the first pass warms up
                    best[bs][i] = min(best[bs][i], time.perf_counter() - t0)
    return {bs: float(sum(times)) for bs, times in best.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=64)
    p.add_argument("--large-segments", type=int, default=32, help="segments for TitaNet-L (slow on CPU)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
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
        times = timed(enc, waves, a.batch_sizes, a.repeats)
        for bs, t in times.items():
            results.append({"encoder": label, "batch_size": bs, "segments": n, "audio_seconds": audio,
                            "padding": padding(batches_of(waves, bs)) if name == "titanet" else None,
                            "seconds": t, "segments_per_s": n / t, "real_time_factor": t / audio})
            print(f"  {label:34s} batch {bs:3d}: {n / t:8.2f} seg/s", file=sys.stderr)

    cpu = platform.processor() or platform.machine()
    head = (f"CPU: {os.cpu_count()} cores ({cpu}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"device {a.device}; per batch the fastest of {a.repeats} passes")
    print(head)
    print()
    print("| encoder | batch | segments | audio s | padding | seg/s | real-time factor | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        base = next(x for x in results if x["encoder"] == r["encoder"] and x["batch_size"] == 1)
        pad = "-" if r["padding"] is None else f"{100 * r['padding']:.1f} %"
        print(f"| {r['encoder']} | {r['batch_size']} | {r['segments']} | {r['audio_seconds']:.1f} | {pad} | "
              f"{r['segments_per_s']:.2f} | {r['real_time_factor']:.4f} | {base['seconds'] / r['seconds']:.2f}x |")
    if a.json:
        a.json.write_text(json.dumps({"machine": head, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
