"""The files and printed tables of a probe (:mod:`jsae.analyses.probing`).

:func:`write_probe` writes ``probe.csv`` (one row per model), ``probe_family.csv`` (one
row per model × feature-family member), ``probe_groups.csv`` (recall within every group
value: one row per model × latent × column × value, the layout of
:mod:`jsae.analyses.probing`), ``probe.json`` and ``analysis.json``, and heatmaps over
K × latent size of the probe latent's test precision, recall and F1, of the test accuracy
of the all-latent logistic regression (titled with its ``C`` and scaling: an L2-regularised
fit, not an upper bound for one latent, whose own accuracy is ``latent_test_accuracy``) and
of the family's union precision and recall. :func:`run_probe` loads the models, probes them
and writes into ``RUN_DIR/analysis/probe-LABEL-POSITIVE`` (or ``out``); :func:`probe_table`,
:func:`logreg_note`, :func:`family_table` and :func:`group_table` are what the ``jsae probe``
command prints; :func:`group_matrix` is the latents × values view of ``probe_groups.csv``
for one model (printed, and shown in the report for the best model).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..analyses.labelled import as_store
from ..analyses.probing import PAPER_MODEL, family_frame, group_recall_frame, probe
from ..models import ModelBatch
from ..plots import plot_heatmap
from .folders import (batch_and_dir, check_output, check_same_parameters, finish_output, folder_name, format_table,
                      output_folder, short_hash, source_record, write_analysis, write_csv, write_json, writing_output)
from .folders import option_parts, signature_defaults, store_key

__all__ = ["write_probe", "run_probe", "probe_folder_name", "probe_table", "family_table", "group_table", "group_matrix", "logreg_note",
           "logreg_description", "best_model", "best_family", "best_by", "reaches_floor", "probe_summary",
           "PROBE_COLUMNS", "FAMILY_COLUMNS", "BEST_BY", "FAMILY_BY", "PRECISION_FLOOR", "GROUPS_FILE", "GROUPS_TABLE"]

#: the columns :func:`probe_table` prints
PROBE_COLUMNS = ("name", "latent", "precision", "recall", "f1", "support", "train_best_latent", "train_best_f1",
                 "logreg_test_accuracy", "latent_test_accuracy")
#: the recall of every latent within every group value (one row per model × latent × column × value)
GROUPS_FILE = "probe_groups.csv"
#: its title in ``analysis.json``'s tables (the report shows it as a matrix for the best model)
GROUPS_TABLE = "group recall"
#: the columns of the printed family table (:func:`family_table`), besides ``family_<group>``
FAMILY_COLUMNS = ("name", "latent", "recall", "family", "family_size", "family_precision", "family_recall",
                  "family_f1")
#: the test precision a probe latent must reach to be named the best single latent of a
#: probe (:func:`best_model`): a latent that fires on many negatives is not a detector of
#: the feature, however high its F1. Below it on every model, the most precise latent is
#: named instead, and said to be below it.
PRECISION_FLOOR = 0.9


def _best_by_words(floor: float) -> str:
    """What :func:`best_model` chooses by, with the precision floor ``floor``, in words."""
    return (f"highest test recall of the probe latents with test precision ≥ {floor:.2f} "
            "(ties: higher F1, then the smaller model)")


#: what :func:`best_model` chooses by (when some probe latent reaches :data:`PRECISION_FLOOR`)
BEST_BY = _best_by_words(PRECISION_FLOOR)
#: what :func:`best_family` chooses by
FAMILY_BY = ("highest test F1 of the feature family's union "
             "(ties: higher union precision, then the smaller model)")


def _smaller_first(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``df`` sorted by ``keys`` (descending), then the smaller model (latent size, K)
    first, then the table's order."""
    df = df.assign(_order=range(len(df)))
    size = [c for c in ("latent_size", "k") if c in df.columns]
    return df.sort_values([*keys, *size, "_order"], ascending=[False] * len(keys) + [True] * (len(size) + 1),
                          kind="stable").drop(columns="_order")


def reaches_floor(precision: Any, floor: float = PRECISION_FLOOR) -> bool:
    """Whether a test precision reaches the precision floor (within rounding error)."""
    try:
        return float(precision) >= floor - 1e-9
    except (TypeError, ValueError):
        return False


