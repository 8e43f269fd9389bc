"""Train a whole sweep in one job: data → normalisation → grid → checkpoints → metrics.

:func:`train_sweep` is the one entry point (the ``jsae sweep`` CLI is a thin
wrapper). It resumes a run directory that holds checkpoints of the same config,
and it ends with the same parameters as an uninterrupted run: every batch is a
function of ``(seed, step)`` only.

Run directory::

    RUN_DIR/config.yaml          resolved config
    RUN_DIR/checkpoints/<step>/  orbax: stacked state + JSON meta (with checksums)
    RUN_DIR/models/<name>/       per model: parameters + normaliser (safetensors) and
                                 cfg.json — what analyses load (:mod:`jsae.modelfiles`),
                                 rewritten at every checkpoint; models/index.json
    RUN_DIR/sweep.json           grid, normalisation, metrics, history, version,
                                 step / total_steps / complete, data fingerprint
    RUN_DIR/metrics.json         one record per model (k, latent_size, val_nmse, ...)
    RUN_DIR/*.png                heatmaps over K × L, loss curves
    RUN_DIR/.lock                flock held by the sweep writing here (pid inside)
    RUN_DIR/checkpoints.corrupt/ checkpoints that failed their checksums, set aside

Safeguards (see :func:`train_sweep`): one writer per run directory (``.lock``);
resuming needs the same config *and* the same training data (the data
fingerprint, :func:`data_fingerprint`); a checkpoint that fails its checksums is
set aside and training resumes from the newest one that verifies; a full disk
stops the sweep with one :class:`DiskFullError` line naming the last good
checkpoint; a run that fails before its first checkpoint leaves no config behind
(the corrected command starts it afresh). JSON files are replaced atomically. On
resume the normaliser is restored from the checkpoint and checked against a re-fit
on the same data (:func:`restored_normalizer`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import (CHECKPOINT_DIR, CheckpointError, checkpoint_steps, open_manager, restore_newest_good,
                         save_checkpoint, set_aside)
from .config import ConfigError, SweepConfig, config_to_dict, config_to_yaml, load_config
from .errors import BadValueError, JsaeError, one_line
from .grid import GridState, GridTrainer, make_groups
from .modelfiles import PARAM_NAMES, model_files_step, write_model_files
from .normalize import Normalizer, fit_normalizer, geometric_median
from .plots import plot_sweep
from .results import atomic_write_json, atomic_write_text
from .rundir import RunDirError, check_run_dir, validation_row_count
from .store import EmbeddingStore, StoreError, open_store, validate_embeddings

__all__ = ["TrainingData", "prepare_data", "batch_indices", "num_steps", "make_mesh", "train_sweep",
           "evaluate", "RESUMABLE_KEYS", "data_fingerprint", "run_lock", "LOCK_NAME", "RunLockedError",
           "DataChangedError", "DiskFullError", "TrainingDivergedError", "CheckpointWarning"]

LOCK_NAME = ".lock"


class RunLockedError(JsaeError):
    """Another process holds the run directory's lock (a second sweep on one ``--out``)."""


class DataChangedError(JsaeError):
    """Resuming a run on training data whose fingerprint differs from the one it was trained on."""


class DiskFullError(JsaeError):
    """The disk (or quota) filled up while the sweep was writing; names the last good checkpoint."""


class TrainingDivergedError(JsaeError, FloatingPointError):
    """A model's training loss became NaN/Inf."""


class CheckpointWarning(UserWarning):
    """A checkpoint failed verification and was set aside; training resumed from an older one."""

