"""Feature atlas, descriptions: each latent's label value (:func:`best_label`), its numeric
correlate (:func:`best_correlate`) and its one-line description (:func:`describe_latents`,
rates written by :func:`format_rate`), chosen from the statistics only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .stats import Enrichment, NumericEffects

__all__ = ["best_label", "best_correlate", "format_rate", "describe_latents"]


def best_label(enr: Enrichment, *, min_hits: int = 5, min_precision: float = 0.5,
               min_gain: float = 0.5) -> np.ndarray:
    """``[L]`` the index of each latent's label value (into ``enr.design.values``), −1 for none.

    Eligible values: ``hits ≥ min_hits``, ``precision ≥ min_precision`` and precision at
    least ``min_gain`` of the way from the value's base rate to 1,
    ``(precision − base_rate) / (1 − base_rate) ≥ min_gain``. Among those the highest F1,
    then the highest lift, then the first in design order (columns, then sorted values).
    """
    L, V = enr.hits.shape
    if V == 0:
        return np.full(L, -1, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = (enr.precision - enr.base_rate[None, :]) / (1.0 - enr.base_rate[None, :])
    ok = (enr.hits >= min_hits) & (enr.precision >= min_precision) & (gain >= min_gain)
    f1 = np.where(ok, enr.f1, -np.inf)
    lift = np.where(ok, enr.lift, -np.inf)
    pos = np.broadcast_to(np.arange(V), (L, V))
    first = np.lexsort((pos, -lift, -f1), axis=-1)[:, 0]
    return np.where(ok[np.arange(L), first], first, -1)


def best_correlate(eff: NumericEffects, *, alpha: float = 0.05, min_abs_d: float = 0.5,
                   min_hits: int = 5) -> np.ndarray:
    """``[L]`` the index of each latent's numeric correlate (into ``eff.design.numeric``),
    −1 for none. Eligible columns: ``q < alpha`` (BH over the model's latents × columns),
    ``|d| ≥ min_abs_d`` and at least ``min_hits`` firing rows with a value. Among those the
    largest ``|d|``, then the smallest ``p``, then the first column."""
    L, K = eff.d.shape
    if K == 0:
        return np.full(L, -1, np.int64)
    ok = (eff.q < alpha) & (np.abs(eff.d) >= min_abs_d) & (eff.n_fires >= min_hits)
    size = np.where(ok, np.abs(eff.d), -np.inf)
    p = np.where(ok, eff.p, np.inf)
    pos = np.broadcast_to(np.arange(K), (L, K))
    first = np.lexsort((pos, p, -size), axis=-1)[:, 0]
    return np.where(ok[np.arange(L), first], first, -1)


def format_rate(rate: float) -> str:
    """A share as a percentage: ``63 %`` (≥ 10 %), ``4.1 %`` (≥ 1 %), ``0.12 %`` (2 significant digits)."""
    pct = 100.0 * float(rate)
    if pct >= 10:
        return f"{pct:.0f} %"
    if pct >= 1:
        return f"{pct:.1f} %"
    return f"{pct:.2g} %"


def _signed(x: float) -> str:
    return f"{x:+.1f}".replace("-", "\u2212")


def describe_latents(firing_rate: np.ndarray, n_fires: np.ndarray,
                     label: Sequence[tuple[str, str, float, float] | None],
                     correlate: Sequence[tuple[str, float] | None], *, rare_rate: float = 0.005,
                     dense_rate: float = 0.5) -> tuple[list[str], list[str]]:
    """``(status [L], description [L])``, one line per latent from its statistics only.

    ``status``: ``dead`` (never fires), ``rare`` (``firing_rate < rare_rate``), ``dense``
    (``firing_rate ≥ dense_rate``) or ``""``. ``label``: ``(column, value, precision,
    recall)`` of :func:`best_label` or ``None``; ``correlate``: ``(column, d)`` of
    :func:`best_correlate` or ``None``. The description joins with ``"; "``:

    * ``dead: never fires`` (nothing else);
    * ``rare: fires on 0.12 % of rows`` / ``dense: fires on 63 % of rows`` when so;
    * ``column = value: P 1.00, R 0.99`` (the label);
    * ``column −2.3 sd`` (the correlate: Cohen's d, signed, one decimal);
    * ``no label or correlate: fires on 4.1 % of rows`` when none of the above.
    """
    status, out = [], []
    for rate, n, lab, cor in zip(firing_rate, n_fires, label, correlate):
        if n == 0:
            status.append("dead")
            out.append("dead: never fires")
            continue
        st = "rare" if rate < rare_rate else "dense" if rate >= dense_rate else ""
        parts = [f"{st}: fires on {format_rate(rate)} of rows"] if st else []
        if lab is not None:
            parts.append(f"{lab[0]} = {lab[1]}: P {lab[2]:.2f}, R {lab[3]:.2f}")
        if cor is not None:
            parts.append(f"{cor[0]} {_signed(cor[1])} sd")
        if not parts:
            parts.append(f"no label or correlate: fires on {format_rate(rate)} of rows")
        status.append(st)
        out.append("; ".join(parts))
    return status, out
