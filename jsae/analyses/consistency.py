"""Is a labelled feature one direction of the embedding space, the same for every speaker?

A single SAE latent ``φ`` adds ``v_φ d_φ`` to a reconstruction: one direction, whoever
speaks. It can carry a feature (``lang = es`` vs ``en``) only if the feature moves every
speaker's embeddings the same way. This diagnostic measures that on raw embeddings,
before any SAE is trained, for a binary label and a ``speaker`` column whose groups hold
rows of both classes (every speaker of the language set speaks both).

For group ``g`` (a speaker) with positive rows ``P_g`` and negative rows ``N_g`` (``x ∈ R^M``):

* shift ``s_g = mean(x, P_g) − mean(x, N_g)``                      ``[G, M]``;
* consistency ``c_g = cos(s_g, Σ_{h≠g} s_h)`` (leave-one-out: ``s_g`` is not compared
  with a mean that contains itself); ``c_g ≈ 1`` for all ``g``: one shared direction;
  ``c_g ≈ 0``: every group moves its own way;
* chance ``c⁰_g``: the same with the labels permuted within each group (only noise);
* shared fraction ``ρ = ‖mean_g s_g‖ / mean_g ‖s_g‖`` (1: identical shifts; about
  ``1/√G`` for unrelated ones);
* unseen-group separability: a logistic regression fitted with whole groups held out
  (``GroupKFold``) predicts every row; its precision/recall/accuracy bound what one
  linear direction, and so one latent, can reach on speakers it has not seen.

High consistency is necessary, not sufficient: speakers may also sit apart *along* the
shared direction (offsets larger than the shift), which the unseen-group scores catch.

``group`` (a sub-group column, e.g. ``gender``) repeats the consistency within each of
its values and gives the cosine between their mean shifts: a feature may be one
direction for women and another for men (then an SAE may learn one latent per value, as
in the paper's splits). The tables name a speaker's group ``group`` and its sub-group
value ``by``; ``params`` records the speaker column as ``group``, the sub-group column as
``by`` and the rows as ``split``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadValueError
from ..store import EmbeddingStore, StoreError
from . import defaults as D
from .labelled import as_store, load_labelled
from .probing import scores_from_counts

__all__ = ["group_shifts", "loo_cosines", "shared_fraction", "permuted_shifts", "unseen_group_predictions",
           "ConsistencyResult", "consistency"]


def group_shifts(x: np.ndarray, y: np.ndarray, groups: np.ndarray, min_rows: int = D.CONSISTENCY_MIN_ROWS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-group class-mean differences.

    Args:
      x: ``[N, M]`` embeddings. y: ``[N]`` bool (positive class). groups: ``[N]`` labels.
      min_rows: a group is kept only with at least this many rows of *each* class (and at
        least one: a class mean needs rows, so 0 counts as 1).
    Returns:
      ``(names [G], shifts [G, M] float64, n_pos [G], n_neg [G])`` for the kept groups,
      in sorted order of the group names.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, bool)
    groups = np.asarray(groups).astype(str)
    names, shifts, n_pos, n_neg = [], [], [], []
    need = max(int(min_rows), 1)
    for g in np.unique(groups):
        m = groups == g
        p, n = m & y, m & ~y
        if p.sum() >= need and n.sum() >= need:
            names.append(g)
            shifts.append(x[p].mean(0) - x[n].mean(0))
            n_pos.append(int(p.sum()))
            n_neg.append(int(n.sum()))
    dim = x.shape[1] if x.ndim == 2 else 0
    return (np.array(names, dtype=object), np.array(shifts, np.float64).reshape(-1, dim),
            np.array(n_pos, int), np.array(n_neg, int))


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-300)


def loo_cosines(shifts: np.ndarray) -> np.ndarray:
    """``c_g = cos(s_g, Σ_{h≠g} s_h)`` for ``shifts [G, M]`` (G ≥ 2); returns ``[G]``."""
    shifts = np.asarray(shifts, np.float64)
    if len(shifts) < 2:
        raise BadValueError(f"leave-one-out consistency needs at least 2 groups; got {len(shifts)}.")
    return _cos(shifts, shifts.sum(0, keepdims=True) - shifts)


def shared_fraction(shifts: np.ndarray) -> float:
    """``ρ = ‖mean_g s_g‖ / mean_g ‖s_g‖`` for ``shifts [G, M]``."""
    shifts = np.asarray(shifts, np.float64)
    return float(np.linalg.norm(shifts.mean(0)) / max(np.linalg.norm(shifts, axis=1).mean(), 1e-300))


def permuted_shifts(x: np.ndarray, y: np.ndarray, groups: np.ndarray, rng: np.random.Generator,
                    min_rows: int = D.CONSISTENCY_MIN_ROWS) -> np.ndarray:
    """:func:`group_shifts` with ``y`` shuffled inside each group (the chance reference)."""
    groups = np.asarray(groups).astype(str)
    yp = np.array(y, bool, copy=True)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        yp[idx] = yp[rng.permutation(idx)]
    return group_shifts(x, yp, groups, min_rows)[1]


def unseen_group_predictions(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_splits: int = D.CONSISTENCY_FOLDS,
                             C: float = D.C, max_iter: int = 5000) -> np.ndarray:
    """Predict every row with a logistic regression that never saw the row's group.

    Groups are dealt to ``min(n_splits, G)`` folds (``sklearn.model_selection.GroupKFold``);
    each fold is predicted by a regression fitted on the others. Returns ``[N]`` bool.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups).astype(str)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise BadValueError(f"unseen-group prediction needs at least 2 groups; got {n_groups}.")
    pred = np.zeros(len(y), bool)
    for tr, te in GroupKFold(n_splits=min(n_splits, n_groups)).split(x, y, groups):
        if len(np.unique(y[tr])) < 2:   # a fold without both classes to learn from: predict the majority
            pred[te] = bool(y[tr][0])
            continue
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(x[tr], y[tr])
        pred[te] = clf.predict(x[te]).astype(bool)
    return pred