# Keys that may differ when a run is resumed (they do not change the trained models).
RESUMABLE_KEYS = ("train.steps", "train.topk_path", "train.epochs", "train.progress", "train.keep_checkpoints",
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
    """Load the configured store (or take ``data [N, M]``) and split off validation rows.

    A ``train.val_fraction`` that leaves no validation row (or no training row) of the
    rows found is a one-line :class:`~jsae.config.ConfigError` naming the value and the
    row count (:func:`jsae.rundir.validation_row_count`), raised before any training.
    """
    store = None
    if data is not None:
        x = validate_embeddings(data, what="training data")
        rows = np.arange(len(x))
        source = "array"
        where = "the data array"
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
        where = source
        dim = store.dim
    if len(rows) == 0:
        raise StoreError(f"no training rows in {source} (after data.splits / data.max_rows); nothing to train on.")
    perm = np.random.default_rng([cfg.train.seed, 7]).permutation(len(rows))
    n_val = validation_row_count(cfg.train.val_fraction, len(rows), where)
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


FINGERPRINT_VERSION = 1


def data_fingerprint(td: TrainingData, block_rows: int = 65536) -> dict[str, Any]:
    """What the run was trained on: ``{"n_train", "n_val", "dim", "blake2b"}``.

    ``blake2b`` (128-bit) is over the float32 little-endian bytes of the training
    rows, then the validation rows, in the order training uses them (after
    ``data.splits``/``data.max_rows`` and the validation split), preceded by the row
    counts and dimension. Streaming (``data.stream``) reads the training rows from
    the store ``block_rows`` at a time, so nothing is loaded at once; both modes
    give the same fingerprint for the same rows.
    """
    dim = int(td.fit.shape[1])
    h = hashlib.blake2b(digest_size=16)
    h.update(f"jsae-data-fingerprint-{FINGERPRINT_VERSION} {td.n_train} {len(td.val)} {dim}\n".encode())

    def feed(block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype="<f4")
        if block.size:
            h.update(block.reshape(-1).view(np.uint8))

    for start in range(0, td.n_train, block_rows):
        stop = min(start + block_rows, td.n_train)
        feed(td.train[start:stop] if td.train is not None else td.store.read(td.train_rows[start:stop]))
    feed(td.val)
    return {"n_train": int(td.n_train), "n_val": int(len(td.val)), "dim": dim, "blake2b": h.hexdigest()}


def _fingerprint_text(fp: dict[str, Any]) -> str:
    return f"{fp.get('n_train')}+{fp.get('n_val')} rows × {fp.get('dim')}, blake2b {str(fp.get('blake2b'))[:16]}"


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


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a [S, ...]`` padded with zeros to ``rows`` along the first axis (slots that do not run)."""
    return a if len(a) == rows else np.concatenate([a, np.zeros((rows - len(a),) + a.shape[1:], a.dtype)])


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


class NormalizerChangedError(JsaeError):
    """The normaliser saved with a run differs from a re-fit on the data it resumes with."""


#: largest relative difference between the saved normaliser and a re-fit on the same data
#: (float summation order may differ between library versions; different data differs far more)
NORMALIZER_RTOL = 1e-5


def restored_normalizer(saved: dict[str, Any], refit: Normalizer, run_dir: Path) -> Normalizer:
    """The run's saved normaliser, checked against ``refit`` (fitted on the data given now).

    The models were trained in the saved normaliser's space, so resuming uses it; a re-fit
    that differs (another kind, or statistics off by more than :data:`NORMALIZER_RTOL`
    relative) means the data or the normalisation changed: :class:`NormalizerChangedError`.
    """
    norm = Normalizer.from_dict(saved)
    if norm.kind != refit.kind:
        raise NormalizerChangedError(f"{run_dir} was normalised with {norm.kind!r}, the config now says "
                                     f"{refit.kind!r}; resume it with its own sae.normalize, or use a new --out.")
    for what, a, b in (("mean", norm.mean, refit.mean), ("scale", norm.scale, refit.scale)):
        ref = max(float(np.max(np.abs(a))), 1e-12)
        diff = float(np.max(np.abs(a - b))) / ref
        if diff > NORMALIZER_RTOL:
            raise NormalizerChangedError(
                f"{run_dir}: the saved normaliser's {what} differs from a re-fit on the data given now by "
                f"{diff:.2g} (relative, > {NORMALIZER_RTOL:g}); resume with the data the run was trained on, or "
                "train into a new --out directory.")
    return norm


def _check_resumable(run_dir: Path, cfg: SweepConfig) -> None:
    """Refuse a config that differs from the run's in anything but :data:`RESUMABLE_KEYS`.

    Only a run with a checkpoint binds its config: a run directory without one (a
    sweep that failed or was killed before its first checkpoint) starts afresh. A saved
    ``config.yaml`` that is not valid YAML or not a valid config is a one-line ConfigError.
    """
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists() or not checkpoint_steps(run_dir):
        return
    try:
        saved = config_to_dict(load_config(saved_path))  # safe YAML; a syntax error is a ConfigError
    except ConfigError as err:
        raise ConfigError(
            f"{run_dir} cannot be resumed: its saved config.yaml is damaged ({one_line(err)}); restore "
            f"{saved_path} from a copy of the run, or train this sweep into a new --out directory."
        ) from None
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


def _locked(run_dir: Path, holder: str) -> RunLockedError:
    return RunLockedError(f"another sweep (pid {holder}) is writing to {run_dir}; wait for it to finish (then this "
                          "command resumes or completes the run), or give a different --out.")


@contextlib.contextmanager
def run_lock(run_dir: str | Path):
    """Hold ``RUN_DIR/.lock`` (``fcntl.flock``, exclusive) for the ``with`` block.

    A second holder is refused at once with :class:`RunLockedError` naming the pid
    written in the file. The kernel releases the lock when the process dies, so a
    killed sweep never leaves a stale lock behind.
    """
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise _locked(Path(run_dir), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", f"os_error_code='{errno.ENOSPC}'",
                   f"os_error_code='{errno.EDQUOT}'")


def _is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` (or an exception it was raised from) is ENOSPC/EDQUOT.

    orbax/tensorstore report them as ``ValueError('RESOURCE_EXHAUSTED: … No space
    left on device [os_error_code='28']')`` rather than as an ``OSError``.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_FULL_ERRNOS:
            return True
        if any(t in str(err) for t in _DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _cleanup_failed_start(run_dir: Path, created: bool) -> None:
    """After a failure before the first checkpoint: remove what this call wrote, so that
    the run directory accepts a corrected command (with any config) as a new run."""
    if checkpoint_steps(run_dir):
        return
    for name in ("config.yaml", "sweep.json"):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink()
    ck = run_dir / CHECKPOINT_DIR
    if ck.is_dir() and not any(p.name.isdigit() for p in ck.iterdir()):
        shutil.rmtree(ck, ignore_errors=True)  # empty, or leftovers of an interrupted first save
    if {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:  # leave the folder as it was: absent or empty
        with contextlib.suppress(OSError):
            (run_dir / LOCK_NAME).unlink()
            if created:
                run_dir.rmdir()


def train_sweep(cfg: SweepConfig, run_dir: str | Path, *, data: np.ndarray | None = None,
                stop_after: int | None = None) -> list[dict[str, Any]]:
    """Train (or resume) every model of ``cfg.grid`` in one compiled program.

    Args:
      cfg: the sweep config. run_dir: output directory (created; resumed if it
        holds checkpoints of the same config and data). data: optional raw
        ``[N, M]`` embeddings used instead of ``cfg.data.store``.
      stop_after: stop (after checkpointing) once this step is reached — for
        tests and time-boxed jobs; a later call continues.
    Returns:
      the per-model metric records (also written to ``RUN_DIR/metrics.json``).
    Raises (one-line :class:`~jsae.errors.JsaeError` messages):
      :class:`~jsae.rundir.RunDirError`: ``run_dir`` is neither absent, empty nor a jsae
        run (:func:`jsae.rundir.check_run_dir`); nothing is written or deleted there.
      :class:`RunLockedError`: another process is writing to ``run_dir``.
      ``ConfigError``: the run's checkpoints are of another config, its saved
        ``config.yaml`` is damaged, or ``train.val_fraction`` leaves no validation row.
      :class:`DataChangedError`: the training data's fingerprint is not the run's.
      :class:`~jsae.checkpoint.CheckpointError`: no checkpoint of the run verifies.
      :class:`DiskFullError`: ENOSPC/EDQUOT while writing; names the last good checkpoint.
      :class:`TrainingDivergedError`: a loss became NaN/Inf.
    A newest checkpoint that fails its checksums is moved to ``checkpoints.corrupt/``
    with a :class:`CheckpointWarning`, and training resumes from the newest one that
    verifies (ending where an uninterrupted run ends). A run that fails before its
    first checkpoint leaves no ``config.yaml``/``sweep.json``: re-running — with a
    corrected config too — starts it afresh.
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)  # before anything is created there
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        # Again under the lock, and outside the try below: _cleanup_failed_start deletes
        # config.yaml, sweep.json and checkpoints/, which is only safe in a run folder of ours.
        check_run_dir(run_dir)
        doing = ["preparing the run"]  # what was being written, for a disk-full message
        try:
            return _train_locked(cfg, run_dir, data, stop_after, doing)
        except BaseException as err:
            if isinstance(err, Exception) and not isinstance(err, JsaeError) and _is_disk_full(err):
                _remove_partial_saves(run_dir, tries=10)
                _cleanup_failed_start(run_dir, created)
                raise _disk_full_error(run_dir, doing[0], err) from err
            _cleanup_failed_start(run_dir, created)
            raise


