"""The files, figures and printed tables of steering (:mod:`jsae.analyses.steering`).

:func:`write_steer` writes ``steer_summary.csv`` (one row per model × alpha),
``steer_table.csv`` (the paper's Tables III–IV for the first model and alpha),
``steer.json`` and ``analysis.json``, the δ_s histograms before/after (Figs. 5–6), an
alpha plot per model (several alphas), K × L heatmaps of the mean δ_s after steering
(several models) and, with a flip threshold, ``steer_flip_threshold.csv`` and its K × L
heatmaps. Every table is captioned with the unit of alpha and its conversion
(:func:`units_caption`: ``1 latent unit = ‖d_φ ⊙ s‖ raw``) and gives ``move_fraction``
(mean ‖ε̃ − ε‖ / ‖x‖: how far steering moved the embeddings, as a fraction of their
norm); the flip-threshold table gives the threshold in every unit
(``threshold_raw``, ``threshold_mean_active``, ``threshold_normalized``).

**Output folders.** :func:`run_steer` names its folder by every parameter that
changes the output (:func:`steer_folder_name`) and stores them in
``analysis.json``; a folder holding a steer output of other parameters (an explicit
``--out``, or another store / run) is refused unless ``overwrite=True``
(``--overwrite``). Defaults come from :class:`~jsae.analyses.steering.SteerOptions`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..analyses.labelled import as_store
from ..analyses.steering import UNIT_ALIASES, UNIT_TEXT, SteerOptions, SteerResult, canonical_units, steer
from ..models import ModelBatch
from ..plots import plot_heatmap, pyplot, save_figure
from .folders import (OutputExistsError, batch_and_dir, check_output, check_same_parameters, folder_name,
                      format_table, num, output_folder, record_source, short_hash, source_record, write_analysis,
                      store_key, write_csv, write_json, writing_output)

__all__ = ["write_steer", "run_steer", "steer_folder_name", "SteerOutputExistsError", "steer_table_text",
           "flip_table_text", "units_caption"]


class SteerOutputExistsError(OutputExistsError):
    """The output folder holds a steering output of other parameters (pass ``overwrite=True`` / ``--overwrite``);
    the :class:`~jsae.outputs.folders.OutputExistsError` of steering."""


def _conversion(s: pd.DataFrame) -> str:
    """``1 latent unit = ‖d_φ⊙s‖ = 0.067 raw`` (one value, or the range over the rows)."""
    r = s["raw_per_latent_unit"].to_numpy(np.float64) if "raw_per_latent_unit" in s else np.array([])
    r = r[np.isfinite(r)]
    if not r.size:
        return "1 latent unit = ‖d_φ⊙s‖ raw"
    if np.allclose(r, r[0], rtol=1e-4):
        return f"1 latent unit = ‖d_φ⊙s‖ = {r[0]:.4g} raw"
    return f"1 latent unit = ‖d_φ⊙s‖ = {r.min():.4g}–{r.max():.4g} raw (per model: raw_per_latent_unit)"


def units_caption(res: SteerResult) -> str:
    """One line: what ``alpha`` is measured in and how it converts (for every printed table)."""
    units = res.params.get("alpha_units", SteerOptions.alpha_units)
    if res.params.get("mode") == "ablate":
        return (f"ablation: the latent set to 0 (a = 0); {_conversion(res.summary)}; move_fraction = mean "
                "‖ε̃ − ε‖ / ‖x‖ (the move as a fraction of the embedding norm)")
    return (f"alpha in {units}: {UNIT_TEXT[units]}; a = the value used, in latent units (= normalised-space "
            f"norm); a_raw_norm = |a| · ‖d_φ⊙s‖; {_conversion(res.summary)}; move_fraction = mean ‖ε̃ − ε‖ / ‖x‖ "
            "(the move as a fraction of the embedding norm)")


def _plot_hist(res: SteerResult, name: str, path: Path, alpha_index: int = 0) -> Path:
    """Overlaid histograms of δ_s before/after steering per class (Figs. 5–6)."""
    plt = pyplot()

    p = res.params
    d0, d1, y = res.delta_before[name], res.delta_after[name][alpha_index], res.y
    row = res.summary[res.summary["name"] == name].iloc[alpha_index]
    lo, hi = float(min(d0.min(), d1.min())), float(max(d0.max(), d1.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
    neg = p.get("negative") or f"not {p['positive']}"
    fig, ax = plt.subplots(figsize=(7, 4))
    for sel, cls, color in ((y, p["positive"], "tab:red"), (~y, neg, "tab:blue")):
        ax.hist(d0[sel], bins=bins, color=color, alpha=0.35, label=f"{cls}, before (mean {d0[sel].mean():.3f})")
        ax.hist(d1[sel], bins=bins, color=color, histtype="step", lw=2, hatch="//",
                label=f"{cls}, after (mean {d1[sel].mean():.3f})")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(r"$\delta_s$ = cos(x, $\hat c_{%s}$) − cos(x, $\hat c_{%s}$)" % (p["positive"], neg))
    ax.set_ylabel("test rows")
    ax.set_title(f"{name}, latent {row.latent}: {row['mode']}, alpha={row.alpha:.3g} {row.alpha_units} "
                 f"(a={row.a:.3g} latent units, {row.a_raw_norm:.3g} raw)", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_alpha(res: SteerResult, name: str, path: Path) -> Path:
    plt = pyplot()

    s = res.summary[res.summary["name"] == name].sort_values("alpha")
    p = res.params
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(s.alpha, s.pos_after, "o-", color="tab:red", label=f"{p['positive']} after")
    ax.plot(s.alpha, s.neg_after, "o-", color="tab:blue", label=f"{p.get('negative') or 'others'} after")
    ax.axhline(s.pos_before.iloc[0], color="tab:red", ls=":", label=f"{p['positive']} before")
    ax.axhline(s.neg_before.iloc[0], color="tab:blue", ls=":", label="before")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel(f"a_φ ({s.alpha_units.iloc[0]}; 1 latent unit = {s.raw_per_latent_unit.iloc[0]:.3g} raw)")
    ax.set_ylabel(r"mean $\delta_s$")
    ax.set_title(f"{name}, latent {s.latent.iloc[0]}: steering strength", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _flip_files(res: SteerResult, out: Path) -> tuple[list[Path], dict[str, str]]:
    """``steer_flip_threshold.csv`` and one K × L heatmap of the threshold per class."""
    f, p = res.flip, res.params
    path = out / "steer_flip_threshold.csv"
    write_csv(f, path)
    files = [path]
    units = p["alpha_units"]
    for side in ("positive", "negative"):
        recs = f[f["side"] == side].to_dict(orient="records")
        if len(recs) < 2:  # a K × L map of one model says nothing the CSV does not
            continue
        cls = recs[0]["class"]
        push = "−a" if side == "positive" else "+a"
        files.append(plot_heatmap(
            recs, "threshold", out / f"flip_threshold_{side}.png", fmt=".3g", cmap="viridis_r",
            title=f"smallest a ({units}) flipping the mean δ_s of {cls} rows (latent set to {push}); "
                  f"blank: none up to a_max = {p['a_max']:g}"))
    title = (f"flip threshold: smallest a in [0, {p['a_max']:g}] ({units}) that flips the class mean δ_s, "
             "in every unit (threshold_raw: raw-embedding norm = threshold_normalized · ‖d_φ⊙s‖; "
             "threshold_mean_active = threshold_normalized / mean_active; threshold_normalized: latent units; "
             f"threshold: in {units}; NaN, flipped = False: none up to a_max)")
    return files, {title: path.name}


def write_steer(res: SteerResult, out_dir: str | Path, *, max_histograms: int = 4) -> list[Path]:
    """``steer_summary.csv``, ``steer_table.csv`` (Tables III–IV of the first model,
    first alpha), ``steer.json``, δ_s histograms, an alpha plot (several alphas),
    heatmaps of the mean δ_s after steering (several models) and, with a flip
    threshold, ``steer_flip_threshold.csv`` and (several models) ``flip_threshold_{positive,negative}.png``:
    K × L heatmaps of the threshold per class."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = res.summary
    files = [out / "steer_summary.csv"]
    write_csv(s, files[0])
    names = list(dict.fromkeys(s["name"]))
    first_alpha = float(s["alpha"].iloc[0])
    table = res.table(names[0], first_alpha)
    write_csv(table, out / "steer_table.csv")
    files.append(out / "steer_table.csv")
    caption = units_caption(res)
    files.append(write_json(out / "steer.json", {"params": res.params, "units": caption, "summary": s,
                                                 "table": table, "table_model": names[0],
                                                 "flip_threshold": res.flip}))
    for name in names[:max_histograms]:
        files.append(_plot_hist(res, name, out / f"delta_hist_{name}.png"))
        if s[s["name"] == name]["alpha"].nunique() > 1:
            files.append(_plot_alpha(res, name, out / f"alpha_{name}.png"))
    p = res.params
    units = p.get("alpha_units", SteerOptions.alpha_units)
    if len(names) > 1:
        recs = s[s["alpha"] == first_alpha].to_dict(orient="records")
        for key in ("pos_after", "neg_after"):
            cls = p["positive"] if key == "pos_after" else (p.get("negative") or "others")
            files.append(plot_heatmap(recs, key, out / f"{key}.png", cmap="coolwarm",
                                      title=f"mean δ_s of {cls} rows after steering (alpha={first_alpha:g} {units})"))
    r0 = s.iloc[0]
    value = "a = 0 (ablation)" if p.get("mode") == "ablate" else f"alpha = {first_alpha:g} {units}, a = {r0.a:.4g}"
    tables = {f"mean δ_s before/after steering, {r0['name']}, {value} ({caption})": "steer_table.csv",
              f"summary ({caption})": "steer_summary.csv"}
    if res.flip is not None:
        flip_files, flip_tables = _flip_files(res, out)
        files += flip_files
        tables.update(flip_tables)
    features = [{"k": int(r.k), "latent_size": int(r.latent_size), "latent": int(r.latent),
                 "why": f"steered {p['label']}={p['positive']} latent: δ_s {r.pos_before:.3f} → "
                        f"{r.pos_after:.3f} ({p['positive']}), {r.neg_before:.3f} → {r.neg_after:.3f}"}
                for r in s.drop_duplicates("name").head(3).itertuples()]
    summary = {"model": r0["name"], "latent": int(r0.latent), "alpha": float(r0.alpha), "alpha_units": r0.alpha_units,
               "a": float(r0.a), "a_raw_norm": float(r0.a_raw_norm), "move_fraction": float(r0.move_fraction),
               "units": caption, "table": table}
    if res.flip is not None:
        f0 = res.flip[res.flip["name"] == r0["name"]]
        summary.update({f"flip_threshold_{row.side}": row.threshold for row in f0.itertuples()})
    files.append(write_analysis(out, "steer", res.params, summary, files, features, tables=tables))
    return files


