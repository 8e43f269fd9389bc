"""The headline of the report: for every probe, its best single latent, its best feature
family and the paper's setting, each with its model and what it was chosen by.

For every probe analysis of the run (:func:`headline`; one probe table:
:func:`probe_headline`):

* **the best single latent under a precision floor** (:data:`PRECISION_FLOOR`): among the
  models' probe latents with test precision ≥ the floor, the highest test recall (ties:
  higher F1, then the smaller model; :func:`jsae.outputs.probe.best_model`). When no probe
  latent reaches the floor the headline says so, and names the most precise one with its
  precision; a latent below the floor is never called the best.
* **the best feature family by union F1** (the ``family_*`` columns of ``probe.csv``;
  :func:`jsae.outputs.probe.best_family`), when the probe measured families.
* **the paper's setting** (K = 20, L = 200; the summary's ``paper_*`` or the row of
  ``probe.csv``), when the run has it.

Both choices are made from ``probe.csv`` by the functions that write the probe's
``analysis.json`` summary (:func:`jsae.outputs.probe.probe_summary`), so the page and the
files agree; when the report is restricted to some models they are made again over those
models' rows. Without a readable ``probe.csv`` the summary's own record is shown (an older
probe's ``best_*``, chosen by its ``best_by``, is said to be so).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..outputs.folders import listed_file, read_csv
from ..outputs.probe import FAMILY_BY, PRECISION_FLOOR, best_by, best_family, best_model, reaches_floor
from .tables import Cell, finite_number, table

__all__ = ["headline", "probe_headline", "atlases", "atlas_links", "PAPER_SETTING", "PRECISION_FLOOR"]

#: the paper's setting (K, L), shown next to the best latent and family of every probe
PAPER_SETTING = (20, 200)
_BEST_BY = {"f1": "test F1 of the probe latent", "precision": "test precision of the probe latent",
            "recall": "test recall of the probe latent", "train_f1": "train F1 of the probe latent",
            "train_best_f1": "train F1 of the best single latent"}
_COLUMNS = ["setting", "chosen by", "model", "latent", "precision", "recall", "f1"]
_NEEDED = {"name", "latent", "precision", "recall", "f1"}


def _f1(precision: Any, recall: Any, f1: Any = None) -> Any:
    """``f1``, else the harmonic mean of ``precision`` and ``recall`` when both are numbers."""
    if f1 is not None and finite_number(f1, None) is not None:
        return f1
    p, r = finite_number(precision, None), finite_number(recall, None)
    return None if p is None or r is None else (0.0 if p + r == 0 else 2 * p * r / (p + r))


def _num(value: Any, floor: float | None = None) -> str:
    """A score in a headline sentence: 2 decimals (3 where 2 would round a value below
    ``floor`` up to it), ``?`` when unknown."""
    v = finite_number(value, None)
    if v is None:
        return "?"
    return f"{v:.3f}" if floor is not None and v < floor <= round(v, 2) else f"{v:.2f}"


def _int(value: Any) -> Any:
    """An integral number as an int (``3.0`` → ``3``), anything else as it is."""
    v = finite_number(value, None)
    return int(v) if v is not None and v.is_integer() else value


def _probe_rows(folder: Path, a: dict[str, Any]) -> pd.DataFrame | None:
    """The probe's ``probe.csv`` (one row per model), or None when it cannot be read."""
    path = listed_file(folder, (a.get("tables") or {}).get("probe", "probe.csv"))
    if path is None:
        return None
    try:
        return read_csv(path, dtype={"family": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def _paper_row(df: pd.DataFrame | None, s: dict[str, Any]) -> dict[str, Any] | None:
    """The probe's K = 20, L = 200 model: ``paper_*`` of its summary ``s``, else its row of
    ``probe.csv`` (``df``)."""
    if s.get("paper_model") is not None or s.get("paper_precision") is not None:
        return {"model": s.get("paper_model"), "latent": s.get("paper_latent"), "precision": s.get("paper_precision"),
                "recall": s.get("paper_recall"), "f1": _f1(s.get("paper_precision"), s.get("paper_recall"),
                                                           s.get("paper_f1"))}
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
    return {"model": r.get("name"), "latent": _int(r.get("latent")), "precision": r.get("precision"),
            "recall": r.get("recall"), "f1": r.get("f1")}


def _from_table(df: pd.DataFrame, floor: float) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """The best single latent, the best family (None when not measured) and notes, chosen
    from the rows of a probe table."""
    b = best_model(df, floor)
    single = {"model": b["name"], "latent": _int(b["latent"]), "precision": b["precision"], "recall": b["recall"],
              "f1": _f1(b["precision"], b["recall"], b.get("f1")), "reaches": reaches_floor(b["precision"], floor),
              "by": best_by(df, floor)}
    notes = []
    top = df.loc[pd.to_numeric(df["f1"], errors="coerce").idxmax()] if df["f1"].notna().any() else None
    if (top is not None and not reaches_floor(top["precision"], floor)
            and (top["name"], _int(top["latent"])) != (single["model"], single["latent"])):
        notes.append(f"not named: the highest test F1, {top['name']} latent {_int(top['latent'])} "
                     f"(F1 {_num(top['f1'])}), has test precision {_num(top['precision'], floor)}, "
                     f"below {floor:.2f}.")
    fam = best_family(df)
    family = None
    if fam is not None:
        family = {"model": fam["name"], "latents": "" if pd.isna(fam.get("family", None)) else str(fam["family"]),
                  "size": _int(fam.get("family_size")), "precision": fam["family_precision"],
                  "recall": fam["family_recall"], "f1": fam["family_f1"], "by": FAMILY_BY}
    return single, family, notes


def _from_summary(s: dict[str, Any], floor: float) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """The best single latent and family as the probe's summary records them (no readable
    ``probe.csv``). An older summary (no ``precision_floor``) chose by its ``best_by``."""
    single = {"model": s.get("best_model"), "latent": s.get("best_latent"), "precision": s.get("best_precision"),
              "recall": s.get("best_recall"), "f1": _f1(s.get("best_precision"), s.get("best_recall"), s.get("best_f1")),
              "reaches": None, "by": s.get("best_by") or "f1"}
    if s.get("precision_floor") is not None:
        floor = float(s["precision_floor"])
        single["reaches"] = bool(s.get("best_reaches_floor", reaches_floor(single["precision"], floor)))
    else:
        single["by"] = _BEST_BY.get(str(single["by"]), str(single["by"]))
    family = None
    if s.get("best_family_model") is not None:
        family = {"model": s["best_family_model"], "latents": s.get("best_family"), "size": s.get("best_family_size"),
                  "precision": s.get("best_family_precision"), "recall": s.get("best_family_recall"),
                  "f1": _f1(s.get("best_family_precision"), s.get("best_family_recall"), s.get("best_family_f1")),
                  "by": s.get("best_family_by") or FAMILY_BY}
    elif s.get("family_union_precision") is not None or s.get("family_union_recall") is not None:
        members = s.get("family", s.get("family_latents"))
        family = {"model": s.get("family_model", s.get("best_model")),
                  "latents": " ".join(map(str, members)) if isinstance(members, list) else members,
                  "size": s.get("family_size"), "precision": s.get("family_union_precision"),
                  "recall": s.get("family_union_recall"),
                  "f1": _f1(s.get("family_union_precision"), s.get("family_union_recall"), s.get("family_union_f1")),
                  "by": None}  # the best model's family, not chosen by its own score
    return single, family, []


def _of(size: Any) -> str:
    """``N latents`` (``1 latent``), or ``its latents`` when the size is unknown."""
    return f"{size} latent{'s' * (size != 1)}" if isinstance(size, int) else "its latents"


def probe_headline(df: pd.DataFrame | None, summary: dict[str, Any] | None = None, *,
                   floor: float = PRECISION_FLOOR, paper_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The headline of one probe: ``lines`` (sentences), ``table`` (a DataFrame: setting,
    chosen by, model, latent, precision, recall, f1) and ``notes``.

    ``df``: the probe table (``probe.csv``, one row per model; None when unreadable: then
    ``summary``, the probe's ``analysis.json`` summary, is shown as recorded);
    ``paper_summary``: where to look for ``paper_*`` before the table's K = 20, L = 200 row
    (default ``summary``)."""
    s = summary or {}
    if df is not None and _NEEDED <= set(df.columns) and len(df):
        single, family, notes = _from_table(df, floor)
        if family is None:  # a table without the family columns: the summary's record, if any
            family = _from_summary(s, floor)[1]
    else:
        single, family, notes = _from_summary(s, floor)
    m, j, p, r = single["model"], single["latent"], single["precision"], single["recall"]
    scores = f"precision {_num(p, floor)}, recall {_num(r)}"
    if single["reaches"] is True:
        setting, by = f"best single latent (test precision ≥ {floor:.2f})", single["by"]
        lines = [f"best single latent with test precision ≥ {floor:.2f}: {m} latent {j} — {scores}"]
    elif single["reaches"] is False:
        setting, by = f"most precise single latent (none reaches precision {floor:.2f})", single["by"]
        lines = [f"no single latent reaches precision {floor:.2f}; the most precise is {m} latent {j} — {scores}"]
    else:  # an older summary, chosen without the floor
        below = not reaches_floor(p, floor)
        setting, by = "best model (older probe)", f"highest {single['by']}"
        lines = [f"best model by the highest {single['by']} (recorded by an older probe, without the precision "
                 f"floor): {m} latent {j} — {scores}" + (f"; below precision {floor:.2f}" if below else "")]
        notes = [*notes, "run `jsae probe` again to choose the best single latent under the precision floor "
                         f"({floor:.2f}) and the best family by union F1."]
    rows = [{"setting": setting, "chosen by": by, "model": m, "latent": j, "precision": p, "recall": r,
             "f1": single["f1"]}]
    if family is not None:
        of = _of(family["size"])
        fs = f"precision {_num(family['precision'])}, recall {_num(family['recall'])}, F1 {_num(family['f1'])}"
        if family["by"] is not None:
            lines.append(f"best feature family (union of {of}, by test F1): {family['model']} — {fs}")
            rows.append({"setting": f"best feature family (union of {of})", "chosen by": family["by"],
                         "model": family["model"], "latent": family["latents"], "precision": family["precision"],
                         "recall": family["recall"], "f1": family["f1"]})
        else:
            lines.append(f"feature family of {family['model']} (union of {of}; the best model's, not chosen by "
                         f"its union F1): {fs}")
            rows.append({"setting": f"feature family union ({of})", "chosen by": "the best model's family",
                         "model": family["model"], "latent": family["latents"], "precision": family["precision"],
                         "recall": family["recall"], "f1": family["f1"]})
    paper = _paper_row(df, s if paper_summary is None else paper_summary)
    k, L = PAPER_SETTING
    if paper is not None:
        lines.append(f"paper setting (K = {k}, L = {L}): {paper['model']} latent {_int(paper['latent'])} — "
                     f"precision {_num(paper['precision'], floor)}, recall {_num(paper['recall'])}")
        rows.append({"setting": f"paper setting (K = {k}, L = {L})", "chosen by": "fixed (the paper's)", **paper,
                     "latent": _int(paper["latent"])})
    return {"lines": lines, "table": pd.DataFrame(rows, columns=_COLUMNS, dtype=object), "notes": notes,
            "paper": paper}


def atlases(analyses: Sequence[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, str, set[str]]]:
    """``(folder, store, models)`` of every feature atlas (``jsae atlas``) among ``analyses``."""
    found = []
    for folder, a in analyses:
        p = a.get("params") if isinstance(a.get("params"), dict) else {}
        if a.get("analysis") == "atlas" and p.get("store") and isinstance(p.get("models"), list):
            found.append((folder, str(p["store"]), {str(m) for m in p["models"]}))
    return found


def _same_store(a: str, b: Any) -> bool:
    try:
        return b is not None and Path(a).resolve() == Path(str(b)).resolve()
    except OSError:
        return False


def atlas_links(t: pd.DataFrame, store: Any, found: Sequence[tuple[Path, str, set[str]]],
                page_dir: Path | None) -> list[Any]:
    """For each headline row (``model``, ``latent``), a link into a feature atlas of the same
    store that has the model: its latent page (a family's row: the model's index), relative
    to ``page_dir``; None where there is none."""
    cells: list[Any] = []
    for model, latent in zip(t["model"], t["latent"]):
        hit = next((f for f, s, ms in found if str(model) in ms and _same_store(s, store)), None)
        if hit is None or page_dir is None:
            cells.append(None)
            continue
        single = isinstance(_int(latent), int)
        page = hit / str(model) / (f"latent-{_int(latent)}.html" if single else "index.html")
        href = Path(os.path.relpath(page, page_dir)).as_posix()
        cells.append(Cell("link", (href, f"latent {_int(latent)}" if single else f"{model} index")))
    return cells


def headline(analyses: Sequence[tuple[Path, dict[str, Any]]],
             models: set[str] | None = None, page_dir: Path | None = None) -> list[dict[str, Any]]:
    """For every probe: its best single latent under :data:`PRECISION_FLOOR` and its best
    feature family by union F1, each with its model and what it was chosen by, and the
    paper setting (K = 20, L = 200) when the run has it (:func:`probe_headline`).
    ``models``: only these models (``None``: every model). With a feature atlas of the
    probe's store (:func:`atlases`), each row links to the atlas page of its latent
    (relative to ``page_dir``, the folder of the page)."""
    out = []
    found = atlases(analyses)
    for folder, a in analyses:
        if a.get("analysis") != "probe":
            continue
        s = a.get("summary") if isinstance(a.get("summary"), dict) else {}
        df = _probe_rows(folder, a)
        if df is None or not _NEEDED <= set(df.columns):
            df = None
            if s.get("best_model") is None or (models is not None and s.get("best_model") not in models):
                continue
        if df is not None and models is not None:
            df = df[df["name"].astype(str).isin(models)].reset_index(drop=True)
            s = {}  # everything chosen again among these models' rows
        if df is not None and df.empty:
            continue
        h = probe_headline(df, s)
        notes = list(h["notes"])
        k, L = PAPER_SETTING
        if h["paper"] is not None and models is not None and h["paper"]["model"] not in models:
            h["table"] = h["table"][h["table"]["setting"] != f"paper setting (K = {k}, L = {L})"]
            h["lines"] = [x for x in h["lines"] if not x.startswith("paper setting")]
            h["paper"] = None
        if h["paper"] is None:
            notes.append(f"the run has no K = {k}, L = {L} model (the paper's setting) to compare with."
                         if models is None else
                         f"the K = {k}, L = {L} model (the paper's setting) is not among the models shown.")
        t = h["table"]
        p = a.get("params") if isinstance(a.get("params"), dict) else {}
        if found:
            t = t.assign(atlas=atlas_links(t, p.get("store"), found, page_dir))
        t = t.loc[:, t.notna().any()]
        what = f"{p.get('label', '?')} = {p.get('positive', '?')}"
        out.append({"what": f"{what} ({folder.name})", "lines": h["lines"], "table": table(t), "notes": notes})
    return out
