"""``jsae embed``: audio → speaker-embedding store (also ``python -m embed``).

Examples::

    # a folder of calls, TitaNet from a local .nemo, on a GPU
    jsae embed --audio-dir calls/ --encoder titanet --model titanet-telephony.nemo \\
               --out stores/calls --device cuda --batch-size 64

    # a labelled NeMo manifest, the offline resemblyzer encoder
    jsae embed --manifest lang.jsonl --encoder resemblyzer --out stores/lang

    # four workers (one per GPU, or a job array) on the same store, then the merge
    for i in 0 1 2 3; do
      CUDA_VISIBLE_DEVICES=$i jsae embed --manifest m.jsonl --model t.nemo --out S \\
                                         --num-shards 4 --shard-index $i &
    done; wait
    jsae embed --merge --out S          # only needed if no worker merged (it reports)

    # the shards on encoder actors of a Ray cluster (one per GPU; pip install 'jsae[ray]'), or,
    # with no address, of a local Ray instance (one per CPU without a GPU)
    jsae embed --manifest m.jsonl --model t.nemo --out S --ray auto

Segmentation (``--segment-mode``): ``joined`` (default) removes the silences of a
recording and cuts the joined non-silent audio into 4–8 s segments, as the paper's SoX
step did, so speech made of short utterances is kept; a segment may then consist of
several source spans (metadata column ``spans``). ``--max-gap S`` joins only across
silences of at most S seconds. In joined mode a recording (or manifest entry) with
less non-silent audio than ``--min-seconds`` but at least ``--min-keep`` (2 s) becomes
one shorter segment, flagged in the metadata column ``short``; ``--min-keep`` equal to
``--min-seconds`` drops it. ``contiguous`` cuts each non-silent stretch on its own
and drops stretches shorter than ``--min-seconds``. The seconds kept and dropped, per
recording and per label value, are printed at the end and kept in ``summary.json``,
with a warning for a label value that kept more than 10 percentage points less of its
audio than its label overall.

Descriptors (``--describe``, the default; ``--no-describe`` skips them): every segment also
gets the acoustic descriptors of :mod:`jsae.embed.describe` as metadata columns (``acoustic.*``:
the 88 eGeMAPS v02 functionals by openSMILE; ``vad.speech_prob``, ``vad.speech_fraction``
by silero-vad; ``describe.error``), computed on the segment's own audio while it is
exported. They need the ``describe`` extra. ``jsae describe STORE [--audio-root DIR]
[--overwrite]`` adds them to an existing store whose audio is still there (``run_describe``).

Under ``torchrun``, ``--num-shards``/``--shard-index`` default to ``WORLD_SIZE``/``RANK``
and ``--device auto`` picks ``cuda:LOCAL_RANK``.

``--ray [ADDRESS]`` (the ``ray`` extra) hands the shards to encoder actors on a Ray cluster
instead of workers started by hand: the same plan, shards, markers and merge, the same store
row for row (:mod:`jsae.embed.ray_export`). The store, audio and model must be at the same paths on
every node.

A killed export resumes when the same command is run again. Exit status: 0 when this
worker's part is done (the store is complete, or other workers' shards are pending),
2 on an error — bad arguments, input, files or environment — with one line
``jsae embed: error: …`` on stderr, 141 when the output pipe was closed (as every
``jsae`` command: :mod:`jsae.console`), 130 / 143 on SIGINT (Ctrl-C) / SIGTERM: the shard
being embedded is abandoned, the finished ones are kept, and one line
``jsae embed: interrupted; D of N shards done and kept in STORE, shard S abandoned; run the
same command to resume`` says so (a second signal stops at once).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["DESCRIPTION", "add_embed_arguments", "build_parser", "run_embed", "main",
           "DESCRIBE_DESCRIPTION", "add_describe_arguments", "run_describe"]

DESCRIPTION = ("Segment audio into non-silent 4-8 s pieces and store one speaker embedding per piece\n"
               "(zarr3 [N, M] float32 + metadata table; resumable, shardable).")


def add_embed_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the options of ``jsae embed`` on ``p`` (also ``jsae``'s ``embed`` subparser)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--manifest", type=Path,
                     help="NeMo manifest (JSON lines: audio_filepath, offset, duration, labels)")
    src.add_argument("--audio-dir", type=Path, help="folder searched recursively for wav/flac/ogg/opus/mp3 files")
    p.add_argument("--out", type=Path, required=True, metavar="STORE", help="store folder to create or resume")
    p.add_argument("--encoder", default="titanet", help="speaker encoder: titanet or resemblyzer")
    p.add_argument("--model", default=None,
                   help="titanet: a .nemo path or a pretrained name (default titanet_large, needs the network); "
                        "resemblyzer: optional weights .pt (without it: the weights shipped in the package)")
    seg = p.add_argument_group("segmentation")
    seg.add_argument("--min-seconds", type=float, default=4.0, help="shortest segment (s)")
    seg.add_argument("--max-seconds", type=float, default=8.0, help="longest segment (s); longer stretches are cut")
    seg.add_argument("--top-db", type=float, default=40.0, help="silence: frames this many dB below the loudest frame")
    seg.add_argument("--floor-db", type=float, default=-55.0, help="silence: frames below this level (dBFS)")
    seg.add_argument("--min-silence", type=float, default=0.3, help="shorter silent gaps (s) do not split a stretch")
    seg.add_argument("--segment-mode", choices=("joined", "contiguous"), default="joined",
                     help="joined: remove the silences of a recording, join its non-silent stretches and cut "
                          "them into --min-seconds..--max-seconds segments (as SoX's silence removal in the "
                          "paper; a segment can span several utterances, its source spans are in the metadata "
                          "column 'spans'); contiguous: cut each non-silent stretch on its own and drop "
                          "stretches shorter than --min-seconds (loses most conversational speech)")
    seg.add_argument("--max-gap", type=_max_gap, default=None, metavar="SECONDS",
                     help="joined mode: do not join across a silence longer than SECONDS (the speech after "
                          "it starts a new run); none: join the whole recording")
    seg.add_argument("--min-keep", type=float, default=None, metavar="SECONDS",
                     help="joined mode only (contiguous ignores it): a recording or manifest entry with less "
                          "non-silent audio than --min-seconds but at least SECONDS becomes one shorter segment, "
                          "flagged in the metadata column 'short' (a long recording still gives only "
                          "--min-seconds..--max-seconds segments); default 2, or --min-seconds if smaller; "
                          "--min-keep equal to --min-seconds drops such recordings")
    desc = p.add_argument_group("descriptors").add_mutually_exclusive_group()
    desc.add_argument("--describe", dest="describe", action="store_true", default=True,
                      help="add per-segment acoustic descriptors as metadata columns acoustic.* (openSMILE eGeMAPS "
                           "v02 functionals) and vad.speech_prob / vad.speech_fraction (silero-vad), computed on "
                           "each segment's audio (the default; needs the describe extra: pip install -e "
                           "'.[describe]')")
    desc.add_argument("--no-describe", dest="describe", action="store_false",
                      help="store no descriptors (they are computed by default); `jsae describe STORE` adds them later")
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", type=int, default=None,
                     help="segments per encoder call (default: 32 on a GPU; on a CPU 1 for titanet, 16 for "
                          "resemblyzer, the fastest there)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--num-shards", type=int, default=None, help="number of workers (default: $WORLD_SIZE or 1)")
    run.add_argument("--shard-index", type=int, default=None, help="this worker, 0-based (default: $RANK or 0)")
    run.add_argument("--rows-per-shard", type=int, default=1024,
                     help="rows per zarr shard: the unit of work, of parallelism and of resumption")
    run.add_argument("--rows-per-chunk", type=int, default=None,
                     help="rows per inner chunk (read unit); default: largest divisor of --rows-per-shard <= 512")
    run.add_argument("--plan-only", action="store_true", help="only segment the inputs and write the plan")
    run.add_argument("--merge", action="store_true",
                     help="only finalize: check every shard is done, write metadata, store.json and summary.json")
    run.add_argument("--status", action="store_true", help="print the state of the export at --out and exit")
    run.add_argument("--overwrite", action="store_true", help="delete an existing store at --out first")
    run.add_argument("--plan-timeout", type=float, default=3600.0,
                     help="seconds workers other than 0 wait for worker 0's plan")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    ray = p.add_argument_group("Ray (pip install 'jsae[ray]')")
    ray.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="embed the shards on encoder actors of a Ray cluster (one per GPU, else one per CPU); "
                          "ADDRESS: auto, HEAD:6379 or ray://HEAD:10001; without it a new local Ray instance "
                          "(or $RAY_ADDRESS). Store, audio and --model must be on a file system every node sees")
    ray.add_argument("--ray-workers", type=int, default=None, metavar="N",
                     help="number of encoder actors with --ray (default: the cluster's GPUs, or its CPUs)")
    run.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def build_parser(prog: str = "jsae embed") -> argparse.ArgumentParser:
    """The parser of ``jsae embed`` (``python -m embed``) on its own."""
    from jsae.console import ArgumentParser

    p = add_embed_arguments(ArgumentParser(prog=prog, description=DESCRIPTION))
    p.set_defaults(func=run_embed, command_parser=p)
    return p


def _max_gap(text: str) -> float | None:
    if text.strip().lower() in ("none", "inf", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number) or 'none'; got {text!r}") from None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one of the first call: ``main`` may run
    several times in one process, with stderr replaced in between)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("jsae.embed")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("jsae embed: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run ``jsae embed ARGV`` (default ``sys.argv[1:]``); returns the exit status."""
    from jsae.console import run

    return run(build_parser(), sys.argv[1:] if argv is None else argv)


