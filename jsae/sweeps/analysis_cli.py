"""The analysis subcommands of ``jsae``: thin wrappers over :mod:`jsae.outputs` (probe, split,
steer, universality, consistency), :mod:`jsae.report` and :mod:`jsae.atlas` (the feature atlas).

    jsae probe RUN --data STORE --label COL --positive VALUE [--negative VALUE] [SELECTION]
               [--train-split train] [--test-split test] [--group COL ...] [--C 1] [--standardize]
               [--family-min-precision 0.9] [--family-max 5] [--family-min-gain 0.02] [--out DIR] [--overwrite]
    jsae split RUN --data STORE --label COL --positive VALUE --group COL [--negative VALUE] [SELECTION]
               [--train-split train] [--test-split test|all] [--min-coverage 0.2] [--min-within 0.8]
               [--max-overlap 0.5|none] [--family-min-precision 0.9] [--family-max 5] [--family-min-gain 0.02]
               [--min-cosine C] [--out DIR] [--overwrite]
    jsae steer RUN --data STORE --label COL --positive VALUE [--negative VALUE] [SELECTION]
               [--latent auto|INDEX] [--alpha A [A ...]] [--alpha-units raw|mean_active|normalized]
               [--mode flip|ablate] [--flip-threshold [--a-max 50]] [--train-split train]
               [--test-split test] [--out DIR] [--overwrite]
    jsae universality RUN_A RUN_B [SELECTION] [--data STORE [--data-b STORE_B]]
               [--method auto|decoder|activation] [--threshold 0.9] [--max-rows 20000] [--out DIR]
               [--overwrite]
    jsae consistency [RUN] --data STORE --label COL --positive VALUE [--negative VALUE]
               [--speaker speaker] [--group COL] [--test-split all] [--min-rows 2] [--folds 5] [--C 1]
               [--seed 0] [--out DIR] [--overwrite]
    jsae report RUN [SELECTION] [--data STORE] [--top 5] [--audio-root DIR] [--out FILE]
    jsae atlas RUN --data STORE [SELECTION] [--out DIR] [--audio-root DIR] [--top 10] [--per-band 3]
               [--no-audio] [--overwrite]

    SELECTION: [--model NAME ...] [--k K [K ...]] [--latent-size L [L ...]]   (default: every model)

Results (JSON, CSV, PNG) go to ``RUN/analysis/<name>/`` unless ``--out`` says otherwise
(consistency without a RUN: ``runs/consistency/<name>/``); a short table is printed. The
default ``<name>`` holds the options that change the output (only the non-default ones), and
a folder holding an output of other parameters is refused unless ``--overwrite``. An output
folder is written aside and replaces the previous one only when complete (a killed run or a
full disk leaves the previous output whole; a full disk or read-only folder is one line).
Nothing is written or deleted through a symbolic link: ``--out``, ``RUN/analysis`` and the
folders in it must be real folders; ``--out`` must be a folder (the report's: a file).
"""
from __future__ import annotations

import argparse

from jsae.analyses import defaults as D  # the analyses' defaults, without importing the analyses
from jsae.sweeps import conventions as cli

__all__ = ["add_analysis_commands"]


def _cmd_probe(args: argparse.Namespace) -> int:
    from jsae.outputs.probe import family_table, group_table, logreg_note, probe_table, run_probe

    df, out = run_probe(cli.load_models(args.run, args), args.data, args.label, args.positive,
                        negative=args.negative, out=args.out, overwrite=args.overwrite, train_split=args.train_split,
                        test_split=args.test_split, C=args.C, standardize=args.standardize,
                        family_min_precision=args.family_min_precision, family_max=args.family_max,
                        family_min_gain=args.family_min_gain, groups=tuple(args.group or ()))
    a = df.attrs
    print(f"probe {a['label']}={a['positive']}: {a['n_train']} train rows ({a['n_train_positive']} positive), "
          f"{a['n_test']} test rows ({a['n_test_positive']} positive)")
    print(probe_table(df))
    print(logreg_note(df))
    print(f"feature family (train precision ≥ {a['family_min_precision']}, at most {a['family_max']} latents; "
          "union scored on test):")
    print(family_table(df))
    print(group_table(df))
    print(f"results: {out}")
    return 0