def _pr(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = int((pred & y).sum())
    precision, recall, _ = scores_from_counts(tp, int(pred.sum()) - tp, int(y.sum()) - tp)
    return {"precision": float(precision), "recall": float(recall), "accuracy": float((pred == y).mean())}


def _stats(shifts: np.ndarray, chance: np.ndarray) -> dict[str, float]:
    c, c0 = loo_cosines(shifts), loo_cosines(chance)
    return {"groups": len(shifts), "mean_consistency": float(c.mean()), "min_consistency": float(c.min()),
            "chance_consistency": float(c0.mean()), "shared_fraction": shared_fraction(shifts),
            "chance_shared_fraction": shared_fraction(chance),
            "mean_shift_norm": float(np.linalg.norm(shifts, axis=1).mean())}


@dataclass
class ConsistencyResult:
    """Output of :func:`consistency`.

    Attributes:
      table: one row per speaker: ``group`` (the speaker), ``by`` (its ``group`` value,
        when ``group`` is given), ``n_positive``, ``n_negative``, ``shift_norm`` ‖s_g‖,
        ``consistency`` c_g, ``chance`` c⁰_g, and the unseen-group ``accuracy`` on its rows.
      by_table: one row per value ``by`` of the ``group`` column (within-value statistics
        and ``cos_to_all``, the cosine of its mean shift with the overall mean shift), or None.
      summary: overall statistics (see the module doc) and ``unseen_group_*`` scores.
      params: what was asked.
    """

    table: pd.DataFrame
    by_table: pd.DataFrame | None
    summary: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


def consistency(store: EmbeddingStore | str, label: str, positive: str, *, negative: str | None = None,
                speaker: str = D.CONSISTENCY_SPEAKER, group: str | None = None,
                test_split: str = D.ALL_SPLITS, min_rows: int = D.CONSISTENCY_MIN_ROWS,
                n_splits: int = D.CONSISTENCY_FOLDS, C: float = D.C,
                seed: int = D.CONSISTENCY_SEED) -> ConsistencyResult:
    """Measure how consistently ``label == positive`` moves the embeddings of each ``speaker`` group.

    ``speaker``: the column whose groups must hold both classes; ``group``: a sub-group
    column (e.g. gender) to measure within each value of; ``test_split``: rows of this
    ``split`` value (default every row). Raises :class:`~jsae.store.StoreError` for a
    missing ``speaker``/``group`` column and when fewer than two groups have ``min_rows``
    rows of both classes (with the counts seen).
    """
    store = as_store(store)
    data = load_labelled(store, label, positive, negative=negative, split=test_split)
    for col in (speaker, group):
        if col is not None and col not in data.table.columns:
            raise StoreError(f"store {store.path} has no metadata column {col!r} to group by; columns: "
                             f"{list(data.table.columns)}. Pass one of them (CLI: --speaker / --group).")
    has = data.table[speaker].notna().to_numpy()          # rows without a speaker (e.g. music) take no part
    if group is not None:
        has = has & data.table[group].notna().to_numpy()
    x, y = data.x.astype(np.float64)[has], data.y[has]
    g = data.column(speaker)[has]
    bv = data.column(group)[has] if group is not None else None
    # a speaker may span several `group` values: then each (speaker, value) pair is a group of its own
    key = g if bv is None else np.array([repr((a, b)) for a, b in zip(g, bv)])
    names, shifts, n_pos, n_neg = group_shifts(x, y, key, min_rows)
    if len(names) < 2:
        shown = g if bv is None else np.array([f"{a} ({b})" for a, b in zip(g, bv)], dtype=object)
        raise StoreError(_too_few_groups(store.path, key, shown, y, speaker, label, positive, negative, min_rows,
                                         len(names)))
    keep = np.isin(key, names)
    x, y, key, g = x[keep], y[keep], key[keep], g[keep]
    bv = bv[keep] if bv is not None else None
    rng = np.random.default_rng(seed)
    chance = permuted_shifts(x, y, key, rng, min_rows)
    pred = unseen_group_predictions(x, y, g, n_splits=n_splits, C=C)
    rows_ok = pd.Series(pred == y).groupby(key).mean()
    group_of = pd.Series(g).groupby(key).first()
    table = pd.DataFrame({"group": group_of.reindex(names).to_numpy(), "n_positive": n_pos,
                          "n_negative": n_neg, "shift_norm": np.linalg.norm(shifts, axis=1),
                          "consistency": loo_cosines(shifts), "chance": loo_cosines(chance),
                          "accuracy": rows_ok.reindex(names).to_numpy()})
    if group is not None:
        table.insert(1, "by", pd.Series(bv).groupby(key).first().reindex(names).to_numpy())
    summary = {**_stats(shifts, chance), **{f"unseen_group_{k}": v for k, v in _pr(y, pred).items()},
               "rows": int(len(y)), "n_positive": int(y.sum())}
    bad = [k for k in ("mean_consistency", "chance_consistency", "shared_fraction") if not np.isfinite(summary[k])]
    if bad:  # e.g. non-finite embeddings: refuse rather than print nan
        raise StoreError(f"store {store.path}: the consistency scores ({', '.join(bad)}) of {len(names)} {speaker!r} "
                         f"groups (min_rows={min_rows}) are not finite; check the embeddings for NaN/Inf values.")
    by_table = None
    if group is not None:
        overall = shifts.mean(0)
        recs = []
        for b in sorted(table["by"].unique()):
            m = (table["by"] == b).to_numpy()
            rec: dict[str, Any] = {"by": b, "groups": int(m.sum())}
            if m.sum() >= 2:
                rec.update({k: v for k, v in _stats(shifts[m], chance[m]).items() if k != "groups"})
            rec["cos_to_all"] = float(_cos(shifts[m].mean(0), overall))
            rows = bv == b
            rec.update({f"unseen_group_{k}": v for k, v in _pr(y[rows], pred[rows]).items()})
            recs.append(rec)
        by_table = pd.DataFrame(recs)
        means = {b: shifts[(table["by"] == b).to_numpy()].mean(0) for b in by_table["by"]}
        vals = list(means)
        summary["by_mean_shift_cosines"] = {f"{a}~{b}": float(_cos(means[a], means[b]))
                                            for i, a in enumerate(vals) for b in vals[i + 1:]}
    params = {"store": str(store.path), "label": label, "positive": positive, "negative": negative,
              "group": speaker, "by": group, "split": test_split, "min_rows": min_rows, "n_splits": n_splits,
              "C": C, "seed": seed}
    return ConsistencyResult(table.sort_values("consistency").reset_index(drop=True), by_table, summary, params)


def _too_few_groups(path: Any, key: np.ndarray, shown: np.ndarray, y: np.ndarray, speaker: str, label: str,
                    positive: str, negative: str | None, min_rows: int, kept: int, top: int = 5) -> str:
    """The one-line refusal when fewer than two groups hold ``min_rows`` rows of both classes:
    how many groups hold both classes at all, the few closest to qualifying with their class
    counts (``… and N more``), and the fix."""
    neg = negative if negative is not None else f"not {positive}"
    counts = (pd.DataFrame({"key": key, "shown": shown, "pos": y, "neg": ~y}).groupby("key", sort=True)
              .agg(shown=("shown", "first"), pos=("pos", "sum"), neg=("neg", "sum")))
    counts["both"] = counts[["pos", "neg"]].min(axis=1)
    counts = counts.sort_values(["both", "pos"], ascending=False, kind="stable")
    n_both = int((counts["both"] > 0).sum())
    listed = ", ".join(f"{r.shown} {r.pos}/{r.neg}" for r in counts.head(top).itertuples())
    more = f" and {len(counts) - top} more" if len(counts) > top else ""
    need = max(int(min_rows), 1)
    if n_both >= 2:
        most = int(counts["both"].iloc[1])   # the largest min_rows that keeps two groups
        fix = f"lower --min-rows (min_rows) to {most} or less, or use a grouping column with more rows per group."
    else:
        fix = ("lowering --min-rows cannot help: use a grouping column whose groups hold both classes (e.g. "
               "speakers who speak both languages), or a label that varies within the groups.")
    other = f"{label}={negative!r}" if negative is not None else f"other {label} values"
    return (f"store {path}: only {kept} {speaker!r} group(s) have at least {need} rows of both {label}={positive!r} "
            f"and {other} (min_rows={min_rows}); need 2 or more, else the consistency scores are undefined "
            f"(NaN). {n_both} of {len(counts)} groups have rows of both classes at all. Rows per group "
            f"({positive}/{neg}), closest first: {listed}{more}. Fix: {fix}")
