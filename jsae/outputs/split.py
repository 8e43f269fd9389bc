"""The files, figure and printed table of a feature split (:mod:`jsae.analyses.splitting`).

:func:`write_split` writes ``split_levels.csv`` (one row per latent size),
``split_nodes.csv`` (one row per tracked latent), ``split_flows.csv``, ``split.json``,
``analysis.json`` and ``split_flow.png``: the flows of the evaluation rows through the
tracked latents as L grows (:func:`plot_split_flow`, the paper's Fig. 4). :func:`run_split`
loads the models, runs :func:`~jsae.analyses.splitting.feature_split` and writes into
``RUN_DIR/analysis/split-LABEL-POSITIVE-GROUP-kK`` (or ``out``); :func:`split_table` is
the short table the ``jsae split`` command prints.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..analyses.labelled import ALL_SPLITS, as_store
from ..analyses.splitting import NONE, SplitResult, feature_split
from ..models import ModelBatch
from ..plots import pyplot, save_figure
from .folders import (batch_and_dir, check_output, check_same_parameters, finish_output, folder_name, format_table,
                      num, output_folder, source_record, write_analysis, write_csv, write_json, writing_output)
from .folders import option_parts, signature_defaults, store_key

__all__ = ["plot_split_flow", "draw_split_flow", "node_composition", "LABEL_GID", "write_split", "run_split", "split_folder_name", "split_table"]


def _smooth(y0: float, y1: float, n: int = 30) -> np.ndarray:
    t = np.linspace(0, 1, n)
    return y0 + (y1 - y0) * (3 * t ** 2 - 2 * t ** 3)


def _short(text: str, n: int = 14) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def node_composition(categories: np.ndarray, positive: str, *, top: int = 2) -> list[str]:
    """What a flow node is made of, as label lines: ``n=120: spkA 52%, spkB 3%`` (the
    positive rows by sub-group, the ``top`` largest, then ``other x%``) and, when the node
    draws rows from the negative class, ``negative 45% (en)``.

    ``categories``: ``[n]`` the ``label/group`` category of each row of the node."""
    cats = np.asarray(categories).astype(str)
    n = len(cats)
    if n == 0:
        return ["n=0"]
    is_pos = np.char.startswith(cats, positive + "/")
    values, counts = np.unique(np.char.partition(cats[is_pos], "/")[:, 2] if is_pos.any() else np.array([], str),
                               return_counts=True)
    order = np.lexsort((values, -counts))
    shown = [f"{_short(str(values[i]))} {counts[i] / n:.0%}" for i in order[:top]]
    rest = int(counts[order[top:]].sum())
    if rest:
        shown.append(f"other {rest / n:.0%}")
    lines = [f"n={n}" + (": " + ", ".join(shown) if shown else "")]
    n_neg = int((~is_pos).sum())
    if n_neg:
        neg_labels = sorted(set(np.char.partition(cats[~is_pos], "/")[:, 0].tolist()))
        lines.append(f"negative {n_neg / n:.0%} ({_short(', '.join(neg_labels), 20)})")
    return lines


def _node_title(nodes: pd.DataFrame, L: int, node: str) -> str:
    """``#17 child of #3 +2 merged`` / ``#3 root`` / ``#40 probe``."""
    if node == NONE:
        return "none"
    at = nodes[nodes.latent_size == L]
    r = at[at.latent == int(node)].iloc[0]
    role = str(r.role)
    title = f"#{node} {role}"
    if "child" in role and r.parent is not None and not pd.isna(r.parent):
        title += f" of #{int(r.parent)}"
    merged = int(((at.branch == int(node)) & (at.latent != int(node))).sum()) if "branch" in at else 0
    return title + (f" +{merged} merged" if merged else "")