# ----------------------------------------------------------------------------- run folders

#: the parameters a steering output depends on: its folder is named by them (most) and
#: refused for others (all) unless overwritten
_IDENTITY = ("label", "positive", "negative", "k", "latent_size", "latent", "alpha", "alpha_units", "mode",
             "train_split", "test_split", "models", "run_dir", "store", "flip_threshold", "a_max", "n_grid", "tol")


_num = num
_short_hash = short_hash


def steer_folder_name(label: str, positive: str, negative: str | None = None, *, k: Any = None,
                      latent_size: Any = None, latent: int | str | Mapping[str, int] = SteerOptions.latent,
                      alpha: float | Sequence[float] = SteerOptions.alpha,
                      alpha_units: str = SteerOptions.alpha_units, mode: str = SteerOptions.mode,
                      flip_threshold: bool = SteerOptions.flip_threshold, a_max: float = SteerOptions.a_max,
                      n_grid: int = SteerOptions.n_grid, tol: float = SteerOptions.tol,
                      train_split: str = SteerOptions.train_split, test_split: str = SteerOptions.test_split,
                      **_: Any) -> str:
    """The default folder name of a steering run, from every parameter that changes its
    output, e.g. ``steer-lang-es-vs-en-k20-L200-flip-a1-mean_active-thr50``: label, positive,
    ``vs-NEGATIVE``, ``kK``, ``LL``, ``latentI`` (or ``latents-HASH`` of a mapping), the
    mode, the alphas (``a1``, ``a0.5_1_2``; more than four: ``a0.5..8n10-HASH``) and
    their units (flip mode), ``thrA_MAX`` (flip threshold; ``-HASH`` of a non-default
    grid/tolerance), and splits other than the defaults (:class:`~jsae.analyses.steering.SteerOptions`)."""
    units = canonical_units(alpha_units)
    if isinstance(latent, Mapping):
        lat = f"latents-{_short_hash(dict(latent))}"
    elif isinstance(latent, str):
        lat = None if latent == "auto" else f"latent{latent}"
    else:
        lat = f"latent{int(latent)}"
    parts: list[Any] = ["steer", label, positive, f"vs-{negative}" if negative is not None else None,
                        f"k{k}" if k is not None else None, f"L{latent_size}" if latent_size is not None else None,
                        lat, mode]
    if mode != "ablate":
        al = np.atleast_1d(np.asarray(alpha, np.float64))
        parts.append("a" + "_".join(map(_num, al)) if len(al) <= 4 else
                     f"a{_num(al[0])}..{_num(al[-1])}n{len(al)}-{_short_hash(al.tolist())}")
        parts.append(units)
    if flip_threshold:
        extra = (int(n_grid), float(tol)) != (SteerOptions.n_grid, SteerOptions.tol)
        parts.append(f"thr{_num(a_max)}" + (f"-{_short_hash([int(n_grid), float(tol)])}" if extra else ""))
    if train_split != SteerOptions.train_split:
        parts.append(f"train={train_split}")
    if test_split != SteerOptions.test_split:
        parts.append(f"test={test_split}")
    return folder_name(*parts, fixed=3)


