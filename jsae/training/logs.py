"""Live training curves: TensorBoard event files and a Weights & Biases run (``train.log``).

``train.log: [tensorboard]`` — one TensorBoard run per model, so that
``tensorboard --logdir RUN/logs`` overlays every model's curves::

    RUN/logs/<name>/events.out.tfevents.<time>.<host>.s<start>   (names as in RUN/models/: k20_L200)

written with tensorboardX (no TensorFlow), synchronously and flushed after every host call
(a reader sees each call as soon as it ends). At the step ``s`` a host call ends on, each
model's run gets the scalars of :data:`SCALARS`:

* ``loss``, ``nmse``, ``auxk``, ``dead_fraction``, ``l0``: the means over the call's steps
  (``loss`` / ``nmse`` / ``dead_fraction`` are the values ``sweep.json``'s ``history`` holds);
* ``lr``: the learning rate step ``s`` trained with (:func:`learning_rate`, the optimiser's
  optax schedule of ``optim.lr`` and ``optim.warmup_steps``);
* ``steps_per_s``: ``count / seconds`` of the call (its compute time; the first call's
  includes compiling), the same in every model's run.

The HParams tab: one row per model (its run's session), with the hyperparameters
``latent_size``, ``activation`` and ``k`` (TopK) or ``l1_coef`` (ReLU + L1), and every scalar
above as a metric at its latest value (the final ones once the sweep ends).
A resumed sweep adds a new event file to each folder that starts with a purge marker at the
resumed step + 1: TensorBoard drops what an earlier attempt logged after the checkpoint the
sweep resumed from, so every step appears once.

``train.log: [wandb]`` — one W&B run per sweep, named after the run folder, with the run's id
(``sweep.json["run_id"]``: a resumed sweep continues the same W&B run) and the sweep config as
its config; at step ``s`` the keys ``<name>/<metric>`` (``k20_L200/loss``, …) for the
per-model metrics and ``lr`` / ``steps_per_s``. W&B's own variables apply (``WANDB_MODE=offline``
needs no network, ``WANDB_PROJECT``, default ``jsae``); its files go to ``WANDB_DIR``, else
``RUN/logs/wandb/``. The run is finished when training ends, also on a signal or an error
(exit code 1).

Only process 0 (:func:`jsae.cluster.is_primary`) writes; the metrics of a host call are
already gathered onto every process. The backends are imported only when asked for, and a
missing package is one :class:`LogBackendError` line before anything is read or trained
(:func:`check_log_backends`). A sweep that fails before its first checkpoint starts afresh
the next time; its ``RUN/logs`` goes with it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cluster import is_primary
from ..config import OptimConfig, SweepConfig, config_to_dict
from ..core.kinds import TOPK
from ..errors import JsaeError, one_line
from ..runs.checkpoint import checkpoint_steps
from ..runs.layout import LOGS_DIR
from ..safety import check_no_link, remove_tree
from .failures import writing
from .grid import GridTrainer
from .hooks import CallResult, flat_metric

__all__ = ["LOGS_DIR", "SCALARS", "MODEL_METRICS", "BACKEND_PACKAGES", "LogBackendError",
           "check_log_backends", "learning_rate", "TrainingLogs"]

#: the per-model metrics of a host call (means over its steps)
MODEL_METRICS = ("loss", "nmse", "auxk", "dead_fraction", "l0")
#: every scalar of a model's TensorBoard run
SCALARS = MODEL_METRICS + ("lr", "steps_per_s")
#: backend → (module imported, the jsae extra that installs it)
BACKEND_PACKAGES = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


class LogBackendError(JsaeError):
    """A ``train.log`` backend cannot be used: its package is missing, or it cannot start."""


def check_log_backends(backends: Sequence[str]) -> None:
    """Refuse (one :class:`LogBackendError` line) a backend of ``train.log`` whose package is not
    installed, naming the extra that installs it. Imports nothing."""
    for backend in backends:
        module, extra = BACKEND_PACKAGES[backend]
        if importlib.util.find_spec(module) is None:
            raise LogBackendError(f"train.log has {backend!r} but the package {module} is not installed; "
                                  f"pip install 'jsae[{extra}]', or remove {backend} from train.log.")


def learning_rate(optim: OptimConfig, step: int) -> float:
    """The learning rate training step ``step`` (1, 2, …) used: Adam's schedule is evaluated at its
    update count ``step - 1``; with ``warmup_steps = W > 0`` it is
    ``lr · min(step - 1, W) / W`` (optax's linear schedule from 0), else ``lr``."""
    if optim.warmup_steps <= 0:
        return float(optim.lr)
    import optax

    return float(optax.linear_schedule(0.0, optim.lr, optim.warmup_steps)(max(step - 1, 0)))


def _hparams(spec) -> dict[str, Any]:
    """The HParams row of one model: ``latent_size``, ``activation`` and its sparsity parameter."""
    out: dict[str, Any] = {"latent_size": int(spec.latent_size), "activation": spec.kind}
    if spec.kind == TOPK:
        out["k"] = int(spec.k)
    else:
        out["l1_coef"] = float(spec.l1_coef)
    return out


def _is_logs_dir(path: Path) -> bool:
    """Whether ``path`` holds nothing but what :class:`TrainingLogs` writes (event-file folders, ``wandb``)."""
    for entry in path.iterdir():
        if entry.is_symlink() or not entry.is_dir():
            return False
        if entry.name != "wandb" and any(".tfevents." not in f.name for f in entry.iterdir()):
            return False
    return True


class _TensorBoard:
    """One event file per model under ``RUN/logs/<name>/`` (see the module docstring)."""

    def __init__(self, logs: Path, names: Sequence[str], specs: Sequence[Any], start: int):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import hparams

        self.Event, self.Summary = Event, Summary
        self.writers = []
        for name, spec in zip(names, specs):
            folder = logs / name
            folder.mkdir(parents=True, exist_ok=True)
            # the start step in the name: a resumed sweep's file sorts after the first one's, also within a second
            writer = EventsWriter(str(folder / "events"), filename_suffix=f".s{start:09d}")
            # drop what an earlier attempt logged after the step this one starts from
            writer.write_event(Event(wall_time=time.time(), step=start + 1,
                                     session_log=SessionLog(status=SessionLog.START)))
            # the model's session in the HParams tab; TensorBoard derives the table's columns from the
            # sessions (which hyperparameters differ, their values, every scalar as a metric)
            _, session_start, _ = hparams(_hparams(spec), {})
            writer.write_event(Event(wall_time=time.time(), step=start, summary=session_start))
            writer.flush()
            self.writers.append(writer)

    def write(self, step: int, per_model: dict[str, np.ndarray], shared: dict[str, float]) -> None:
        now = time.time()
        for i, writer in enumerate(self.writers):
            values = [self.Summary.Value(tag=key, simple_value=float(v[i])) for key, v in per_model.items()]
            values += [self.Summary.Value(tag=key, simple_value=v) for key, v in shared.items()]
            writer.write_event(self.Event(wall_time=now, step=step, summary=self.Summary(value=values)))
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class _WandB:
    """One W&B run for the sweep (see the module docstring)."""

    def __init__(self, logs: Path, cfg: SweepConfig, run_name: str, run_id: str | None):
        import wandb

        kwargs: dict[str, Any] = {}
        if not os.environ.get("WANDB_DIR"):
            logs.mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = str(logs)
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "jsae", name=run_name, id=run_id,
                                  resume="allow" if run_id else None, config=config_to_dict(cfg),
                                  **kwargs)
        except Exception as err:  # noqa: BLE001 - W&B's own errors (no key, no network) become one line
            raise LogBackendError(f"train.log has 'wandb' but W&B could not start a run ({one_line(err)}); log in "
                                  "with `wandb login`, or set WANDB_MODE=offline and upload later with "
                                  "`wandb sync`.") from None

    def write(self, step: int, names: Sequence[str], per_model: dict[str, np.ndarray],
              shared: dict[str, float]) -> None:
        row = {f"{name}/{key}": float(v[i]) for key, v in per_model.items() for i, name in enumerate(names)}
        self.run.log(row | shared, step=step)

    def close(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)