def _check_run_dir(run_dir: Path) -> None:
    """:func:`jsae.rundir.check_run_dir`; a folder refused while another sweep holds its
    lock (mid-write, so not yet recognisable as a run) is reported as :class:`RunLockedError`."""
    try:
        check_run_dir(run_dir)
    except RunDirError:
        holder = _lock_holder(run_dir)
        if holder is not None:
            raise _locked(run_dir, holder) from None
        raise


def _lock_holder(run_dir: Path) -> str | None:
    """The pid in ``RUN_DIR/.lock`` if another process holds that lock, else None; the
    file is only read (never created or written: the folder may be the user's)."""
    path = run_dir / LOCK_NAME
    if path.is_symlink() or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        return None
    finally:
        os.close(fd)  # releases a shared lock taken above


def _remove_partial_saves(run_dir: Path, tries: int = 1) -> None:
    """Delete orbax's temporary folders of interrupted saves (killed, disk full): they are
    never checkpoints, and they hold the space a failed save took. Only called with the
    run's lock held. ``tries``: after a failed save, orbax's writer threads may still be
    finishing for a moment; look again a few times."""
    for attempt in range(tries):
        leftovers = list((run_dir / CHECKPOINT_DIR).glob("*.orbax-checkpoint-tmp*"))
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
        if not leftovers and attempt:
            return
        if attempt + 1 < tries:
            time.sleep(0.2)


