"""Train a whole sweep in one job: data → normalisation → grid → checkpoints → metrics.

:func:`train_sweep` is the one entry point (the ``jsae sweep`` CLI is a thin
wrapper). It resumes a run directory that holds checkpoints of the same config,
and it ends with the same parameters as an uninterrupted run: every batch is a
function of ``(seed, step)`` only.

Run directory::

    RUN_DIR/config.yaml          resolved config
    RUN_DIR/checkpoints/<step>/  orbax: stacked state + JSON meta
    RUN_DIR/sweep.json           grid, normalisation, metrics, history, version
    RUN_DIR/metrics.json         one record per model (k, latent_size, val_nmse, ...)
    RUN_DIR/*.png                heatmaps over K × L, loss curves
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import open_manager, restore_checkpoint, save_checkpoint
from .config import ConfigError, SweepConfig, config_from_dict, config_to_dict, config_to_yaml
from .grid import GridState, GridTrainer, make_groups
from .normalize import Normalizer, fit_normalizer, geometric_median
from .plots import plot_sweep
from .store import EmbeddingStore, StoreError, open_store, validate_embeddings

__all__ = ["TrainingData", "prepare_data", "batch_indices", "num_steps", "make_mesh", "train_sweep",
           "evaluate", "RESUMABLE_KEYS"]

# Keys that may differ when a run is resumed (they do not change the trained models).
RESUMABLE_KEYS = ("train.steps", "train.epochs", "train.progress", "train.keep_checkpoints",
                  "train.checkpoint_every", "train.steps_per_call")


@dataclass
class TrainingData:
    """Raw embeddings split into train/val (float32), with the store rows they came from.

    ``train`` is ``None`` when streaming (``data.stream``): batches are then read
    from ``store`` by row; ``fit`` holds the rows that fit the normalisation and
    ``b_pre`` (all training rows when they are in memory).
    """

    train: np.ndarray | None  # [N_train, M]
    val: np.ndarray  # [N_val, M]
    train_rows: np.ndarray  # [N_train] store row indices
    val_rows: np.ndarray  # [N_val]
    source: str
    fit: np.ndarray  # [N_fit, M]
    store: EmbeddingStore | None = None

    @property
    def n_train(self) -> int:
        return len(self.train_rows)

    def read_batches(self, idx: np.ndarray) -> np.ndarray:
        """Raw rows for batch positions ``idx [S, B]`` (indices into the training rows)."""
        if self.train is not None:
            return self.train[idx]
        rows = self.train_rows[idx.ravel()]
        uniq, inverse = np.unique(rows, return_inverse=True)
        return self.store.read(uniq)[inverse].reshape(idx.shape + (-1,))


def prepare_data(cfg: SweepConfig, data: np.ndarray | None = None) -> TrainingData:
    """Load the configured store (or take ``data [N, M]``) and split off validation rows."""
    store = None
    if data is not None:
        x = validate_embeddings(data, what="training data")
        rows = np.arange(len(x))
        source = "array"
        dim = x.shape[1]
    else:
        store = open_store(cfg.data.store)
        rows = np.arange(store.num_rows)
        if cfg.data.splits:
            if "split" not in store.metadata.columns:
                raise StoreError(f"data.splits={list(cfg.data.splits)} but store {store.path} has no 'split' column.")
            keep = store.metadata["split"].astype(str).isin(cfg.data.splits).to_numpy()
            rows = rows[keep]
        if cfg.data.max_rows > 0:
            rows = rows[: cfg.data.max_rows]
        x = None if cfg.data.stream else (store.read(rows) if len(rows) else np.zeros((0, store.dim), np.float32))
        source = str(store.path)
        dim = store.dim
    if len(rows) == 0:
        raise StoreError(f"no training rows in {source} (after data.splits / data.max_rows); nothing to train on.")
    perm = np.random.default_rng([cfg.train.seed, 7]).permutation(len(rows))
    n_val = int(round(cfg.train.val_fraction * len(rows)))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if len(train_idx) < cfg.train.batch_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is larger than the {len(train_idx)} training rows; "
            f"lower it, e.g. train.batch_size={max(1, len(train_idx) // 4)}."
        )
    if x is not None:
        return TrainingData(x[train_idx], x[val_idx], rows[train_idx], rows[val_idx], source, fit=x[train_idx])
    fit_idx = np.sort(np.random.default_rng([cfg.train.seed, 5]).permutation(len(train_idx))[: cfg.data.fit_rows])
    val = store.read(rows[val_idx]) if len(val_idx) else np.zeros((0, dim), np.float32)
    return TrainingData(None, val, rows[train_idx], rows[val_idx], source, fit=store.read(rows[train_idx][fit_idx]),
                        store=store)


def num_steps(cfg: SweepConfig, n_train: int) -> int:
    """``train.steps`` or ``ceil(train.epochs · n_train / batch_size)``."""
    if cfg.train.steps > 0:
        return cfg.train.steps
    return max(1, math.ceil(cfg.train.epochs * n_train / cfg.train.batch_size))


def batch_indices(seed: int, start: int, count: int, n: int, batch_size: int) -> np.ndarray:
    """Rows of the batches of steps ``[start, start + count)``: ``[count, batch_size]`` int32.

    Each epoch is a permutation drawn from ``(seed, epoch)``; the last partial batch
    of an epoch is dropped. A batch depends only on ``(seed, step)``.
    """
    per_epoch = n // batch_size
    out = np.empty((count, batch_size), np.int32)
    cache: dict[int, np.ndarray] = {}
    for i, step in enumerate(range(start, start + count)):
        epoch, j = divmod(step, per_epoch)
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([seed, 11, epoch]).permutation(n).astype(np.int32)
        out[i] = cache[epoch][j * batch_size:(j + 1) * batch_size]
    return out


def make_mesh(shard_models: bool) -> Mesh | None:
    """A 1-D mesh ``("model",)`` over all devices, or ``None`` for one device."""
    devices = jax.devices()
    if not shard_models or len(devices) == 1:
        return None
    return Mesh(np.array(devices), ("model",))


def _flat_metric(metrics: tuple[dict[str, Any], ...], trainer: GridTrainer, key: str) -> np.ndarray:
    """``[S, n_models]`` of a per-step metric, padding copies dropped, in spec order."""
    return np.concatenate([np.asarray(m[key])[:, : g.size] for g, m in zip(trainer.groups, metrics)], axis=1)


def evaluate(trainer: GridTrainer, state: GridState, val: np.ndarray, normalizer: Normalizer,
             block: int = 4096) -> list[dict[str, Any]]:
    """Validation metrics per model, in spec order.

    ``val_nmse = Σ‖x̂ − x‖² / Σ‖x − mean(x)‖²`` in the raw space (= fraction of
    variance unexplained); ``mean_l0``; ``dead_fraction``: latents that never fired
    on the validation set; ``train_dead_fraction``: dead by the training criterion.
    """
    state = trainer.unpad(state)
    if len(val) == 0:
        raise ConfigError("no validation rows (train.val_fraction=0); set train.val_fraction > 0 to get metrics.")
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


def _check_resumable(run_dir: Path, cfg: SweepConfig) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    import yaml

    saved = config_to_dict(config_from_dict(yaml.safe_load(saved_path.read_text())))
    now = config_to_dict(cfg)

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    a, b = dict(flat(saved)), dict(flat(now))
    diff = [k for k in a if a[k] != b.get(k) and k not in RESUMABLE_KEYS]
    if diff:
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({', '.join(f'{k}: {a[k]} → {b[k]}' for k in diff)}); "
            "resume it with the same config, or write this sweep to a new --out directory."
        )


def train_sweep(cfg: SweepConfig, run_dir: str | Path, *, data: np.ndarray | None = None,
                stop_after: int | None = None) -> list[dict[str, Any]]:
    """Train (or resume) every model of ``cfg.grid`` in one compiled program.

    Args:
      cfg: the sweep config. run_dir: output directory (created; resumed if it
        holds checkpoints of the same config). data: optional raw ``[N, M]``
        embeddings used instead of ``cfg.data.store``.
      stop_after: stop (after checkpointing) once this step is reached — for
        tests and time-boxed jobs; a later call continues.
    Returns:
      the per-model metric records (also written to ``RUN_DIR/metrics.json``).
    """

    run_dir = Path(run_dir)
    _check_resumable(run_dir, cfg)
    td = prepare_data(cfg, data)
    dim = td.fit.shape[1]
    normalizer = fit_normalizer(td.fit, cfg.sae.normalize)
    x_fit = normalizer.apply(td.fit).astype(np.float32)
    groups = make_groups(cfg.grid)
    mesh = make_mesh(cfg.train.shard_models)
    trainer = GridTrainer(groups, dim, cfg.sae, cfg.optim, mesh=mesh, matmul_dtype=cfg.train.matmul_dtype)
    total = num_steps(cfg, td.n_train)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    manager = open_manager(run_dir, keep=cfg.train.keep_checkpoints)
    history: dict[str, list] = {"step": [], "loss": [], "nmse": [], "dead_fraction": []}
    if manager.latest_step() is not None:
        state, meta, step = restore_checkpoint(run_dir, trainer.abstract_state(), manager=manager)
        history = meta["history"]
    else:
        rng = np.random.default_rng([cfg.train.seed, 3])
        sample = x_fit[rng.permutation(len(x_fit))[: cfg.sae.b_pre_init_samples]]
        b_pre = {"geometric_median": geometric_median, "mean": lambda s: s.mean(axis=0),
                 "zeros": lambda s: np.zeros(dim)}[cfg.sae.b_pre_init](sample.astype(np.float64))
        state = trainer.init(jax.random.key(cfg.train.seed), np.asarray(b_pre, np.float32))
        step = 0

    def meta_now(step: int) -> dict[str, Any]:
        return {"step": step, "version": __version__, "config": config_to_dict(cfg), "dim": dim,
                "models": [m.to_dict() for m in trainer.specs], "normalizer": normalizer.to_dict(),
                "history": history, "data": {"source": td.source, "n_train": td.n_train, "n_val": len(td.val)}}

    (run_dir / "sweep.json").write_text(json.dumps(meta_now(step) | {"metrics": [], "complete": False,
                                                                    "total_steps": total}, indent=1))
    state = trainer.pad(state)
    # In memory: the normalised training rows live on the device and each step gathers
    # its batch there. Streaming: each host call's batches are read from the store.
    x_dev = None if td.train is None else jnp.asarray(x_fit if td.fit is td.train else normalizer.apply(td.train))
    run = trainer.jit_run_steps()
    stop = total if stop_after is None else min(total, stop_after)
    bar = tqdm(total=total, initial=step, unit="step", desc=f"sweep {len(trainer.specs)} models",
               disable=not cfg.train.progress, dynamic_ncols=True)
    every = cfg.train.checkpoint_every
    while step < stop:
        count = min(cfg.train.steps_per_call, stop - step, every - step % every)
        idx = batch_indices(cfg.train.seed, step, count, td.n_train, cfg.train.batch_size)
        t0 = time.perf_counter()
        if x_dev is not None:
            state, metrics = run(state, x_dev, jnp.asarray(idx))
        else:
            batches = normalizer.apply(td.read_batches(idx)).astype(np.float32)
            state, metrics = run(state, jnp.asarray(batches))
        metrics = jax.device_get(metrics)
        dt = time.perf_counter() - t0
        step += count
        loss = _flat_metric(metrics, trainer, "loss")
        history["step"].append(step)
        for key in ("loss", "nmse", "dead_fraction"):
            history[key].append(_flat_metric(metrics, trainer, key).mean(axis=0).tolist())
        bar.update(count)
        bar.set_postfix(samples_s=f"{count * cfg.train.batch_size / dt:,.0f}",
                        loss_worst=f"{loss[-1].max():.4f}", loss_best=f"{loss[-1].min():.4f}")
        if not np.all(np.isfinite(loss)):
            bad = trainer.specs[int(np.flatnonzero(~np.isfinite(loss).all(axis=0))[0])].name
            raise FloatingPointError(f"model {bad}: loss is not finite at step {step}; lower optim.lr.")
        if step % every == 0 or step == stop:
            save_checkpoint(manager, step, trainer.unpad(state), meta_now(step))
    bar.close()
    manager.close()

    records = evaluate(trainer, state, td.val, normalizer)
    summary = meta_now(step) | {"metrics": records, "complete": step >= total, "total_steps": total}
    (run_dir / "sweep.json").write_text(json.dumps(summary, indent=1))
    (run_dir / "metrics.json").write_text(json.dumps(records, indent=1))
    if step >= total:
        plot_sweep(run_dir, records, history, [m.name for m in trainer.specs])
    return records