class TrainingLogs:
    """The ``train.log`` backends of one sweep: :meth:`hook` after each host call, :meth:`close` at the end.

    Args:
      cfg: the sweep config (``cfg.train.log`` names the backends; none: nothing is written).
      run_dir: the run folder (``RUN/logs/`` is :data:`LOGS_DIR` there).
      grid: the grid trainer (model names, in the order of the metrics).
      run_id: the run's id (the W&B run's id), or None.
      start: the step training starts from (0, or the step a resumed sweep restored).
      primary: whether this process writes; default :func:`jsae.cluster.is_primary`.
    """

    def __init__(self, cfg: SweepConfig, run_dir: str | Path, grid: GridTrainer, *, run_id: str | None,
                 start: int, primary: bool | None = None):
        self.cfg, self.run_dir, self.grid = cfg, Path(run_dir), grid
        self.names = [spec.name for spec in grid.specs]
        self.backends = tuple(cfg.train.log) if (is_primary() if primary is None else primary) else ()
        self.tensorboard: _TensorBoard | None = None
        self.wandb: _WandB | None = None
        if not self.backends:
            return
        check_log_backends(self.backends)
        logs = self.run_dir / LOGS_DIR
        check_no_link(logs, below=self.run_dir, fix="remove the link or choose another --out")
        try:
            if "tensorboard" in self.backends:
                with writing(self.run_dir, "writing the TensorBoard logs"):
                    self.tensorboard = _TensorBoard(logs, self.names, grid.specs, start)
            if "wandb" in self.backends:
                self.wandb = _WandB(logs, cfg, self.run_dir.resolve().name, run_id)
        except BaseException:
            self.close()
            raise

    def hook(self, call: CallResult) -> None:
        """Log the host call ``call`` (a :class:`~jsae.training.loop.Trainer` hook)."""
        if not self.backends:
            return
        per_model = {key: flat_metric(call.metrics, self.grid, key).mean(axis=0) for key in MODEL_METRICS
                     if key in call.metrics[0]}
        shared = {"lr": learning_rate(self.cfg.optim, call.step),
                  "steps_per_s": call.count / max(call.seconds, 1e-9)}
        if self.tensorboard is not None:
            with writing(self.run_dir, f"writing the TensorBoard logs of step {call.step}"):
                self.tensorboard.write(call.step, per_model, shared)
        if self.wandb is not None:
            self.wandb.write(call.step, self.names, per_model, shared)

    def close(self) -> None:
        """Close the event files and finish the W&B run (exit code 1 when called while an exception
        propagates, e.g. from a ``finally`` block). A sweep failing before its first checkpoint starts
        afresh next time: then ``RUN/logs`` is removed too. Safe to call twice."""
        failing = sys.exc_info()[1] is not None
        tensorboard, wandb_run = self.tensorboard, self.wandb
        self.tensorboard = self.wandb = None
        try:
            try:
                if tensorboard is not None:
                    with writing(self.run_dir, "closing the TensorBoard logs"):
                        tensorboard.close()
            finally:
                if wandb_run is not None:
                    wandb_run.close(exit_code=1 if failing else 0)
        except Exception:
            if not failing:
                raise  # else the error that stopped the sweep is the one to report
        if failing and self.backends and not checkpoint_steps(self.run_dir):
            with contextlib.suppress(JsaeError, OSError):  # a folder that is not only logs stays
                remove_tree(self.run_dir / LOGS_DIR, what="a folder of jsae training logs", is_ours=_is_logs_dir,
                            option="the logs folder")
