"""The headline of the report: for every probe, the best model and the paper's setting.

For every probe analysis of the run: its best model and what it was chosen by
(``best_by``), the paper's setting (K = 20, L = 200; the summary's ``paper_*`` or the row
of ``probe.csv``) and the feature family's union (``family_union_*``) when measured.
When the report is restricted to some models, all of it is taken again from the rows of
``probe.csv`` for those models (:func:`jsae.outputs.probe.probe_summary`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..outputs.folders import listed_file
from ..outputs.probe import probe_summary
from .tables import finite_number, table

__all__ = ["headline", "PAPER_SETTING"]

#: the paper's setting (K, L), shown next to the best model of every probe
PAPER_SETTING = (20, 200)
_BEST_BY = {"f1": "test F1 of the probe latent", "precision": "test precision of the probe latent",
            "recall": "test recall of the probe latent", "train_f1": "train F1 of the probe latent",
            "train_best_f1": "train F1 of the best single latent"}


def _f1(precision: Any, recall: Any, f1: Any = None) -> Any:
    """``f1``, else the harmonic mean of ``precision`` and ``recall`` when both are numbers."""
    if f1 is not None:
        return f1
    p, r = finite_number(precision, None), finite_number(recall, None)
    return None if p is None or r is None else (0.0 if p + r == 0 else 2 * p * r / (p + r))


def _probe_rows(folder: Path, a: dict[str, Any]) -> pd.DataFrame | None:
    """The probe's ``probe.csv`` (one row per model), or None when it cannot be read."""
    path = listed_file(folder, (a.get("tables") or {}).get("probe", "probe.csv"))
    if path is None:
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def _paper_row(folder: Path, a: dict[str, Any]) -> dict[str, Any] | None:
    """The probe's K = 20, L = 200 model: ``paper_*`` of its summary, else its row of ``probe.csv``."""
    s = a.get("summary") or {}
    if s.get("paper_model") is not None or s.get("paper_precision") is not None:
        return {"model": s.get("paper_model"), "latent": s.get("paper_latent"), "precision": s.get("paper_precision"),
                "recall": s.get("paper_recall"), "f1": _f1(s.get("paper_precision"), s.get("paper_recall"),
                                                           s.get("paper_f1"))}
    df = _probe_rows(folder, a)
    if df is None:
        return None
    try:
        rows = df[(df["k"] == PAPER_SETTING[0]) & (df["latent_size"] == PAPER_SETTING[1])]
    except KeyError:
        return None
    if "activation" in rows.columns and (rows["activation"].astype(str) == "topk").any():
        rows = rows[rows["activation"].astype(str) == "topk"]
    if rows.empty:
        return None
    r = rows.iloc[0]
    return {"model": r.get("name"), "latent": r.get("latent"), "precision": r.get("precision"),
            "recall": r.get("recall"), "f1": r.get("f1")}


def _of_models(folder: Path, a: dict[str, Any], models: set[str]) -> dict[str, Any] | None:
    """``a`` with the summary of the probe over ``models`` only (from ``probe.csv``), or None
    when it has none of them (or, without a readable ``probe.csv``, its best model is not one)."""
    df = _probe_rows(folder, a)
    if df is None or not {"name", "f1", "latent", "precision", "recall"} <= set(df.columns):
        return a if (a.get("summary") or {}).get("best_model") in models else None
    df = df[df["name"].astype(str).isin(models)].reset_index(drop=True)
    if df.empty:
        return None
    if "family" in df.columns:
        df["family"] = df["family"].fillna("").astype(str)
    return {**a, "summary": probe_summary(df)}


def headline(analyses: Sequence[tuple[Path, dict[str, Any]]],
             models: set[str] | None = None) -> list[dict[str, Any]]:
    """For every probe: its best model and what it was chosen by, the paper setting
    (K = 20, L = 200) when the run has it, and the feature family's union when the probe
    measured one. ``models``: only these models (``None``: every model)."""
    out = []
    for folder, a in analyses:
        s = a.get("summary") if isinstance(a.get("summary"), dict) else {}
        if a.get("analysis") != "probe" or s.get("best_model") is None:
            continue
        if models is not None:
            a = _of_models(folder, a, models)
            if a is None:
                continue
            s = a["summary"]
        p = a.get("params") if isinstance(a.get("params"), dict) else {}
        by = s.get("best_by") or "f1"
        by = _BEST_BY.get(str(by), str(by))
        rows = [{"setting": "best model", "chosen by": f"highest {by}", "model": s.get("best_model"),
                 "latent": s.get("best_latent"), "precision": s.get("best_precision"),
                 "recall": s.get("best_recall"), "f1": s.get("best_f1")}]
        notes = []
        paper = _paper_row(folder, a)
        k, L = PAPER_SETTING
        if paper is not None and (models is None or paper["model"] in models):
            rows.append({"setting": f"paper setting (K = {k}, L = {L})", "chosen by": "fixed (the paper's)", **paper})
        elif models is None:
            notes.append(f"the run has no K = {k}, L = {L} model (the paper's setting) to compare with.")
        else:
            notes.append(f"the K = {k}, L = {L} model (the paper's setting) is not among the models shown.")
        if s.get("family_union_precision") is not None or s.get("family_union_recall") is not None:
            size = s.get("family_size")
            members = s.get("family", s.get("family_latents"))
            rows.append({"setting": "feature family union" + (f" ({size} latent{'s' * (size != 1)})"
                                                              if isinstance(size, int) else ""),
                         "chosen by": "union of the family's latents (best model)",
                         "model": s.get("family_model", s.get("best_model")),
                         "latent": " ".join(map(str, members)) if isinstance(members, list) else members,
                         "precision": s.get("family_union_precision"), "recall": s.get("family_union_recall"),
                         "f1": _f1(s.get("family_union_precision"), s.get("family_union_recall"),
                                   s.get("family_union_f1"))})
        df = pd.DataFrame(rows, columns=["setting", "chosen by", "model", "latent", "precision", "recall", "f1"],
                          dtype=object)
        df = df.loc[:, df.notna().any()]
        what = f"{p.get('label', '?')} = {p.get('positive', '?')}"
        out.append({"what": f"{what} ({folder.name})", "table": table(df), "notes": notes})
    return out
