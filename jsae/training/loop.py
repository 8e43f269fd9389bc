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

Before anything is read or compiled, the grid's memory is estimated and compared with what
the machine has (:mod:`jsae.training.memory`): the estimate is one line at the start of
every sweep (``say``), and a grid that cannot fit is refused in one line. In memory
(``data.stream=false``) the training rows are read from the store in blocks — for the
fingerprint, the normaliser, and then normalised straight into the device copy — so the
process never holds a host copy of them: the rows cost one device copy (on a CPU, the
host's RAM) and one block. Rows that are
all identical are refused before training (nothing to learn; the fraction of variance
explained would be 0 / 0), and a loss or a validation metric that is not finite stops the
sweep naming the model, the metric and the step: every JSON file it writes is strict.

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

import contextlib
import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ..cluster import any_process, barrier, is_primary, processes_on_this_host, to_global, to_host
from ..config import SweepConfig, config_to_yaml
from ..console import SignalStop
from ..core.normalize import Normalizer, fit_normalizer, geometric_median
from ..errors import Interrupted, JsaeError
from ..jsonio import atomic_write_bytes, atomic_write_text, json_bytes
from ..plots import plot_sweep
from ..runs.check import RunDirError, check_run_dir
from ..runs.checkpoint import checkpoint_steps, open_manager, restore_newest_good, set_aside
from ..runs.layout import CONFIG_FILE, METRICS_FILE
from ..runs.lock import lock_holder, locked_error, run_lock
from ..runs.modelfiles import RUN_ID_KEY, check_model_files, model_files_step
from .data import (BLOCK_ROWS, StoreRows, TrainingData, batch_indices, check_rows_vary, data_fingerprint,
                   open_training_store, planned_shape, prepare_data)
from .evaluate import evaluate, first_non_finite
from .failures import (DiskFullError, cleanup_failed_start, disk_full_error, diverged, is_disk_full,
                       not_writable_error, remove_partial_saves, writing)
from .grid import GridState, GridTrainer, make_groups, make_mesh
from .hooks import CallResult, Hook, RunRecorder, progress_bar, record_history, show_progress, stop_if_diverged
from .logs import TrainingLogs, check_log_backends
from .memory import available_memory, check_memory, estimate_memory, memory_line
from .resume import check_resumable, check_same_data, restored_normalizer

__all__ = ["Trainer", "train_sweep", "CheckpointWarning"]


class CheckpointWarning(UserWarning):
    """A checkpoint failed verification and was set aside; training resumed from an older one."""


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a [S, ...]`` padded with zeros to ``rows`` along the first axis (slots that do not run)."""
    return a if len(a) == rows else np.concatenate([a, np.zeros((rows - len(a),) + a.shape[1:], a.dtype)])


def rows_on_device(x: np.ndarray | StoreRows, normalizer: Normalizer, block_rows: int = BLOCK_ROWS,
                   sharding: jax.sharding.Sharding | None = None) -> jax.Array:
    """``normalizer.apply(x)`` as one float32 device array ``[N, M]``, filled ``block_rows`` rows at a time.

    ``x``: a host array or a :class:`~jsae.training.data.StoreRows` view (each block is then
    read from the store). Each block is normalised on the host (the same float32 arithmetic as
    ``normalizer.apply``) and written into the device buffer in place (a jitted
    ``dynamic_update_slice`` whose buffer is donated), so the peak is the device copy and one
    block (plus ``x`` when it is a host array) — never a normalised host copy of every row. The last block is the last ``block_rows``
    rows (overlapping the one before it with the same values), so one program serves all blocks.

    ``sharding``: a replicated sharding over a mesh (:attr:`GridTrainer.replicated`): each of
    this process's devices gets a copy (each block read once), and the result is one array over
    the mesh of every process. ``None``: one uncommitted array on the default device.
    """
    n, m = x.shape
    block = max(1, min(block_rows, n))
    devices = [None] if sharding is None else sorted(sharding.addressable_devices, key=lambda d: d.id)
    outs = [jnp.zeros((n, m), jnp.float32, device=d) for d in devices]
    put = jax.jit(lambda buf, b, start: jax.lax.dynamic_update_slice(buf, b, (start, 0)), donate_argnums=0)
    for start in range(0, n, block):
        start = min(start, n - block)
        b = normalizer.apply(x[start:start + block]).astype(np.float32, copy=False)
        outs = [put(out, jnp.asarray(b) if d is None else jax.device_put(b, d), np.int32(start))
                for out, d in zip(outs, devices)]
    if sharding is None:
        return outs[0]
    return jax.make_array_from_single_device_arrays((n, m), sharding, outs)


class Trainer:
    """The training loop of a grid: host calls of ``steps_per_call`` steps, hooks after them.

    Args:
      grid: the :class:`~jsae.training.grid.GridTrainer` (its jitted ``run_steps`` is the step).
      td: the training rows; ``normalizer`` maps them to the models' space. In memory, the
        normalised rows live on the device and each step gathers its batch there; streamed
        (``td.train is None``), each host call's batches are read from the store.
      seed, batch_size, steps_per_call: as in :class:`~jsae.config.TrainConfig`.
      rows: the normalised training rows already on the device (:func:`rows_on_device`); else
        they are put there from ``td.train`` (a host array or a store view).
    """

    def __init__(self, grid: GridTrainer, td: TrainingData, normalizer: Normalizer, *, seed: int, batch_size: int,
                 steps_per_call: int, rows: jax.Array | None = None):
        self.grid, self.td, self.normalizer, self.rows = grid, td, normalizer, rows
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
        td, spc, grid = self.td, self.steps_per_call, self.grid
        x_dev = self.rows
        if x_dev is None and td.train is not None:
            x_dev = rows_on_device(td.train, self.normalizer, sharding=grid.replicated)
        run = grid.jit_run_steps()
        step = self.step = start
        call, ran = None, [start] * len(self._hooks)  # the step after which each hook last ran
        # with several processes, all stop at the same step: any one asked to stop asks them all
        while step < stop and not any_process(stop_requested is not None and stop_requested()):
            count = self._call_length(step, stop)
            # Always steps_per_call slots, the first `count` of which run: one compiled program.
            idx = _pad_rows(batch_indices(self.seed, step, count, td.n_train, self.batch_size), spc)
            t0 = time.perf_counter()
            if x_dev is not None:
                state, metrics = run(state, x_dev, to_global(idx, grid.replicated), count=count)
            else:
                batches = self.normalizer.apply(td.read_batches(idx[:count])).astype(np.float32)
                state, metrics = run(state, to_global(_pad_rows(batches, spc), grid.replicated), count=count)
            metrics = jax.tree.map(lambda a: a[:count], to_host(metrics))
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
                stop_after: int | None = None, say: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train (or resume) every model of ``cfg.grid`` in one compiled program.

    Args:
      cfg: the sweep config. run_dir: output directory (created; resumed if it
        holds checkpoints of the same config and data). data: optional raw
        ``[N, M]`` embeddings used instead of ``cfg.data.store``.
      stop_after: stop (after checkpointing) once this step is reached — for
        tests and time-boxed jobs; a later call continues.
      say: where the sweep's one-line notes go (the memory estimate when it starts), e.g.
        ``print``; None: nowhere.
    Returns:
      the per-model metric records (also written to ``RUN_DIR/metrics.json``).
    Raises (one-line :class:`~jsae.errors.JsaeError` messages):
      :class:`~jsae.runs.check.RunDirError`: ``run_dir`` is neither absent, empty nor a jsae
        run; nothing is written or deleted there.
      :class:`~jsae.runs.lock.RunLockedError`: another process is writing to ``run_dir``.
      :class:`~jsae.training.memory.NotEnoughMemoryError`: the grid (and the rows held in memory)
        would not fit in the memory available; raised before anything is read or compiled.
      :class:`~jsae.store.StoreError`: the training rows are all identical (variance 0).
      :class:`~jsae.errors.StorageError`: ``run_dir`` is on a read-only file system or not writable.
      ``ConfigError``: the run's checkpoints are of another config, its saved
        ``config.yaml`` is damaged, or ``train.val_fraction`` leaves no validation row.
      :class:`~jsae.training.resume.DataChangedError`: the training data's fingerprint is not the run's.
      :class:`~jsae.runs.checkpoint.CheckpointError`: no checkpoint of the run verifies.
      :class:`~jsae.training.failures.DiskFullError`: ENOSPC/EDQUOT while writing.
      :class:`~jsae.training.failures.TrainingDivergedError`: a loss, another training metric or a
        validation metric became NaN/Inf (named with its model and step).
      :class:`~jsae.errors.Interrupted`: SIGINT / SIGTERM (in the main thread) stopped the
        sweep after the current host call, with a checkpoint and model files at the step
        reached; its ``exit_status`` is 130 / 143. A second signal raises
        :class:`~jsae.errors.StoppedAtOnce` (a ``KeyboardInterrupt``) at once.
    A newest checkpoint that fails its checksums is moved to ``checkpoints.corrupt/``
    with a :class:`CheckpointWarning`, and training resumes from the newest one that
    verifies (ending where an uninterrupted run ends).
    """
    run_dir = Path(run_dir)
    primary = is_primary()  # with several processes (jsae.cluster), process 0 checks, locks and cleans up
    if primary:
        _check_run_dir(run_dir)  # before anything is created there
    created = not run_dir.exists()
    if primary:
        _make_run_dir(run_dir)
    with SignalStop() as signals, (_locked(run_dir) if primary else contextlib.nullcontext()):
        # Again under the lock, and outside the try below: cleanup_failed_start deletes
        # config.yaml, sweep.json and checkpoints/, which is only safe in a run folder of ours.
        if primary:
            check_run_dir(run_dir)
        barrier("jsae-sweep-run-dir")  # the others read the run only once process 0 holds it
        try:
            return _train_locked(cfg, run_dir, data, stop_after, signals, say if primary else None)
        except BaseException as err:
            if not primary:
                raise
            unmarked = isinstance(err, Exception) and not isinstance(err, JsaeError) and is_disk_full(err)
            if isinstance(err, DiskFullError) or unmarked:
                remove_partial_saves(run_dir, tries=10)
                cleanup_failed_start(run_dir, created)
                if unmarked:  # outside every `writing` block
                    raise disk_full_error(run_dir, "training", err) from err
                raise
            cleanup_failed_start(run_dir, created)
            raise


def _make_run_dir(run_dir: Path) -> None:
    """Create ``run_dir``; a folder that cannot be made (read-only, forbidden, under a file, in
    /proc) is one :class:`~jsae.runs.check.RunDirError` line naming it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        converted = not_writable_error(run_dir, "creating the run directory", err)
        if converted is not None:
            raise converted from None
        reason = err.strerror or type(err).__name__
        raise RunDirError(f"--out {run_dir} cannot be created ({reason}: {err.filename or run_dir}); choose a new "
                          "folder on a writable file system, e.g. --out runs/NAME.") from None


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """:func:`jsae.runs.lock.run_lock`; a lock file that cannot be written is one StorageError line."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_lock(run_dir))
        except JsaeError:
            raise
        except OSError as err:
            converted = not_writable_error(run_dir, "taking the run's lock", err)
            if converted is None:
                raise
            raise converted from None
        yield


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
        if not is_primary():  # process 0 moves it; every process found the same
            continue
        dest = set_aside(run_dir, bad_step)
        warnings.warn(f"{getattr(err, 'problem', err)} Moved it to {dest}; resuming from step {step}, the newest "
                      "checkpoint that verifies.",
                      CheckpointWarning, stacklevel=5)
    if bad:
        barrier("jsae-sweep-set-aside")
        manager.reload()
    return state, meta, step


def _init_state(cfg: SweepConfig, grid: GridTrainer, x_fit: np.ndarray, normalizer: Normalizer) -> GridState:
    """A fresh grid: ``b_pre`` from a sample of the fit rows ``x_fit`` (raw), normalised, per
    ``sae.b_pre_init`` (only the sample is normalised, not every row)."""
    rng = np.random.default_rng([cfg.train.seed, 3])
    sample = x_fit[rng.permutation(len(x_fit))[: cfg.sae.b_pre_init_samples]]
    sample = normalizer.apply(sample).astype(np.float32)
    b_pre = {"geometric_median": geometric_median, "mean": lambda s: s.mean(axis=0),
             "zeros": lambda s: np.zeros(grid.dim)}[cfg.sae.b_pre_init](sample.astype(np.float64))
    return grid.init(jax.random.key(cfg.train.seed), np.asarray(b_pre, np.float32))


def _model_files_current(run_dir: Path, step: int, total: int) -> bool:
    """Whether ``RUN/models`` holds this step's models for ``total`` steps, every one verifying (a
    damaged ``cfg.json`` or weights file is rewritten by running the same sweep command again)."""
    if model_files_step(run_dir, with_total=True) != (step, total):
        return False
    try:
        check_model_files(run_dir)
    except JsaeError:
        return False
    return True


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


def _check_memory(cfg: SweepConfig, shape: tuple[int, int, int], say: Callable[[str], None] | None,
                  from_array: bool, mesh: jax.sharding.Mesh | None) -> None:
    """Estimate the sweep's memory on ``mesh`` (the grid's; ``None``: one device), say it in one
    line, and refuse a sweep that cannot fit."""
    devices = jax.devices()
    sharded = mesh is not None
    est = estimate_memory(cfg, *shape, devices=len(devices), platform=devices[0].platform, from_array=from_array,
                          sharded=sharded, local_devices=len(jax.local_devices()) if sharded else 1,
                          processes_on_host=processes_on_this_host())  # they share this machine's RAM
    avail = available_memory(jax.local_devices())  # with several processes: this process's devices
    if say is not None:
        say(memory_line(est, avail))
    check_memory(cfg, est, avail, len(devices))


def _train_locked(cfg: SweepConfig, run_dir: Path, data: np.ndarray | None,
                  stop_after: int | None, signals: SignalStop | None = None,
                  say: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    check_resumable(run_dir, cfg)
    check_log_backends(cfg.train.log)  # a missing package: one line before anything is read
    store = open_training_store(cfg, data)
    mesh = make_mesh(cfg.train.shard_models)
    _check_memory(cfg, planned_shape(cfg, data, store), say, from_array=data is not None, mesh=mesh)  # before a row is read or a program compiled
    td = prepare_data(cfg, data, store=store)
    fingerprint = data_fingerprint(td)
    check_rows_vary(td)
    normalizer = fit_normalizer(td.fit, cfg.sae.normalize)  # float64 statistics, in blocks
    primary = is_primary()
    grid = GridTrainer(make_groups(cfg.grid), td.fit.shape[1], cfg.sae, cfg.optim,
                       mesh=mesh, matmul_dtype=cfg.train.matmul_dtype,
                       topk_path=cfg.train.topk_path)
    total = cfg.train.num_steps(td.n_train)
    if primary:
        with writing(run_dir, f"writing {CONFIG_FILE}"):
            atomic_write_text(run_dir / CONFIG_FILE, config_to_yaml(cfg))
        remove_partial_saves(run_dir)  # orbax would not reuse them; they are not checkpoints
    barrier("jsae-sweep-config")
    manager = open_manager(run_dir, keep=cfg.train.keep_checkpoints)
    try:
        history: dict[str, list] = {"step": [], "loss": [], "nmse": [], "dead_fraction": []}
        run_id = None
        if manager.all_steps():
            with writing(run_dir, "restoring the newest checkpoint"):
                state, meta, step = _resume(run_dir, grid, manager)
            check_same_data(run_dir, (meta.get("data") or {}).get("fingerprint"), fingerprint, td.source)
            if "normalizer" in meta:  # the space the models were trained in; checked against the re-fit
                normalizer = restored_normalizer(meta["normalizer"], normalizer, run_dir)
            history = meta["history"]
            run_id = meta.get(RUN_ID_KEY)  # also when sweep.json was damaged: the checkpoint keeps it
        else:
            state, step = _init_state(cfg, grid, td.fit, normalizer), 0
        rows = None
        if td.train is not None:  # in memory: the normalised device copy only (an array's host copy goes)
            rows = rows_on_device(td.train, normalizer, sharding=grid.replicated)
            td = dataclasses.replace(td, train=None, fit=np.empty((0, td.fit.shape[1]), np.float32))
        recorder = RunRecorder(run_dir, cfg, grid, normalizer, td, fingerprint, total, history, manager,
                               run_id=run_id if isinstance(run_id, str) and run_id else None)
        if primary:
            recorder.write_info(step)
        stop = total if stop_after is None else min(total, stop_after)
        trainer = Trainer(grid, td, normalizer, seed=cfg.train.seed, batch_size=cfg.train.batch_size,
                          steps_per_call=cfg.train.steps_per_call, rows=rows)
        bar = progress_bar(total, step, f"sweep {len(grid.specs)} models", cfg.train.progress and primary)
        logs = TrainingLogs(cfg, run_dir, grid, run_id=recorder.run_id, start=step)  # train.log: TensorBoard, W&B
        trainer.add_hook(record_history(history, grid))
        trainer.add_hook(logs.hook)
        trainer.add_hook(show_progress(bar, grid, cfg.train.batch_size))
        trainer.add_hook(stop_if_diverged(run_dir, grid))
        trainer.add_hook(recorder.checkpoint, every=cfg.train.checkpoint_every)
        try:
            state = trainer.train(grid.pad(state), step, stop,
                                  stop_requested=None if signals is None else (lambda: signals.requested))
        finally:
            bar.close()
            logs.close()
        if trainer.step < stop:  # SIGINT / SIGTERM: the step reached is saved (the hooks of a last call)
            raise _interrupted(run_dir, trainer.step, total, signals.exit_status)
        step = max(step, stop)
        barrier("jsae-sweep-trained")
        # resumed at its end (total changed: train.steps set to the step reached), from before model files, or
        # damaged ones; with several processes, all decide alike (each writes the models its devices hold)
        if any_process(not _model_files_current(run_dir, step, total)):
            recorder.write_models(step, state)
        records = evaluate(grid, state, td.val, normalizer)
        bad = first_non_finite(records)
        if bad is not None:  # never `Infinity` in metrics.json: the run keeps its checkpoints, not the numbers
            raise diverged(run_dir, bad[0], step, f"validation {bad[1]}", bad[2])
        if not primary:
            return records
        recorder.write_info(step, records)
        with writing(run_dir, f"writing {METRICS_FILE}"):
            atomic_write_bytes(run_dir / METRICS_FILE, json_bytes(records))
        if step >= total:
            with writing(run_dir, "writing the plots"):
                plot_sweep(run_dir, records, history, [m.name for m in grid.specs])
        return records
    finally:
        try:
            manager.close()
        except Exception:  # noqa: BLE001 - closing after a failure must not hide it
            pass