def _overlap(text: str) -> float | None:
    """``--max-overlap``: a share in (0, 1], or ``none``."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or none, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or none, got {text!r}")
    return value


def _one_k(batch) -> int:
    """The k of a selection that must hold one (the split follows one k across latent sizes)."""
    from jsae.errors import BadValueError

    if len(batch.ks) != 1:
        found = ", ".join(map(str, batch.ks)) or "none (no TopK model)"
        raise BadValueError(f"split follows a feature across the latent sizes of one k; the selection holds "
                            f"k = {found}: choose one with --k K.")
    return batch.ks[0]


def _cmd_split(args: argparse.Namespace) -> int:
    from jsae.outputs.split import run_split, split_table

    batch = cli.load_models(args.run, args)
    k = _one_k(batch)
    sizes = sorted({s.latent_size for s in batch.specs if s.k == k})
    res, out = run_split(batch, args.data, args.label, args.positive, args.group, k, out=args.out,
                         overwrite=args.overwrite,
                         negative=args.negative, latent_sizes=sizes, root_latent_size=sizes[0],
                         train_split=args.train_split, test_split=args.test_split,
                         min_coverage=args.min_coverage, min_within=args.min_within, min_cosine=args.min_cosine,
                         max_overlap=args.max_overlap, family_min_precision=args.family_min_precision,
                         family_max=args.family_max, family_min_gain=args.family_min_gain)
    p = res.params
    roots = p["root_latents"]
    print(f"split of {p['label']}={p['positive']} by {p['group']}, k={p['k']}: root latent"
          f"{'s' if len(roots) > 1 else ''} {' '.join(map(str, roots))} at L={p['root_latent_size']} "
          f"({p['n_root_samples']} positive rows)")
    print(split_table(res))
    print(f"results: {out}")
    return 0


def _cmd_steer(args: argparse.Namespace) -> int:
    from jsae.outputs.steer import flip_table_text, run_steer, steer_table_text

    # the filters go along too: the default output folder is named by them (steer-…-k20-L200-…)
    res, out = run_steer(cli.load_models(args.run, args), args.data, args.label, args.positive, args.negative,
                         **cli.filters(args), out=args.out, overwrite=args.overwrite, latent=args.latent,
                         alpha=args.alpha, alpha_units=args.alpha_units, mode=args.mode,
                         flip_threshold=args.flip_threshold, a_max=args.a_max, train_split=args.train_split,
                         test_split=args.test_split)
    print(f"steering ({args.mode}, alpha in {res.params['alpha_units']} units); mean δ_s per class before → after:")
    print(steer_table_text(res))
    if res.flip is not None:
        print(flip_table_text(res))
    if len(res.summary) and res.summary["name"].nunique() == 1:
        print(res.table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"results: {out}")
    return 0


def _cmd_universality(args: argparse.Namespace) -> int:
    from jsae.outputs.universality import run_universality, universality_table

    res, out = run_universality(cli.load_models(args.run_a, args), cli.load_models(args.run_b, args), out=args.out,
                                overwrite=args.overwrite, store=args.data, store_b=args.data_b, method=args.method,
                                threshold=args.threshold, max_rows=args.max_rows)
    p = res.params
    print(f"universality ({p['method']}): score {p['score']:.3f} (control {p['control_score']:.3f}), "
          f"matched ≥ {p['threshold']}: {p['frac_matched']:.3f} (control {p['control_frac_matched']:.3f})")
    print(universality_table(res))
    print(f"results: {out}")
    return 0


def _cmd_consistency(args: argparse.Namespace) -> int:
    from jsae.outputs.consistency import consistency_text, run_consistency

    run_dir = cli.load_run(args.run).run_dir if args.run is not None else None  # a RUN must be a run
    res, out = run_consistency(args.data, args.label, args.positive, negative=args.negative, speaker=args.speaker,
                               group=args.group, test_split=args.test_split, min_rows=args.min_rows,
                               n_splits=args.folds, C=args.C, seed=args.seed, out=args.out, run_dir=run_dir,
                               overwrite=args.overwrite)
    print(consistency_text(res))
    print(f"results: {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from jsae.report import build_report

    models = cli.load_models(args.run, args).names if cli.selection_given(args) else None
    path = build_report(args.run, out=args.out, top=args.top, audio_root=args.audio_root, store=args.data,
                        models=models)
    print(f"report: {path}")
    return 0


def _cmd_atlas(args: argparse.Namespace) -> int:
    from jsae.atlas.site import build_site

    summary = build_site(cli.load_models(args.run, args), args.data, args.out, audio_root=args.audio_root,
                         overwrite=args.overwrite, audio=not args.no_audio, n_top=args.top, per_band=args.per_band)
    for line in summary.lines():
        print(line)
    return 0


def _latent(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected `auto` or a latent index (an integer); got {text!r}") from None


def _out_help(name: str) -> str:
    return f"output folder (default: RUN/analysis/{name})"


def _add_probe(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "probe", _cmd_probe,
                        "find the latent of a label in every model (precision/recall heatmaps)")
    cli.add_run(p)
    cli.add_labelled(p, train_split=D.TRAIN_SPLIT, test_split=D.TEST_SPLIT)
    cli.add_selection(p)
    g = p.add_argument_group("probe")
    g.add_argument("--group", action="append", metavar="COL",
                   help="a metadata column whose sub-groups each family member covers, e.g. speaker; "
                        "repeat for several")
    g.add_argument("--C", type=cli.number(lo=0, lo_open=True), default=D.C,
                   help="inverse L2 strength of the logistic regression (> 0)")
    g.add_argument("--standardize", action="store_true", help="fit the regression on unit-variance latents")
    g.add_argument("--family-min-precision", type=cli.number(lo=0, hi=1), default=D.FAMILY_MIN_PRECISION,
                   help="train precision every feature-family latent needs")
    g.add_argument("--family-max", type=cli.number(int, lo=1), default=D.FAMILY_MAX,
                   help="at most this many latents in a family")
    g.add_argument("--family-min-gain", type=cli.number(lo=0, hi=1), default=D.FAMILY_MIN_GAIN,
                   help="stop adding latents when the next adds less train recall than this")
    cli.add_out(p, _out_help("probe-LABEL-POSITIVE[-vs-NEGATIVE][-other options]"))
    cli.add_overwrite(p, "replace an output folder that holds a probe of other parameters")


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "split", _cmd_split,
                        "follow a feature as the latent size grows and find where it splits",
                        description="follow a feature as the latent size grows and find where it splits: the "
                                    "selected models must be of one k (--k K); the feature is taken at the "
                                    "smallest selected latent size and followed through the larger ones")
    cli.add_run(p)
    cli.add_labelled(p, train_split=D.TRAIN_SPLIT, test_split=D.TEST_SPLIT, all_rows=True)
    cli.add_selection(p)
    g = p.add_argument_group("split")
    g.add_argument("--group", required=True, metavar="COL", help="sub-group column of the positives, e.g. gender")
    g.add_argument("--min-coverage", type=cli.number(lo=0, hi=1), default=D.SPLIT_MIN_COVERAGE,
                   help="a child takes at least this share of the root's rows")
    g.add_argument("--min-within", type=cli.number(lo=0, hi=1), default=D.SPLIT_MIN_WITHIN,
                   help="at least this share of a child's rows are the root's")
    g.add_argument("--min-cosine", type=cli.number(lo=-1, hi=1), metavar="C",
                   help="also require this decoder cosine with the root (without it the cosine is only reported)")
    g.add_argument("--max-overlap", type=_overlap, default=D.SPLIT_MAX_OVERLAP, metavar="F|none",
                   help="children of one root whose rows overlap this much (overlap coefficient) are one branch, "
                        "not a split; `none`: every child is its own branch")
    g.add_argument("--family-min-precision", type=cli.number(lo=0, hi=1), default=D.FAMILY_MIN_PRECISION,
                   help="train precision every root latent needs (the roots are the feature's family at the "
                        "smallest latent size)")
    g.add_argument("--family-max", type=cli.number(int, lo=1), default=D.FAMILY_MAX,
                   help="at most this many root latents")
    g.add_argument("--family-min-gain", type=cli.number(lo=0, hi=1), default=D.FAMILY_MIN_GAIN,
                   help="stop adding root latents when the next adds less train recall than this")
    cli.add_out(p, _out_help("split-LABEL-POSITIVE-GROUP-kK[-other options]"))
    cli.add_overwrite(p, "replace an output folder that holds a split of other parameters")


def _add_steer(sub: argparse._SubParsersAction) -> None:
    d = D.SteerOptions()
    p = cli.add_command(sub, "steer", _cmd_steer,
                        "switch a latent off/on (paper Eqs. 1-3) and measure δ_s before/after")
    cli.add_run(p)
    cli.add_labelled(p, train_split=d.train_split, test_split=d.test_split)
    cli.add_selection(p)
    g = p.add_argument_group("steering")
    g.add_argument("--latent", type=_latent, default=d.latent, metavar="auto|INDEX",
                   help="the latent to steer: `auto` (each model's probe latent) or a latent index")
    g.add_argument("--alpha", type=cli.number(lo=-1e6, hi=1e6), nargs="+", default=list(d.alpha), metavar="A",
                   help="steering value(s) a_φ (paper: 1)")
    g.add_argument("--alpha-units", choices=(*D.ALPHA_UNITS, *D.UNIT_ALIASES), default=d.alpha_units,
                   help="raw: the raw-embedding norm of the change; mean_active: multiples of the latent's "
                        "mean activation when it fires; normalized: latent units, the norm in the normalised "
                        f"space (aliases: {', '.join(f'{a} = {u}' for a, u in D.UNIT_ALIASES.items())}). Every "
                        "table prints the conversion")
    g.add_argument("--mode", choices=D.MODES, default=d.mode,
                   help="flip: Eqs. 1-2 (−a for positives, +a for negatives); ablate: set the latent to 0")
    g.add_argument("--flip-threshold", action="store_true",
                   help="also find, per model and class, the smallest a (in --alpha-units) that flips the class "
                        "mean δ_s (steer_flip_threshold.csv, heatmaps over K × L)")
    g.add_argument("--a-max", type=cli.number(lo=0, hi=1e6, lo_open=True), default=d.a_max, metavar="A",
                   help="largest a the flip threshold searches")
    cli.add_out(p, _out_help("steer-LABEL-POSITIVE-vs-NEGATIVE-…"))
    cli.add_overwrite(p, "replace an output folder that holds a steering output of other parameters")


def _add_universality(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "universality", _cmd_universality,
                        "match the features of two sweeps (seeds or encoders)")
    cli.add_run(p, "run_a", help="run directory of the first sweep (the outputs go into its analysis folder)")
    cli.add_run(p, "run_b", help="run directory of the sweep to compare it with")
    cli.add_selection(p)
    g = p.add_argument_group("matching (the selection applies to both runs)")
    g.add_argument("--data", metavar="STORE", help="rows for activation matching and dead latents")
    g.add_argument("--data-b", metavar="STORE_B",
                   help="RUN_B's embeddings of the same segments (same ids); default: --data")
    g.add_argument("--method", choices=D.METHODS, default=D.UNIVERSALITY_METHOD,
                   help="decoder: cosine of the decoder directions (one embedding space); activation: "
                        "correlation of the activations over shared rows; auto: decoder when both runs share "
                        "their embedding space and no --data-b is given, else activation")
    g.add_argument("--threshold", type=cli.number(lo=-1, hi=1), default=D.UNIVERSALITY_THRESHOLD,
                   help="a feature counts as matched at this score")
    g.add_argument("--max-rows", type=cli.number(int, lo=1), default=D.UNIVERSALITY_MAX_ROWS, metavar="N",
                   help="rows used for activation matching")
    cli.add_out(p, "output folder (default: RUN_A/analysis/universality-<RUN_B's name>-<hash of RUN_B's path>[-other options])")
    cli.add_overwrite(p, "replace an output folder that holds a comparison of other parameters")


def _add_consistency(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "consistency", _cmd_consistency,
                        "does a label move every speaker's embeddings the same way? (can one latent carry it?)",
                        description="does a label move every speaker's embeddings the same way, so that one "
                                    "latent can carry it? Needs no sweep; with a RUN the outputs go into "
                                    "RUN/analysis/ (shown by `jsae report RUN`)")
    cli.add_run(p, help="run directory of `jsae sweep` whose analysis folder receives the outputs "
                        "(default: none; the outputs go to runs/consistency/)", optional=True)
    cli.add_labelled(p, train_split=None, test_split=D.ALL_SPLITS, all_rows=True)
    g = p.add_argument_group("consistency")
    g.add_argument("--speaker", default=D.CONSISTENCY_SPEAKER, metavar="COL",
                   help="column whose groups (speakers) must each hold rows of both classes")
    g.add_argument("--group", metavar="COL", help="also measure within each sub-group of this column, e.g. gender")
    g.add_argument("--min-rows", type=cli.number(int, lo=0), default=D.CONSISTENCY_MIN_ROWS, metavar="N",
                   help="rows of each class a speaker needs (at least 1 is used); refused when under 2 qualify")
    g.add_argument("--folds", type=cli.number(int, lo=2), default=D.CONSISTENCY_FOLDS,
                   help="folds of held-out speakers for the linear bound")
    g.add_argument("--C", type=cli.number(lo=0, lo_open=True), default=D.C,
                   help="inverse L2 strength of the logistic regression (> 0)")
    g.add_argument("--seed", type=cli.number(int, lo=0), default=D.CONSISTENCY_SEED,
                   help="seed of the within-speaker label shuffle (chance)")
    cli.add_out(p, "output folder (default: RUN/analysis/consistency-…, without a RUN runs/consistency/…)")
    cli.add_overwrite(p, "replace an output folder that holds a consistency output of other parameters")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "report", _cmd_report, "one self-contained HTML page with every result of a run")
    cli.add_run(p)
    cli.add_selection(p)
    g = p.add_argument_group("report")
    g.add_argument("--data", metavar="STORE", help="store for the segments (default: each analysis's store)")
    g.add_argument("--top", type=cli.number(int, lo=0), default=D.REPORT_TOP, metavar="N",
                   help="top-activating segments per feature")
    g.add_argument("--audio-root", metavar="DIR", help="folder that relative `source` paths are relative to")
    cli.add_out(p, "HTML file (default: RUN/analysis/report.html)", metavar="FILE")


def _count(text: str) -> int:
    """A count option: an integer, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more; got {text!r}")
    return value


