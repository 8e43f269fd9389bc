"""Feature splitting, paper Section V-B: follow one feature as the latent size grows.

For a fixed ``k`` and the latent sizes ``L_0 < L_1 < …`` of a sweep:

* at every ``L`` the positive-class latent ``φ_L`` is found as in :mod:`jsae.analyses.probing`
  (logistic regression on the train split) and reported as the paper does;
* the *roots* are the feature's family at the smallest latent size (or at
  ``root_latent_size``): the latents ``r_1, …, r_m`` of
  :func:`~jsae.analyses.probing.feature_family` on the train split (each with train
  precision ≥ ``family_min_precision``, together covering the positives). A feature held
  by two latents — one per speaker, say — is followed through both; the paper's single
  ``φ`` would follow one speaker and never see the other. Without a precise enough latent
  the root is ``φ`` alone (with a warning). The samples of root ``r`` are
  ``S_r``, the positive *evaluation rows* (the rows of ``test_split``) that activate it,
  and ``S = ⋃_r S_r``;
* a latent ``j`` of the model of size ``L`` is a *child* when it takes a share of one
  root's rows and lives mostly inside the feature: coverage
  ``c_r(j) = |S_r ∩ A_j| / |S_r| ≥ min_coverage`` for some root and
  ``within = |S ∩ A_j| / |A_j| ≥ min_within`` (``A_j``: evaluation rows where ``v_j > 0``;
  ``within`` keeps out latents that fire on every kind of row and so take a share of any
  row set by chance). A child is *assigned to the root it covers most*
  (``parent = argmax_r c_r(j)``; ``coverage`` is ``c_parent(j)``, ``covers`` every root
  with ``c_r(j) ≥ min_coverage``). The decoder cosine ``cos(d_parent, d_j)`` (raw-space
  directions ``d ⊙ s``, unit length) is reported beside it but does not decide (the
  optional ``min_cosine`` filters on it). The roots' own model has no children: each
  root is listed there once, as ``root``;
* children of one root that take the *same* rows are one *branch*, not a split: two
  children ``a, b`` of root ``r`` overlap when the overlap coefficient
  ``|S_r ∩ A_a ∩ A_b| / min(|S_r ∩ A_a|, |S_r ∩ A_b|) ≥ max_overlap``; the connected
  groups of overlapping children are the branches, each led by its child of largest
  coverage (``branch`` names the leader, ``overlaps`` the siblings each child overlaps);
* root ``r`` has *split* at ``L`` when it has two or more branches there, and the feature
  has split when any root has. For every child the sub-group composition (``group``
  column, e.g. gender) of the positive rows that activate it is reported, with its
  dominant sub-group and purity. Warnings (``warnings.warn``, ``params["warnings"]``, the
  summary of ``analysis.json``): every row of ``S`` has the same ``group`` value
  (sub-groups cannot tell children apart; the advice names other metadata columns that
  vary on those rows, never ``group`` itself); the roots fire on less than
  ``ROOT_COVER_MIN`` of a sub-group's positive rows (that sub-group is not followed).

Flows for the figure (the paper's Fig. 4): at each ``L`` every evaluation row that
activates one of the tracked latents (roots or children, and ``φ_L``) is assigned to the
one with the largest activation, and so to its branch (a node is a branch, named by its
leader; else "none"); rows are counted per category ``label/group`` between consecutive
latent sizes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import BadValueError, NotFoundError
from ..models import ModelBatch
from ..store import EmbeddingStore, is_descriptor
from . import defaults as D
from .labelled import ALL_SPLITS, LabelledSplit, as_store, check_dim, load_labelled
from .probing import feature_family, fit_probe, scores_from_counts, single_latent_counts

__all__ = ["SplitResult", "feature_split", "branches", "suggest_group_columns", "NONE", "ROOT_COVER_MIN"]

#: the flow node of rows that activate none of the tracked latents
NONE = "none"
#: a sub-group whose positive rows the roots fire on less often than this is reported as not followed
ROOT_COVER_MIN = 0.5
#: metadata columns never suggested as a grouping (row bookkeeping, not sub-groups)
_NOT_GROUPS = ("id", "source", "spans", "offset", "duration", "split", "short", "row")


@dataclass
class SplitResult:
    """Tables of a split analysis.

    Attributes:
      levels: one row per latent size: ``latent_size, probe_latent, probe_precision,
        probe_recall, recall_<group>`` (per sub-group, of the probe latent),
        ``n_children, n_branches, children, child_parent, child_branch, child_coverage,
        child_cosine, child_groups`` (space-separated, one entry per child), ``split``,
        ``split_roots`` (roots with two or more branches), ``unfollowed`` (roots without a
        child there); no children at the roots' own size.
      nodes: one row per tracked latent: ``latent_size, latent, role`` (root, child,
        probe, or child+probe), ``parent`` (the root a child is assigned to; a root's own
        index), ``covers``, ``branch`` (the leader of its branch), ``overlaps``,
        ``coverage`` (of the parent's rows), ``root_coverage`` (of ``S``), ``within,
        cosine, n_active, n_positive, precision, dominant_group, purity`` and
        ``n_<category>`` counts.
      flows: ``from_size, from_node, to_size, to_node, category, count``.
      assignment: ``[n_sizes, B]`` flow node (branch leader as str, or "none") of every
        evaluation row.
      categories: ``[B]`` category ``label/group`` of every evaluation row.
      params: the analysis parameters.
    """

    levels: pd.DataFrame
    nodes: pd.DataFrame
    flows: pd.DataFrame
    assignment: np.ndarray
    categories: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def children(self, latent_size: int) -> pd.DataFrame:
        """The children of the roots at one latent size, by coverage."""
        n = self.nodes
        return n[(n.latent_size == latent_size) & n.role.str.contains("child")].sort_values(
            "coverage", ascending=False, kind="stable")


def branches(fires: np.ndarray, max_overlap: float | None) -> np.ndarray:
    """Group the columns of ``fires`` that take the same rows.

    Args:
      fires: ``[R, C]`` bool, ``fires[b, c]``: child ``c`` fires on row ``b`` of its root's
        rows, columns in order of preference (the leader of a group is its first column).
      max_overlap: columns ``a, b`` are linked when ``|F_a ∩ F_b| / min(|F_a|, |F_b|) ≥
        max_overlap``; ``None``: never.
    Returns:
      ``[C]`` int, the column index of each column's group leader (connected components of
      the links; a column alone leads itself).
    """
    f = np.asarray(fires, bool)
    n = f.shape[1]
    leader = np.arange(n)
    if max_overlap is None or n < 2:
        return leader
    fi = f.astype(np.int64)
    inter = fi.T @ fi  # [C, C]
    size = np.diag(inter)
    smaller = np.minimum(size[:, None], size[None, :])
    linked = (inter >= max_overlap * smaller) & (smaller > 0)
    for a in range(n):  # union-find by lowest index (the columns arrive in order of preference)
        for b in np.flatnonzero(linked[a, a + 1:]) + a + 1:
            ra, rb = leader[a], leader[b]
            while leader[ra] != ra:
                ra = leader[ra]
            while leader[rb] != rb:
                rb = leader[rb]
            leader[max(ra, rb)] = min(ra, rb)
    for a in range(n):
        r = a
        while leader[r] != r:
            r = leader[r]
        leader[a] = r
    return leader


def suggest_group_columns(table: pd.DataFrame, rows: np.ndarray, exclude: Sequence[str], limit: int = 3) -> list[str]:
    """Metadata columns that could tell the ``rows`` apart: two or more values on them,
    fewer values than rows (not a row id), not in ``exclude`` nor row bookkeeping
    (``id``, ``source``, ``offset``, …), no measurement (float columns, the descriptor
    columns of :func:`jsae.store.is_descriptor`); by the number of values, fewest first."""
    sub = table.iloc[np.flatnonzero(rows)]
    found = []
    for col in sub.columns:
        if col in exclude or col in _NOT_GROUPS or is_descriptor(col) or pd.api.types.is_float_dtype(sub[col]):
            continue
        values = sub[col].dropna().astype(str)
        values = values[values.str.strip() != ""]
        n = values.nunique()
        if 2 <= n < max(len(sub), 3) and n <= 50:
            found.append((n, col))
    return [c for _, c in sorted(found)[:limit]]


def feature_split(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str, group: str, k: int, *,
                  latent_sizes: Sequence[int] | None = None, negative: str | None = None,
                  train_split: str = D.TRAIN_SPLIT, test_split: str | None = D.TEST_SPLIT,
                  root_latent_size: int | None = None, min_coverage: float = D.SPLIT_MIN_COVERAGE,
                  min_within: float | None = D.SPLIT_MIN_WITHIN, min_cosine: float | None = None,
                  max_overlap: float | None = D.SPLIT_MAX_OVERLAP,
                  family_min_precision: float = D.FAMILY_MIN_PRECISION, family_max: int = D.FAMILY_MAX,
                  family_min_gain: float = D.FAMILY_MIN_GAIN,
                  C: float = D.C) -> SplitResult:
    """Follow the ``label == positive`` feature of the ``k`` models of ``models`` (a Sweep
    or any ModelBatch) as L grows.

    ``test_split``: the evaluation rows, used for coverage, sub-groups and flows
    (``"all"`` or ``None`` for every labelled row). ``min_coverage``: the share of a root's
    rows a child takes; ``min_within``: the share of the child's rows that are the roots'
    (``None``: any); ``min_cosine``: ``None`` (default) for no decoder-cosine requirement,
    else the least cosine with the parent root's direction; ``max_overlap``: children of
    one root overlapping this much are one branch (``None``: every child its own branch);
    ``family_*``: the roots' family (as in :func:`~jsae.analyses.probing.probe`). See the
    module docstring for the definitions.
    """
    models.warn_if_unfinished("split")
    store = as_store(store)
    check_dim(models, store)
    train = load_labelled(store, label, positive, negative=negative, split=train_split)
    ev: LabelledSplit = load_labelled(store, label, positive, negative=negative,
                                      split=ALL_SPLITS if test_split is None else test_split)
    sub = ev.column(group)
    cats = np.char.add(np.char.add(ev.column(label).astype(str), "/"), sub.astype(str))
    sub_values = sorted(set(sub[ev.y].tolist()))
    cat_values = sorted(set(cats.tolist()), key=lambda c: (not c.startswith(ev.positive + "/"), c))

    of_k = models.select(k=k)
    sizes = of_k.latent_sizes
    if latent_sizes is not None:
        missing = sorted(set(latent_sizes) - set(sizes))
        if missing:
            raise NotFoundError(f"k={k}: no models with latent sizes {missing}; this sweep has {sizes}")
    root_size = (sizes[0] if latent_sizes is None else min(latent_sizes)) if root_latent_size is None \
        else int(root_latent_size)
    if root_size not in sizes:
        raise NotFoundError(f"root_latent_size={root_size} is not a latent size of the k={k} models: {sizes}")
    if latent_sizes is not None:
        sizes = sorted(set(latent_sizes))
    used = of_k.select(latent_size=sorted(set(sizes) | {root_size}))

    # Per latent size: codes on the evaluation rows, raw directions, the probe latent; the roots' family.
    codes, dirs, probe_latent = {}, {}, {}
    notes: list[str] = []
    roots: list[int] = []
    for model, v_ev, v_tr, d in zip(used, used.encode(ev.x), used.encode(train.x), used.raw_directions()):
        L = model.latent_size
        codes[L], dirs[L] = v_ev, d
        probe_latent[L] = fit_probe(v_tr, train.y, C=C)[0]
        if L == root_size:
            roots = feature_family(v_tr > 0, train.y, min_precision=family_min_precision, max_members=family_max,
                                   min_gain=family_min_gain)
    if not roots:
        roots = [int(probe_latent[root_size])]
        notes.append(f"no latent of the L={root_size} model reaches train precision {family_min_precision} on "
                     f"{label}={ev.positive}: the root is the probe latent {roots[0]} alone (lower "
                     "--family-min-precision to follow a family)")
    root_active = codes[root_size][:, roots] > 0  # [B, R]
    in_roots = ev.y[:, None] & root_active  # S_r, [B, R]
    in_root = in_roots.any(axis=1)  # S
    if not in_root.any():
        raise BadValueError(f"the root latents {roots} (k={k}, L={root_size}) fire on no positive evaluation row; "
                            "nothing to follow. Try another --k or a larger test split (or all rows).")
    d_roots = dirs[root_size][roots]  # [R, M]

    root_groups = sorted(set(sub[in_root].tolist()))
    if len(root_groups) == 1:
        others = suggest_group_columns(ev.table, in_root, exclude=(group, label))
        advice = (f"group by a column that varies on them ({', '.join(others)})" if others else
                  "no other metadata column varies on them: use more rows (e.g. --test-split all)")
        notes.append(f"every one of the roots' {int(in_root.sum())} rows has {group}={root_groups[0]!r}: the "
                     f"{group!r} sub-groups cannot tell their children apart; {advice}")
    group_cover = {s: float(np.mean(in_root[ev.y & (sub == s)])) for s in sub_values}
    thin = [s for s in sub_values if group_cover[s] < ROOT_COVER_MIN]
    if thin:
        notes.append(f"the root{'s' if len(roots) > 1 else ''} {' '.join(map(str, roots))} (L={root_size}) "
                     f"fire{'' if len(roots) > 1 else 's'} on "
                     + ", ".join(f"{group_cover[s]:.0%} of {group}={s!r}" for s in thin)
                     + f" of the positive rows: {'that sub-group is' if len(thin) == 1 else 'those sub-groups are'}"
                       f" not followed (a larger root size or a lower --family-min-precision may take them in)")
    for n in notes:
        warnings.warn(f"split of {label}={ev.positive} (k={k}): {n}.", stacklevel=2)

    n_root_rows = in_roots.sum(axis=0)  # [R] |S_r|
    level_rows, node_rows = [], []
    assignment = np.full((len(sizes), len(ev)), NONE, dtype=object)
    onehot = (cats[:, None] == np.asarray(cat_values)[None, :]).astype(np.float32)  # [B, C]
    for li, L in enumerate(sizes):
        v = codes[L]
        active = v > 0  # [B, L]
        taken = in_roots.T.astype(np.float32) @ active.astype(np.float32)  # [R, L] |S_r ∩ A_j|
        cov_r = taken / n_root_rows[:, None]  # [R, L] c_r(j)
        parent_i = np.argmax(cov_r, axis=0)  # [L] the root each latent covers most (ties: the earlier root)
        coverage = cov_r[parent_i, np.arange(L)]  # [L]
        taken_all = active[in_root].sum(axis=0)  # [L] |S ∩ A_j|
        within = taken_all / np.maximum(active.sum(axis=0), 1)  # [L]
        cos_r = dirs[L] @ d_roots.T  # [L, R]
        cosine = cos_r[np.arange(L), parent_i]  # [L]
        leader: dict[int, int] = {}
        if L == root_size:  # the roots' own model: the roots, not children of themselves
            children = np.array([], int)
            firsts = list(roots)
            parent_i = np.full(L, -1)
            parent_i[roots] = np.arange(len(roots))
            coverage = np.zeros(L)
            coverage[roots] = 1.0
            cosine = np.full(L, np.nan)
            cosine[roots] = 1.0
            leader = {int(r): int(r) for r in roots}
        else:
            keep = coverage >= min_coverage
            if min_within is not None:
                keep &= within >= min_within
            if min_cosine is not None:
                keep &= cosine >= min_cosine
            children = np.flatnonzero(keep)
            children = children[np.lexsort((-coverage[children], parent_i[children]))]  # by root, then coverage
            for ri in range(len(roots)):
                mine = children[parent_i[children] == ri]
                lead = branches(active[in_roots[:, ri]][:, mine], max_overlap)
                leader.update({int(j): int(mine[lead[t]]) for t, j in enumerate(mine)})
            firsts = list(children)
        phi = int(probe_latent[L])
        tracked = [int(j) for j in firsts] + ([phi] if phi not in firsts else [])
        counts = np.rint(active[:, tracked].T.astype(np.float32) @ onehot).astype(int)  # [T, C]
        tp, fp, _ = single_latent_counts(active[:, tracked], ev.y)
        prec, _, _ = scores_from_counts(tp, fp, np.zeros_like(tp))
        child_groups = []
        for t, j in enumerate(tracked):
            pos_by_group = np.array([np.sum(active[:, j] & ev.y & (sub == s)) for s in sub_values])
            n_pos = int(pos_by_group.sum())
            dom = sub_values[int(np.argmax(pos_by_group))] if n_pos else None
            purity = float(pos_by_group.max() / n_pos) if n_pos else float("nan")
            is_root = L == root_size and j in roots
            role = ("root" if is_root else
                    "+".join(r for r, ok in (("child", j in children), ("probe", j == phi)) if ok))
            member = j in children or is_root
            if j in children:
                child_groups.append(str(dom))
            linked = [int(o) for o in children if o != j and leader.get(int(o)) == leader.get(j)] if member else []
            node_rows.append({"k": k, "latent_size": L, "latent": int(j), "role": role,
                              "parent": int(roots[parent_i[j]]) if member else None,
                              "covers": " ".join(str(roots[r]) for r in np.flatnonzero(cov_r[:, j] >= min_coverage))
                              if j in children else (str(j) if is_root else ""),
                              "branch": leader.get(j) if member else None,
                              "overlaps": " ".join(map(str, linked)),
                              "coverage": float(coverage[j]) if member or L != root_size else float("nan"),
                              "root_coverage": float(taken_all[j] / in_root.sum()),
                              "within": float(within[j]), "cosine": float(cosine[j]),
                              "n_active": int(active[:, j].sum()), "n_positive": n_pos,
                              "precision": float(prec[t]), "dominant_group": dom, "purity": purity,
                              **{f"n_{c}": int(counts[t, ci]) for ci, c in enumerate(cat_values)}})
        # Flow assignment: the tracked latent with the largest activation, then its branch.
        tv = v[:, tracked]
        best = np.argmax(tv, axis=1)
        fires = tv[np.arange(len(ev)), best] > 0
        node_of = np.asarray([str(leader.get(j, j)) for j in tracked], dtype=object)
        assignment[li] = np.where(fires, node_of[best], NONE)
        rec = {f"recall_{s}": float(np.mean(active[ev.y & (sub == s), phi])) for s in sub_values}
        p_tp, p_fp, p_fn = single_latent_counts(active[:, [phi]], ev.y)
        pp, pr, _ = scores_from_counts(p_tp, p_fp, p_fn)
        n_branches = {r: len({leader[int(j)] for j in children if parent_i[j] == ri}) for ri, r in enumerate(roots)}
        split_roots = [r for r in roots if n_branches[r] >= 2]
        level_rows.append({"k": k, "latent_size": L, "probe_latent": phi, "probe_precision": float(pp[0]),
                           "probe_recall": float(pr[0]), **rec,
                           "n_children": int(len(children)),
                           "n_branches": int(sum(n_branches.values())) if L != root_size else 0,
                           "children": " ".join(str(int(j)) for j in children),
                           "child_parent": " ".join(str(roots[parent_i[j]]) for j in children),
                           "child_branch": " ".join(str(leader[int(j)]) for j in children),
                           "child_coverage": " ".join(f"{coverage[j]:.2f}" for j in children),
                           "child_cosine": " ".join(f"{cosine[j]:.2f}" for j in children),
                           "child_groups": " ".join(child_groups),
                           "split": bool(split_roots),
                           "split_roots": " ".join(map(str, split_roots)),
                           "unfollowed": "" if L == root_size else
                           " ".join(str(r) for r in roots if n_branches[r] == 0)})

    flow_rows = []
    touched = (assignment != NONE).any(axis=0)
    for li in range(len(sizes) - 1):
        frame = pd.DataFrame({"from_node": assignment[li][touched], "to_node": assignment[li + 1][touched],
                              "category": cats[touched]})
        for (a, b, c), cnt in frame.value_counts().items():
            flow_rows.append({"from_size": sizes[li], "from_node": a, "to_size": sizes[li + 1], "to_node": b,
                              "category": c, "count": int(cnt)})
    params = {"label": label, "positive": ev.positive, "negative": negative, "group": group, "k": k,
              "latent_sizes": sizes, "root_latent_size": root_size, "root_latents": [int(r) for r in roots],
              "root_latent": int(roots[0]), "root_probe_latent": int(probe_latent[root_size]),
              "train_split": train_split, "eval_split": test_split or ALL_SPLITS, "min_coverage": min_coverage,
              "min_within": min_within, "min_cosine": min_cosine, "max_overlap": max_overlap,
              "family_min_precision": family_min_precision, "family_max": family_max,
              "family_min_gain": family_min_gain, "store": str(store.path), "n_eval": len(ev),
              "n_root_samples": int(in_root.sum()), "root_samples": {str(r): int(n) for r, n in zip(roots, n_root_rows)},
              "root_group_coverage": group_cover, "categories": cat_values, "groups": sub_values,
              "root_groups": root_groups, "warnings": notes}
    flows = pd.DataFrame(flow_rows, columns=["from_size", "from_node", "to_size", "to_node", "category", "count"])
    nodes = pd.DataFrame(node_rows)
    nodes[["parent", "branch"]] = nodes[["parent", "branch"]].astype("Int64")  # empty for a probe latent
    return SplitResult(pd.DataFrame(level_rows), nodes, flows, assignment, cats, params)
