"""What the report page shows: the context of its template, gathered from a run.

:func:`page_context` reads ``RUN_DIR/sweep.json`` (models, step, data, metrics) and the
run's figures, and every analysis folder under ``RUN_DIR/analysis/`` (its
``analysis.json``, tables and figures) and, for every feature the analyses identified,
its top-activating segments (:mod:`jsae.report.segments`). Figures are embedded as base64
PNG, so the page is one file that can be mailed around.

**Safety.** Metadata, analysis files and paths are data, never markup: every value is
handed to the template as text, which escapes it. :data:`CSP`, the page's
Content-Security-Policy, allows no script at all, images and audio only as ``data:`` URIs
(audio also as a local ``file:`` link) and inline styles only. Figures and tables named
by an ``analysis.json`` are read only from inside that analysis folder.

**Paths.** An ``analysis.json`` names its files relative to its own folder and its store
by an absolute path, so the page is the same whatever the working directory and after
the run is moved; older files that recorded working-directory paths are read through
:func:`jsae.outputs.folders.listed_file` and :func:`jsae.outputs.folders.analysis_workdir`.
A listed figure or table that is not found is named on the page, never dropped silently.

**Out of date.** An analysis computed at another training step than the run's step now,
or from a store whose content changed since (its ``analysis.json``'s ``computed_from``:
step and store fingerprint), is marked "out of date" with the reason and "re-run it"
(:func:`jsae.outputs.folders.stale_marks`), and so is its link.

**CSV.** The analyses' CSV files prefix text that a spreadsheet would read as a formula
with ``'`` (:func:`jsae.outputs.folders.write_csv`); the page reads them back raw
(:func:`jsae.outputs.folders.read_csv`).

**Models.** ``models`` (names) restricts every per-model table (its rows whose ``name``
is not one of them are left out), the headline and the top-activating segments.

**Group recall.** A probe's ``probe_groups.csv`` (one row per model × latent × column ×
value) is shown as a small matrix for its best model among those shown: latents × group
values, cells = recall within the value (:func:`jsae.outputs.probe.group_matrix`; the title
says what was cut).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..analyses.labelled import as_store
from ..errors import JsaeError
from ..jsonio import to_jsonable
from ..outputs.folders import analysis_workdir, listed_file, read_analyses, read_csv, stale_marks
from ..outputs.probe import GROUPS_FILE, best_model, group_matrix
from .headline import headline
from .segments import feature_section
from .tables import drop_defaults, only_models, table

__all__ = ["page_context", "model_names", "CSP"]

#: the page needs no script; images are data: URIs, audio data: URIs (or a local file: link)
CSP = ("default-src 'none'; img-src data:; media-src data: file:; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")
#: the columns of the training table (those the metrics have)
METRIC_COLUMNS = ("name", "k", "latent_size", "val_nmse", "fraction_variance_explained", "dead_fraction", "mean_l0")


def _image(path: Path) -> dict[str, str]:
    return {"name": path.name, "src": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")}


def _stored_path(path: Any, workdir: Path | None) -> str:
    """A store path an analysis recorded. Current analyses record absolute paths; an older
    relative one was relative to the analysis' working directory (``workdir``, inferred by
    :func:`jsae.outputs.folders.analysis_workdir`), tried first, then to the current one."""
    text = str(path)
    if workdir is not None and not Path(text).is_absolute() and (workdir / text).exists():
        return str(workdir / text)
    return text


def model_names(info: dict[str, Any]) -> dict[tuple[int, int], str]:
    """``{(k, latent_size): name}`` of the TopK models a run's ``sweep.json`` lists."""
    out = {}
    for m in info.get("models") or []:
        if isinstance(m, dict) and m.get("k") is not None and m.get("latent_size") is not None:
            out.setdefault((int(m["k"]), int(m["latent_size"])), str(m.get("name")))
    return out


def _group_recall(folder: Path, a: dict[str, Any], title: str, path: Path,
                  models: set[str] | None) -> tuple[str, dict[str, Any]] | None:
    """A probe's group-recall table as a latents × values matrix of its best model among
    ``models`` (by ``probe.csv``, else the summary's ``best_model``); None without one."""
    groups = read_csv(path, dtype={"column": str, "value": str})
    name = (a.get("summary") or {}).get("best_model")
    probe_csv = listed_file(folder, (a.get("tables") or {}).get("probe", "probe.csv"))
    if probe_csv is not None:
        df = only_models(read_csv(probe_csv), models)
        if {"name", "f1"} <= set(df.columns) and len(df):
            name = best_model(df)["name"]
    if name is None or (models is not None and str(name) not in models):
        return None
    matrix, note = group_matrix(groups, str(name))
    head = (f"{title}, {name} (best model; cells: share of the value's positive test rows where the latent fires"
            + (f"; {note}" if note else "") + ")")
    return head, table(matrix)


