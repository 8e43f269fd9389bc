"""The analysis subcommands of ``jsae``: thin wrappers over :mod:`jsae.probing`,
:mod:`jsae.splitting`, :mod:`jsae.steering`, :mod:`jsae.universality`, :mod:`jsae.consistency`
and :mod:`jsae.report`.

    jsae probe RUN_DIR --data STORE --label COL --positive VALUE [--groups COL ...] [--family-min-precision 0.9]
               [--family-max 5] [--out DIR]
    jsae split RUN_DIR --data STORE --label COL --positive VALUE --group COL2 --k K [--min-coverage 0.2]
               [--min-within 0.8] [--min-cosine C]
    jsae steer RUN_DIR --data STORE --label COL --positive VALUE [--negative VALUE] --k K --latent-size L
               [--latent auto|INDEX] [--alpha 1 [2 ...]] [--alpha-units raw|mean_active|normalized]
               [--mode flip|ablate] [--flip-threshold [--a-max 50]] [--force]
    jsae universality RUN_A RUN_B [--data STORE [--data-b STORE_B]] [--method auto|decoder|activation]
    jsae consistency --data STORE --label COL --positive VALUE --group COL2 [--by COL3] [--run RUN_DIR | --out DIR]
    jsae report RUN_DIR [--out FILE] [--top 5] [--audio-root DIR]

Results (JSON, CSV, PNG) go to ``RUN_DIR/analysis/<name>/`` unless ``--out`` says
otherwise; a short table is printed.
"""
from __future__ import annotations

import argparse
from typing import Callable

from jsae.errors import JsaeError, print_error

__all__ = ["add_analysis_commands"]


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report bad input (a wrong model, latent, label, value, split, store, or a run whose
    checkpoint is missing or damaged) as one line ``jsae COMMAND: error: …`` with exit
    status 2; the library's message (a :class:`jsae.errors.JsaeError`) names the value and
    the fix. Any other exception is a bug and keeps its traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except JsaeError as err:
            return print_error(err, f"jsae {args.command}")
    return run


def _run(path: str):
    """The sweep of a run directory; a missing, truncated or damaged checkpoint is a
    one-line :class:`jsae.rundir.RunDirError` (this is the CLI's sweep-loading boundary)."""
    from jsae.rundir import load_run

    return load_run(path)


def _cmd_probe(args: argparse.Namespace) -> int:
    from jsae.probing import family_table, probe_table, run_probe

    df, out = run_probe(_run(args.run_dir), args.data, args.label, args.positive, negative=args.negative,
                        out=args.out, train_split=args.train_split, test_split=args.test_split, C=args.C,
                        standardize=args.standardize, family_min_precision=args.family_min_precision,
                        family_max=args.family_max, family_min_gain=args.family_min_gain, groups=args.groups)
    a = df.attrs
    print(f"probe {a['label']}={a['positive']}: {a['n_train']} train rows ({a['n_train_positive']} positive), "
          f"{a['n_test']} test rows ({a['n_test_positive']} positive)")
    print(probe_table(df))
    print(f"feature family (train precision ≥ {a['family_min_precision']}, at most {a['family_max']} latents; "
          "union scored on test):")
    print(family_table(df))
    print(f"results: {out}")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from jsae.splitting import run_split, split_table

    res, out = run_split(_run(args.run_dir), args.data, args.label, args.positive, args.group, args.k, out=args.out,
                         negative=args.negative, latent_sizes=args.latent_sizes,
                         root_latent_size=args.root_latent_size, train_split=args.train_split,
                         eval_split=None if args.eval_split == "all" else args.eval_split,
                         min_coverage=args.min_coverage, min_within=args.min_within, min_cosine=args.min_cosine)
    p = res.params
    print(f"split of {p['label']}={p['positive']} by {p['group']}, k={p['k']}: root latent {p['root_latent']} "
          f"at L={p['root_latent_size']} ({p['n_root_samples']} positive rows)")
    for note in p.get("warnings") or []:
        print(f"warning: {note}")
    print(split_table(res))
    print(f"results: {out}")
    return 0


