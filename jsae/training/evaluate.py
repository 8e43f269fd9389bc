"""Validation metrics of every model of a grid (:func:`evaluate`)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core.normalize import Normalizer
from ..errors import BadValueError
from .grid import GridState, GridTrainer

__all__ = ["evaluate"]


def evaluate(trainer: GridTrainer, state: GridState, val: np.ndarray, normalizer: Normalizer,
             block: int = 4096) -> list[dict[str, Any]]:
    """Validation metrics per model, in spec order.

    ``val_nmse = Σ‖x̂ − x‖² / Σ‖x − mean(x)‖²`` in the raw space (= fraction of
    variance unexplained); ``mean_l0``; ``dead_fraction``: latents that never fired
    on the validation set; ``train_dead_fraction``: dead by the training criterion.
    """
    if len(val) == 0:  # train_sweep never gets here: prepare_data refuses a val_fraction that leaves none
        raise BadValueError("evaluate() was given 0 validation rows; the metrics need at least one: pass a "
                            "non-empty val (train_sweep takes round(train.val_fraction × the training rows)).")
    state = trainer.unpad(state)
    scale = jnp.asarray(normalizer.scale, jnp.float32)
    fn = jax.jit(trainer.eval_sums)
    totals = None
    for start in range(0, len(val), block):
        xb = jnp.asarray(normalizer.apply(val[start:start + block]), jnp.float32)
        sums = jax.device_get(fn(state, xb, scale))
        if totals is None:
            totals = [[np.asarray(a, np.float64) for a in g] for g in sums]
        else:
            for t, g in zip(totals, sums):
                t[0] += g[0]
                t[1] += g[1]
                t[2] = np.logical_or(t[2], g[2])
    v64 = val.astype(np.float64)
    var = float(np.sum((v64 - v64.mean(axis=0)) ** 2))
    records = []
    for g, gs, (err, l0, fired) in zip(trainer.groups, state.groups, totals):
        train_dead = np.asarray(gs.since_fired) >= trainer.sae_cfg.dead_after_samples
        for i, spec in enumerate(g.models):
            nmse = float(err[i]) / max(var, 1e-12)
            records.append({
                **spec.to_dict(),
                "val_nmse": nmse,
                "fraction_variance_explained": 1.0 - nmse,
                "dead_fraction": float(1.0 - np.mean(fired[i])),
                "train_dead_fraction": float(np.mean(train_dead[i])),
                "mean_l0": float(l0[i]) / len(val),
                "steps": int(state.step),
            })
    return records
