"""``jsae demo``: the paper's experiments end to end on the bundled demo corpus.

    jsae demo [--out runs/demo] [--full-grid] [--data DATA] [overrides ...]

The config (``demo``), the paper grid (``paper_grid``) and the default ``DATA`` (the
bundled ``data/demo``) are found by :mod:`jsae.resources`: in a checkout, in an
installed wheel, or under ``$JSAE_DATA``.

1. trains the grid of ``configs/demo.yaml`` (``--full-grid``: the paper's 84 models,
   the grid of ``configs/paper_grid.yaml``) on ``DATA/sae_train`` in one job;
2. probes the language feature (``lang`` = es vs en) on ``DATA/language`` and the
   music feature (``kind`` = music vs voice) on ``DATA/music`` over the whole grid;
3. follows the language feature across latent sizes with gender as sub-groups (K = 20),
   and measures whether language is one direction for every speaker of the language set
   (:mod:`jsae.analyses.consistency`, within gender too): what a single language latent can reach;
4. steers both features with the paper's setting (K = 20, L = 200, a_φ = 1) in
   normalised latent units (the unit of the README's results; the paper's unstated unit
   is likelier its raw embedding space, whose conversion every table prints) and, for
   every model, with a_φ = 1 × the latent's mean activation, with the flip threshold
   (the smallest a_φ that flips each class's mean δ_s, also as a raw-embedding norm);
5. builds the feature atlas (:mod:`jsae.atlas`) of each feature's headline models — the
   best single latent's, the best family's and the paper's K = 20, L = 200 — on its
   labelled store, every example playing its bundled clip (``RUN/analysis/atlas-language``,
   ``atlas-music``);
6. writes the HTML report, which links the headline latents into the atlas, and prints where
   both are.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

from jsae.sweeps import conventions as cli

__all__ = ["add_demo_command", "paper_grid_overrides", "headline_models", "run_demo"]

FEATURES = (  # (store, label, positive, negative)
    ("language", "lang", "es", "en"),
    ("music", "kind", "music", "voice"),
)
#: metadata columns whose sub-groups each feature-family member is described by
FAMILY_GROUPS = {"language": ("speaker", "gender"), "music": ("track",)}


def paper_grid_overrides() -> list[str]:
    """``grid.k=[...]`` and ``grid.latent_size=[...]`` of the ``paper_grid`` config (its one definition)."""
    from jsae.config import load_config
    from jsae.resources import config_path

    grid = load_config(config_path("paper_grid")).grid
    return [f"grid.k=[{','.join(map(str, grid.k))}]",
            f"grid.latent_size=[{','.join(map(str, grid.latent_size))}]"]


def headline_models(summary: dict, names: Sequence[str], paper: str) -> list[str]:
    """The models a probe's headline names (its ``analysis.json`` summary: the best single
    latent's, the best family's) and the paper's, those of ``names``, in that order, once each."""
    wanted = [summary.get("best_model"), summary.get("best_family_model"), paper]
    return list(dict.fromkeys(n for n in wanted if n in names))


