"""The files, figures and printed table of a universality comparison (:mod:`jsae.analyses.universality`).

:func:`write_universality` writes ``universality.csv`` (one row per model pair),
``universality_matches.csv`` (A→B best match per feature), ``universality.json``,
``analysis.json``, a histogram of the best-match scores against the chance control and a
K × L heatmap of ``mean_max_ab``. :func:`run_universality` loads both runs, compares them
and writes into ``RUN_A/analysis/universality-<RUN_B>-<HASH of its path>`` (or ``out``);
:func:`universality_table` is the short table the ``jsae universality`` command prints.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analyses.labelled import as_store
from ..analyses.universality import UniversalityResult, compare_sweeps
from ..models import ModelBatch
from ..plots import plot_heatmap, pyplot, save_figure
from .folders import (batch_and_dir, check_output, check_same_parameters, finish_output, folder_name, format_table,
                      output_folder, short_hash, source_record, write_analysis, write_csv, write_json, writing_output)
from .folders import option_parts, signature_defaults

__all__ = ["write_universality", "run_universality", "universality_folder_name", "universality_table"]


def _plot_hist(res: UniversalityResult, path: Path) -> Path:
    plt = pyplot()

    score = np.concatenate([m["score"].to_numpy() for m in res.matches.values()])
    ctrl = np.concatenate([m["control"].to_numpy() for m in res.matches.values()])
    score, ctrl = score[np.isfinite(score)], ctrl[np.isfinite(ctrl)]
    what = "decoder cosine" if res.params["method"] == "decoder" else "activation correlation"
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(min(-0.1, float(np.min(ctrl, initial=0))), 1.0, 45)
    ax.hist(score, bins=bins, alpha=0.6, color="tab:green", label=f"A→B (mean {score.mean():.3f})")
    ax.hist(ctrl, bins=bins, alpha=0.5, color="tab:gray", label=f"control: {res.params['control']} "
                                                               f"(mean {ctrl.mean():.3f})")
    ax.axvline(res.params["threshold"], color="black", ls="--", lw=0.8)
    ax.set_xlabel(f"best-match {what}")
    ax.set_ylabel("features (all model pairs)")
    ax.set_title(f"{Path(res.params['run_a']).name} vs {Path(res.params['run_b']).name}", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_universality(res: UniversalityResult, out_dir: str | Path) -> list[Path]:
    """``universality.csv``, ``universality_matches.csv``, ``universality.json``, a histogram
    of best-match scores against the control and a K × L heatmap of ``mean_max_ab``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "universality.csv", out / "universality_matches.csv"]
    write_csv(res.pairs, files[0])
    write_csv(pd.concat([m.assign(name=n) for n, m in res.matches.items()]), files[1])
    files.append(write_json(out / "universality.json", {"params": res.params, "pairs": res.pairs}))
    files.append(_plot_hist(res, out / "universality_hist.png"))
    files.append(plot_heatmap(res.pairs.to_dict(orient="records"), "mean_max_ab", out / "mean_max.png",
                              title=f"mean best-match {res.params['method']} score A→B"))
    summary = {k: res.params[k] for k in ("method", "score", "control_score", "frac_matched",
                                          "control_frac_matched", "threshold")}
    files.append(write_analysis(out, "universality", res.params, summary, files,
                                tables={"model pairs": "universality.csv"}))
    return files


#: the defaults of :func:`~jsae.analyses.universality.compare_sweeps` that leave the folder name as it is
_UNIV_DEFAULTS = signature_defaults(compare_sweeps, ("method", "threshold", "max_rows", "seed"))
#: the parameters a comparison depends on (recorded in ``analysis.json``, compared before a rerun)
UNIVERSALITY_IDENTITY = ("run_a", "run_b", "models_a", "models_b", "store", "store_b", *_UNIV_DEFAULTS)


def universality_folder_name(name_b: str, path_b: str | Path | None = None, **options: Any) -> str:
    """The default folder of a comparison: ``universality-<RUN_B's name>-<HASH>`` with the
    defaults (``HASH``: a short hash of RUN_B's absolute path ``path_b``, so two runs of the
    same name, ``seedA/run`` and ``seedB/run``, never share a folder), plus the options that
    differ from :func:`~jsae.analyses.universality.compare_sweeps`'s defaults (``decoder``,
    ``thr0.8``, ``rows5000``, ``seed1``)."""
    o = {**_UNIV_DEFAULTS, **{k: v for k, v in options.items() if k in _UNIV_DEFAULTS}}
    where = None if path_b is None else short_hash(os.path.abspath(path_b))
    parts: list[Any] = ["universality", name_b, where, *option_parts(o, _UNIV_DEFAULTS, {"method": "", "threshold": "thr",
                                                                                   "max_rows": "rows", "seed": "seed"})]
    return folder_name(*parts, fixed=3)


def run_universality(run_a: "str | Path | ModelBatch", run_b: "str | Path | ModelBatch", *, out: str | Path | None = None,
                     overwrite: bool = False, **kwargs: Any) -> tuple[UniversalityResult, Path]:
    """Load two sweeps, compare them, write the outputs into A's analysis folder (default
    ``RUN_A/analysis/<universality_folder_name(...)>``, ``universality-<RUN_B's name>-<HASH>``
    with the default options). A folder holding a comparison of other parameters (other runs,
    models, stores, method, threshold, …) is refused before any work unless
    ``overwrite=True``; overwritten, the folder is replaced as one unit
    (no file of the old comparison remains; a failure leaves it whole)."""
    if out is not None:
        check_output(out, "universality")  # before the work: new, empty or an earlier comparison
    (sweep_a, run_a), (sweep_b, run_b) = batch_and_dir(run_a), batch_and_dir(run_b)
    for key in ("store", "store_b"):  # opened once, for the check and for the comparison
        if kwargs.get(key) is not None:
            kwargs[key] = as_store(kwargs[key])
    name_b = Path(run_b).resolve().name if run_b is not None else "b"
    name = universality_folder_name(name_b, None if run_b is None else Path(run_b).resolve(), **kwargs)
    folder = output_folder(run_a, name, out)
    check_output(folder, "universality", run_dir=run_a, out_given=out is not None)
    o = {**_UNIV_DEFAULTS, **{k: v for k, v in kwargs.items() if k in _UNIV_DEFAULTS}}
    identity = {"method": o["method"], "threshold": float(o["threshold"]), "max_rows": int(o["max_rows"]),
                "seed": int(o["seed"]),
                "run_a": None if sweep_a.run_dir is None else os.path.abspath(sweep_a.run_dir),
                "run_b": None if sweep_b.run_dir is None else os.path.abspath(sweep_b.run_dir),
                "models_a": list(sweep_a.names), "models_b": list(sweep_b.names),
                **{k: None if kwargs.get(k) is None else str(kwargs[k].path) for k in ("store", "store_b")}}
    source = source_record(sweep_a, {k: kwargs.get(k) for k in ("store", "store_b")}, sweep_b)
    check_same_parameters(folder, "universality", identity, UNIVERSALITY_IDENTITY, overwrite, source=source)
    res = compare_sweeps(sweep_a, sweep_b, **kwargs)
    with writing_output(folder, "universality") as tmp:  # replaced as one unit when every file is written
        write_universality(res, tmp)
        finish_output(tmp, identity, (), source)
    return res, folder


def universality_table(res: UniversalityResult) -> str:
    """The short printed table of a comparison."""
    return format_table(res.pairs, ["name", "method", "n_a", "n_b", "mean_max_ab", "frac_matched_ab", "mean_max_ba",
                                    "control_mean_max"])