def run_embed(args: argparse.Namespace) -> int:
    """The export of parsed ``jsae embed`` arguments; a :class:`~jsae.errors.JsaeError` is the
    caller's one-line error (:func:`jsae.console.run`)."""
    _setup_logging(args.quiet)
    log = logging.getLogger("jsae.embed")
    # the store is written with tensorstore; JAX (imported with jsae) stays off the GPU so
    # that its memory preallocation cannot starve the torch encoder
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    from jsae.errors import BadValueError

    from jsae.embed.encoders import ENCODERS
    from jsae.embed.export import ExportConfig, export_status, finalize, run_export
    from jsae.embed.segment import SegmentConfig

    if args.status:
        print(json.dumps(export_status(args.out), indent=2))
        return 0
    if args.merge:
        summary = finalize(args.out, force=True)
        _print_summary(summary)
        return 0
    if args.manifest is None and args.audio_dir is None:
        raise BadValueError("give one of --manifest or --audio-dir (or --merge / --status)")
    if args.encoder not in ENCODERS:
        raise BadValueError(f"--encoder {args.encoder!r}: choose one of {sorted(ENCODERS)}")
    if args.ray is None and args.ray_workers is not None:
        raise BadValueError("--ray-workers needs --ray")
    if args.ray is not None and ((args.num_shards or 1) != 1 or (args.shard_index or 0) != 0):
        raise BadValueError("--ray hands out every shard itself; drop --num-shards / --shard-index")
    num_shards = args.num_shards if args.num_shards is not None else (_env_int("WORLD_SIZE") or 1)
    shard_index = args.shard_index if args.shard_index is not None else (_env_int("RANK") or 0)
    if args.ray is not None:
        num_shards, shard_index = 1, 0
    device = args.device
    if device == "auto" and args.ray is None and _env_int("LOCAL_RANK") is not None:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{_env_int('LOCAL_RANK')}"
    cfg = ExportConfig(
        out=args.out, manifest=args.manifest, audio_dir=args.audio_dir, encoder=args.encoder,
        model=args.model,
        segment=SegmentConfig(min_seconds=args.min_seconds, max_seconds=args.max_seconds, top_db=args.top_db,
                              floor_db=args.floor_db, min_silence=args.min_silence,
                              mode=args.segment_mode, max_gap=args.max_gap, min_keep=args.min_keep),
        batch_size=args.batch_size, device=device, num_shards=num_shards, shard_index=shard_index,
        rows_per_shard=args.rows_per_shard, rows_per_chunk=args.rows_per_chunk, overwrite=args.overwrite,
        plan_timeout=args.plan_timeout, plan_only=args.plan_only, progress=not args.no_progress,
        describe=args.describe,
    )
    if args.ray is not None:
        from jsae.embed.ray_export import run_ray_export

        result = run_ray_export(cfg, address=args.ray or None, workers=args.ray_workers)
    else:
        result = run_export(cfg)
    if result["status"] == "complete":
        _print_summary(result["summary"])
    elif result["status"] == "planned":
        log.info("plan written to %s", args.out)
    return 0


