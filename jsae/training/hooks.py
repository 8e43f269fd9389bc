"""What a sweep does after a host call: the hooks of :class:`jsae.training.loop.Trainer`.

A hook is ``fn(call: CallResult) -> None``, added with ``trainer.add_hook(fn, every=N)``:
it runs after every host call that ends on a multiple of ``N`` steps, and after the last
call. The sweep's hooks, in the order :func:`jsae.training.loop.train_sweep` adds them:

* :func:`record_history` — mean loss / NMSE / dead fraction per model, for the loss curves;
* :meth:`jsae.training.logs.TrainingLogs.hook` — with ``train.log``: the call's scalars per
  model in TensorBoard event files and/or a W&B run (live curves);
* :func:`show_progress` — the progress bar (samples per second, best and worst loss): a
  tqdm bar on a terminal; without one (a log file, a pipe, a batch job) one plain line
  every :data:`PROGRESS_ENV` seconds (default 30) instead of a bar's redraws
  (:func:`progress_bar`);
* :func:`stop_if_diverged` — a loss or any other training metric that is not finite stops
  the sweep naming the model, the metric and the step;
* :meth:`RunRecorder.checkpoint` — every ``train.checkpoint_every`` steps: the orbax
  checkpoint, the model files (what analyses read) and ``sweep.json``.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from .. import __version__
from ..cluster import barrier, is_primary, text_from_primary
from ..config import SweepConfig, config_to_dict
from ..core.normalize import Normalizer
from ..errors import BadValueError
from ..jsonio import atomic_write_bytes, json_bytes, to_jsonable
from ..runs.checkpoint import checkpoint_steps, save_checkpoint
from ..runs.layout import SWEEP_FILE
from ..runs.modelfiles import PARAM_NAMES, RUN_ID_KEY, recorded_run_id, write_model_files, write_model_index
from .data import TrainingData
from .failures import diverged, writing
from .grid import GridState, GridTrainer

__all__ = ["CallResult", "Hook", "RunRecorder", "local_models", "record_history", "show_progress", "stop_if_diverged",
           "flat_metric", "progress_bar", "progress_seconds", "LineProgress", "PROGRESS_ENV", "PROGRESS_SECONDS",
           "STEP_METRICS"]

#: environment variable: seconds between the plain progress lines written when stderr is not a terminal
PROGRESS_ENV = "JSAE_PROGRESS_SECONDS"
#: its default
PROGRESS_SECONDS = 30.0
#: the per-step metrics of a host call, checked to be finite (the loss first)
STEP_METRICS = ("loss", "nmse", "auxk", "l0", "dead_fraction")


@dataclass(frozen=True)
class CallResult:
    """One host call of the loop, as hooks see it.

    ``step``: the step reached; ``count``: steps this call ran; ``state``: the (padded,
    device) grid state after it; ``metrics``: per group ``{name: [count, n_padded]}``;
    ``seconds``: the call's wall time.
    """

    step: int
    count: int
    state: GridState
    metrics: tuple[dict[str, np.ndarray], ...]
    seconds: float


Hook = Callable[[CallResult], None]


def flat_metric(metrics: tuple[dict[str, Any], ...], grid: GridTrainer, key: str) -> np.ndarray:
    """``[S, n_models]`` of a per-step metric, padding copies dropped, in spec order."""
    return np.concatenate([np.asarray(m[key])[:, : g.size] for g, m in zip(grid.groups, metrics)], axis=1)


def record_history(history: dict[str, list], grid: GridTrainer) -> Hook:
    """A hook appending the step and the call's mean ``loss``, ``nmse``, ``dead_fraction`` per model."""
    def hook(call: CallResult) -> None:
        history["step"].append(call.step)
        for key in ("loss", "nmse", "dead_fraction"):
            history[key].append(flat_metric(call.metrics, grid, key).mean(axis=0).tolist())
    return hook