def _analysis_entry(folder: Path, a: dict[str, Any], models: set[str] | None, step: Any = None) -> dict[str, Any]:
    """One analysis for the template: its parameters, summary, tables, figures, the notes
    about listed files that were not found (segments are added by :func:`page_context`) and
    its ``stale`` marks (:func:`jsae.outputs.folders.stale_marks`: computed at another step
    than the run's ``step``, or from a store that changed since)."""
    entry: dict[str, Any] = {"id": f"a-{folder.name}", "kind": str(a.get("analysis", "?")), "name": folder.name,
                             "params": json.dumps(to_jsonable(a.get("params", {})), default=str), "summary": None,
                             "tables": [], "images": [], "notes": [], "segments": None,
                             "stale": stale_marks(a, step)}
    summ = {k: v for k, v in (a.get("summary") or {}).items() if not isinstance(v, (list, dict))}
    if summ:
        entry["summary"] = table(pd.DataFrame([summ]))
    absent: list[str] = []
    for title, name in (a.get("tables") or {}).items():
        path = listed_file(folder, name)
        if path is None:
            absent.append(str(name))
            continue
        if entry["kind"] == "probe" and path.name == GROUPS_FILE:
            shown = _group_recall(folder, a, str(title), path, models)
            if shown is not None:
                entry["tables"].append(shown)
            continue
        entry["tables"].append((str(title), table(drop_defaults(only_models(read_csv(path), models)))))
    for f in a.get("files") or []:
        if not str(f).lower().endswith(".png"):
            continue
        path = listed_file(folder, f)
        if path is None:
            absent.append(str(f))
        else:
            entry["images"].append(_image(path))
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        entry["notes"].append(f"not shown: {shown}, listed in {folder / 'analysis.json'} but not found inside "
                              f"{folder} (only files inside an analysis folder are read).")
    return entry


def page_context(run_dir: Path, info: dict[str, Any], *, top: int = 5,
                 audio_root: str | Path | Iterable[str | Path] | None = None, store: str | Path | None = None,
                 models: set[str] | None = None, max_features: int = 12,
                 page_dir: Path | None = None) -> dict[str, Any]:
    """The template context of a run's page (``info``: its ``sweep.json``).

    ``store``: where to look for top-activating segments (default: the store each
    analysis used); ``audio_root``: a folder audio may be read from; ``models``: the
    names of the models to show (``None``: every model); ``max_features``: segments for at
    most this many features per analysis; ``page_dir``: the folder the page is written to
    (links into a feature atlas are relative to it; default ``RUN/analysis``).
    """
    data = info.get("data") if isinstance(info.get("data"), dict) else {}
    ctx: dict[str, Any] = {
        "csp": CSP, "run_name": run_dir.name, "run_path": str(run_dir.resolve()),
        "n_models": len(info.get("models") or []), "step": info.get("step"), "dim": info.get("dim"),
        "source": str(data.get("source")), "n_train": data.get("n_train"), "n_val": data.get("n_val"),
        "unfinished": info.get("total_steps") is not None and not info.get("complete", True),  # killed/stopped
        "total_steps": info.get("total_steps"),
    }
    analyses = read_analyses(run_dir)
    ctx["headline"] = headline(analyses, models, page_dir if page_dir is not None else run_dir / "analysis")
    ctx["links"] = ([("headline", "Headline")] * bool(ctx["headline"]) + [("training", "Training")]
                    + [(f"a-{f.name}", f"{a.get('analysis', '?')}: {f.name}"
                        + (" (out of date)" if stale_marks(a, info.get("step")) else "")) for f, a in analyses])
    metrics = info.get("metrics") or []
    ctx["metrics"] = (table(only_models(pd.DataFrame(metrics)[[c for c in METRIC_COLUMNS if c in metrics[0]]],
                                        models), max_rows=200)
                      if metrics and isinstance(metrics[0], dict) else None)
    ctx["training_images"] = [_image(p) for p in sorted(run_dir.glob("*.png")) if p.is_file()]

    names = model_names(info)
    sweep = None
    ctx["analyses"] = []
    for folder, a in analyses:
        entry = _analysis_entry(folder, a, models, info.get("step"))
        ctx["analyses"].append(entry)
        feats = list(a.get("features") or [])
        if models is not None:
            feats = [f for f in feats if names.get(_model_key(f)) in models]
        feats = feats[:max_features]
        src = store or (a.get("params") or {}).get("store")
        if not (feats and src):
            continue
        try:
            st = as_store(store if store else _stored_path(src, analysis_workdir(folder, a)))
        except (JsaeError, OSError) as err:  # a moved store should not stop the report
            entry["notes"].append(f"store {src} unavailable: {err}")
            continue
        if st.dim != int(info.get("dim", st.dim)):
            entry["notes"].append(f"store {st.path} holds {st.dim}-d embeddings but this run was trained on "
                                  f"{info.get('dim')}-d ones: no top-activating segments (pass the store of the "
                                  "training encoder with --data).")
            continue
        if sweep is None:
            from ..runs.load import load_run

            sweep = load_run(run_dir)
        entry["segments"] = feature_section(sweep, feats, st, top, audio_root)
    return ctx


def _model_key(feature: dict[str, Any]) -> tuple[int, int] | None:
    """``(k, latent_size)`` of a feature an analysis identified, or None."""
    try:
        return int(feature["k"]), int(feature["latent_size"])
    except (KeyError, TypeError, ValueError):
        return None
