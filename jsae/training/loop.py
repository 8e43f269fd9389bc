"""Train a whole sweep in one job: data → normalisation → grid → hooks → metrics.

:func:`train_sweep` is the one entry point (the ``jsae sweep`` CLI is a thin wrapper).
It resumes a run directory that holds checkpoints of the same config, and it ends with
the same parameters as an uninterrupted run: every batch is a function of
``(seed, step)`` only. The run directory's layout is :mod:`jsae.runs.layout`.

The loop itself is :class:`Trainer`: host calls of ``train.steps_per_call`` steps (one
compiled ``lax.scan``), after each of which its hooks run (:mod:`jsae.training.hooks`:
history, progress bar, divergence check, and the checkpoint + model-file writer every
``train.checkpoint_every`` steps). Another writer or logger is one more
``trainer.add_hook(fn, every=N)``.

Safeguards: one writer per run directory (:mod:`jsae.runs.lock`); resuming needs the same
config *and* the same training data (:mod:`jsae.training.resume`); a checkpoint that
fails its checksums is set aside and training resumes from the newest one that verifies;
a full disk stops the sweep with one :class:`~jsae.training.failures.DiskFullError` line
naming the last good checkpoint; a run that fails before its first checkpoint leaves no
config behind (the corrected command starts it afresh); SIGINT / SIGTERM (Ctrl-C, a
scheduler's preemption) end the current host call, save a checkpoint and the model files at
the step reached and stop with :class:`~jsae.errors.Interrupted` (exit status 130 / 143 from
the CLI); a second signal stops at once (:class:`~jsae.errors.StoppedAtOnce`).
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..config import SweepConfig, config_to_yaml
from ..console import SignalStop
from ..core.normalize import Normalizer, fit_normalizer, geometric_median
from ..errors import Interrupted, JsaeError
from ..jsonio import atomic_write_text
from ..plots import plot_sweep
from ..runs.check import RunDirError, check_run_dir
from ..runs.checkpoint import checkpoint_steps, open_manager, restore_newest_good, set_aside
from ..runs.layout import CONFIG_FILE, METRICS_FILE
from ..runs.lock import lock_holder, locked_error, run_lock
from ..runs.modelfiles import model_files_step
from .data import TrainingData, batch_indices, data_fingerprint, prepare_data
from .evaluate import evaluate
from .failures import DiskFullError, cleanup_failed_start, disk_full_error, is_disk_full, remove_partial_saves, writing
from .grid import GridState, GridTrainer, make_groups, make_mesh
from .hooks import CallResult, Hook, RunRecorder, record_history, show_progress, stop_if_diverged
from .resume import check_resumable, check_same_data, restored_normalizer

__all__ = ["Trainer", "train_sweep", "CheckpointWarning"]


class CheckpointWarning(UserWarning):
    """A checkpoint failed verification and was set aside; training resumed from an older one."""


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a [S, ...]`` padded with zeros to ``rows`` along the first axis (slots that do not run)."""
    return a if len(a) == rows else np.concatenate([a, np.zeros((rows - len(a),) + a.shape[1:], a.dtype)])