DESCRIBE_DESCRIPTION = (
    "Add per-segment acoustic descriptors to an existing store: metadata columns acoustic.* (the 88 openSMILE\n"
    "eGeMAPS v02 functionals), vad.speech_prob and vad.speech_fraction (silero-vad) and describe.error, computed\n"
    "on each segment's audio (its source spans, at 16 kHz). Audio is read only under the folders the store was\n"
    "exported from and --audio-root. A row whose audio is missing or unreadable gets NaN and the reason.")


def add_describe_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the options of ``jsae describe`` on ``p``."""
    p.add_argument("store", type=Path, metavar="STORE", help="embedding store (metadata with source and offset, "
                                                             "duration or spans: any store made by jsae embed)")
    p.add_argument("--audio-root", type=Path, metavar="DIR",
                   help="folder that relative `source` paths are relative to (besides the store's own audio folders)")
    p.add_argument("--overwrite", action="store_true",
                   help="compute the descriptor columns again when the store already has them")
    p.add_argument("--batch-size", type=int, default=16, help="segments per speech-detector call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return p


def run_describe(args: argparse.Namespace) -> int:
    """``jsae describe``: :func:`jsae.embed.describe.describe_store` on parsed arguments; a
    :class:`~jsae.errors.JsaeError` is the caller's one-line error."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from jsae.errors import BadValueError

    from jsae.embed.describe import describe_store

    if args.batch_size < 1:
        raise BadValueError(f"--batch-size must be >= 1; got {args.batch_size}")
    result = describe_store(args.store, audio_root=args.audio_root, overwrite=args.overwrite,
                            batch_size=args.batch_size, progress=not args.no_progress and not args.quiet)
    if not args.quiet:
        _print_described(result["described"], result["rows"], result["failed"], result["wall_seconds"])
        print(f"{result['audio_seconds']:.1f} s of audio; columns added to {result['store']}", file=sys.stdout)
    return 0