def run_demo(out: str | Path = "runs/demo", data: str | Path | None = None, *, full_grid: bool = False,
             overrides: Sequence[str] = (), k: int = 20, latent_size: int = 200) -> Path:
    """Run the whole demo; returns the path of the HTML report. ``data``: default the bundled demo stores."""
    from jsae.atlas.site import build_site
    from jsae.config import load_config
    from jsae.errors import JsaeError
    from jsae.outputs.consistency import consistency_text, run_consistency
    from jsae.outputs.probe import family_table, probe_table, run_probe
    from jsae.outputs.split import run_split, split_table
    from jsae.outputs.steer import flip_table_text, run_steer, steer_table_text
    from jsae.report import build_report
    from jsae.resources import config_path, demo_data_dir
    from jsae.runs.check import check_run_dir
    from jsae.runs.load import load_sweep
    from jsae.training.data import check_validation_rows
    from jsae.training.loop import train_sweep

    data, out = demo_data_dir(data), Path(out)
    cfg = load_config(config_path("demo"),
                      [f"data.store={data / 'sae_train'}", *(paper_grid_overrides() if full_grid else []),
                       *overrides])
    t0 = time.perf_counter()

    def stage(name: str) -> None:
        print(f"\n== {name}  (t = {time.perf_counter() - t0:.0f} s)", flush=True)

    check_run_dir(out)
    check_validation_rows(cfg)
    stage(f"sweep: {len(cfg.grid.k) * len(cfg.grid.latent_size)} models on {cfg.data.store}")
    train_sweep(cfg, out, say=print)
    probes = {}
    for store, label, positive, negative in FEATURES:
        stage(f"probe {label}={positive} vs {negative}")
        df, path = run_probe(out, data / store, label, positive, negative=negative, groups=FAMILY_GROUPS[store])
        probes[store] = path
        print(probe_table(df))
        print("feature family (latents that together cover the class; union on the test split):")
        print(family_table(df))
    stage("split lang=es by gender")
    try:
        res, _ = run_split(out, data / "language", "lang", "es", "gender", k, negative="en")
        print(split_table(res))
    except JsaeError as err:  # data-dependent (e.g. the feature never fires): report, go on
        print(f"split skipped: {err}")
    stage("consistency of lang=es across speakers (by gender)")
    try:
        res, _ = run_consistency(data / "language", "lang", "es", negative="en", speaker="speaker",
                                 group="gender", run_dir=out)
        print(consistency_text(res))
    except JsaeError as err:  # too few speakers with both languages (e.g. a tiny corpus)
        print(f"consistency skipped: {err}")
    for store, label, positive, negative in FEATURES:
        stage(f"steer {label}: {positive} ↔ {negative}")
        res, _ = run_steer(out, data / store, label, positive, negative, k=k, latent_size=latent_size,
                           alpha=[1.0], alpha_units="normalized")
        print(f"paper setting (K={k}, L={latent_size}, a=1 in normalised latent units):")
        print(steer_table_text(res))
        res, _ = run_steer(out, data / store, label, positive, negative, alpha=[1.0], alpha_units="mean_active",
                           flip_threshold=True, a_max=50.0)
        print("every model, a = 1 × the latent's mean activation:")
        print(steer_table_text(res))
        print(flip_table_text(res))
    sweep = load_sweep(out)
    atlases = []
    for store, label, positive, negative in FEATURES:
        summary = json.loads((probes[store] / "analysis.json").read_text(encoding="utf-8"))["summary"]
        names = headline_models(summary, sweep.names, f"k{k}_L{latent_size}")
        stage(f"atlas of {', '.join(names)} on {store}")
        site = build_site(sweep.select(names=names), data / store)
        for line in site.lines():
            print(line)
        atlases.append(site.index)
    stage("report")
    report = build_report(out)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; report: {report.resolve()}")
    for index in atlases:
        print(f"atlas: {Path(index).resolve()}")
    return report


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.out, args.data, full_grid=args.full_grid, overrides=args.overrides)
    return 0


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = cli.add_command(sub, "demo", _cmd_demo, "the paper's experiments end to end on the bundled demo corpus",
                        overrides="overrides")
    p.add_argument("--out", default="runs/demo", metavar="RUN", help="run directory (resumed if it holds checkpoints)")
    p.add_argument("--data", metavar="DIR",
                   help="folder with the sae_train, language and music stores (default: the bundled data/demo, "
                        "found in the installed package, $JSAE_DATA or the checkout)")
    p.add_argument("--full-grid", action="store_true",
                   help="the paper's 84 models (the grid of configs/paper_grid.yaml) instead of configs/demo.yaml's")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="sweep config overrides, e.g. train.steps=3000 (also after the options)")
