"""A trained sweep loaded for analysis: :func:`load_sweep` → :class:`Sweep`.

A :class:`Sweep` is the :class:`~jsae.models.ModelBatch` of all the run's models
plus what the run recorded (config, validation metrics, metadata). Every public
function takes and returns embeddings in the original (raw) space; the
normalisation fitted at training time is applied inside.

>>> sweep = load_sweep("runs/paper")            # from RUN/models/: no optimiser, no orbax
>>> m = sweep.model(k=20, latent_size=200)      # one SAEModel
>>> v = m.encode(x)                             # [B, 200] sparse codes
>>> batch = sweep.select(k=20)                  # a ModelBatch: the k = 20 model of every L
>>> codes = batch.encode(x)                     # one [B, L_i] array per model
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from . import sae
from .config import SweepConfig, load_config
from .errors import BadValueError, MissingPathError
from .grid import ModelSpec
from .models import ModelBatch, RunInfo, SAEModel, UnfinishedRunWarning
from .normalize import Normalizer

__all__ = ["SAEModel", "ModelBatch", "Sweep", "load_sweep", "UnfinishedRunWarning", "SOURCES"]

#: where :func:`load_sweep` reads the models from
SOURCES = ("auto", "models", "checkpoint")


class Sweep(ModelBatch):
    """Every model of a trained sweep (a :class:`~jsae.models.ModelBatch`) and its run's records.

    Attributes (besides the batch's): ``config`` (the resolved config), ``metrics``
    (per-model validation records of ``metrics.json``, in model order; empty when the
    run's metrics are not of the loaded step), ``meta`` (``sweep.json``: dimension,
    normalisation, training data and its fingerprint, history), ``source`` (``models``
    or ``checkpoint``). ``step``/``total_steps``/``complete`` say how far the run got;
    analyses call :meth:`warn_if_unfinished`. :meth:`select` returns a plain batch.
    """

    def __init__(self, specs: Sequence[ModelSpec], params: Sequence[sae.SAEParams], normalizer: Normalizer,
                 info: RunInfo, *, config: SweepConfig, metrics: list[dict[str, Any]], meta: dict[str, Any],
                 source: str):
        super().__init__(specs, params, normalizer, info)
        self.config = config
        self.metrics = metrics
        self.meta = meta
        self.source = source

    def metric(self, key: str) -> np.ndarray:
        """One validation metric for every model, in model order."""
        return np.array([r[key] for r in self.metrics])

    def with_params(self, params: Sequence[sae.SAEParams]) -> "Sweep":
        return Sweep(self.specs, params, self.normalizer, self.info, config=self.config, metrics=self.metrics,
                     meta=self.meta, source=self.source)


def load_sweep(run_dir: str | Path, step: int | None = None, *, source: str = "auto") -> Sweep:
    """Load a trained sweep's models and records.

    ``source``: ``models`` reads ``RUN/models/`` (:mod:`jsae.modelfiles`: parameters,
    normaliser and spec per model in safetensors + JSON — no optimiser state, no orbax);
    ``checkpoint`` restores the newest (or given) orbax checkpoint of the training
    state, its checksums verified — a checkpoint that fails them raises
    :class:`~jsae.checkpoint.CheckpointError` naming the step, with no silent fall-back
    (re-running the sweep command moves the bad step aside and retrains it);
    ``auto`` (default) takes the model files when they exist and are of the asked
    ``step`` (default: theirs, the newest), else the checkpoint.
    ``Sweep.step``/``total_steps``/``complete`` say how far the run got.

    A run directory without ``config.yaml``, ``sweep.json``, or without either
    ``models/`` or ``checkpoints/`` raises :class:`~jsae.errors.MissingPathError` (also a
    ``FileNotFoundError``); a damaged ``config.yaml`` a :class:`~jsae.config.ConfigError`.
    """
    from .modelfiles import PARAM_NAMES, has_model_files, model_files_step, read_models

    if source not in SOURCES:
        raise BadValueError(f"source={source!r} is not one of {SOURCES}")
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        if not run_dir.is_dir():
            raise MissingPathError(f"{run_dir}: no such run directory; give a `jsae sweep` run directory.")
        raise MissingPathError(f"{run_dir}: config.yaml is missing; give a `jsae sweep` run directory, or restore "
                               "its config.yaml from a copy of the run.")
    cfg = load_config(run_dir / "config.yaml")  # safe YAML; a damaged file is a one-line ConfigError
    info_path = run_dir / "sweep.json"
    if not info_path.is_file():
        raise MissingPathError(f"{run_dir}: sweep.json is missing (the run never reached a checkpoint); re-run "
                               "the `jsae sweep` command that made it.")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    have_models = has_model_files(run_dir)
    if source == "auto":
        index_step = model_files_step(run_dir) if have_models else None
        source = "models" if have_models and (step is None or step == index_step) else "checkpoint"
    if source == "models":
        if not have_models:
            raise MissingPathError(f"{run_dir}: no models/ folder (model files); re-run the `jsae sweep` command that "
                                   "made the run to write them, or load from the checkpoints (source='checkpoint').")
        index, files = read_models(run_dir)
        got = int(index["step"])
        if step is not None and step != got:
            raise BadValueError(f"{run_dir}/models holds step {got}, not {step}; load step {step} from the "
                                "checkpoints (source='checkpoint').")
        specs = [ModelSpec.from_dict(f.spec) for f in files]
        params = [sae.SAEParams(**{k: f.params[k] for k in PARAM_NAMES}) for f in files]
        normalizer, meta = files[0].normalizer, info
        total = index.get("total_steps", info.get("total_steps"))
    else:
        specs, params, normalizer, meta, got = _from_checkpoint(run_dir, cfg, info, step)
        total = meta.get("total_steps", info.get("total_steps"))
    metrics = info.get("metrics", []) if info.get("step") == got else []
    if total is None and (meta.get("data") or {}).get("n_train"):
        from .train import num_steps

        total = num_steps(cfg, int(meta["data"]["n_train"]))
    run = RunInfo(run_dir=run_dir, step=got, total_steps=None if total is None else int(total),
                  data_source=(meta.get("data") or {}).get("source"))
    return Sweep(specs, params, normalizer, run, config=cfg, metrics=metrics, meta=meta, source=source)


def _from_checkpoint(run_dir: Path, cfg: SweepConfig, info: dict[str, Any], step: int | None):
    """Specs, per-model params, normaliser, meta and step of an orbax checkpoint (needs orbax)."""
    from .checkpoint import restore_checkpoint
    from .grid import GridTrainer, make_groups

    if not (run_dir / "checkpoints").exists():
        raise MissingPathError(f"{run_dir}: no checkpoints/ folder; give a `jsae sweep` run directory "
                               "(one that reached a checkpoint).")
    groups = make_groups(cfg.grid)
    trainer = GridTrainer(groups, info["dim"], cfg.sae, cfg.optim)  # dim: the abstract target needs it
    state, meta, got = restore_checkpoint(run_dir, trainer.abstract_state(), step)
    specs, params = [], []
    for g, gs in zip(groups, state.groups):
        stacked = jax.tree.map(np.asarray, gs.params)
        for i, spec in enumerate(g.models):
            specs.append(spec)
            params.append(jax.tree.map(lambda a, i=i: a[i], stacked))
    return specs, params, Normalizer.from_dict(meta["normalizer"]), meta, got
