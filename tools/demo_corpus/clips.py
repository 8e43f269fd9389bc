"""``python -m tools.demo_corpus.clips STORE --audio-root CORPUS``: bundle a store's segment audio.

Every row's segment — its ``source`` spans, as the encoder heard them
(:func:`jsae.report.audio.segment_audio`) — is written once as a small mono Ogg/Opus file
``STORE/clips/<key>.opus`` (``key``: :func:`jsae.atlas.clips.clip_key`), and the store's
metadata gets a ``clip`` column naming it (relative to the store folder). The atlas and
the report then play the bundled clip without the corpus: ``make demo`` ends with an
atlas whose every example plays. Audio is read only under ``--audio-root`` (and the
folders the store was exported from), as everywhere in jsae.

At ``--kbps 10`` (the default) the demo's language and music stores, 3.6 hours of 8 kHz
telephone audio, take about 16 MB. A row whose audio cannot be read is refused: a bundle
with holes would leave examples silent.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["bundle_clips", "CLIPS_DIR", "main"]

#: the folder of the bundled clips inside the store
CLIPS_DIR = "clips"


def _encode(job: tuple[str, float, float, str, str, float]) -> float:
    from jsae.atlas.clips import encode_opus
    from jsae.report.audio import segment_audio

    path, offset, duration, spans, dest, level = job
    samples, sr = segment_audio(Path(path), offset, duration, spans)
    return encode_opus(samples, sr, Path(dest), compression_level=level)


def bundle_clips(store_dir: str | Path, audio_root: str | Path, *, kbps: float = 10.0, jobs: int = 2,
                 progress: bool = True) -> dict:
    """Write ``STORE/clips/*.opus`` for every row and add the ``clip`` column; returns counts."""
    from tqdm.auto import tqdm

    from jsae.atlas.clips import clip_key, opus_level
    from jsae.errors import NotFoundError
    from jsae.report.audio import audio_roots, locate_audio
    from jsae.store import add_columns, open_store

    store = open_store(store_dir)
    meta = store.metadata
    roots = audio_roots(store.info, audio_root)
    folder = Path(store.path) / CLIPS_DIR
    tmp = Path(store.path) / f".{CLIPS_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    level = opus_level(kbps)
    jobs_list, names = [], []
    for i, row in enumerate(meta.itertuples(index=False)):
        path, why = locate_audio(getattr(row, "source", None), roots)
        if path is None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise NotFoundError(f"row {i} ({row.id}): audio {row.source!r} {why} (roots: "
                                f"{', '.join(map(str, roots)) or 'none'}); pass the corpus folder as --audio-root")
        name = f"{clip_key(i, row.id)}.opus"
        names.append(f"{CLIPS_DIR}/{name}")
        spans = getattr(row, "spans", None)
        jobs_list.append((str(path), float(row.offset), float(row.duration),
                          spans if isinstance(spans, str) else None, str(tmp / name), level))
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        seconds = list(tqdm(pool.map(_encode, jobs_list, chunksize=16), total=len(jobs_list),
                            desc=f"clips {Path(store.path).name}", unit="clip", disable=not progress))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    size = sum(p.stat().st_size for p in folder.iterdir())
    made = {"rows": len(names), "seconds": round(float(np.sum(seconds)), 2), "bytes": int(size),
            "kbps": round(8 * size / 1000 / max(float(np.sum(seconds)), 1e-9), 2)}
    add_columns(store, pd.DataFrame({"id": meta["id"], "clip": names}), overwrite="clip" in meta.columns,
                attrs={"clips": {"folder": CLIPS_DIR, "column": "clip", "format": "Ogg/Opus, mono",
                                 "producer": "python -m tools.demo_corpus.clips", **made}})
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo_corpus.clips",
                                description="Bundle a store's segment audio as Opus clips (STORE/clips, column clip).")
    p.add_argument("store", help="embedding store exported from the corpus")
    p.add_argument("--audio-root", required=True, help="the corpus folder the store's sources are relative to")
    p.add_argument("--kbps", type=float, default=10.0, help="Opus bit rate (default: 10)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default: 2)")
    args = p.parse_args(argv)
    from jsae.errors import JsaeError, print_error

    try:
        r = bundle_clips(args.store, args.audio_root, kbps=args.kbps, jobs=args.jobs)
    except JsaeError as err:
        return print_error(err, p.prog)
    print(f"{r['rows']} clips, {r['seconds'] / 3600:.2f} h, {r['bytes'] / 1e6:.1f} MB ({r['kbps']:.1f} kbit/s) "
          f"in {Path(args.store) / CLIPS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
