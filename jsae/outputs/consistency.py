"""The files, figure and printed text of a consistency diagnostic (:mod:`jsae.analyses.consistency`).

:func:`write_consistency` writes ``consistency.csv`` (one row per speaker group),
``by.csv`` (one row per sub-group value, when a ``group`` column was given),
``consistency.json``, ``analysis.json`` and ``consistency.png`` (the consistencies
against chance, and per group). :func:`run_consistency` measures and writes;
:func:`consistency_text` is the text the ``jsae consistency`` command prints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..analyses.consistency import ConsistencyResult, consistency
from ..analyses.labelled import as_store
from ..plots import pyplot, save_figure
from .folders import (check_output, check_same_parameters, finish_output, folder_name, format_table, source_record,
                      write_analysis, write_csv, write_json, writing_output)
from .folders import option_parts, signature_defaults, store_key

__all__ = ["write_consistency", "run_consistency", "consistency_folder_name", "consistency_text"]


def _figure(res: ConsistencyResult, path: Path) -> Path:
    plt = pyplot()
    t = res.table
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, max(3.5, 0.18 * len(t) + 1.5)),
                                 gridspec_kw={"width_ratios": [1, 1.3]})
    bins = np.linspace(-1, 1, 41)
    a0.hist(t["chance"], bins=bins, alpha=0.6, label="labels shuffled within group (chance)", color="0.6")
    a0.hist(t["consistency"], bins=bins, alpha=0.8, label="actual", color="C0")
    a0.set_xlabel("cos(shift of group, sum of the other groups' shifts)")
    a0.set_ylabel("groups")
    a0.legend(fontsize=8)
    p = res.params
    a0.set_title(f"{p['label']}={p['positive']} across {p['group']}: mean {res.summary['mean_consistency']:.2f} "
                 f"(chance {res.summary['chance_consistency']:.2f})", fontsize=9)
    colors = {b: f"C{i}" for i, b in enumerate(sorted(t["by"].unique()))} if "by" in t else {}
    a1.barh(np.arange(len(t)), t["consistency"], color=[colors.get(b, "C0") for b in t.get("by", [None] * len(t))])
    a1.set_yticks(np.arange(len(t)), [f"{gname} ({b})" if "by" in t else gname
                                      for gname, b in zip(t["group"], t.get("by", t["group"]))], fontsize=7)
    a1.axvline(0, color="k", lw=0.5)
    a1.set_xlim(-1, 1)
    a1.set_xlabel("consistency c_g")
    if colors:
        from matplotlib.patches import Patch
        a1.legend(handles=[Patch(color=c, label=f"{res.params['by']} = {b}") for b, c in colors.items()], fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_consistency(res: ConsistencyResult, out_dir: str | Path) -> list[Path]:
    """Write ``consistency.csv``, ``by.csv`` (with a ``group`` column), ``consistency.json``, the figure and
    ``analysis.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "consistency.csv"]
    write_csv(res.table, files[0])
    tables = {"per group": "consistency.csv"}
    if res.by_table is not None:
        files.append(out_dir / "by.csv")
        write_csv(res.by_table, files[-1])
        tables[f"by {res.params['by']}"] = "by.csv"
    files.append(write_json(out_dir / "consistency.json", {"params": res.params, "summary": res.summary,
                                                           "groups": res.table, "by": res.by_table}))
    files.append(_figure(res, out_dir / "consistency.png"))
    write_analysis(out_dir, "consistency", res.params, res.summary, files, tables=tables)
    return files


#: the defaults of :func:`~jsae.analyses.consistency.consistency` that leave the folder name as it is
_CONS_DEFAULTS = signature_defaults(consistency, ("negative", "speaker", "group", "test_split", "min_rows", "n_splits",
                                                 "C", "seed"))
#: the parameters a consistency output depends on (recorded in ``analysis.json``, compared before a rerun)
CONSISTENCY_IDENTITY = ("label", "positive", *_CONS_DEFAULTS, "store")