def _spread(want: np.ndarray, heights: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Label centres near ``want`` with no two labels overlapping (``heights``: their
    extents), inside ``[lo, hi]`` when they fit: push up in order, then back down from the top."""
    order = np.argsort(want, kind="stable")
    y = np.asarray(want, float)[order].copy()
    h = np.asarray(heights, float)[order]
    y[0] = max(y[0], lo + h[0] / 2)
    for i in range(1, len(y)):
        y[i] = max(y[i], y[i - 1] + (h[i - 1] + h[i]) / 2)
    if len(y) and y[-1] + h[-1] / 2 > hi:
        y[-1] = hi - h[-1] / 2
        for i in range(len(y) - 2, -1, -1):
            y[i] = min(y[i], y[i + 1] - (h[i + 1] + h[i]) / 2)
    out = np.empty_like(y)
    out[order] = y
    return out


#: the gid of every node label of the flow figure (tests find them by it)
LABEL_GID = "split-node-label"
_FONT = 7.0  # points


def draw_split_flow(result: SplitResult, *, title: str | None = None):
    """The flow figure of :func:`plot_split_flow`, returned as a matplotlib figure."""
    plt = pyplot()

    p = result.params
    sizes = list(p["latent_sizes"])
    cats = list(p["categories"])
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(cats)}
    touched = (result.assignment != NONE).any(axis=0)
    asg, cat = result.assignment[:, touched], result.categories[touched]
    nodes = result.nodes
    gap = max(2.0, 0.04 * touched.sum())
    width = 0.18
    layout: dict[tuple[int, str], tuple[float, float]] = {}  # (col, node) -> (y0, height)
    order: dict[int, list[str]] = {}
    labels: dict[int, list[tuple[str, list[str], float]]] = {}  # col -> (node, lines, centre)
    for ci, L in enumerate(sizes):
        present = [n for n in pd.unique(asg[ci]) if n != NONE]
        at = nodes[nodes.latent_size == L]
        roots = [int(r) for r in p.get("root_latents", [p["root_latent"]])]
        rank = {}
        for r in at.itertuples():
            member = "child" in r.role or r.role == "root"
            parent = getattr(r, "parent", None)
            parent_rank = roots.index(int(parent)) if member and parent is not None and not pd.isna(parent) \
                and int(parent) in roots else len(roots)
            rank[str(r.latent)] = (parent_rank, -r.coverage if member else 1.0)
        present.sort(key=lambda n: rank.get(n, (len(roots) + 1, 2.0)))
        order[ci] = present + ([NONE] if (asg[ci] == NONE).any() else [])
        y = 0.0
        labels[ci] = []
        for n in reversed(order[ci]):
            h = float(np.sum(asg[ci] == n))
            layout[(ci, n)] = (y, h)
            lines = [_node_title(nodes, L, n)] + node_composition(cat[asg[ci] == n], str(p["positive"]))
            labels[ci].append((n, lines, y + h / 2))
            y += h + gap
    top = max((y0 + h for (y0, h) in layout.values()), default=1.0) * 1.02
    # Size the figure so every column's labels fit stacked without overlapping.
    line_pt = _FONT * 1.3
    need_pt = max((sum(len(lines) * line_pt + 4 for _, lines, _ in col) for col in labels.values()), default=0)
    ax_h_in = max(4.4, need_pt / 72 * 1.05)
    fig, ax = plt.subplots(figsize=(2.4 + 2.6 * len(sizes), ax_h_in + 1.1))
    fig.subplots_adjust(left=0.03, right=0.80, top=1 - 0.6 / (ax_h_in + 1.1), bottom=0.5 / (ax_h_in + 1.1))
    per_pt = top / (ax_h_in * 72)  # data units per point
    for ci in range(len(sizes)):
        for n in reversed(order[ci]):
            y, h = layout[(ci, n)]
            yy = y
            for c in cats:  # node bar stacked by category
                hc = float(np.sum((asg[ci] == n) & (cat == c)))
                ax.add_patch(plt.Rectangle((ci - width / 2, yy), width, hc, color=colors[c], lw=0))
                yy += hc
            ax.add_patch(plt.Rectangle((ci - width / 2, y), width, h, fill=False, lw=0.8, ec="black"))
        col = labels[ci]
        if not col:
            continue
        heights = np.array([(len(lines) * line_pt + 4) * per_pt for _, lines, _ in col])
        want = np.array([c for _, _, c in col])
        placed = _spread(want, heights, 0.0, top)
        x_text = ci + width / 2 + 0.06
        for (n, lines, centre), yl in zip(col, placed):
            t = ax.text(x_text, yl, "\n".join(lines), va="center", ha="left", fontsize=_FONT, linespacing=1.1)
            t.set_gid(LABEL_GID)
            if abs(yl - centre) > 1e-9:  # a leader from the node to its moved label
                ax.plot([ci + width / 2, x_text - 0.01], [centre, yl], color="0.4", lw=0.5)
    for ci in range(len(sizes) - 1):  # bands
        out_off = {n: layout[(ci, n)][0] + layout[(ci, n)][1] for n in order[ci]}
        in_off = {n: layout[(ci + 1, n)][0] + layout[(ci + 1, n)][1] for n in order[ci + 1]}
        for a in order[ci]:
            for b in order[ci + 1]:
                for c in cats:
                    cnt = float(np.sum((asg[ci] == a) & (asg[ci + 1] == b) & (cat == c)))
                    if cnt == 0:
                        continue
                    out_off[a] -= cnt
                    in_off[b] -= cnt
                    xs = np.linspace(ci + width / 2, ci + 1 - width / 2, 30)
                    lo = _smooth(out_off[a], in_off[b])
                    ax.fill_between(xs, lo, lo + cnt, color=colors[c], alpha=0.35 if NONE not in (a, b) else 0.12,
                                    lw=0)
    ax.set_xticks(range(len(sizes)), [f"L={L}" for L in sizes])
    ax.set_xlim(-0.3, len(sizes) - 1 + 0.95)
    ax.set_ylim(0, top)
    ax.set_yticks([])
    for s in ("top", "right", "left"):
        ax.spines[s].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in cats]
    ax.legend(handles, cats, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title=f"{p['label']}/{p['group']}")
    roots = " ".join(f"#{r}" for r in p.get("root_latents", [p["root_latent"]]))
    ax.set_title(title or f"{p['label']}={p['positive']}: roots {roots} (L={p['root_latent_size']}) "
                          f"as L grows, k={p['k']}")
    return fig


def plot_split_flow(result: SplitResult, path: str | Path, *, title: str | None = None) -> Path:
    """Sankey-like flows of the evaluation rows through the tracked latents (Fig. 4).

    One column per latent size; each node is a branch (``#j`` its leader, the root it
    belongs to, ``+n merged`` overlapping siblings), a probe latent, or "none", stacked by
    category; its label gives its composition (rows, the positive sub-groups' shares and,
    when it has any, the share of negative-class rows). Labels never overlap: they are
    spread apart, with a leader line to a node whose label moved, and the figure grows
    with the number of nodes. Bands between columns carry the rows that move from one
    node to the next, coloured by category.
    """
    return save_figure(draw_split_flow(result, title=title), path, tight=False)


def write_split(result: SplitResult, out_dir: str | Path) -> list[Path]:
    """``split_levels.csv``, ``split_nodes.csv``, ``split_flows.csv``, ``split.json``,
    ``split_flow.png`` and ``analysis.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, df in (("split_levels.csv", result.levels), ("split_nodes.csv", result.nodes),
                     ("split_flows.csv", result.flows)):
        write_csv(df, out / name)
        files.append(out / name)
    files.append(write_json(out / "split.json", {"params": result.params, "levels": result.levels,
                                                 "nodes": result.nodes, "flows": result.flows}))
    files.append(plot_split_flow(result, out / "split_flow.png"))
    p = result.params
    def why(r: Any) -> str:
        of = f" of root {int(r.parent)}" if "child" in r.role and not pd.isna(r.parent) else ""
        merged = f", one branch with {r.overlaps}" if isinstance(r.overlaps, str) and r.overlaps else ""
        return (f"{p['label']}={p['positive']} {r.role}{of} at L={r.latent_size}: dominant {p['group']} "
                f"{r.dominant_group} ({r.purity:.0%}), coverage {r.coverage:.2f}, within {r.within:.2f}, "
                f"cosine {r.cosine:.2f}{merged}")

    features = [{"k": p["k"], "latent_size": int(r.latent_size), "latent": int(r.latent), "why": why(r)}
                for r in result.nodes.itertuples() if r.role != "probe"][:12]
    lv = result.levels
    first = lv[lv.split]
    roots = p["root_latents"]
    summary = {"root": f"L={p['root_latent_size']} latent{'s' if len(roots) > 1 else ''} "
                       + " ".join(map(str, roots)) + (" (the feature's family)" if len(roots) > 1 else ""),
               "first_split_at": int(first.latent_size.iloc[0]) if len(first) else None,
               "split_at": [int(x) for x in first.latent_size],
               "split_roots": {int(r.latent_size): r.split_roots for r in first.itertuples()},
               "unfollowed": {int(r.latent_size): r.unfollowed for r in lv.itertuples() if r.unfollowed},
               "child_groups": {int(r.latent_size): r.child_groups for r in lv.itertuples()},
               "children_by": f"coverage of a root's rows ≥ {p['min_coverage']}"
                              + ("" if p.get("min_within") is None else f", within the roots' rows ≥ {p['min_within']}")
                              + ("" if p.get("min_cosine") is None else f", decoder cosine ≥ {p['min_cosine']}"),
               "split_by": "two or more branches of one root"
                           + ("" if p.get("max_overlap") is None else
                              f" (children of a root whose rows overlap ≥ {p['max_overlap']} are one branch)")}
    if p.get("warnings"):
        summary["warning"] = "; ".join(p["warnings"])
    files.append(write_analysis(out, "split", p, summary, files, features,
                                tables={"levels": "split_levels.csv", "nodes": "split_nodes.csv"}))
    return files


#: the defaults of :func:`~jsae.analyses.splitting.feature_split` that leave the folder name as it is
_SPLIT_DEFAULTS = signature_defaults(feature_split, ("latent_sizes", "negative", "train_split", "test_split",
                                                    "root_latent_size", "min_coverage", "min_within", "min_cosine",
                                                    "max_overlap", "family_min_precision", "family_max",
                                                    "family_min_gain", "C"))
#: the parameters a split output depends on (recorded in ``analysis.json``, compared before a rerun)
SPLIT_IDENTITY = ("label", "positive", "group", "k", *_SPLIT_DEFAULTS, "models", "run_dir", "store")


def _opt(x: Any) -> str:
    return "none" if x is None else num(x)


def split_folder_name(label: str, positive: str, group: str, k: int, *, sizes: Sequence[int] = (),
                      **options: Any) -> str:
    """The default folder of a split: ``split-LABEL-POSITIVE-GROUP-kK`` with the defaults,
    plus ``vs-NEGATIVE`` and the options that differ from
    :func:`~jsae.analyses.splitting.feature_split`'s defaults: ``L=100_200`` (latent sizes
    other than all of ``sizes``, the k's models), ``root100`` (a root other than the
    smallest), ``cov0.3``, ``within0.5``, ``cos0.2``, ``overlap0.7``, ``fam0.8``, ``fmax3``,
    ``fgain0.05``, ``C0.1``, ``train=…``, ``test=…``."""
    o = {**_SPLIT_DEFAULTS, **{k_: v for k_, v in options.items() if k_ in _SPLIT_DEFAULTS}}
    parts: list[Any] = ["split", label, positive, group, f"k{k}",
                        f"vs-{o['negative']}" if o["negative"] is not None else None]
    ls = sorted(int(x) for x in o["latent_sizes"]) if o["latent_sizes"] is not None else sorted(map(int, sizes))
    if o["latent_sizes"] is not None and ls != sorted(map(int, sizes)):
        parts.append("L=" + "_".join(map(str, ls)))
    if o["root_latent_size"] is not None and (not ls or int(o["root_latent_size"]) != ls[0]):
        parts.append(f"root{int(o['root_latent_size'])}")
    parts += option_parts(o, _SPLIT_DEFAULTS, {"min_coverage": "cov"})
    if o["min_within"] != _SPLIT_DEFAULTS["min_within"]:
        parts.append(f"within{_opt(o['min_within'])}")
    if o["min_cosine"] is not None:
        parts.append(f"cos{num(o['min_cosine'])}")
    if o["max_overlap"] != _SPLIT_DEFAULTS["max_overlap"]:
        parts.append(f"overlap{_opt(o['max_overlap'])}")
    parts += option_parts(o, _SPLIT_DEFAULTS, {"family_min_precision": "fam", "family_max": "fmax",
                                               "family_min_gain": "fgain"})
    parts += option_parts(o, _SPLIT_DEFAULTS, {"C": "C", "train_split": "train="})
    test = ALL_SPLITS if o["test_split"] is None else o["test_split"]
    if test != _SPLIT_DEFAULTS["test_split"]:
        parts.append(f"test={test}")
    return folder_name(*parts, fixed=5)


def run_split(run_dir: "str | Path | ModelBatch", store: str | Path, label: str, positive: str, group: str, k: int, *,
              out: str | Path | None = None, overwrite: bool = False, **kwargs: Any) -> tuple[SplitResult, Path]:
    """Load a sweep (or take a ModelBatch), run :func:`~jsae.analyses.splitting.feature_split`
    (its keywords: ``latent_sizes``, ``negative``, ``train_split``, ``test_split`` — the
    evaluation rows, ``None`` or ``"all"`` for every row —, ``root_latent_size``, the child
    thresholds, ``C``), write the outputs (default ``RUN_DIR/analysis/<split_folder_name(...)>``,
    e.g. ``split-LABEL-POSITIVE-GROUP-kK`` with the default options). A folder holding a split
    of other parameters is refused before any work unless ``overwrite=True``; overwritten,
    the folder is replaced as one unit (no file of the old split remains; a failure leaves it
    whole)."""
    if out is not None:
        check_output(out, "split")  # before the work: --out must be new, empty or an earlier split
    models, run_dir = batch_and_dir(run_dir)
    store = as_store(store)  # opened once, for the check and for the split
    sizes = sorted({s.latent_size for s in models.specs if s.k == k})
    name = split_folder_name(label, positive, group, k, sizes=sizes, **kwargs)
    folder = output_folder(run_dir, name, out)
    check_output(folder, "split", run_dir=run_dir, out_given=out is not None)
    o = {**_SPLIT_DEFAULTS, **{k_: v for k_, v in kwargs.items() if k_ in _SPLIT_DEFAULTS}}
    flt = (lambda x: None if x is None else float(x))
    # what the split uses, resolved: the defaults (every latent size of the k, the smallest as the root, the
    # k's models) and the same values named explicitly (as `jsae split` does) are one identity
    used_sizes = sorted({int(x) for x in o["latent_sizes"]}) if o["latent_sizes"] is not None else sizes
    root = int(o["root_latent_size"]) if o["root_latent_size"] is not None else (used_sizes[0] if used_sizes else None)
    used = set(used_sizes) | {root}
    identity = {**o, "label": label, "positive": str(positive), "group": group, "k": int(k),
                "latent_sizes": used_sizes, "root_latent_size": root,
                "test_split": ALL_SPLITS if o["test_split"] is None else o["test_split"],
                "min_coverage": flt(o["min_coverage"]), "min_within": flt(o["min_within"]),
                "min_cosine": flt(o["min_cosine"]), "max_overlap": flt(o["max_overlap"]),
                "family_min_precision": flt(o["family_min_precision"]), "family_max": int(o["family_max"]),
                "family_min_gain": flt(o["family_min_gain"]), "C": flt(o["C"]),
                "models": [m.name for m in models.specs if m.k == k and m.latent_size in used],
                "run_dir": None if models.run_dir is None else os.path.abspath(models.run_dir),
                "store": store_key(store)}
    source = source_record(models, {"store": store})
    check_same_parameters(folder, "split", identity, SPLIT_IDENTITY, overwrite, source=source)
    result = feature_split(models, store, label, positive, group, k, **kwargs)
    with writing_output(folder, "split") as tmp:  # replaced as one unit when every file is written
        write_split(result, tmp)
        finish_output(tmp, identity, (), source)
    return result, folder


def split_table(result: SplitResult) -> str:
    """The short printed table of a split analysis."""
    cols = ["latent_size", "probe_latent", "probe_precision", "probe_recall"]
    cols += [c for c in result.levels.columns if c.startswith("recall_")]
    cols += ["children", "child_parent", "child_branch", "child_coverage", "child_groups", "n_branches", "split"]
    return format_table(result.levels, cols)