def best_by(df: pd.DataFrame, floor: float = PRECISION_FLOOR) -> str:
    """What :func:`best_model` chose the row of ``df`` by, in words."""
    if df["precision"].map(lambda v: reaches_floor(v, floor)).any():
        return _best_by_words(floor)
    return f"highest test precision of the probe latent (none reaches precision {floor:.2f})"


def best_model(df: pd.DataFrame, floor: float = PRECISION_FLOOR) -> pd.Series:
    """The row of a probe table (one row per model) whose probe latent is the best single
    latent: among the probe latents with test precision ≥ ``floor``, the highest test
    recall (ties: higher F1, then the smaller model). When none reaches ``floor``, the
    most precise probe latent (ties: higher recall, F1, then the smaller model); check
    with :func:`reaches_floor`, :func:`best_by` says it in words."""
    precise = df[df["precision"].map(lambda v: reaches_floor(v, floor))]
    if len(precise):
        return _smaller_first(precise, ["recall", "f1"]).iloc[0]
    return _smaller_first(df, ["precision", "recall", "f1"]).iloc[0]


def best_family(df: pd.DataFrame) -> pd.Series | None:
    """The row of a probe table whose feature family has the highest union test F1 (ties:
    higher union precision, then the smaller model); None without measured families."""
    if not {"family_precision", "family_recall"} <= set(df.columns):
        return None
    p, r = df["family_precision"].astype(float), df["family_recall"].astype(float)
    f1 = df["family_f1"].astype(float) if "family_f1" in df.columns else pd.Series(float("nan"), index=df.index)
    f1 = f1.fillna((2 * p * r / (p + r)).where(p + r > 0, 0.0))
    rows = df.assign(family_f1=f1)[f1.notna()]
    return None if rows.empty else _smaller_first(rows, ["family_f1", "family_precision"]).iloc[0]