def _add_atlas(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "atlas", _cmd_atlas,
                        "a static site with a page per latent: statistics, examples with audio, matches",
                        description="a static site describing every latent of the selected models on a store: "
                                    "an index per model (sortable, searchable) and a page per latent (activation "
                                    "histogram, top and lower-band examples with audio, label enrichment, numeric "
                                    "correlates, decoder neighbours, matches in the other models, the analyses "
                                    "that name it). Open OUT/index.html in a browser")
    cli.add_run(p)
    cli.add_selection(p)
    g = p.add_argument_group("atlas")
    g.add_argument("--data", required=True, metavar="STORE",
                   help="embedding store whose rows describe the latents (its metadata: labels, numeric columns, "
                        "source audio)")
    g.add_argument("--top", type=_count, default=D.ATLAS_N_TOP, metavar="N", help="top-activating examples per latent")
    g.add_argument("--per-band", type=_count, default=D.ATLAS_PER_BAND, metavar="N",
                   help="random examples from each quarter of the firing rows (by activation rank)")
    g.add_argument("--audio-root", metavar="DIR",
                   help="folder audio may be read from besides the store's own (relative `source` paths are "
                        "relative to it)")
    g.add_argument("--no-audio", action="store_true", help="cut no audio: pages without players")
    cli.add_out(p, _out_help("atlas-<STORE folder name>"))
    cli.add_overwrite(p, "replace an output folder that holds an atlas of other parameters")


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``probe``, ``split``, ``steer``, ``universality``, ``consistency``, ``report`` and ``atlas`` to a
    subparser set."""
    for add in (_add_probe, _add_split, _add_steer, _add_universality, _add_consistency, _add_report, _add_atlas):
        add(sub)
