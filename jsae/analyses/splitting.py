"""Feature splitting, paper Section V-B: follow one feature as the latent size grows.

For a fixed ``k`` and the latent sizes ``L_0 < L_1 < …`` of a sweep:

* at every ``L`` the positive-class latent ``φ_L`` is found as in :mod:`jsae.analyses.probing`
  (logistic regression on the train split);
* the *root* is ``φ`` of the smallest latent size (or of ``root_latent_size``); its
  samples ``S`` are the positive *evaluation rows* (the rows of ``test_split``) that
  activate it;
* the *children* of the root in the model of size ``L`` are the latents ``j`` that
  take a share of its rows and live mostly inside them: coverage
  ``|S ∩ A_j| / |S| ≥ min_coverage`` and ``within = |S ∩ A_j| / |A_j| ≥ min_within``
  (``A_j``: evaluation rows where ``v_j > 0``; ``within`` keeps out latents that fire
  on every kind of row and so take a share of any row set by chance). The decoder cosine ``cos(d_root, d_j)`` (raw-space
  directions ``d ⊙ s``, unit length) is reported beside the coverage but does not
  decide (a child that takes most of the parent's rows may point elsewhere; the
  optional ``min_cosine`` filters on it). The root's own model has no children: the
  root is listed there once, as ``root``;
* the feature has *split* at ``L`` when it has two or more children there. For every
  child the sub-group composition (``group`` column, e.g. gender) of the positive
  rows that activate it is reported, with its dominant sub-group and purity. When
  every row of ``S`` has the same ``group`` value (e.g. every root row is female),
  sub-groups cannot tell children apart: a warning says so (``warnings.warn``,
  ``params["warnings"]``, the summary of ``analysis.json``).

Flows for the figure (the paper's Fig. 4): at each ``L`` every evaluation row that
activates one of the tracked latents (children and ``φ_L``) is assigned to the one
with the largest activation (else to "none"); rows are counted per category
``label/group`` between consecutive latent sizes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import BadValueError, NotFoundError
from ..models import ModelBatch
from ..store import EmbeddingStore
from .labelled import ALL_SPLITS, LabelledSplit, as_store, check_dim, load_labelled
from .probing import fit_probe, scores_from_counts, single_latent_counts

__all__ = ["SplitResult", "feature_split", "NONE"]

#: the flow node of rows that activate none of the tracked latents
NONE = "none"


@dataclass
class SplitResult:
    """Tables of a split analysis.

    Attributes:
      levels: one row per latent size: ``latent_size, probe_latent, probe_precision,
        probe_recall, recall_<group>`` (per sub-group, of the probe latent),
        ``n_children, children, child_coverage, child_cosine, child_groups, split``
        (no children at the root's own size).
      nodes: one row per tracked latent: ``latent_size, latent, role`` (root,
        child, probe, or child+probe), ``coverage, within, cosine, n_active, precision,
        dominant_group, purity`` and ``n_<category>`` counts.
      flows: ``from_size, from_node, to_size, to_node, category, count``.
      assignment: ``[n_sizes, B]`` node label (latent index as str, or "none") of
        every evaluation row.
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
        """The children of the root at one latent size, by coverage."""
        n = self.nodes
        return n[(n.latent_size == latent_size) & n.role.str.contains("child")].sort_values(
            "coverage", ascending=False)


def feature_split(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str, group: str, k: int, *,
                  latent_sizes: Sequence[int] | None = None, negative: str | None = None,
                  train_split: str = "train", test_split: str | None = "test",
                  root_latent_size: int | None = None, min_coverage: float = 0.2, min_within: float | None = 0.8,
                  min_cosine: float | None = None, C: float = 1.0) -> SplitResult:
    """Follow the ``label == positive`` feature of the ``k`` models of ``models`` (a Sweep
    or any ModelBatch) as L grows.

    ``test_split``: the evaluation rows, used for coverage, sub-groups and flows
    (``"all"`` or ``None`` for every labelled row). ``min_coverage``: the share of the root's rows a child takes;
    ``min_within``: the share of the child's rows that are the root's (``None``: any);
    ``min_cosine``: ``None`` (default) for no decoder-cosine requirement, else the
    least cosine with the root's direction. See the module docstring for the definitions.
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

    # Per latent size: codes on the evaluation rows, raw directions, the probe latent.
    codes, dirs, probe_latent = {}, {}, {}
    for model, v_ev, v_tr, d in zip(used, used.encode(ev.x), used.encode(train.x), used.raw_directions()):
        L = model.latent_size
        codes[L], dirs[L] = v_ev, d
        probe_latent[L] = fit_probe(v_tr, train.y, C=C)[0]
    root = probe_latent[root_size]
    in_root = ev.y & (codes[root_size][:, root] > 0)  # S
    if not in_root.any():
        raise BadValueError(f"the root latent {root} (k={k}, L={root_size}) fires on no positive evaluation row; "
                         "nothing to follow. Try another --k or a larger test split (or all rows).")
    d_root = dirs[root_size][root]
    notes = []
    root_groups = sorted(set(sub[in_root].tolist()))
    if len(root_groups) == 1:
        notes.append(f"every one of the root's {int(in_root.sum())} rows has {group}={root_groups[0]!r}: the "
                     f"{group!r} sub-groups cannot tell its children apart; group by another column "
                     "(e.g. speaker) or use rows with several values")
        warnings.warn(f"split of {label}={ev.positive} (k={k}): {notes[-1]}.", stacklevel=2)

    level_rows, node_rows = [], []
    assignment = np.full((len(sizes), len(ev)), NONE, dtype=object)
    for li, L in enumerate(sizes):
        v = codes[L]
        active = v > 0  # [B, L]
        taken = active[in_root].sum(axis=0)  # [L] |S ∩ A_j|
        coverage = taken / in_root.sum()  # [L]
        within = taken / np.maximum(active.sum(axis=0), 1)  # [L]
        cosine = dirs[L] @ d_root  # [L]
        if L == root_size:  # the root's own model: the root, not a child of itself
            children = np.array([], int)
            firsts = [root]
        else:
            keep = coverage >= min_coverage
            if min_within is not None:
                keep &= within >= min_within
            if min_cosine is not None:
                keep &= cosine >= min_cosine
            children = np.flatnonzero(keep)
            children = children[np.argsort(-coverage[children], kind="stable")]
            firsts = list(children)
        phi = probe_latent[L]
        tracked = [int(j) for j in firsts] + ([int(phi)] if phi not in firsts else [])
        # Per-category counts of every tracked latent, batched over latents.
        onehot = (cats[:, None] == np.asarray(cat_values)[None, :]).astype(np.float32)  # [B, C]
        counts = np.rint(active[:, tracked].T.astype(np.float32) @ onehot).astype(int)  # [T, C]
        tp, fp, _ = single_latent_counts(active[:, tracked], ev.y)
        prec, _, _ = scores_from_counts(tp, fp, np.zeros_like(tp))
        child_groups = []
        for t, j in enumerate(tracked):
            pos_by_group = np.array([np.sum(active[:, j] & ev.y & (sub == s)) for s in sub_values])
            n_pos = int(pos_by_group.sum())
            dom = sub_values[int(np.argmax(pos_by_group))] if n_pos else None
            purity = float(pos_by_group.max() / n_pos) if n_pos else float("nan")
            role = ("root" if (L == root_size and j == root) else
                    "+".join(r for r, ok in (("child", j in children), ("probe", j == phi)) if ok))
            if j in children:
                child_groups.append(str(dom))
            node_rows.append({"k": k, "latent_size": L, "latent": int(j), "role": role,
                              "coverage": float(coverage[j]), "within": float(within[j]),
                              "cosine": float(cosine[j]),
                              "n_active": int(active[:, j].sum()), "n_positive": n_pos,
                              "precision": float(prec[t]), "dominant_group": dom, "purity": purity,
                              **{f"n_{c}": int(counts[t, ci]) for ci, c in enumerate(cat_values)}})
        # Flow assignment: the tracked latent with the largest activation.
        tv = v[:, tracked]
        best = np.argmax(tv, axis=1)
        fires = tv[np.arange(len(ev)), best] > 0
        assignment[li] = np.where(fires, np.asarray([str(j) for j in tracked], dtype=object)[best], NONE)
        rec = {f"recall_{s}": float(np.mean(active[ev.y & (sub == s), phi])) for s in sub_values}
        p_tp, p_fp, p_fn = single_latent_counts(active[:, [phi]], ev.y)
        pp, pr, _ = scores_from_counts(p_tp, p_fp, p_fn)
        level_rows.append({"k": k, "latent_size": L, "probe_latent": int(phi), "probe_precision": float(pp[0]),
                           "probe_recall": float(pr[0]), **rec,
                           "n_children": int(len(children)),
                           "children": " ".join(str(int(j)) for j in children),
                           "child_coverage": " ".join(f"{coverage[j]:.2f}" for j in children),
                           "child_cosine": " ".join(f"{cosine[j]:.2f}" for j in children),
                           "child_groups": " ".join(child_groups),
                           "split": bool(len(children) >= 2)})

    flow_rows = []
    touched = (assignment != NONE).any(axis=0)
    for li in range(len(sizes) - 1):
        frame = pd.DataFrame({"from_node": assignment[li][touched], "to_node": assignment[li + 1][touched],
                              "category": cats[touched]})
        for (a, b, c), cnt in frame.value_counts().items():
            flow_rows.append({"from_size": sizes[li], "from_node": a, "to_size": sizes[li + 1], "to_node": b,
                              "category": c, "count": int(cnt)})
    params = {"label": label, "positive": ev.positive, "negative": negative, "group": group, "k": k,
              "latent_sizes": sizes, "root_latent_size": root_size, "root_latent": int(root),
              "train_split": train_split, "eval_split": test_split or ALL_SPLITS, "min_coverage": min_coverage,
              "min_within": min_within, "min_cosine": min_cosine, "store": str(store.path), "n_eval": len(ev),
              "n_root_samples": int(in_root.sum()), "categories": cat_values, "groups": sub_values,
              "root_groups": root_groups, "warnings": notes}
    flows = pd.DataFrame(flow_rows, columns=["from_size", "from_node", "to_size", "to_node", "category", "count"])
    return SplitResult(pd.DataFrame(level_rows), pd.DataFrame(node_rows), flows, assignment, cats, params)