class LineProgress:
    """A progress display for a log: one plain line ``DESC: step S/T (P%), key value, …`` on ``file``
    at most every ``every`` seconds (none for a sweep shorter than that), instead of the
    carriage-return redraws of a bar, which fill a log file with tens of kilobytes a minute.

    The subset of tqdm's interface the sweep uses: ``update(n)``, ``set_postfix(**kw)``, ``close()``.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", every: float = PROGRESS_SECONDS,
                 file: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.n, self.desc, self.every = int(total), int(initial), desc, float(every)
        self.file, self.clock = file, clock
        self.postfix: dict[str, Any] = {}
        self._last = clock()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.write_line()

    def line(self) -> str:
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: step {self.n}/{self.total}{share}{extra}"

    def write_line(self) -> None:
        print(self.line(), file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress_seconds(environ: dict[str, str] | None = None) -> float:
    """Seconds between plain progress lines: ``$JSAE_PROGRESS_SECONDS`` (> 0), default :data:`PROGRESS_SECONDS`."""
    text = (os.environ if environ is None else environ).get(PROGRESS_ENV, "").strip()
    if not text:
        return PROGRESS_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise BadValueError(f"{PROGRESS_ENV}={text!r} is not a number of seconds > 0; unset it or give e.g. "
                            f"{PROGRESS_ENV}=30.")
    return value


def progress_bar(total: int, initial: int, desc: str, enabled: bool, file: TextIO | None = None):
    """The sweep's progress display: a tqdm bar when ``file`` (default stderr) is a terminal, else a
    :class:`LineProgress` (one line every :func:`progress_seconds`); a disabled bar when not ``enabled``."""
    from tqdm.auto import tqdm

    stream = file or sys.stderr
    if enabled and not _is_terminal(stream):
        return LineProgress(total, initial, desc, every=progress_seconds(), file=stream)
    return tqdm(total=total, initial=initial, unit="step", desc=desc, disable=not enabled, dynamic_ncols=True,
                file=stream)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def show_progress(bar, grid: GridTrainer, batch_size: int) -> Hook:
    """A hook advancing ``bar`` (:func:`progress_bar`) with samples per second and the best / worst last loss."""
    def hook(call: CallResult) -> None:
        loss = flat_metric(call.metrics, grid, "loss")
        bar.set_postfix(refresh=False, samples_s=f"{call.count * batch_size / max(call.seconds, 1e-9):,.0f}",
                        loss_worst=f"{loss[-1].max():.4f}", loss_best=f"{loss[-1].min():.4f}")
        bar.update(call.count)
    return hook


def stop_if_diverged(run_dir: Path, grid: GridTrainer) -> Hook:
    """A hook raising :class:`~jsae.training.failures.TrainingDivergedError` when a loss (or another
    metric of :data:`STEP_METRICS`) is not finite, naming the model, the metric and the step."""
    def hook(call: CallResult) -> None:
        for key in STEP_METRICS:
            if key not in call.metrics[0]:
                continue
            values = flat_metric(call.metrics, grid, key)
            finite = np.isfinite(values)
            if not finite.all():
                slot, model = (int(i[0]) for i in np.nonzero(~finite))
                step = call.step - call.count + slot + 1
                raise diverged(run_dir, grid.specs[model].name, step, key, float(values[slot, model]))
    return hook


class RunRecorder:
    """Writes what a reader of the run sees: ``sweep.json``, checkpoints and model files.

    Every write is atomic, and a full disk is one line naming what was being written
    (:func:`~jsae.training.failures.writing`).

    ``run_id`` binds the run's model files to it (``sweep.json["run_id"]``, repeated in every
    ``cfg.json["run"]["id"]``): by default the one the run's ``sweep.json`` already has, else a
    new uuid4 hex when the run starts (no checkpoint yet); a run from before run ids that is
    resumed keeps none (its models stay readable as before).
    """

    def __init__(self, run_dir: Path, cfg: SweepConfig, grid: GridTrainer, normalizer: Normalizer,
                 td: TrainingData, fingerprint: dict[str, Any], total: int, history: dict[str, list], manager=None,
                 run_id: str | None = None):
        self.run_dir, self.cfg, self.grid, self.normalizer = run_dir, cfg, grid, normalizer
        self.td, self.fingerprint, self.total, self.history, self.manager = td, fingerprint, total, history, manager
        self.run_id = run_id if run_id is not None else self._existing_or_new_run_id()

    def _existing_or_new_run_id(self) -> str | None:
        rid = recorded_run_id(self.run_dir)
        if rid is not None:
            return rid
        if checkpoint_steps(self.run_dir):  # a run from before run ids (or one whose sweep.json was lost)
            return None
        return text_from_primary(uuid.uuid4().hex)  # the run starts here (one id for every process)

    def meta(self, step: int) -> dict[str, Any]:
        """The run's metadata at ``step`` (``sweep.json`` and the checkpoint's meta)."""
        td = self.td
        return to_jsonable({"step": step, "total_steps": self.total, "version": __version__, RUN_ID_KEY: self.run_id,
                            "config": config_to_dict(self.cfg),
                            "dim": int(td.fit.shape[1]), "models": [m.to_dict() for m in self.grid.specs],
                            "normalizer": self.normalizer.to_dict(), "history": self.history,
                            "data": {"source": td.source, "n_train": td.n_train, "n_val": len(td.val),
                                     "fingerprint": self.fingerprint}})

    def write_info(self, step: int, records: list[dict[str, Any]] | None = None) -> None:
        """``sweep.json``: the meta, the metrics (when evaluated) and whether the run is complete
        (strict JSON: a NaN / Inf is written as null, never as ``NaN`` / ``Infinity``)."""
        with writing(self.run_dir, f"writing {SWEEP_FILE}"):
            atomic_write_bytes(self.run_dir / SWEEP_FILE, json_bytes(self.meta(step) | {
                "metrics": records or [], "complete": records is not None and step >= self.total,
                "total_steps": self.total}))

    def write_models(self, step: int, state: GridState) -> None:
        """The model files of ``state`` (parameters + normaliser; no optimiser state).

        Each process writes the models its devices hold (:func:`local_models`: all of them
        with one process); process 0 writes ``models/index.json`` once every process has."""
        with writing(self.run_dir, f"writing the model files of step {step}"):
            models = [(spec.to_dict(), params) for spec, params in local_models(self.grid, state)]
            if models:
                write_model_files(self.run_dir, models, normalizer=self.normalizer, step=step,
                                  total_steps=self.total, complete=step >= self.total, index=False,
                                  run={"id": self.run_id, "config": config_to_dict(self.cfg),
                                       "data": self.td.source, "version": __version__})
        barrier(f"jsae-sweep-models-{step}")
        if is_primary():
            with writing(self.run_dir, f"writing the model index of step {step}"):
                write_model_index(self.run_dir, [m.name for m in self.grid.specs], dim=self.grid.dim, step=step,
                                  total_steps=self.total, complete=step >= self.total)

    def checkpoint(self, call: CallResult) -> None:
        """The checkpoint hook: orbax state + meta, then the model files, then ``sweep.json``
        (every process saves its part of the checkpoint and its models; process 0 the rest)."""
        with writing(self.run_dir, f"saving checkpoint step {call.step}"):
            save_checkpoint(self.manager, call.step, self.grid.unpad(call.state), self.meta(call.step))
        self.write_models(call.step, call.state)  # what analyses read
        if is_primary():
            self.write_info(call.step)  # the step and completeness a reader of the run sees


def local_models(grid: GridTrainer, state: GridState) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """``[(ModelSpec, {name: array})]`` of the models whose parameters this process's devices
    hold, in the run's order, read from the local shards (nothing is gathered from another
    process); padding copies are skipped. With one process: every model."""
    out = []
    for g, gs in zip(grid.groups, state.groups):
        pieces: dict[str, dict[int, np.ndarray]] = {}
        for name in PARAM_NAMES:
            for shard in getattr(gs.params, name).addressable_shards:
                start = (shard.index[0].start or 0) if shard.index else 0
                pieces.setdefault(name, {}).setdefault(int(start), np.asarray(shard.data))
        for start, first in sorted(pieces[PARAM_NAMES[0]].items()):
            for i in range(start, min(start + len(first), g.size)):
                out.append((g.models[i], {name: pieces[name][start][i - start] for name in PARAM_NAMES}))
    return out