def _family_latents(value: Any) -> str:
    """The ``family`` cell of a probe table as text: latents separated by spaces."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def logreg_description(C: Any, standardize: Any) -> str:
    """What ``logreg_test_accuracy`` measures, with its regularisation, e.g. ``L2 logistic
    regression on all latents, C = 1, raw latents``."""
    return (f"L2 logistic regression on all latents, C = {float(C):g}, "
            f"{'standardised' if standardize else 'raw'} latents")


def logreg_note(df: pd.DataFrame) -> str:
    """The line printed under :func:`probe_table`: what its two accuracy columns are."""
    a = df.attrs
    fit = logreg_description(a.get("C", 1.0), a.get("standardize", False))
    return (f"logreg_test_accuracy: test accuracy of the {fit} (the fit that chose `latent`); "
            "latent_test_accuracy: the probe latent alone (fires => positive). The regression is regularised: "
            "not an upper bound on one latent's accuracy.")


def probe_summary(df: pd.DataFrame, floor: float = PRECISION_FLOOR) -> dict[str, Any]:
    """The ``summary`` of a probe's ``analysis.json``: the best single latent
    (:func:`best_model`: ``best_*``, ``best_by`` in words, ``precision_floor`` and
    ``best_reaches_floor``), the best feature family (:func:`best_family`:
    ``best_family_model``, ``best_family`` (its latents), ``best_family_size``,
    ``best_family_precision`` / ``_recall`` / ``_f1``, ``best_family_by``) when measured,
    the paper's model (``paper_*``, ``None`` when the models do not include it), the mean
    precision and recall, the best model's all-latent regression and probe-latent test
    accuracies (``best_logreg_test_accuracy``, ``best_latent_test_accuracy``) with the
    regression's ``logreg_C``, ``logreg_standardize`` and ``logreg`` (in words) when known,
    and the best model's own feature family (``family``: its latents, ``family_union_*``)
    when measured."""
    b = best_model(df, floor)
    paper = df[df["name"] == PAPER_MODEL]
    p_row = paper.iloc[0] if len(paper) else None
    summary = {"best_by": best_by(df, floor), "precision_floor": float(floor),
               "best_reaches_floor": reaches_floor(b["precision"], floor),
               "best_model": b["name"], "best_latent": int(b["latent"]), "best_precision": float(b["precision"]),
               "best_recall": float(b["recall"]), "best_f1": float(b["f1"]),
               "paper_model": None if p_row is None else PAPER_MODEL,
               "paper_precision": None if p_row is None else float(p_row["precision"]),
               "paper_recall": None if p_row is None else float(p_row["recall"]),
               "paper_f1": None if p_row is None else float(p_row["f1"]),
               "paper_latent": None if p_row is None else int(p_row["latent"]),
               "mean_precision": float(df["precision"].mean()), "mean_recall": float(df["recall"].mean()),
               "n_models": len(df)}
    for col in ("logreg_test_accuracy", "latent_test_accuracy"):
        if col in df.columns:
            summary[f"best_{col}"] = float(b[col])
    if "C" in df.attrs:
        summary.update({"logreg": logreg_description(df.attrs["C"], df.attrs.get("standardize", False)),
                        "logreg_C": float(df.attrs["C"]), "logreg_standardize": bool(df.attrs.get("standardize"))})
    if "family_recall" in df.columns:
        summary.update({"family": _family_latents(b["family"]), "family_size": int(b["family_size"]),
                        "family_union_precision": float(b["family_precision"]),
                        "family_union_recall": float(b["family_recall"]),
                        "mean_family_recall": float(df["family_recall"].mean())})
        fam = best_family(df)
        if fam is not None:
            summary.update({"best_family_by": FAMILY_BY, "best_family_model": fam["name"],
                            "best_family": _family_latents(fam.get("family")),
                            "best_family_size": None if pd.isna(fam.get("family_size")) else int(fam["family_size"]),
                            "best_family_precision": float(fam["family_precision"]),
                            "best_family_recall": float(fam["family_recall"]),
                            "best_family_f1": float(fam["family_f1"])})
    return summary


def write_probe(df: pd.DataFrame, out_dir: str | Path, *, top_features: int = 3) -> list[Path]:
    """``probe.csv``, ``probe_family.csv`` (one row per model × family member),
    ``probe_groups.csv`` (one row per model × latent × column × value), ``probe.json``
    (params, models, family), ``analysis.json``, and heatmaps over K × latent size of the
    probe latent's precision, recall, F1, the all-latent logistic regression's test
    accuracy (its ``C`` and scaling in the title) and the family's union precision and
    recall."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = df.attrs
    params = {key: v for key, v in a.items()
              if key not in ("family", "family_columns", "group_recall", "group_recall_columns")}
    family = family_frame(df)
    what = f"{a.get('label')}={a.get('positive')}"
    files = [out / "probe.csv", out / "probe_family.csv", out / GROUPS_FILE]
    write_csv(df, files[0])
    write_csv(family, files[1])
    write_csv(group_recall_frame(df), files[2])
    records = df.to_dict(orient="records")
    files.append(write_json(out / "probe.json", {"params": params, "models": records,
                                                 "family": family.to_dict(orient="records")}))
    heatmaps = [("precision", f"{what}: top latent precision (test)", "viridis"),
                ("recall", f"{what}: top latent recall (test)", "viridis"),
                ("f1", f"{what}: top latent F1 (test)", "viridis"),
                # short enough for a one-model figure; logreg_description says it in full
                ("logreg_test_accuracy", f"{what}: all-latent logreg test accuracy (C = {float(a.get('C', 1.0)):g}, "
                 f"{'standardised' if a.get('standardize') else 'raw latents'})", "cividis")]
    if "family_recall" in df.columns:
        heatmaps += [("family_recall", f"{what}: feature family recall (union, test)", "viridis"),
                     ("family_precision", f"{what}: feature family precision (union, test)", "viridis")]
    for key, title, cmap in heatmaps:
        files.append(plot_heatmap(records, key, out / f"{key}.png", title=title, cmap=cmap))
    best = df.sort_values(["f1", "precision"], ascending=False).head(top_features)
    features = [{"k": int(r.k), "latent_size": int(r.latent_size), "latent": int(r.latent),
                 "why": f"{what}: probe latent, test precision {r.precision:.3f}, recall {r.recall:.3f}"}
                for r in best.itertuples()]
    b = best_model(df)
    groups = list(a.get("groups") or [])
    for r in family[(family.name == b["name"]) & ~family.is_probe_latent.astype(bool)].itertuples():
        covers = "".join(f", {g}: {getattr(r, f'{g}_dominant')}" for g in groups)
        features.append({"k": int(r.k), "latent_size": int(r.latent_size), "latent": int(r.latent),
                         "why": f"{what}: feature family member {int(r.member) + 1} of {b['name']}, test precision "
                                f"{r.precision:.3f}, recall {r.recall:.3f}{covers}"})
    summary = probe_summary(df)
    files.append(write_analysis(out, "probe", params, summary, files, features,
                                tables={"probe": "probe.csv", "feature family": "probe_family.csv",
                                        GROUPS_TABLE: GROUPS_FILE}))
    return files


