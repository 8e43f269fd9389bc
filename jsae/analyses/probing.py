"""Feature identification (probing), paper Sections III-C and V-A.

For every model of a sweep, with a labelled store (``split`` = train/test, a label
column and its positive value):

1. encode the train split: ``V_train [B, L]``;
2. fit a logistic regression ``p(y=1|v) = σ(wᵀv + b)`` on the latents
   (scikit-learn, L2, ``C``) and take ``φ = argmax_ℓ w_ℓ``, the latent with the
   largest weight toward the positive class;
3. use that latent alone on the test split: ``ŷ = [v_φ > 0]`` and report its
   precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)``, F1 and the support
   (number of positive test rows).

Also reported: the best single latent on the train split by direct search (the F1
of ``[v_ℓ > 0]`` for every ℓ at once, from ``TP_ℓ = Σ_b [v_bℓ > 0] y_b``) and its
test scores; and, side by side, the test accuracy of the logistic regression of step 2
on all latents (``logreg_test_accuracy``: L2-regularised with ``C``, on raw or standardised
latents) and of the probe latent alone (``latent_test_accuracy``). The regression's number
is *not* an upper bound for one latent: regularised and fitted for log-loss, it can be
below the accuracy of a single latent that separates the classes.

**Feature family.** One latent can hold only part of a feature (after a split, one
speaker or one gender of it: precision stays high, recall drops to a sub-group's
share), so besides the paper's latent ``φ`` every model gets a *family*
``F = (f_1, …, f_m)`` (:func:`feature_family`), a greedy cover on the train split:
with ``A_ℓ`` the train rows where ``v_ℓ > 0``, ``P`` the positive ones and
``C_0 = ∅``, among the latents whose own precision ``|A_ℓ ∩ P| / |A_ℓ| ≥ p_min``
take ``f_i = argmax_ℓ |A_ℓ ∩ P ∖ C_{i-1}|`` and ``C_i = C_{i-1} ∪ (A_{f_i} ∩ P)``;
stop after ``m_max`` members or when the gain in recall ``|A_{f_i} ∩ P ∖ C_{i-1}| / |P|``
falls below ``g_min``. On the test split each member is scored alone and the family
as the union ``ŷ = ⋁_i [v_{f_i} > 0]`` (precision, recall, F1); for each metadata
column in ``groups`` (e.g. speaker, gender) every member's share of each sub-group's
positive test rows that it fires on (``covers``: shares ≥ 0.5), and its dominant
sub-group (the most of its true positives) with that sub-group's share of them.

**Recall within every group value** (:func:`group_recall`, :func:`group_recall_frame`;
``probe_groups.csv``). The dominant sub-group names one value; a latent that fires on
every track of a feature needs all of them. One row per model × latent × column × value:
the latents are the probe latent ``φ`` and the family members (``φ`` first, then the other
members in family order), the columns the label column itself (its one value, the positive
one: the overall recall) and then each ``groups`` column, the values those of that column
on the positive test rows (sorted). Columns: ``name, k, latent_size, activation, l1_coef``,
``latent``, ``role`` (``probe`` for ``φ``, also when it is a family member; ``family`` for
the other members), ``member`` (rank in the family, from 0; empty when not a member),
``column``, ``value``, ``n_pos`` (positive test rows with that value), ``hits`` (those
where the latent fires), ``recall = hits / n_pos``, and the latent's firing on the negative
test rows, the same on every row of that latent: ``n_neg``, ``neg_fires``,
``neg_fire_rate = neg_fires / n_neg``.

Encoding is batched over the models (:meth:`ModelBatch.encode`), the single-latent
scores over all latents at once; the regression is one fit per model.

>>> df = probe(sweep, store, "lang", "es")            # every model of a sweep
>>> df = probe(sweep.select(k=20), store, "lang", "es")  # or any ModelBatch
>>> df.loc[(df.k == 20) & (df.latent_size == 200), ["latent", "precision", "recall"]]
>>> df = probe(sweep, store, "lang", "es", groups=["speaker", "gender"])
>>> df[["name", "latent", "recall", "family", "family_precision", "family_recall"]]
>>> family_frame(df)                                   # one row per model × family member
>>> group_recall_frame(df)                             # one row per model × latent × column × value
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..models import ModelBatch
from ..store import EmbeddingStore
from . import defaults as D
from .labelled import LabelledSplit, load_train_test

__all__ = ["single_latent_counts", "scores_from_counts", "fit_probe", "feature_family", "family_scores",
           "group_recall", "probe", "family_frame", "group_recall_frame", "GROUP_RECALL_COLUMNS", "PAPER_MODEL"]

#: the model the paper reports (K = 20, L = 200), named in the probe summary when the sweep has it
PAPER_MODEL = "k20_L200"
#: the columns of the group-recall table (:func:`group_recall_frame`), after the model's
#: ``name, k, latent_size, activation, l1_coef``
GROUP_RECALL_COLUMNS = ("latent", "role", "member", "column", "value", "n_pos", "hits", "recall", "n_neg",
                        "neg_fires", "neg_fire_rate")


def single_latent_counts(active: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(TP, FP, FN)`` of every latent used alone as a predictor.

    Args:
      active: ``[..., B, L]`` bool, ``v > 0`` (any leading axes, e.g. models).
      y: ``[B]`` bool targets.
    Returns:
      three ``[..., L]`` int arrays: ``TP_ℓ = Σ_b a_bℓ y_b``, ``FP_ℓ = Σ_b a_bℓ − TP_ℓ``,
      ``FN_ℓ = Σ_b y_b − TP_ℓ``.
    """
    a = np.asarray(active, np.float32)
    yf = np.asarray(y, np.float32)
    tp = np.rint(np.einsum("...bl,b->...l", a, yf)).astype(np.int64)
    fired = np.rint(a.sum(axis=-2)).astype(np.int64)
    return tp, fired - tp, int(np.asarray(y, bool).sum()) - tp


