"""The ``jsae`` command: thin wrappers over the library.

    jsae sweep CONFIG --out RUN_DIR [key=value ...]   (CONFIG: a YAML file or a bundled name, e.g. paper_grid)
    jsae store import X.npy [--metadata T.csv|.parquet|.jsonl] --out STORE
    jsae store synth --out STORE [--rows N --dim M ...]
    jsae store info STORE
    jsae embed ...          (embedding export; needs the `embed` extra)
    jsae demo [--full-grid]  (the paper's experiments on the bundled demo corpus)
    jsae export RUN --model k20_L200 --format saelens|sparsify --out DIR   (for SAELens / sparsify)
    jsae probe | split | steer | universality | report ...   (analyses: sweeps/analysis_cli.py)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from jsae.errors import JsaeError, one_line, print_error
from sweeps.analysis_cli import add_analysis_commands
from sweeps.demo import add_demo_command
from jsae.export import add_export_command

__all__ = ["main", "build_parser"]


def _cmd_sweep(args: argparse.Namespace) -> int:
    from jsae.config import load_config
    from jsae.resources import config_path
    from jsae.rundir import check_run_dir, check_validation_rows
    from jsae.train import train_sweep

    cfg = load_config(config_path(args.config), args.overrides)  # a file, else a bundled name (jsae.resources)
    check_run_dir(args.out)          # empty, absent or a jsae run: never the user's own files
    check_validation_rows(cfg)       # refuse before training, not after
    records = train_sweep(cfg, args.out, stop_after=args.stop_after)
    _print_metrics(records)
    print(f"run directory: {Path(args.out).resolve()}")
    return 0


def _print_metrics(records: Sequence[dict]) -> None:
    print(f"{'model':>16} {'val_nmse':>9} {'FVE':>7} {'dead':>6} {'L0':>6}")
    for r in records:
        print(f"{r['name']:>16} {r['val_nmse']:9.4f} {r['fraction_variance_explained']:7.4f} "
              f"{r['dead_fraction']:6.3f} {r['mean_l0']:6.2f}")


def _cmd_store_import(args: argparse.Namespace) -> int:
    import numpy as np

    from jsae.store import load_npy, read_table, write_store

    x = load_npy(args.embeddings)
    table = read_table(args.metadata) if args.metadata else None
    inputs = [args.embeddings] + ([args.metadata] if args.metadata else [])
    store = write_store(args.out, np.asarray(x), table, overwrite=args.overwrite, inputs=inputs,
                        attrs={"encoder": {"name": args.encoder or "imported", "dim": int(x.shape[1])},
                               "source": str(args.embeddings)})
    print(f"wrote {store.num_rows} × {store.dim} embeddings to {store.path}")
    return 0


def _cmd_store_synth(args: argparse.Namespace) -> int:
    from jsae.store import write_store
    from jsae.synthetic import make_dictionary_data, synthetic_table

    data = make_dictionary_data(args.rows, dim=args.dim, n_atoms=args.atoms, active=args.active,
                                noise=args.noise, seed=args.seed)
    store = write_store(args.out, data.x, synthetic_table(args.rows, args.seed), overwrite=args.overwrite,
                        attrs={"encoder": {"name": "synthetic", "dim": args.dim},
                               "synthetic": {"atoms": args.atoms, "active": args.active, "noise": args.noise,
                                             "seed": args.seed}})
    print(f"wrote {store.num_rows} × {store.dim} synthetic embeddings to {store.path}")
    return 0


def _cmd_store_info(args: argparse.Namespace) -> int:
    from jsae.store import open_store

    store = open_store(args.store)
    print(json.dumps(store.info, indent=2))
    print(store.metadata.head(args.head).to_string())
    return 0


def _cmd_embed(argv: Sequence[str]) -> int:
    try:
        from embed.cli import main as embed_main
    except ImportError as err:
        print(f"jsae embed: error: it needs the export extra (torch, NeMo): {one_line(err)}; install it with: "
              "pip install torch==2.13.0 && pip install -e '.[embed]'", file=sys.stderr)
        return 2
    return int(embed_main(list(argv)) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jsae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sweep", help="train every model of a K × latent-size grid in one job")
    p.add_argument("config", help="sweep YAML (e.g. configs/default.yaml) or the name of a bundled config "
                                  "(default, demo, paper_grid, relu_l1)")
    p.add_argument("--out", required=True, help="run directory (resumed if it holds checkpoints)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this step (resume later)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. grid.k=[5,10] train.steps=2000")
    p.set_defaults(func=_cmd_sweep)

    store = sub.add_parser("store", help="create or inspect embedding stores").add_subparsers(
        dest="store_command", required=True)
    p = store.add_parser("import", help="write a store from a .npy array [N, M] and a metadata table")
    p.add_argument("embeddings", help=".npy file, float [N, M]")
    p.add_argument("--metadata", help="table with N rows in the same order (.csv, .parquet, .jsonl)")
    p.add_argument("--out", required=True)
    p.add_argument("--encoder", help="name of the encoder that made the embeddings")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_store_import)
    p = store.add_parser("synth", help="write a synthetic store drawn from a random sparse dictionary")
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--atoms", type=int, default=256)
    p.add_argument("--active", type=int, default=8)
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_store_synth)
    p = store.add_parser("info", help="print a store's info and first metadata rows")
    p.add_argument("store")
    p.add_argument("--head", type=int, default=5)
    p.set_defaults(func=_cmd_store_info)

    sub.add_parser("embed", help="export speaker embeddings from audio (see `jsae embed --help`)", add_help=False)
    add_analysis_commands(sub)
    add_demo_command(sub)
    add_export_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "embed":
        return _cmd_embed(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in ("sweep", "demo") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra  # overrides may follow --out
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except JsaeError as err:  # bad input, files or environment: one line; anything else is a bug (traceback)
        return print_error(err, getattr(args, "prog", "jsae"))