def _old_units(key: str, value: Any) -> Any:
    """Older spellings of ``alpha_units`` (aliases) read as today's."""
    return UNIT_ALIASES.get(value, value) if key == "alpha_units" else value


def _check_params(folder: Path, params: dict[str, Any], overwrite: bool,
                  source: dict[str, Any] | None = None) -> list[str]:
    """Refuse (:class:`SteerOutputExistsError`) a folder holding a steering output of other
    parameters unless ``overwrite``; returns the files it lists (to drop stale ones).
    :func:`jsae.outputs.folders.check_same_parameters` with the steering parameters."""
    return check_same_parameters(folder, "steer", params, _IDENTITY, overwrite, error=SteerOutputExistsError,
                                 normalize=_old_units, strict=True, source=source)


def run_steer(run_dir: "str | Path | ModelBatch", store: str | Path, label: str, positive: str,
              negative: str | None = None, *, out: str | Path | None = None, overwrite: bool = False,
              k: int | None = None, latent_size: int | None = None,
              latent: int | str | Mapping[str, int] = SteerOptions.latent,
              alpha: float | Sequence[float] = SteerOptions.alpha, alpha_units: str = SteerOptions.alpha_units,
              mode: str = SteerOptions.mode, flip_threshold: bool = SteerOptions.flip_threshold,
              a_max: float = SteerOptions.a_max, n_grid: int = SteerOptions.n_grid, tol: float = SteerOptions.tol,
              train_split: str = SteerOptions.train_split, test_split: str = SteerOptions.test_split,
              **kwargs: Any) -> tuple[SteerResult, Path]:
    """Load a sweep (or take a ModelBatch), :func:`~jsae.analyses.steering.steer` it, write the outputs.

    The options are :func:`~jsae.analyses.steering.steer`'s (``kwargs``: its others, e.g.
    ``train`` / ``test`` rows). The default folder is
    ``RUN_DIR/analysis/<steer_folder_name(...)>``: runs of other parameters (alphas, units,
    latent, mode, flip threshold, …) write next to each other. A folder that holds a
    steering output of other parameters (all of them are stored in ``analysis.json``: an
    explicit ``out``, another store or run) is refused before any work unless
    ``overwrite=True``; overwritten, the folder is replaced as one unit (no file of the old
    output remains; a failure leaves it whole).
    """
    if out is not None:
        check_output(out, "steer")  # before the work: --out must be new, empty or an earlier steer
    models, run_dir = batch_and_dir(run_dir)
    options = {"k": k, "latent_size": latent_size, "latent": latent, "alpha": alpha, "alpha_units": alpha_units,
               "mode": mode, "flip_threshold": flip_threshold, "a_max": a_max, "n_grid": n_grid, "tol": tol,
               "train_split": train_split, "test_split": test_split}
    kw = {**options, "alpha_units": canonical_units(alpha_units), "flip_threshold": bool(flip_threshold)}
    name = steer_folder_name(label, positive, negative, **kw)
    folder = output_folder(run_dir, name, out)  # models of no run need out: refused before the work
    check_output(folder, "steer", run_dir=run_dir, out_given=out is not None)
    chosen = models.select(k=k, latent_size=latent_size) if k is not None or latent_size is not None else models
    store = as_store(store)  # opened once, for the check and for steer
    planned = {**kw, "label": label, "positive": str(positive), "negative": negative,
               "alpha": [0.0] if mode == "ablate" else np.atleast_1d(np.asarray(alpha, np.float64)).tolist(),
               "latent": dict(latent) if isinstance(latent, Mapping) else latent,
               "models": list(chosen.names), "run_dir": None if models.run_dir is None else str(models.run_dir),
               "store": store_key(store)}
    if not planned["flip_threshold"]:
        planned.update(a_max=None, n_grid=None, tol=None)
    source = source_record(chosen, {"store": store})
    _check_params(folder, planned, overwrite, source)
    res = steer(models, store, label, positive, negative, **options, **kwargs)
    with writing_output(folder, "steer") as tmp:  # replaced as one unit: no file of the old output remains
        write_steer(res, tmp)
        record_source(tmp, source)
    return res, folder


def steer_table_text(res: SteerResult) -> str:
    """The short printed table of a steering run, under a line giving the unit of alpha and its conversion."""
    return units_caption(res) + "\n" + format_table(
        res.summary, ["name", "latent", "alpha", "a", "a_raw_norm", "pos_before", "pos_after", "neg_before",
                      "neg_after", "recon_cosine", "move_fraction"])


def flip_table_text(res: SteerResult) -> str:
    """The printed flip-threshold table (empty without one)."""
    if res.flip is None:
        return ""
    p = res.params
    head = (f"flip threshold: smallest a in [0, {p['a_max']:g}] {p['alpha_units']} that flips the class mean δ_s, "
            "in every unit (threshold_raw: raw-embedding norm; threshold_mean_active: × the latent's mean "
            f"activation; threshold_normalized: latent units; nan: none up to a_max; {_conversion(res.summary)})")
    return head + "\n" + format_table(res.flip, ["name", "latent", "class", "mean_before", "flipped", "threshold_raw",
                                                 "threshold_mean_active", "threshold_normalized"], floatfmt="{:.4g}")