def scores_from_counts(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, F1)``; 0 where undefined (as scikit-learn's ``zero_division=0``)."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return precision, recall, f1


def fit_probe(codes: np.ndarray, y: np.ndarray, *, C: float = D.C, max_iter: int = 2000,
              standardize: bool = False, seed: int = 0):
    """Logistic regression on latents ``codes [B, L]``; returns ``(φ, w_φ, model)``.

    ``standardize``: fit on latents scaled to unit variance (weights then compare
    latents of different activation scales); the paper fits on the raw latents.
    The returned model predicts from raw latents either way.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    model = make_pipeline(StandardScaler(), clf) if standardize else clf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on separable data
        model.fit(np.asarray(codes, np.float64), np.asarray(y, bool))
    w = clf.coef_[0]  # toward classes_[1] == True
    phi = int(np.argmax(w))
    return phi, float(w[phi]), model


def feature_family(active: np.ndarray, y: np.ndarray, *, min_precision: float = D.FAMILY_MIN_PRECISION,
                   max_members: int = D.FAMILY_MAX, min_gain: float = D.FAMILY_MIN_GAIN) -> list[int]:
    """The latents that each predict ``y`` with high precision and together cover it (greedy).

    Args:
      active: ``[B, L]`` bool, ``v > 0`` on the rows the family is chosen on (train).
      y: ``[B]`` bool targets.
      min_precision: a member's own precision ``|A_ℓ ∩ P| / |A_ℓ|`` must be at least this.
      max_members: at most this many members.
      min_gain: stop when the best remaining latent adds less than this recall
        (newly covered positives ``/ |P|``; a gain of 0 always stops).
    Returns:
      the members in the order chosen (largest new coverage first; ties: the lower
      index). Empty when no latent reaches ``min_precision`` on a positive row.
    """
    a = np.asarray(active, bool)
    y = np.asarray(y, bool)
    n_pos = int(y.sum())
    if a.ndim != 2 or y.shape != (a.shape[0],):
        raise ValueError(f"feature_family takes active [B, L] and y [B]; got {a.shape} and {y.shape}")
    if n_pos == 0 or max_members <= 0:
        return []
    tp, fp, _ = single_latent_counts(a, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    eligible = (tp > 0) & (precision >= min_precision)  # [L]
    pos = a[y]  # [P, L]
    covered = np.zeros(n_pos, bool)
    members: list[int] = []
    while len(members) < max_members:
        gain = np.where(eligible, pos[~covered].sum(axis=0), -1)  # newly covered positives per latent
        j = int(np.argmax(gain))
        if gain[j] <= 0 or gain[j] / n_pos < min_gain:
            break
        members.append(j)
        covered |= pos[:, j]
        eligible[j] = False
    return members


def _group_cover(fires_pos: np.ndarray, values: np.ndarray, levels: list[str]) -> dict[str, Any]:
    """Sub-group coverage of one member: ``fires_pos [P]`` (it fires, positive rows), ``values [P]``."""
    share = {s: float(np.mean(fires_pos[values == s])) for s in levels}
    hits = {s: int(np.sum(fires_pos & (values == s))) for s in levels}
    n = sum(hits.values())
    dom = max(levels, key=lambda s: (hits[s], share[s])) if n else None
    ranked = sorted((s for s in levels if share[s] > 0), key=lambda s: -share[s])
    covers = [s for s in ranked if share[s] >= 0.5]

    def listed(items: list[str], limit: int = 10) -> str:
        return ", ".join(items[:limit]) + (f", … ({len(items) - limit} more)" if len(items) > limit else "")

    return {"dominant": dom, "purity": hits[dom] / n if n else float("nan"), "covers": listed(covers),
            "coverage": listed([f"{s}:{share[s]:.2f}" for s in ranked])}


def family_scores(members: list[int], active: np.ndarray, y: np.ndarray,
                  groups: dict[str, np.ndarray] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score a family on (test) rows: ``(union, per_member)``.

    ``union``: ``precision, recall, f1, tp, fp, fn`` of ``ŷ = ⋁_i [v_{f_i} > 0]``
    (all 0 for an empty family). ``per_member``: for each member ``latent`` alone
    ``precision, recall, f1, n_active``, ``union_recall`` (of the members up to it),
    and for each ``groups`` column ``g`` (``[B]`` values): ``g_dominant, g_purity,
    g_covers, g_coverage`` (see the module docstring).
    """
    a = np.asarray(active, bool)
    y = np.asarray(y, bool)
    groups = {g: np.asarray(v).astype(str) for g, v in (groups or {}).items()}
    levels = {g: sorted(set(v[y].tolist())) for g, v in groups.items()}
    union = np.zeros(len(y), bool)
    rows = []
    for rank, j in enumerate(members):
        fires = a[:, j]
        union |= fires
        (tp,), (fp,), (fn,) = single_latent_counts(fires[:, None], y)
        (p,), (r,), (f,) = scores_from_counts([tp], [fp], [fn])
        u_tp = int((union & y).sum())
        row: dict[str, Any] = {"member": rank, "latent": int(j), "precision": float(p), "recall": float(r),
                               "f1": float(f), "n_active": int(fires.sum()),
                               "union_recall": u_tp / max(int(y.sum()), 1)}
        for g, values in groups.items():
            cov = _group_cover(fires[y], values[y], levels[g])
            row.update({f"{g}_{key}": val for key, val in cov.items()})
        rows.append(row)
    tp, fp, fn = int((union & y).sum()), int((union & ~y).sum()), int((~union & y).sum())
    (p,), (r,), (f,) = scores_from_counts([tp], [fp], [fn])
    return {"precision": float(p), "recall": float(r), "f1": float(f), "tp": tp, "fp": fp, "fn": fn}, rows


def group_recall(latents: Sequence[int], active: np.ndarray, y: np.ndarray,
                 groups: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Recall of each latent within every value of every ``groups`` column (on test rows).

    Args:
      latents: the latents to score, in the order of the output.
      active: ``[B, L]`` bool, ``v > 0``. y: ``[B]`` bool targets.
      groups: ``{column: [B] values}``; the values are those of the positive rows (sorted).
    Returns:
      one dict per latent × column × value: ``latent, column, value, n_pos`` (positive
      rows with that value), ``hits`` (those where the latent fires), ``recall``
      (``hits / n_pos``), ``n_neg, neg_fires, neg_fire_rate`` (the latent on the negative
      rows, NaN without negative rows).
    """
    a = np.asarray(active, bool)
    y = np.asarray(y, bool)
    groups = {g: np.asarray(v).astype(str) for g, v in groups.items()}
    n_neg = int((~y).sum())
    rows = []
    for j in latents:
        fires = a[:, j]
        neg_fires = int((fires & ~y).sum())
        neg = {"n_neg": n_neg, "neg_fires": neg_fires, "neg_fire_rate": neg_fires / n_neg if n_neg else float("nan")}
        for g, values in groups.items():
            for s in sorted(set(values[y].tolist())):
                rows_s = y & (values == s)
                n_pos, hits = int(rows_s.sum()), int((fires & rows_s).sum())
                rows.append({"latent": int(j), "column": g, "value": s, "n_pos": n_pos, "hits": hits,
                             "recall": hits / n_pos, **neg})
    return rows


def probe(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str, *, negative: str | None = None,
          train_split: str = D.TRAIN_SPLIT, test_split: str = D.TEST_SPLIT, C: float = D.C, standardize: bool = False,
          max_iter: int = 2000, train: LabelledSplit | None = None, test: LabelledSplit | None = None,
          family_min_precision: float = D.FAMILY_MIN_PRECISION, family_max: int = D.FAMILY_MAX,
          family_min_gain: float = D.FAMILY_MIN_GAIN, groups: Sequence[str] = ()) -> pd.DataFrame:
    """Probe every model of ``models`` (a Sweep or any ModelBatch) for the feature ``label == positive``.

    Returns one row per model (batch order) with ``name, k, latent_size, activation,
    l1_coef``; the logistic-regression latent ``latent`` and its weight; its test
    ``precision, recall, f1, support`` (positive test rows), ``tp, fp, fn``,
    ``accuracy`` and ``activation_rate`` (fraction of test rows where it fires) and
    its train ``train_f1``; the direct-search best latent on train
    ``train_best_latent, train_best_f1`` and its test ``train_best_test_precision,
    train_best_test_recall, train_best_test_f1``; ``logreg_test_accuracy`` (the
    regression on all latents, ``C`` and ``standardize`` as given: not a bound on one
    latent) and ``latent_test_accuracy`` (the probe latent alone; the same number as
    ``accuracy``, named to sit beside it). The feature family (:func:`feature_family` on train with
    ``family_min_precision, family_max, family_min_gain``, scored on test):
    ``family`` (its latents, space-separated), ``family_size``, ``family_precision``,
    ``family_recall``, ``family_f1`` (of the union) and, for every column of
    ``groups``, ``family_<group>`` (each member's dominant sub-group, ``", "``-joined).
    ``df.attrs`` holds the parameters, the row counts and ``"family"``: one row per
    model × member (see :func:`family_scores`; also ``name, k, latent_size, activation,
    l1_coef, train_precision, train_recall, is_probe_latent``) and ``"group_recall"``: one
    row per model × latent (probe latent and family members) × column (``label``, then
    ``groups``) × value (:func:`group_recall_frame`; the layout in the module docstring).
    """
    models.warn_if_unfinished("probe")
    store, train, test = load_train_test(models, store, label, positive, negative=negative, train_split=train_split,
                                         test_split=test_split, train=train, test=test)
    groups = list(dict.fromkeys(groups))
    group_values = {g: test.column(g) for g in groups}  # a missing column is refused before any work
    recall_columns = {label: test.column(label), **{g: v for g, v in group_values.items() if g != label}}
    rows: list[dict[str, Any]] = []
    family_rows: list[dict[str, Any]] = []
    recall_rows: list[dict[str, Any]] = []
    for spec, v_tr, v_te in zip(models.specs, models.encode(train.x), models.encode(test.x)):
        a_tr, a_te = v_tr > 0, v_te > 0  # [Btr, L], [Bte, L]
        # Direct search over every latent at once.
        tr_p, tr_r, tr_f1 = scores_from_counts(*single_latent_counts(a_tr, train.y))
        te_p, te_r, te_f1 = scores_from_counts(*single_latent_counts(a_te, test.y))
        best = int(np.argmax(tr_f1))
        phi, weight, fit = fit_probe(v_tr, train.y, C=C, max_iter=max_iter, standardize=standardize)
        pred = a_te[:, phi]  # [Bte]
        tp, fp, fn = int((pred & test.y).sum()), int((pred & ~test.y).sum()), int((~pred & test.y).sum())
        rows.append({
            **spec.to_dict(),
            "latent": phi, "weight": weight,
            "precision": float(te_p[phi]), "recall": float(te_r[phi]), "f1": float(te_f1[phi]),
            "support": int(test.y.sum()), "n_test": len(test), "tp": tp, "fp": fp, "fn": fn,
            "accuracy": float(np.mean(pred == test.y)), "activation_rate": float(pred.mean()),
            "train_f1": float(tr_f1[phi]),
            "train_best_latent": best, "train_best_f1": float(tr_f1[best]),
            "train_best_test_precision": float(te_p[best]), "train_best_test_recall": float(te_r[best]),
            "train_best_test_f1": float(te_f1[best]),
            "logreg_test_accuracy": float(fit.score(np.asarray(v_te, np.float64), test.y)),
            "latent_test_accuracy": float(np.mean(pred == test.y)),
        })
        members = feature_family(a_tr, train.y, min_precision=family_min_precision, max_members=family_max,
                                 min_gain=family_min_gain)
        union, per_member = family_scores(members, a_te, test.y, group_values)
        rows[-1].update({"family": " ".join(str(j) for j in members), "family_size": len(members),
                         "family_precision": union["precision"], "family_recall": union["recall"],
                         "family_f1": union["f1"],
                         **{f"family_{g}": ", ".join(str(m[f"{g}_dominant"]) for m in per_member) for g in groups}})
        for m in per_member:
            j = m["latent"]
            family_rows.append({**spec.to_dict(), **m, "train_precision": float(tr_p[j]),
                                "train_recall": float(tr_r[j]), "is_probe_latent": j == phi})
        for r in group_recall([phi, *(j for j in members if j != phi)], a_te, test.y, recall_columns):
            j = r["latent"]
            recall_rows.append({**spec.to_dict(), **r, "role": "probe" if j == phi else "family",
                                "member": members.index(j) if j in members else None})
    df = pd.DataFrame(rows)
    lead = ["name", "k", "latent_size", "activation", "l1_coef", "member", "latent", "is_probe_latent",
            "precision", "recall", "f1", "n_active", "union_recall", "train_precision", "train_recall"]
    family = pd.DataFrame(family_rows, columns=lead + [f"{g}_{key}" for g in groups
                                                       for key in ("dominant", "purity", "covers", "coverage")])
    recall = pd.DataFrame(recall_rows, columns=["name", "k", "latent_size", "activation", "l1_coef",
                                                *GROUP_RECALL_COLUMNS])
    df.attrs.update({"label": label, "positive": str(positive), "negative": negative, "store": str(store.path),
                     "train_split": train_split, "test_split": test_split, "n_train": len(train),
                     "n_train_positive": int(train.y.sum()), "n_test": len(test),
                     "n_test_positive": int(test.y.sum()), "C": C, "standardize": standardize,
                     "family_min_precision": family_min_precision, "family_max": family_max,
                     "family_min_gain": family_min_gain, "groups": groups,
                     # records, not a DataFrame: pandas compares and deep-copies attrs
                     "family": family.to_dict(orient="records"), "family_columns": list(family.columns),
                     "group_recall": recall.to_dict(orient="records"),
                     "group_recall_columns": list(recall.columns)})
    return df


def family_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The family table of a :func:`probe` result: one row per model × member."""
    return pd.DataFrame(df.attrs.get("family") or [], columns=df.attrs.get("family_columns"))


def group_recall_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The group-recall table of a :func:`probe` result: one row per model × latent ×
    column × value (the layout in the module docstring); ``member`` as a nullable integer."""
    out = pd.DataFrame(df.attrs.get("group_recall") or [], columns=df.attrs.get("group_recall_columns"))
    if "member" in out.columns:
        out["member"] = pd.array([None if pd.isna(m) else int(m) for m in out["member"]], dtype="Int64")
    return out