def _cmd_steer(args: argparse.Namespace) -> int:
    from jsae.steering import flip_table_text, run_steer, steer_table_text

    latent = args.latent if args.latent == "auto" else int(args.latent)
    res, out = run_steer(_run(args.run_dir), args.data, args.label, args.positive, args.negative, out=args.out,
                         force=args.force, k=args.k, latent_size=args.latent_size, latent=latent, alpha=args.alpha,
                         alpha_units=args.alpha_units, mode=args.mode, train_split=args.train_split,
                         test_split=args.test_split, flip_threshold=args.flip_threshold, a_max=args.a_max)
    print(f"steering ({args.mode}, alpha in {res.params['alpha_units']} units); mean δ_s per class before → after:")
    print(steer_table_text(res))
    if res.flip is not None:
        print(flip_table_text(res))
    if len(res.summary) and res.summary["name"].nunique() == 1:
        print(res.table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"results: {out}")
    return 0


def _cmd_universality(args: argparse.Namespace) -> int:
    from jsae.universality import run_universality, universality_table

    res, out = run_universality(_run(args.run_a), _run(args.run_b), out=args.out, store=args.data, store_b=args.data_b,
                                method=args.method, threshold=args.threshold, max_rows=args.max_rows)
    p = res.params
    print(f"universality ({p['method']}): score {p['score']:.3f} (control {p['control_score']:.3f}), "
          f"matched ≥ {p['threshold']}: {p['frac_matched']:.3f} (control {p['control_frac_matched']:.3f})")
    print(universality_table(res))
    print(f"results: {out}")
    return 0


