"""The ``jsae`` command: thin wrappers over the library.

    jsae sweep CONFIG --out RUN [key=value ...]   (CONFIG: a YAML file or a bundled name, e.g. paper_grid)
    jsae launch -n N [--devices-per-process D] -- jsae sweep ...   (one sweep as N processes)
    jsae store import X.npy [--metadata T.csv|.parquet|.jsonl] --out STORE [--overwrite]
    jsae store synth --out STORE [--rows N --dim M ...] [--overwrite]
    jsae store info STORE
    jsae store verify STORE [--record]   (re-hash every shard against store.json)
    jsae embed ...           (audio → embedding store; the embed extra: `jsae embed --help`)
    jsae describe STORE [--audio-root DIR] [--overwrite]   (per-segment acoustic descriptors; the describe extra)
    jsae demo [--full-grid]  (the paper's experiments on the bundled demo corpus)
    jsae export RUN --format saelens|sparsify --out DIR [--model NAME ...] [--k K ...] [--latent-size L ...]
    jsae probe | split | steer | universality | consistency | report ...   (analyses: `jsae probe --help`, …)

Every command: errors are one line `jsae COMMAND: error: …` and exit status 2; a closed
output pipe ends quietly with exit status 141 (README: Command-line conventions).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from jsae import __version__
from jsae.sweeps import conventions as cli
from jsae.sweeps.analysis_cli import add_analysis_commands
from jsae.sweeps.demo import add_demo_command
from jsae.sweeps.export_cli import add_export_command

__all__ = ["main", "build_parser"]


def _cmd_sweep(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from jsae.cluster import initialize, is_primary, lost_peer_error, peer_lost
    from jsae.config import load_config
    from jsae.resources import bundled_store, config_path
    from jsae.runs.check import check_run_dir
    from jsae.training.data import check_validation_rows
    from jsae.training.loop import train_sweep

    cfg = load_config(config_path(args.config), args.overrides)  # a file, else a bundled name (jsae.resources)
    store = bundled_store(cfg.data.store)  # e.g. data/synthetic, not under the working directory: jsae's copy
    if store is not None:
        print(f"data.store: {cfg.data.store} is not in {Path.cwd()}; using the bundled store {store}", flush=True)
        cfg = replace(cfg, data=replace(cfg.data, store=str(store)))
    # one of several processes (jsae launch, srun, --distributed): join the others before any device is used
    initialize(True if args.distributed else None)
    if is_primary():
        check_run_dir(args.out)      # empty, absent or a jsae run: never the user's own files
    check_validation_rows(cfg)       # refuse before training, not after
    # the memory estimate is one line on stdout before training (stderr keeps errors one line)
    try:
        records = train_sweep(cfg, args.out, stop_after=args.stop_after, say=lambda line: print(line, flush=True))
    except Exception as err:
        if peer_lost(err):  # another process ended first (it says why); this one's exit status says so
            raise lost_peer_error(err) from None
        raise
    if is_primary():
        _print_metrics(records)
        print(f"run directory: {Path(args.out).resolve()}")
    return 0


def _cmd_launch(args: argparse.Namespace) -> int:
    from jsae.launch import launch

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return launch(args.processes, command, devices_per_process=args.devices_per_process, port=args.port)


def _print_metrics(records: Sequence[dict]) -> None:
    print(f"{'model':>16} {'val_nmse':>9} {'FVE':>7} {'dead':>6} {'L0':>6}")
    for r in records:
        print(f"{r['name']:>16} {r['val_nmse']:9.4f} {r['fraction_variance_explained']:7.4f} "
              f"{r['dead_fraction']:6.3f} {r['mean_l0']:6.2f}")


def _cmd_store_import(args: argparse.Namespace) -> int:
    from jsae.store import npy_rows, read_table, write_store

    rows = npy_rows(args.embeddings)   # read from the file a shard at a time, never all in memory
    table = read_table(args.metadata) if args.metadata else None
    inputs = [args.embeddings] + ([args.metadata] if args.metadata else [])
    store = write_store(args.out, rows, table, overwrite=args.overwrite, inputs=inputs,
                        attrs={"encoder": {"name": args.encoder or "imported", "dim": rows.dim},
                               "source": str(args.embeddings)})
    print(f"wrote {store.num_rows} × {store.dim} embeddings to {store.path}")
    return 0


def _check_synth_args(args: argparse.Namespace) -> None:
    """Refuse synth settings that give no rows or rows no store takes, before anything is drawn."""
    import math

    from jsae.errors import BadValueError
    from jsae.store import MAX_SQUARED_NORM

    for option, value in (("--rows", args.rows), ("--dim", args.dim), ("--atoms", args.atoms),
                          ("--active", args.active)):
        if value < 1:
            raise BadValueError(f"{option} must be >= 1; got {value}.")
    if args.active > args.atoms:
        raise BadValueError(f"--active {args.active} is more than --atoms {args.atoms}; a row uses at most every "
                            "atom once: lower --active or raise --atoms.")
    if not math.isfinite(args.noise) or args.noise < 0:
        raise BadValueError(f"--noise must be a finite number >= 0; got {args.noise}.")
    if (4 * args.noise) ** 2 * args.dim > MAX_SQUARED_NORM:  # 4 σ of noise in every value: squares beyond float32
        raise BadValueError(f"--noise {args.noise:g} makes rows whose squared norm overflows float32 (Inf in "
                            f"training); give --noise below {math.sqrt(MAX_SQUARED_NORM / args.dim) / 4:.3g}.")


def _cmd_store_synth(args: argparse.Namespace) -> int:
    from jsae.store import RowBlocks, write_store
    from jsae.synthetic import dictionary_blocks, synthetic_table

    _check_synth_args(args)
    rows = RowBlocks(args.rows, args.dim, lambda k: dictionary_blocks(  # drawn a shard at a time, as written
        args.rows, dim=args.dim, n_atoms=args.atoms, active=args.active, noise=args.noise, seed=args.seed,
        rows_per_block=k), what="synthetic embeddings")
    store = write_store(args.out, rows, synthetic_table(args.rows, args.seed), overwrite=args.overwrite,
                        attrs={"encoder": {"name": "synthetic", "dim": args.dim},
                               "synthetic": {"atoms": args.atoms, "active": args.active, "noise": args.noise,
                                             "seed": args.seed}})
    print(f"wrote {store.num_rows} × {store.dim} synthetic embeddings to {store.path}")
    return 0


def _cmd_store_info(args: argparse.Namespace) -> int:
    from jsae.store import is_descriptor, open_store

    store = open_store(args.store)
    info = dict(store.info)
    if isinstance(info.get("integrity"), dict):  # one line, not one entry per shard
        record = info["integrity"]
        info["integrity"] = (f"{record.get('hash')} of {len(record.get('shards') or [])} shard(s) and "
                             f"metadata.parquet; dtype {record.get('dtype')}, shape {record.get('shape')} "
                             "(`jsae store verify` re-hashes them)")
    print(json.dumps(info, indent=2))
    meta = store.metadata
    measured = [c for c in meta.columns if is_descriptor(c)]
    print(meta.drop(columns=measured).head(args.head).to_string())
    if measured:  # 91 descriptor columns would bury the labels: name them, summarise two
        shown = [c for c in ("vad.speech_prob", "acoustic.F0semitoneFrom27.5Hz_sma3nz_amean") if c in meta]
        print(f"\n{len(measured)} descriptor columns (acoustic.*, vad.*, describe.*; not shown above)"
              + (":" if shown else ""))
        if shown:
            print(meta[shown].describe().loc[["count", "mean", "std", "min", "max"]].to_string())
    return 0


def _cmd_store_verify(args: argparse.Namespace) -> int:
    from jsae.store import StoreError, verify_store

    result = verify_store(args.store, record=args.record)
    for what, problem in result["bad"]:
        print(f"bad: {what}: {problem}")
    if result["bad"]:
        what, problem = result["bad"][0]
        more = f" and {len(result['bad']) - 1} more (listed above)" if len(result["bad"]) > 1 else ""
        raise StoreError(f"{args.store}: {what}: {problem}{more}; the store is damaged. Fix: {result['fix']}.")
    done = "recorded the hashes of" if result["recorded"] else "verified"
    print(f"{args.store}: {done} {result['shards']} shard(s) ({result['bytes']} bytes) and metadata.parquet: "
          "all match store.json")
    return 0


def _add_sweep_command(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "sweep", _cmd_sweep, "train every model of a K × latent-size grid in one job",
                        overrides="overrides")
    p.add_argument("config", help="sweep YAML (e.g. configs/default.yaml) or the name of a bundled config "
                                  "(default, demo, paper_grid, relu_l1)")
    cli.add_out(p, "run directory (resumed if it holds checkpoints)", required=True, metavar="RUN")
    p.add_argument("--stop-after", type=int, metavar="STEP", help="stop after this step (resume later)")
    p.add_argument("--distributed", action="store_true",
                   help="one of several processes found by JAX's cluster detection (e.g. SLURM's srun); "
                        "automatic under `jsae launch` and in a SLURM job step of several tasks")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. grid.k=[5,10] train.steps=2000 (also after the options)")


def _add_launch_command(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "launch", _cmd_launch,
                        "run a command as N processes of one distributed job on this machine, e.g. "
                        "`jsae launch -n 2 -- jsae sweep default --out runs/x`")
    p.add_argument("-n", "--processes", type=cli.number(int, lo=1), required=True, metavar="N",
                   help="number of processes")
    p.add_argument("--devices-per-process", type=cli.number(int, lo=1), metavar="D",
                   help="on a CPU, the host devices each process simulates (default: JAX's, one)")
    p.add_argument("--port", type=cli.number(int, lo=1, hi=65535), metavar="PORT",
                   help="the coordinator's port on 127.0.0.1 (default: a free one)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the command every process runs (`jsae …` runs with this installation)")


def _add_store_command(store: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int],
                       help: str) -> argparse.ArgumentParser:
    """``jsae store NAME STORE``: a command on an existing store folder (``info``, ``verify``)."""
    p = cli.add_command(store, name, func, help)
    p.add_argument("store", metavar="STORE", help="store folder")
    return p


def _add_store_commands(sub: argparse._SubParsersAction) -> None:
    store = cli.add_commands(sub.add_parser("store", help="create or inspect embedding stores",
                                            description="create or inspect embedding stores"),
                             "store_command", "what to do with a store")
    overwrite = "replace an existing store at --out (never a folder of other files)"
    p = cli.add_command(store, "import", _cmd_store_import,
                        "write a store from a .npy array [N, M] and a metadata table")
    p.add_argument("embeddings", metavar="X.npy", help=".npy file, float [N, M]")
    p.add_argument("--metadata", metavar="TABLE", help="table with N rows in the same order (.csv, .parquet, .jsonl)")
    cli.add_out(p, "store folder to create", required=True, metavar="STORE")
    p.add_argument("--encoder", metavar="NAME",
                   help="name of the encoder that made the embeddings (recorded in store.json; default: imported)")
    cli.add_overwrite(p, overwrite)

    p = cli.add_command(store, "synth", _cmd_store_synth,
                        "write a synthetic store drawn from a random sparse dictionary")
    cli.add_out(p, "store folder to create", required=True, metavar="STORE")
    p.add_argument("--rows", type=int, default=20000, help="number of embeddings")
    p.add_argument("--dim", type=int, default=192, help="embedding dimension M")
    p.add_argument("--atoms", type=int, default=256, help="atoms of the random dictionary")
    p.add_argument("--active", type=int, default=8, help="atoms active in each row")
    p.add_argument("--noise", type=float, default=0.02, help="standard deviation of the added Gaussian noise")
    p.add_argument("--seed", type=int, default=0, help="random seed (the dictionary, the rows, the metadata)")
    cli.add_overwrite(p, overwrite)

    p = _add_store_command(store, "info", _cmd_store_info, "print a store's info and first metadata rows")
    p.add_argument("--head", type=int, default=5, metavar="N", help="metadata rows to print")

    p = _add_store_command(store, "verify", _cmd_store_verify,
                           "re-hash every shard and the metadata table against store.json; name the bad ones")
    p.add_argument("--record", action="store_true",
                   help="a store written before jsae recorded hashes: read every shard, then record them")


def _embed_missing(error: ImportError):
    def cmd(args: argparse.Namespace) -> int:
        from jsae.errors import JsaeError

        raise JsaeError(f"the embed extra (torch, NeMo) is not installed ({error}); install it with: "
                        "pip install torch==2.13.0 && pip install -e '.[embed]'")
    return cmd


def _add_embed_command(sub: argparse._SubParsersAction) -> None:
    what = "export speaker embeddings from audio into a store (resumable, shardable)"
    try:
        from jsae.embed.cli import DESCRIPTION, add_embed_arguments, run_embed
    except ImportError as err:  # only `jsae embed` needs the embed package's dependencies
        p = cli.add_command(sub, "embed", _embed_missing(err), what)
        p.add_argument("rest", nargs=argparse.REMAINDER, help="the options of `jsae embed` (not installed)")
        return
    add_embed_arguments(cli.add_command(sub, "embed", run_embed, what, description=DESCRIPTION))


def _add_describe_command(sub: argparse._SubParsersAction) -> None:
    what = "add per-segment acoustic descriptors (eGeMAPS, speech probability) to a store's metadata"
    try:
        from jsae.embed.cli import DESCRIBE_DESCRIPTION, add_describe_arguments, run_describe
    except ImportError as err:  # only `jsae describe` needs the embed package's dependencies
        p = cli.add_command(sub, "describe", _embed_missing(err), what)
        p.add_argument("rest", nargs=argparse.REMAINDER, help="the options of `jsae describe` (not installed)")
        return
    add_describe_arguments(cli.add_command(sub, "describe", run_describe, what, description=DESCRIBE_DESCRIPTION))


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="jsae", description=__doc__)
    parser.add_argument("--version", action="version", version=f"jsae {__version__}",
                        help="print the version (jsae X.Y.Z) and exit")
    sub = cli.add_commands(parser, "command", "the command (`jsae COMMAND --help` for its options)")
    _add_sweep_command(sub)
    _add_launch_command(sub)
    _add_store_commands(sub)
    _add_embed_command(sub)
    _add_describe_command(sub)
    add_demo_command(sub)
    add_export_command(sub)
    add_analysis_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jsae ARGV`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.run(build_parser(), sys.argv[1:] if argv is None else argv)