def _disk_full_error(run_dir: Path, doing: str, err: BaseException) -> DiskFullError:
    quota = "quota" in str(err).lower() or any(
        isinstance(e, OSError) and e.errno == errno.EDQUOT for e in (err, err.__cause__, err.__context__))
    what = "disk quota exceeded" if quota else "no space left on device"
    steps = checkpoint_steps(run_dir)
    if steps:
        left = (f"the last good checkpoint is step {steps[-1]}; free space (or copy {run_dir} to a larger disk) "
                "and re-run the same command to resume from it")
    else:
        left = "no checkpoint was saved yet; free space and re-run the same command to start the run"
    return DiskFullError(f"{what} while {doing} in {run_dir}; {left}.")


def _diverged(run_dir: Path, model: str, step: int) -> TrainingDivergedError:
    saved = checkpoint_steps(run_dir)
    if saved:
        fix = (f"lower optim.lr; {run_dir} keeps this config's checkpoints up to step {saved[-1]}, so train the "
               f"corrected config into a new --out (or delete {run_dir})")
    else:
        fix = f"lower optim.lr and re-run: nothing was saved, so {run_dir} starts afresh with the corrected config"
    return TrainingDivergedError(f"model {model}: loss is not finite at step {step}; {fix}.")


def _resume(run_dir: Path, trainer: GridTrainer, manager) -> tuple[GridState, dict[str, Any], int]:
    """The newest checkpoint that verifies; newer ones that fail are set aside with a warning."""
    state, meta, step, bad = restore_newest_good(run_dir, trainer.abstract_state(), manager)
    for bad_step, err in bad:
        dest = set_aside(run_dir, bad_step)
        warnings.warn(f"{err} Moved it to {dest}; resuming from step {step}, the newest checkpoint that verifies.",
                      CheckpointWarning, stacklevel=4)
    if bad:
        manager.reload()
    return state, meta, step