def consistency_folder_name(label: str, positive: str, **options: Any) -> str:
    """The default folder of a consistency diagnostic: ``consistency-LABEL-POSITIVE-SPEAKER[-GROUP]``
    (whatever the negative class), plus the options that differ from
    :func:`~jsae.analyses.consistency.consistency`'s defaults (``test=…``, ``min3``,
    ``folds10``, ``C0.1``, ``seed1``)."""
    o = {**_CONS_DEFAULTS, **{k: v for k, v in options.items() if k in _CONS_DEFAULTS}}
    # the negative class is not named (today's names, e.g. ``consistency-lang-es-speaker-gender``
    # of ``--negative en``): it is recorded, and another one is refused unless overwritten
    parts: list[Any] = ["consistency", label, positive, o["speaker"], o["group"]]
    parts += option_parts(o, _CONS_DEFAULTS, {"test_split": "test=", "min_rows": "min", "n_splits": "folds", "C": "C",
                                              "seed": "seed"})
    return folder_name(*parts, fixed=5)


def run_consistency(store: str | Path, label: str, positive: str, *, out: str | Path | None = None,
                    run_dir: str | Path | None = None, overwrite: bool = False,
                    **kwargs: Any) -> tuple[ConsistencyResult, Path]:
    """:func:`~jsae.analyses.consistency.consistency` (``kwargs``: its keywords ``negative``,
    ``speaker``, ``group``, ``test_split``, ``min_rows``, ``n_splits``, ``C``, ``seed``) and
    :func:`write_consistency`. Output folder: ``out``, else
    ``RUN_DIR/analysis/<consistency_folder_name(...)>`` (``consistency-<label>-<positive>-<speaker>[-<group>]``
    with the default options; shown by ``jsae report``), else ``runs/consistency/<same name>``.
    An ``out`` must be new, empty or an earlier consistency output
    (:func:`jsae.outputs.folders.check_analysis_out`), checked before the work. A folder
    holding a consistency output of other parameters is refused before any work unless
    ``overwrite=True``; overwritten, the folder is replaced as one unit
    (no file of the old output remains; a failure leaves it whole)."""
    if out is not None:
        check_output(out, "consistency")
    store = as_store(store)  # opened once, for the check and for the measurement
    name = consistency_folder_name(label, positive, **kwargs)
    folder = Path(out) if out is not None else (Path(run_dir) / "analysis" / name if run_dir is not None
                                                else Path("runs") / "consistency" / name)
    check_output(folder, "consistency", run_dir=run_dir, out_given=out is not None)
    o = {**_CONS_DEFAULTS, **{k: v for k, v in kwargs.items() if k in _CONS_DEFAULTS}}
    identity = {**o, "label": label, "positive": str(positive), "min_rows": int(o["min_rows"]),
                "n_splits": int(o["n_splits"]), "C": float(o["C"]), "seed": int(o["seed"]),
                "store": store_key(store)}
    source = source_record(None, {"store": store})
    check_same_parameters(folder, "consistency", identity, CONSISTENCY_IDENTITY, overwrite, source=source)
    res = consistency(store, label, positive, **kwargs)
    check_output(folder, "consistency", run_dir=run_dir, out_given=out is not None)  # again: it may have changed
    with writing_output(folder, "consistency") as tmp:  # replaced as one unit when every file is written
        write_consistency(res, tmp)
        finish_output(tmp, identity, (), source)
    return res, folder


def consistency_text(res: ConsistencyResult) -> str:
    """A few lines for the terminal: the summary, and the per-sub-group table when there is one."""
    s, p = res.summary, res.params
    lines = [f"{p['label']}={p['positive']} across {s['groups']} {p['group']} groups ({s['rows']} rows): "
             f"consistency {s['mean_consistency']:.3f} (min {s['min_consistency']:.3f}; chance "
             f"{s['chance_consistency']:.3f}), shared fraction {s['shared_fraction']:.3f} (chance "
             f"{s['chance_shared_fraction']:.3f}); unseen-{p['group']} linear precision/recall "
             f"{s['unseen_group_precision']:.3f}/{s['unseen_group_recall']:.3f}, "
             f"accuracy {s['unseen_group_accuracy']:.3f}"]
    if res.by_table is not None:
        lines.append(format_table(res.by_table))
        for pair, c in s.get("by_mean_shift_cosines", {}).items():
            lines.append(f"cos between the mean shifts of {pair}: {c:.3f}")
    lines.append("worst groups:\n" + format_table(res.table.head(5)))
    return "\n".join(lines)