class Trainer:
    """The training loop of a grid: host calls of ``steps_per_call`` steps, hooks after them.

    Args:
      grid: the :class:`~jsae.training.grid.GridTrainer` (its jitted ``run_steps`` is the step).
      td: the training rows; ``normalizer`` maps them to the models' space. In memory, the
        normalised rows live on the device and each step gathers its batch there; streamed
        (``td.train is None``), each host call's batches are read from the store.
      seed, batch_size, steps_per_call: as in :class:`~jsae.config.TrainConfig`.
    """

    def __init__(self, grid: GridTrainer, td: TrainingData, normalizer: Normalizer, *, seed: int, batch_size: int,
                 steps_per_call: int):
        self.grid, self.td, self.normalizer = grid, td, normalizer
        self.seed, self.batch_size, self.steps_per_call = seed, batch_size, steps_per_call
        self._hooks: list[tuple[Hook, int]] = []
        self.step = 0  # the step reached by the last :meth:`train`

    def add_hook(self, fn: Callable[[CallResult], None], *, every: int = 1) -> None:
        """Run ``fn(call)`` after every host call ending on a multiple of ``every`` steps, and after
        the last one. Hooks run in the order added; host calls end on every hook's multiples."""
        if every <= 0:
            raise ValueError(f"every={every} must be > 0")
        self._hooks.append((fn, int(every)))

    def _call_length(self, step: int, stop: int) -> int:
        return min([self.steps_per_call, stop - step] + [every - step % every for _, every in self._hooks if every > 1])

    def train(self, state: GridState, start: int, stop: int, *,
              stop_requested: Callable[[], bool] | None = None) -> GridState:
        """Train the (padded) ``state`` from step ``start`` to ``stop``; returns the new state.

        ``stop_requested``: checked before each host call; once it says True the loop ends
        early, and the hooks that did not run after the last host call run then, as after
        the last call of a full run (so the checkpoint hook saves that step).
        :attr:`step` is the step reached.
        """
        td, spc = self.td, self.steps_per_call
        x_dev = None if td.train is None else jnp.asarray(
            self.normalizer.apply(td.fit).astype(np.float32) if td.fit is td.train else self.normalizer.apply(td.train))
        run = self.grid.jit_run_steps()
        step = self.step = start
        call, ran = None, [start] * len(self._hooks)  # the step after which each hook last ran
        while step < stop and not (stop_requested is not None and stop_requested()):
            count = self._call_length(step, stop)
            # Always steps_per_call slots, the first `count` of which run: one compiled program.
            idx = _pad_rows(batch_indices(self.seed, step, count, td.n_train, self.batch_size), spc)
            t0 = time.perf_counter()
            if x_dev is not None:
                state, metrics = run(state, x_dev, jnp.asarray(idx), count=count)
            else:
                batches = self.normalizer.apply(td.read_batches(idx[:count])).astype(np.float32)
                state, metrics = run(state, jnp.asarray(_pad_rows(batches, spc)), count=count)
            metrics = jax.tree.map(lambda a: a[:count], jax.device_get(metrics))
            step = self.step = step + count
            call = CallResult(step, count, state, metrics, time.perf_counter() - t0)
            for i, (fn, every) in enumerate(self._hooks):
                if step % every == 0 or step == stop:
                    fn(call)
                    ran[i] = step
        if call is not None and step < stop:  # stopped early: the hooks of a last call
            for i, (fn, _) in enumerate(self._hooks):
                if ran[i] != step:
                    fn(call)
        return state


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
      :class:`~jsae.runs.check.RunDirError`: ``run_dir`` is neither absent, empty nor a jsae
        run; nothing is written or deleted there.
      :class:`~jsae.runs.lock.RunLockedError`: another process is writing to ``run_dir``.
      ``ConfigError``: the run's checkpoints are of another config, its saved
        ``config.yaml`` is damaged, or ``train.val_fraction`` leaves no validation row.
      :class:`~jsae.training.resume.DataChangedError`: the training data's fingerprint is not the run's.
      :class:`~jsae.runs.checkpoint.CheckpointError`: no checkpoint of the run verifies.
      :class:`~jsae.training.failures.DiskFullError`: ENOSPC/EDQUOT while writing.
      :class:`~jsae.training.failures.TrainingDivergedError`: a loss became NaN/Inf.
      :class:`~jsae.errors.Interrupted`: SIGINT / SIGTERM (in the main thread) stopped the
        sweep after the current host call, with a checkpoint and model files at the step
        reached; its ``exit_status`` is 130 / 143. A second signal raises
        :class:`~jsae.errors.StoppedAtOnce` (a ``KeyboardInterrupt``) at once.
    A newest checkpoint that fails its checksums is moved to ``checkpoints.corrupt/``
    with a :class:`CheckpointWarning`, and training resumes from the newest one that
    verifies (ending where an uninterrupted run ends).
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)  # before anything is created there
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with SignalStop() as signals, run_lock(run_dir):
        # Again under the lock, and outside the try below: cleanup_failed_start deletes
        # config.yaml, sweep.json and checkpoints/, which is only safe in a run folder of ours.
        check_run_dir(run_dir)
        try:
            return _train_locked(cfg, run_dir, data, stop_after, signals)
        except BaseException as err:
            unmarked = isinstance(err, Exception) and not isinstance(err, JsaeError) and is_disk_full(err)
            if isinstance(err, DiskFullError) or unmarked:
                remove_partial_saves(run_dir, tries=10)
                cleanup_failed_start(run_dir, created)
                if unmarked:  # outside every `writing` block
                    raise disk_full_error(run_dir, "training", err) from err
                raise
            cleanup_failed_start(run_dir, created)
            raise


def _check_run_dir(run_dir: Path) -> None:
    """:func:`jsae.runs.check.check_run_dir`; a folder refused while another sweep holds its
    lock (mid-write, so not yet recognisable as a run) is reported as that lock."""
    try:
        check_run_dir(run_dir)
    except RunDirError:
        holder = lock_holder(run_dir)
        if holder is not None:
            raise locked_error(run_dir, holder) from None
        raise


def _resume(run_dir: Path, grid: GridTrainer, manager) -> tuple[GridState, dict[str, Any], int]:
    """The newest checkpoint that verifies; newer ones that fail are set aside with a warning."""
    state, meta, step, bad = restore_newest_good(run_dir, grid.abstract_state(), manager)
    for bad_step, err in bad:
        dest = set_aside(run_dir, bad_step)
        warnings.warn(f"{err} Moved it to {dest}; resuming from step {step}, the newest checkpoint that verifies.",
                      CheckpointWarning, stacklevel=5)
    if bad:
        manager.reload()
    return state, meta, step


