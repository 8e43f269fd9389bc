"""What a sweep does after a host call: the hooks of :class:`jsae.training.loop.Trainer`.

A hook is ``fn(call: CallResult) -> None``, added with ``trainer.add_hook(fn, every=N)``:
it runs after every host call that ends on a multiple of ``N`` steps, and after the last
call. The sweep's hooks, in the order :func:`jsae.training.loop.train_sweep` adds them:

* :func:`record_history` — mean loss / NMSE / dead fraction per model, for the loss curves;
* :func:`show_progress` — the progress bar (samples per second, best and worst loss);
* :func:`stop_if_diverged` — a loss that is not finite stops the sweep naming the model;
* :meth:`RunRecorder.checkpoint` — every ``train.checkpoint_every`` steps: the orbax
  checkpoint, the model files (what analyses read) and ``sweep.json``.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from .. import __version__
from ..config import SweepConfig, config_to_dict
from ..core.normalize import Normalizer
from ..jsonio import atomic_write_text
from ..runs.checkpoint import checkpoint_steps, save_checkpoint
from ..runs.layout import SWEEP_FILE
from ..runs.modelfiles import PARAM_NAMES, RUN_ID_KEY, recorded_run_id, write_model_files
from .data import TrainingData
from .failures import diverged, writing
from .grid import GridState, GridTrainer

__all__ = ["CallResult", "Hook", "RunRecorder", "record_history", "show_progress", "stop_if_diverged",
           "flat_metric"]


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


def show_progress(bar, grid: GridTrainer, batch_size: int) -> Hook:
    """A hook advancing a tqdm ``bar`` with samples per second and the best / worst last loss."""
    def hook(call: CallResult) -> None:
        loss = flat_metric(call.metrics, grid, "loss")
        bar.update(call.count)
        bar.set_postfix(samples_s=f"{call.count * batch_size / call.seconds:,.0f}",
                        loss_worst=f"{loss[-1].max():.4f}", loss_best=f"{loss[-1].min():.4f}")
    return hook


def stop_if_diverged(run_dir: Path, grid: GridTrainer) -> Hook:
    """A hook raising :class:`~jsae.training.failures.TrainingDivergedError` when a loss is not finite."""
    def hook(call: CallResult) -> None:
        loss = flat_metric(call.metrics, grid, "loss")
        if not np.all(np.isfinite(loss)):
            bad = grid.specs[int(np.flatnonzero(~np.isfinite(loss).all(axis=0))[0])].name
            raise diverged(run_dir, bad, call.step)
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
        return uuid.uuid4().hex  # the run starts here

    def meta(self, step: int) -> dict[str, Any]:
        """The run's metadata at ``step`` (``sweep.json`` and the checkpoint's meta)."""
        td = self.td
        return {"step": step, "total_steps": self.total, "version": __version__, RUN_ID_KEY: self.run_id,
                "config": config_to_dict(self.cfg),
                "dim": int(td.fit.shape[1]), "models": [m.to_dict() for m in self.grid.specs],
                "normalizer": self.normalizer.to_dict(), "history": self.history,
                "data": {"source": td.source, "n_train": td.n_train, "n_val": len(td.val),
                         "fingerprint": self.fingerprint}}

    def write_info(self, step: int, records: list[dict[str, Any]] | None = None) -> None:
        """``sweep.json``: the meta, the metrics (when evaluated) and whether the run is complete."""
        with writing(self.run_dir, f"writing {SWEEP_FILE}"):
            atomic_write_text(self.run_dir / SWEEP_FILE, json.dumps(self.meta(step) | {
                "metrics": records or [], "complete": records is not None and step >= self.total,
                "total_steps": self.total}, indent=1))

    def write_models(self, step: int, state: GridState) -> None:
        """The model files of ``state`` (parameters + normaliser; no optimiser state)."""
        with writing(self.run_dir, f"writing the model files of step {step}"):
            params = jax.device_get(tuple(gs.params for gs in self.grid.unpad(state).groups))
            models = [(spec.to_dict(), {k: np.asarray(getattr(p, k))[i] for k in PARAM_NAMES})
                      for g, p in zip(self.grid.groups, params) for i, spec in enumerate(g.models)]
            write_model_files(self.run_dir, models, normalizer=self.normalizer, step=step, total_steps=self.total,
                              complete=step >= self.total, run={"id": self.run_id,
                                                                "config": config_to_dict(self.cfg),
                                                                "data": self.td.source, "version": __version__})

    def checkpoint(self, call: CallResult) -> None:
        """The checkpoint hook: orbax state + meta, then the model files, then ``sweep.json``."""
        with writing(self.run_dir, f"saving checkpoint step {call.step}"):
            save_checkpoint(self.manager, call.step, self.grid.unpad(call.state), self.meta(call.step))
        self.write_models(call.step, call.state)  # what analyses read
        self.write_info(call.step)  # the step and completeness a reader of the run sees