def _cmd_consistency(args: argparse.Namespace) -> int:
    from jsae.consistency import consistency_text, run_consistency

    res, out = run_consistency(args.data, args.label, args.positive, negative=args.negative, group=args.group,
                               by=args.by, split=args.split, min_rows=args.min_rows, n_splits=args.folds, C=args.C,
                               seed=args.seed, out=args.out, run_dir=args.run)
    print(consistency_text(res))
    print(f"results: {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from jsae.report import build_report

    path = build_report(args.run_dir, out=args.out, top=args.top, audio_root=args.audio_root, store=args.data)
    print(f"report: {path}")
    return 0


def _labelled(p: argparse.ArgumentParser, negative_help: str) -> None:
    p.add_argument("run_dir", help="a `jsae sweep` run directory")
    p.add_argument("--data", required=True, help="labelled embedding store (metadata column `split`: train/test)")
    p.add_argument("--label", required=True, help="label column, e.g. lang or kind")
    p.add_argument("--positive", required=True, help="its positive value, e.g. es or music")
    p.add_argument("--negative", default=None, help=negative_help)
    p.add_argument("--train-split", default="train", help="value of `split` to fit on (default train)")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/analysis/<name>)")


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``probe``, ``split``, ``steer``, ``universality``, ``consistency`` and ``report`` to a subparser set."""
    neg = "keep only rows with this negative value (default: every other value is negative)"
    p = sub.add_parser("probe", help="find the latent of a label in every model (precision/recall heatmaps)")
    _labelled(p, neg)
    p.add_argument("--test-split", default="test")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    p.add_argument("--standardize", action="store_true", help="fit the regression on unit-variance latents")
    p.add_argument("--groups", nargs="+", default=[], metavar="COL",
                   help="metadata columns whose sub-groups each family member covers, e.g. speaker gender")
    p.add_argument("--family-min-precision", type=float, default=0.9,
                   help="train precision every feature-family latent needs (default 0.9)")
    p.add_argument("--family-max", type=int, default=5, help="at most this many latents in a family (default 5)")
    p.add_argument("--family-min-gain", type=float, default=0.02,
                   help="stop adding latents when the next adds less train recall than this (default 0.02)")
    p.set_defaults(func=_guard(_cmd_probe))

    p = sub.add_parser("split", help="follow a feature as the latent size grows and find where it splits")
    _labelled(p, neg)
    p.add_argument("--group", required=True, help="sub-group column of the positives, e.g. gender")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--latent-sizes", type=int, nargs="+", default=None, help="default: every size of the sweep")
    p.add_argument("--root-latent-size", type=int, default=None, help="where the followed feature is taken "
                                                                      "(default: the smallest size)")
    p.add_argument("--eval-split", default="test", help="rows for coverage and flows: a split value or `all`")
    p.add_argument("--min-coverage", type=float, default=0.2,
                   help="a child takes at least this share of the root's rows (default 0.2)")
    p.add_argument("--min-within", type=float, default=0.8,
                   help="at least this share of a child's rows are the root's (default 0.8)")
    p.add_argument("--min-cosine", type=float, default=None,
                   help="also require this decoder cosine with the root (default: none; it is reported)")
    p.set_defaults(func=_guard(_cmd_split))

    p = sub.add_parser("steer", help="switch a latent off/on (paper Eqs. 1-3) and measure δ_s before/after")
    _labelled(p, neg)
    p.add_argument("--test-split", default="test")
    p.add_argument("--k", type=int, default=None, help="default: every k")
    p.add_argument("--latent-size", type=int, default=None, help="default: every latent size")
    p.add_argument("--latent", default="auto", help="`auto` (the probe latent) or a latent index")
    p.add_argument("--alpha", type=float, nargs="+", default=[1.0], help="steering value(s) a_φ (paper: 1)")
    p.add_argument("--alpha-units", choices=("raw", "mean_active", "normalized", "absolute"), default="raw",
                   help="raw (default): the raw-embedding norm of the change; mean_active: multiples of the "
                        "latent's mean activation when it fires; normalized (alias absolute): latent units, the "
                        "norm in the normalised space. Every table prints the conversion")
    p.add_argument("--mode", choices=("flip", "ablate"), default="flip",
                   help="flip: Eqs. 1-2 (−a for positives, +a for negatives); ablate: set the latent to 0")
    p.add_argument("--flip-threshold", action="store_true",
                   help="also find, per model and class, the smallest a (in --alpha-units) that flips the class "
                        "mean δ_s (steer_flip_threshold.csv, heatmaps over K × L)")
    p.add_argument("--a-max", type=float, default=50.0, help="largest a the flip threshold searches (default 50)")
    p.add_argument("--force", action="store_true",
                   help="replace an output folder that holds a steering output of other parameters")
    p.set_defaults(func=_guard(_cmd_steer))

    p = sub.add_parser("universality", help="match the features of two sweeps (seeds or encoders)")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--data", default=None, help="rows for activation matching / dead latents")
    p.add_argument("--data-b", default=None, help="RUN_B's embeddings of the same segments (same ids)")
    p.add_argument("--method", choices=("auto", "decoder", "activation"), default="auto")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--max-rows", type=int, default=20000)
    p.add_argument("--out", default=None, help="output folder (default RUN_A/analysis/universality-<RUN_B>)")
    p.set_defaults(func=_guard(_cmd_universality))

    p = sub.add_parser("consistency", help="does a label move every speaker's embeddings the same way? "
                                           "(can one latent carry it?)")
    p.add_argument("--data", required=True, help="labelled embedding store")
    p.add_argument("--label", required=True, help="label column, e.g. lang")
    p.add_argument("--positive", required=True, help="its positive value, e.g. es")
    p.add_argument("--negative", default=None, help=neg)
    p.add_argument("--group", default="speaker", help="column whose groups hold both classes (default speaker)")
    p.add_argument("--by", default=None, help="also measure within each value of this column, e.g. gender")
    p.add_argument("--split", default="all", help="rows of this `split` value (default all rows)")
    p.add_argument("--min-rows", type=int, default=2, help="rows of each class a group needs (default 2; at least 1 "
                                                              "is used); refused when under 2 groups qualify")
    p.add_argument("--folds", type=int, default=5, help="folds of held-out groups for the linear bound")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    p.add_argument("--seed", type=int, default=0, help="seed of the within-group label shuffle (chance)")
    p.add_argument("--run", default=None, help="write into RUN/analysis/ (shown by `jsae report RUN`)")
    p.add_argument("--out", default=None, help="output folder (default runs/consistency/<name>)")
    p.set_defaults(func=_guard(_cmd_consistency))

    p = sub.add_parser("report", help="one self-contained HTML page with every result of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="HTML file (default RUN_DIR/analysis/report.html)")
    p.add_argument("--top", type=int, default=5, help="top-activating segments per feature")
    p.add_argument("--audio-root", default=None, help="folder that relative `source` paths are relative to")
    p.add_argument("--data", default=None, help="store for the segments (default: each analysis's store)")
    p.set_defaults(func=_guard(_cmd_report))