#: the defaults of :func:`~jsae.analyses.probing.probe` that leave the folder name as it is
_PROBE_DEFAULTS = signature_defaults(probe, ("train_split", "test_split", "C", "standardize", "max_iter",
                                             "family_min_precision", "family_max", "family_min_gain", "groups"))
#: the parameters a probe output depends on (recorded in ``analysis.json``, compared before a rerun)
PROBE_IDENTITY = ("label", "positive", "negative", *_PROBE_DEFAULTS, "train", "test", "models", "run_dir", "store")


def probe_folder_name(label: str, positive: str, negative: str | None = None, **options: Any) -> str:
    """The default folder of a probe: ``probe-LABEL-POSITIVE`` with the defaults, plus
    ``vs-NEGATIVE`` and the options that differ from :func:`~jsae.analyses.probing.probe`'s
    defaults (``C0.001``, ``std``, ``iter500``, ``famp0.8``, ``famn3``, ``famg0.05``,
    ``train=…``, ``test=…``, ``groups=speaker+gender``; a short hash past ~100 characters)."""
    o = {**_PROBE_DEFAULTS, **{k: v for k, v in options.items() if k in _PROBE_DEFAULTS}}
    parts: list[Any] = ["probe", label, positive, f"vs-{negative}" if negative is not None else None]
    parts += option_parts(o, _PROBE_DEFAULTS, {"C": "C", "standardize": "std", "max_iter": "iter",
                                               "family_min_precision": "famp", "family_max": "famn",
                                               "family_min_gain": "famg", "train_split": "train=",
                                               "test_split": "test="})
    if o["groups"]:
        parts.append("groups=" + "+".join(map(str, o["groups"])))
    if options.get("train") is not None or options.get("test") is not None:
        parts.append("rows")
    return folder_name(*parts, fixed=3)


def _rows_identity(rows: Any) -> Any:
    """Given train/test rows (Python API): their count and a short hash of their store rows, else None."""
    if rows is None:
        return None
    idx = getattr(rows, "rows", None)
    if idx is None:
        return f"rows-{short_hash(repr(rows))}"
    idx = [int(i) for i in idx]
    return f"{len(idx)} rows-{short_hash([idx, getattr(rows, 'positive', None), getattr(rows, 'negative', None)])}"


def run_probe(run_dir: "str | Path | ModelBatch", store: str | Path, label: str, positive: str, *, negative: str | None = None,
              out: str | Path | None = None, overwrite: bool = False, **kwargs: Any) -> tuple[pd.DataFrame, Path]:
    """Load a sweep (or take a ModelBatch), probe it, write the outputs (default
    ``RUN_DIR/analysis/<probe_folder_name(...)>``, e.g. ``probe-LABEL-POSITIVE`` with the
    default options). A folder holding a probe of other parameters (an explicit ``out``, or
    another store, run or models) is refused before any work unless ``overwrite=True``;
    overwritten, the folder is replaced as one unit
    (no file of the old probe remains; a failure leaves it whole)."""
    if out is not None:
        check_output(out, "probe")  # before the work: --out must be new, empty or an earlier probe
    models, run_dir = batch_and_dir(run_dir)
    store = as_store(store)  # opened once, for the check and for probe
    name = probe_folder_name(label, positive, negative, **kwargs)
    folder = output_folder(run_dir, name, out)
    check_output(folder, "probe", run_dir=run_dir, out_given=out is not None)
    options = {**_PROBE_DEFAULTS, **{k: v for k, v in kwargs.items() if k in _PROBE_DEFAULTS}}
    identity = {**options, "label": label, "positive": str(positive), "negative": negative,
                "C": float(options["C"]), "standardize": bool(options["standardize"]),
                "max_iter": int(options["max_iter"]), "family_min_precision": float(options["family_min_precision"]),
                "family_max": int(options["family_max"]), "family_min_gain": float(options["family_min_gain"]),
                "groups": list(options["groups"] or ()), "train": _rows_identity(kwargs.get("train")),
                "test": _rows_identity(kwargs.get("test")), "models": list(models.names),
                "run_dir": None if models.run_dir is None else os.path.abspath(models.run_dir),
                "store": store_key(store)}
    source = source_record(models, {"store": store})
    check_same_parameters(folder, "probe", identity, PROBE_IDENTITY, overwrite, source=source)
    df = probe(models, store, label, positive, negative=negative, **kwargs)
    with writing_output(folder, "probe") as tmp:  # replaced as one unit when every file is written
        write_probe(df, tmp)
        finish_output(tmp, identity, (), source)
    return df, folder


