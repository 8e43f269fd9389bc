"""Figures of a sweep: metric heatmaps over K × latent size, and loss curves."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .core.kinds import TOPK

__all__ = ["pyplot", "save_figure", "grid_matrix", "plot_heatmap", "plot_loss_curves", "plot_sweep"]


def pyplot():
    """``matplotlib.pyplot`` with the file-only Agg backend, imported on first use
    (importing jsae never loads matplotlib or changes a notebook's backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120, *, tight: bool = True) -> Path:
    """Lay out, write and close a matplotlib figure; returns the path. ``tight=False`` keeps
    the figure's own layout (its axes keep their size) and only crops the saved canvas to
    what is drawn."""
    path = Path(path)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches=None if tight else "tight")
    pyplot().close(fig)
    return path


def grid_matrix(records: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, list, list]:
    """``(values [n_sparsity, n_L], sparsity values, latent sizes)`` of a metric.

    The sparsity axis is ``k`` for TopK sweeps, ``l1_coef`` for ReLU+L1.
    """
    axis = "k" if all(r["activation"] == TOPK for r in records) else "l1_coef"
    rows = sorted({r[axis] for r in records})
    cols = sorted({r["latent_size"] for r in records})
    m = np.full((len(rows), len(cols)), np.nan)
    for r in records:
        m[rows.index(r[axis]), cols.index(r["latent_size"])] = r[key]
    return m, rows, cols


#: the height of one line of an axes title (12 pt at 1.2 line spacing), inches
_TITLE_LINE_IN = 0.2
#: the narrowest heatmap, inches: a line of 24 title characters fits (one or two latent sizes)
_MIN_WIDTH_IN = 2.6


def plot_heatmap(records: Sequence[dict[str, Any]], key: str, path: str | Path, *, title: str | None = None,
                 fmt: str = ".3f", cmap: str = "viridis") -> Path:
    """A K × latent-size heatmap of ``key`` with the values written in the cells."""
    plt = pyplot()
    m, rows, cols = grid_matrix(records, key)
    axis = "k" if all(r["activation"] == TOPK for r in records) else "l1_coef"
    width = max(_MIN_WIDTH_IN, 1.0 + 0.7 * len(cols))
    # Wrapped to the figure's width (a long title would be cut off at both sides); the figure is
    # as much taller as the title has lines, or a few rows leave no room for the axes below it.
    wrapped = textwrap.fill(title or key, max(24, int(width * 9)))
    fig, ax = plt.subplots(figsize=(width, 1.0 + 0.5 * len(rows) + _TITLE_LINE_IN * wrapped.count("\n")))
    im = ax.imshow(m, cmap=cmap, aspect="auto", origin="lower")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel("latent size L")
    ax.set_ylabel("K" if axis == "k" else "L1 coefficient")
    ax.set_title(wrapped)
    if m.size <= 200:
        finite = m[np.isfinite(m)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] < mid else "black")
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def plot_loss_curves(history: dict[str, list], names: Sequence[str], path: str | Path, key: str = "loss") -> Path:
    """Training loss (mean per host call) of every model against the step.

    One panel per sparsity value (K), one colour per latent size.
    """
    plt = pyplot()
    steps = np.asarray(history["step"])
    values = np.asarray(history[key])  # [calls, n_models]
    parsed = [n.rsplit("_L", 1) for n in names]
    sparsity = sorted({p[0] for p in parsed}, key=lambda s: float(re.sub(r"^(k|l1_)", "", s)))
    sizes = sorted({int(p[1]) for p in parsed})
    colors = dict(zip(sizes, plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))))
    ncol = min(4, len(sparsity))
    nrow = -(-len(sparsity) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), sharex=True, sharey=True, squeeze=False)
    for ax, sp in zip(axes.flat, sparsity):
        for i, (s_i, L) in enumerate(parsed):
            if s_i == sp:
                ax.plot(steps, values[:, i], color=colors[int(L)], lw=1.0, label=f"L={L}")
        ax.set_title(sp.replace("k", "K = ") if sp.startswith("k") else sp, fontsize=9)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(sparsity):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"training {key}")
    axes.flat[0].legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def plot_sweep(run_dir: str | Path, records: Sequence[dict[str, Any]], history: dict[str, list],
               names: Sequence[str]) -> list[Path]:
    """Write the sweep's standard figures into ``run_dir``."""
    run_dir = Path(run_dir)
    out = [
        plot_heatmap(records, "val_nmse", run_dir / "val_nmse.png", title="validation NMSE (FVU)"),
        plot_heatmap(records, "dead_fraction", run_dir / "dead_fraction.png",
                     title="dead-latent fraction (never active on validation)", cmap="magma"),
        plot_heatmap(records, "mean_l0", run_dir / "mean_l0.png", title="mean L0 on validation", fmt=".1f"),
    ]
    if history.get("step"):
        out.append(plot_loss_curves(history, names, run_dir / "loss_curves.png"))
    return out