def _train_locked(cfg: SweepConfig, run_dir: Path, data: np.ndarray | None, stop_after: int | None,
                  doing: list[str]) -> list[dict[str, Any]]:
    _check_resumable(run_dir, cfg)
    td = prepare_data(cfg, data)
    fingerprint = data_fingerprint(td)
    dim = td.fit.shape[1]
    normalizer = fit_normalizer(td.fit, cfg.sae.normalize)
    x_fit = normalizer.apply(td.fit).astype(np.float32)
    groups = make_groups(cfg.grid)
    mesh = make_mesh(cfg.train.shard_models)
    trainer = GridTrainer(groups, dim, cfg.sae, cfg.optim, mesh=mesh, matmul_dtype=cfg.train.matmul_dtype,
                          topk_path=cfg.train.topk_path)
    total = num_steps(cfg, td.n_train)

    doing[0] = "writing config.yaml"
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    _remove_partial_saves(run_dir)  # orbax would not reuse them; they are not checkpoints
    manager = open_manager(run_dir, keep=cfg.train.keep_checkpoints)
    try:
        return _train_open(cfg, run_dir, td, fingerprint, normalizer, x_fit, trainer, total, manager,
                           stop_after, doing)
    finally:
        with contextlib.suppress(Exception):
            manager.close()