#: label values shown per label column at the end of ``jsae embed`` (all are in summary.json)
SHOW_VALUES = 12


def _print_summary(summary: dict) -> None:
    if not summary:
        return
    files = summary.get("files", {})
    wall = summary.get("wall_seconds", {})
    rtf = summary.get("real_time_factor")
    print(
        f"{summary.get('rows', 0)} embeddings ({summary.get('dim')}-d, {summary['encoder']['name']}) from "
        f"{files.get('embedded', 0)} of {files.get('total', 0)} files, {files.get('skipped', 0)} skipped; "
        f"{summary.get('audio_seconds', 0.0):.1f} s of audio in {wall.get('embed', 0.0):.1f} s "
        f"(real-time factor {rtf:.4f})" if rtf is not None else "",
        file=sys.stdout,
    )
    for s in summary.get("skipped", [])[:20]:
        print(f"  skipped {s['source']}: {s['reason']}", file=sys.stdout)
    described = summary.get("describe")
    if described:
        _print_described(described["described"], described["described"] + len(described["failed"]),
                         described["failed"], described.get("wall_seconds"))
    _print_accounting(summary.get("segmentation_accounting"))


#: failed rows listed at the end of ``jsae embed`` / ``jsae describe`` (all are in summary.json / describe.error)
SHOW_FAILED = 20


def _print_described(described: int, rows: int, failed: list[dict], seconds: float | None) -> None:
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    print(f"descriptors (acoustic.*, vad.*): {described} of {rows} segments described{took}, {len(failed)} failed "
          "(NaN, reason in the column describe.error)", file=sys.stdout)
    for f in failed[:SHOW_FAILED]:
        print(f"  failed {f['id']}: {f['reason']}", file=sys.stdout)
    if len(failed) > SHOW_FAILED:
        print(f"  ... {len(failed) - SHOW_FAILED} more", file=sys.stdout)


def _print_accounting(acc: dict | None) -> None:
    """Kept/dropped seconds in total, per label value (a table) and the least-kept recordings."""
    if not acc:
        return
    t = acc["totals"]
    short = (f" ({t['short_segments']} short: a whole recording under --min-seconds, column 'short')"
             if t.get("short_segments") else "")
    print(f"segmentation ({acc.get('mode')}): kept {t['kept_seconds']:.1f} of {t['nonsilent_seconds']:.1f} s of "
          f"non-silent audio ({100 * t['kept_fraction']:.1f} %) in {t['segments']} segments{short}, dropped "
          f"{t['dropped_seconds']:.1f} s; {t['files_kept']} of {t['files']} files kept", file=sys.stdout)
    rows = []
    for column, values in acc.get("labels", {}).items():
        keys = sorted(values, key=lambda k: (values[k]["kept_fraction"], k))
        for k in keys[:SHOW_VALUES]:
            v = values[k]
            rows.append((column[:16], k[:20], f"{v['files_kept']}/{v['files']}", f"{v['nonsilent_seconds']:.1f}",
                         f"{v['kept_seconds']:.1f}", f"{v['dropped_seconds']:.1f}",
                         f"{100 * v['kept_fraction']:.1f}", str(v["segments"])))
        if len(keys) > SHOW_VALUES:
            rows.append((column[:16], f"... {len(keys) - SHOW_VALUES} more", "", "", "", "", "", ""))
    if rows:
        head = ("label", "value", "files kept", "non-silent s", "kept s", "dropped s", "kept %", "segments")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        for r in [head] + rows:
            print("  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))),
                  file=sys.stdout)
    recs = [r for r in acc.get("recordings", []) if r["nonsilent_seconds"] > 0]
    worst = sorted(recs, key=lambda r: (r["kept_seconds"] / r["nonsilent_seconds"], r["source"]))[:5]
    worst = [r for r in worst if r["dropped_seconds"] > 0]
    if worst:
        print("  least kept: " + "; ".join(
            f"{r['source']} {r['kept_seconds']:.1f} of {r['nonsilent_seconds']:.1f} s" for r in worst),
            file=sys.stdout)
    for message in acc.get("warnings", []):
        print(f"WARNING: {message}", file=sys.stdout)
