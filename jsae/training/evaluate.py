"""Validation metrics of every model of a grid (:func:`evaluate`), checked to be finite (:func:`check_finite`)."""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from ..cluster import to_global, to_host
from ..core.normalize import Normalizer, row_moments
from ..errors import BadValueError
from .grid import GridState, GridTrainer

__all__ = ["evaluate", "METRIC_KEYS", "first_non_finite"]

#: the numbers of a metric record (:func:`evaluate`)
METRIC_KEYS = ("val_nmse", "fraction_variance_explained", "dead_fraction", "train_dead_fraction", "mean_l0")


def evaluate(trainer: GridTrainer, state: GridState, val: np.ndarray, normalizer: Normalizer,
             block: int = 1024) -> list[dict[str, Any]]:
    """Validation metrics per model, in spec order, of ``state`` as trained (padded, possibly
    sharded: :meth:`~jsae.training.grid.GridTrainer.pad`; without a mesh the padded state is the
    unpadded one).

    ``val_nmse = Σ‖x̂ − x‖² / Σ‖x − mean(x)‖²`` in the raw space (= fraction of
    variance unexplained); ``mean_l0``; ``dead_fraction``: latents that never fired
    on the validation set; ``train_dead_fraction``: dead by the training criterion.

    ``block`` validation rows go through the models at a time. Evaluation encodes densely
    (codes ``[block, L]`` per model), so its blocks are smaller than a training batch: at 1024
    rows the paper grid's evaluation peaks below its training step (at 4096 it set the
    sweep's peak, ≈ 0.5 GiB above it: benchmarks/RESULTS.md, distributed_sweep).

    The raw-space error is ``Σ_d s_d² Σ_b (x̂ − x)²_bd`` with the per-dimension sums of the
    normalised space (float32 per block on the device) combined in float64 here, and the
    variance comes from float64 block sums (:func:`~jsae.core.normalize.row_moments`): rows
    near float32's limit (±3.4e38) give finite metrics instead of an overflow to ``inf``.
    """
    if len(val) == 0:  # train_sweep never gets here: prepare_data refuses a val_fraction that leaves none
        raise BadValueError("evaluate() was given 0 validation rows; the metrics need at least one: pass a "
                            "non-empty val (train_sweep takes round(train.val_fraction × the training rows)).")
    fn = jax.jit(trainer.eval_sums)  # on the state as trained: padding copies are dropped on the host
    totals = None
    for start in range(0, len(val), block):
        xb = to_global(normalizer.apply(val[start:start + block]).astype(np.float32), trainer.replicated)
        sums = to_host(fn(state, xb))
        if totals is None:
            totals = [[np.asarray(a, np.float64) for a in g] for g in sums]
        else:
            for t, g in zip(totals, sums):
                t[0] += g[0]
                t[1] += g[1]
                t[2] = np.logical_or(t[2], g[2])
    var = row_moments(val).variance_sum
    scale_sq = np.square(np.asarray(normalizer.scale, np.float64))  # [M]
    records = []
    step, since_fired = to_host((state.step, [gs.since_fired for gs in state.groups]))
    for g, since, (err, l0, fired) in zip(trainer.groups, since_fired, totals):
        err, l0, fired, since = err[:g.size], l0[:g.size], fired[:g.size], since[:g.size]
        train_dead = since >= trainer.sae_cfg.dead_after_samples
        raw_err = err @ scale_sq  # [n]: Σ_d s_d² e_d
        for i, spec in enumerate(g.models):
            nmse = float(raw_err[i]) / max(var, 1e-12)
            records.append({
                **spec.to_dict(),
                "val_nmse": nmse,
                "fraction_variance_explained": 1.0 - nmse,
                "dead_fraction": float(1.0 - np.mean(fired[i])),
                "train_dead_fraction": float(np.mean(train_dead[i])),
                "mean_l0": float(l0[i]) / len(val),
                "steps": int(step),
            })
    return records


def first_non_finite(records: list[dict[str, Any]]) -> tuple[str, str, float] | None:
    """``(model name, metric, value)`` of the first metric of :data:`METRIC_KEYS` that is NaN or ±Inf, else None."""
    for r in records:
        for key in METRIC_KEYS:
            value = r.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                return str(r.get("name")), key, value
    return None