def _train_open(cfg, run_dir, td, fingerprint, normalizer, x_fit, trainer, total, manager, stop_after, doing):
    dim = td.fit.shape[1]
    history: dict[str, list] = {"step": [], "loss": [], "nmse": [], "dead_fraction": []}
    if manager.all_steps():
        doing[0] = "restoring the newest checkpoint"
        state, meta, step = _resume(run_dir, trainer, manager)
        saved_fp = (meta.get("data") or {}).get("fingerprint")
        if saved_fp is not None and saved_fp != fingerprint:
            raise DataChangedError(
                f"{run_dir} was trained on other data ({_fingerprint_text(saved_fp)}) than {td.source} gives now "
                f"({_fingerprint_text(fingerprint)}); resume it with the data it was trained on, or train on this "
                "data into a new --out directory."
            )
        if "normalizer" in meta:  # the space the models were trained in; checked against the re-fit
            normalizer = restored_normalizer(meta["normalizer"], normalizer, run_dir)
            x_fit = normalizer.apply(td.fit).astype(np.float32)
        history = meta["history"]
    else:
        rng = np.random.default_rng([cfg.train.seed, 3])
        sample = x_fit[rng.permutation(len(x_fit))[: cfg.sae.b_pre_init_samples]]
        b_pre = {"geometric_median": geometric_median, "mean": lambda s: s.mean(axis=0),
                 "zeros": lambda s: np.zeros(dim)}[cfg.sae.b_pre_init](sample.astype(np.float64))
        state = trainer.init(jax.random.key(cfg.train.seed), np.asarray(b_pre, np.float32))
        step = 0

    def meta_now(step: int) -> dict[str, Any]:
        return {"step": step, "total_steps": total, "version": __version__, "config": config_to_dict(cfg),
                "dim": dim, "models": [m.to_dict() for m in trainer.specs], "normalizer": normalizer.to_dict(),
                "history": history, "data": {"source": td.source, "n_train": td.n_train, "n_val": len(td.val),
                                             "fingerprint": fingerprint}}

    def write_info(step: int, records: list[dict[str, Any]] | None = None) -> None:
        doing[0] = "writing sweep.json"
        atomic_write_json(run_dir / "sweep.json", meta_now(step) | {
            "metrics": records or [], "complete": records is not None and step >= total, "total_steps": total})

    def write_models(step: int, state: GridState) -> None:
        doing[0] = f"writing the model files of step {step}"
        params = jax.device_get(tuple(gs.params for gs in trainer.unpad(state).groups))  # no optimiser state
        models = [(spec.to_dict(), {k: np.asarray(getattr(p, k))[i] for k in PARAM_NAMES})
                  for g, p in zip(trainer.groups, params) for i, spec in enumerate(g.models)]
        write_model_files(run_dir, models, normalizer=normalizer, step=step, total_steps=total,
                          complete=step >= total, run={"config": config_to_dict(cfg), "data": td.source,
                                                       "version": __version__})

    def checkpoint(step: int, state: GridState) -> None:
        doing[0] = f"saving checkpoint step {step}"
        save_checkpoint(manager, step, trainer.unpad(state), meta_now(step))
        write_models(step, state)  # what analyses read: parameters + normaliser, no optimiser
        write_info(step)  # the step and completeness a reader of the run sees
        doing[0] = "training"

    write_info(step)
    state = trainer.pad(state)
    # In memory: the normalised training rows live on the device and each step gathers
    # its batch there. Streaming: each host call's batches are read from the store.
    x_dev = None if td.train is None else jnp.asarray(x_fit if td.fit is td.train else normalizer.apply(td.train))
    run = trainer.jit_run_steps()
    stop = total if stop_after is None else min(total, stop_after)
    bar = tqdm(total=total, initial=step, unit="step", desc=f"sweep {len(trainer.specs)} models",
               disable=not cfg.train.progress, dynamic_ncols=True)
    every = cfg.train.checkpoint_every
    doing[0] = "training"
    while step < stop:
        count = min(cfg.train.steps_per_call, stop - step, every - step % every)
        # Always steps_per_call slots, the first `count` of which run: one compiled program.
        idx = _pad_rows(batch_indices(cfg.train.seed, step, count, td.n_train, cfg.train.batch_size),
                        cfg.train.steps_per_call)
        t0 = time.perf_counter()
        if x_dev is not None:
            state, metrics = run(state, x_dev, jnp.asarray(idx), count=count)
        else:
            batches = normalizer.apply(td.read_batches(idx[:count])).astype(np.float32)
            state, metrics = run(state, jnp.asarray(_pad_rows(batches, cfg.train.steps_per_call)), count=count)
        metrics = jax.tree.map(lambda a: a[:count], jax.device_get(metrics))
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
            raise _diverged(run_dir, bad, step)
        if step % every == 0 or step == stop:
            checkpoint(step, state)
    bar.close()

    if model_files_step(run_dir) != step:  # a run resumed at its end, or one from before model files
        write_models(step, state)
    doing[0] = "evaluating"
    records = evaluate(trainer, state, td.val, normalizer)
    write_info(step, records)
    doing[0] = "writing metrics.json"
    atomic_write_json(run_dir / "metrics.json", records)
    if step >= total:
        doing[0] = "writing the plots"
        plot_sweep(run_dir, records, history, [m.name for m in trainer.specs])
    return records