def _init_state(cfg: SweepConfig, grid: GridTrainer, x_fit: np.ndarray) -> GridState:
    """A fresh grid: ``b_pre`` from a sample of the (normalised) fit rows, per ``sae.b_pre_init``."""
    rng = np.random.default_rng([cfg.train.seed, 3])
    sample = x_fit[rng.permutation(len(x_fit))[: cfg.sae.b_pre_init_samples]]
    b_pre = {"geometric_median": geometric_median, "mean": lambda s: s.mean(axis=0),
             "zeros": lambda s: np.zeros(grid.dim)}[cfg.sae.b_pre_init](sample.astype(np.float64))
    return grid.init(jax.random.key(cfg.train.seed), np.asarray(b_pre, np.float32))


def _interrupted(run_dir: Path, step: int, total: int, exit_status: int) -> Interrupted:
    """The one line of a sweep stopped by a signal at ``step``: the checkpoint kept, and how to go on."""
    saved = max(checkpoint_steps(run_dir), default=None)
    if saved == step:
        message = f"interrupted at step {step} of {total}; checkpoint {step} saved; run the same command to resume"
    elif saved is None:
        message = (f"interrupted at step {step} of {total}, before the first host call; nothing saved; run the same "
                   "command to start again")
    else:  # not reached: a stopped loop saves the step it reached
        message = (f"interrupted at step {step} of {total}; the newest checkpoint is step {saved}; run the same "
                   "command to resume from it")
    return Interrupted(message, exit_status)


def _train_locked(cfg: SweepConfig, run_dir: Path, data: np.ndarray | None,
                  stop_after: int | None, signals: SignalStop | None = None) -> list[dict[str, Any]]:
    check_resumable(run_dir, cfg)
    td = prepare_data(cfg, data)
    fingerprint = data_fingerprint(td)
    normalizer = fit_normalizer(td.fit, cfg.sae.normalize)
    grid = GridTrainer(make_groups(cfg.grid), td.fit.shape[1], cfg.sae, cfg.optim,
                       mesh=make_mesh(cfg.train.shard_models), matmul_dtype=cfg.train.matmul_dtype,
                       topk_path=cfg.train.topk_path)
    total = cfg.train.num_steps(td.n_train)
    with writing(run_dir, f"writing {CONFIG_FILE}"):
        atomic_write_text(run_dir / CONFIG_FILE, config_to_yaml(cfg))
    remove_partial_saves(run_dir)  # orbax would not reuse them; they are not checkpoints
    manager = open_manager(run_dir, keep=cfg.train.keep_checkpoints)
    try:
        history: dict[str, list] = {"step": [], "loss": [], "nmse": [], "dead_fraction": []}
        if manager.all_steps():
            with writing(run_dir, "restoring the newest checkpoint"):
                state, meta, step = _resume(run_dir, grid, manager)
            check_same_data(run_dir, (meta.get("data") or {}).get("fingerprint"), fingerprint, td.source)
            if "normalizer" in meta:  # the space the models were trained in; checked against the re-fit
                normalizer = restored_normalizer(meta["normalizer"], normalizer, run_dir)
            history = meta["history"]
        else:
            state, step = _init_state(cfg, grid, normalizer.apply(td.fit).astype(np.float32)), 0
        recorder = RunRecorder(run_dir, cfg, grid, normalizer, td, fingerprint, total, history, manager)
        recorder.write_info(step)
        stop = total if stop_after is None else min(total, stop_after)
        trainer = Trainer(grid, td, normalizer, seed=cfg.train.seed, batch_size=cfg.train.batch_size,
                          steps_per_call=cfg.train.steps_per_call)
        bar = tqdm(total=total, initial=step, unit="step", desc=f"sweep {len(grid.specs)} models",
                   disable=not cfg.train.progress, dynamic_ncols=True)
        trainer.add_hook(record_history(history, grid))
        trainer.add_hook(show_progress(bar, grid, cfg.train.batch_size))
        trainer.add_hook(stop_if_diverged(run_dir, grid))
        trainer.add_hook(recorder.checkpoint, every=cfg.train.checkpoint_every)
        try:
            state = trainer.train(grid.pad(state), step, stop,
                                  stop_requested=None if signals is None else (lambda: signals.requested))
        finally:
            bar.close()
        if trainer.step < stop:  # SIGINT / SIGTERM: the step reached is saved (the hooks of a last call)
            raise _interrupted(run_dir, trainer.step, total, signals.exit_status)
        step = max(step, stop)
        if model_files_step(run_dir, with_total=True) != (step, total):  # resumed at its end (total changed:
            recorder.write_models(step, state)  # train.steps set to the step reached), or from before model files
        records = evaluate(grid, state, td.val, normalizer)
        recorder.write_info(step, records)
        with writing(run_dir, f"writing {METRICS_FILE}"):
            atomic_write_text(run_dir / METRICS_FILE, json.dumps(records, indent=1))
        if step >= total:
            with writing(run_dir, "writing the plots"):
                plot_sweep(run_dir, records, history, [m.name for m in grid.specs])
        return records
    finally:
        try:
            manager.close()
        except Exception:  # noqa: BLE001 - closing after a failure must not hide it
            pass