def probe_table(df: pd.DataFrame) -> str:
    """The short printed table of a probe."""
    return format_table(df, PROBE_COLUMNS)


def family_table(df: pd.DataFrame) -> str:
    """The short printed table of the feature families: the probe latent's recall beside
    the family (its latents, union precision / recall / F1, members' dominant sub-groups)."""
    groups = list(df.attrs.get("groups") or [])
    return format_table(df, [*FAMILY_COLUMNS, *(f"family_{g}" for g in groups)])


def group_matrix(groups: pd.DataFrame, model: str, *, max_latents: int = 5,
                 max_values: int = 12) -> tuple[pd.DataFrame, str]:
    """One model's rows of a group-recall table (``probe_groups.csv``) as a matrix.

    One row per latent (the probe latent, then the family members: at most
    ``max_latents``) with ``latent``, ``role`` (``probe``, ``family member N``, from 1),
    one column per group value, ``COLUMN=VALUE (n=N_POS)``, holding the latent's recall
    within it (at most ``max_values``: those with the most positive test rows, in the
    table's order), and ``neg_fire_rate``. Returns ``(matrix, note)``; ``note`` says what
    was left out ("" when nothing was).
    """
    rows = groups[groups["name"].astype(str) == str(model)]
    latents = list(dict.fromkeys(int(j) for j in rows["latent"]))
    values = rows.drop_duplicates(["column", "value"])[["column", "value", "n_pos"]].reset_index(drop=True)
    kept = values.assign(order=range(len(values))).sort_values(["n_pos", "order"], ascending=[False, True],
                                                               kind="stable").head(max_values).sort_values("order")
    heads = {(str(r.column), str(r.value)): f"{r.column}={r.value} (n={int(r.n_pos)})" for r in kept.itertuples()}
    out = []
    for j in latents[:max_latents]:
        mine = rows[rows["latent"] == j]
        first = mine.iloc[0]
        member = "" if pd.isna(first["member"]) else f"family member {int(first['member']) + 1}"
        role = ", ".join(x for x in ("probe" if str(first["role"]) == "probe" else "", member) if x)
        cells = {heads[(str(r.column), str(r.value))]: float(r.recall) for r in mine.itertuples()
                 if (str(r.column), str(r.value)) in heads}
        out.append({"latent": j, "role": role, **cells, "neg_fire_rate": float(first["neg_fire_rate"])})
    matrix = pd.DataFrame(out, columns=["latent", "role", *heads.values(), "neg_fire_rate"])
    cut = [f"{n} of {total} {what}" for n, total, what in ((min(len(latents), max_latents), len(latents), "latents"),
                                                           (len(kept), len(values), "values"))
           if n < total]
    note = ""
    if cut:
        note = (" and ".join(cut) + " shown" + (" (the values with the most positive test rows)"
                                                  if len(kept) < len(values) else "") + f"; all in {GROUPS_FILE}")
    return matrix, note


def group_table(df: pd.DataFrame) -> str:
    """The printed recall-within-group-values matrix of the best model (:func:`group_matrix`)."""
    b = best_model(df)
    matrix, note = group_matrix(group_recall_frame(df), b["name"])
    head = (f"recall within each group value, {b['name']} (best model): share of that value's positive test rows "
            "where the latent fires; neg_fire_rate: on the negative test rows" + (f" ({note})" if note else ""))
    return head + ":\n" + format_table(matrix)
