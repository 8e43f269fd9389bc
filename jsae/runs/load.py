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

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import SweepConfig, load_config
from ..core import sae
from ..core.normalize import Normalizer
from ..core.spec import ModelSpec
from ..errors import BadValueError, JsaeError, MissingPathError
from ..models import ModelBatch, RunInfo
from .check import RunDirError
from .layout import CHECKPOINT_DIR, CONFIG_FILE, MODELS_DIR, SWEEP_FILE

__all__ = ["Sweep", "load_sweep", "load_run", "SOURCES"]

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

    ``source``: ``models`` reads ``RUN/models/`` (:mod:`jsae.runs.modelfiles`: parameters,
    normaliser and spec per model in safetensors + JSON — no optimiser state, no orbax);
    ``checkpoint`` restores the newest (or given) orbax checkpoint of the training
    state, its checksums verified — a checkpoint that fails them raises
    :class:`~jsae.runs.checkpoint.CheckpointError` naming the step, with no silent fall-back
    (re-running the sweep command moves the bad step aside and retrains it);
    ``auto`` (default) takes the model files when they exist and are of the asked
    ``step`` (default: theirs, the newest), else the checkpoint.
    ``Sweep.step``/``total_steps``/``complete`` say how far the run got. Model files are
    verified (:func:`~jsae.runs.modelfiles.read_models`): each must say what its weights were
    written as and, when ``sweep.json`` has a ``run_id``, belong to this run — a model folder
    copied in from another run is a one-line :class:`~jsae.runs.modelfiles.ModelFileError`
    naming it.

    A run directory without ``config.yaml``, ``sweep.json``, or without either
    ``models/`` or ``checkpoints/`` raises :class:`~jsae.errors.MissingPathError` (also a
    ``FileNotFoundError``); a damaged ``config.yaml`` a :class:`~jsae.config.ConfigError`.
    """
    from .modelfiles import PARAM_NAMES, has_model_files, model_files_step, read_models  # numpy + safetensors

    if source not in SOURCES:
        raise BadValueError(f"source={source!r} is not one of {SOURCES}")
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        if not run_dir.is_dir():
            raise MissingPathError(f"{run_dir}: no such run directory; give a `jsae sweep` run directory.")
        raise MissingPathError(f"{run_dir}: config.yaml is missing; give a `jsae sweep` run directory, or restore "
                               "its config.yaml from a copy of the run.")
    cfg = load_config(run_dir / CONFIG_FILE)  # safe YAML; a damaged file is a one-line ConfigError
    info_path = run_dir / SWEEP_FILE
    if not info_path.is_file():
        raise MissingPathError(f"{run_dir}: sweep.json is missing (the run never reached a checkpoint); re-run "
                               "the `jsae sweep` command that made it.")
    info = _read_sweep_json(info_path)
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
        total = cfg.train.num_steps(int(meta["data"]["n_train"]))
    run = RunInfo(run_dir=run_dir, step=got, total_steps=None if total is None else int(total),
                  data_source=(meta.get("data") or {}).get("source"))
    return Sweep(specs, params, normalizer, run, config=cfg, metrics=metrics, meta=meta, source=source)


def _read_sweep_json(path: Path) -> dict[str, Any]:
    """``RUN/sweep.json`` as a dict; a truncated, non-JSON or non-object file is one :class:`RunDirError`
    line naming it and the fix (re-running the sweep command rewrites it from the checkpoints)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        problem = f"{type(err).__name__} at line {err.lineno}, column {err.colno}" \
            if isinstance(err, json.JSONDecodeError) else type(err).__name__
        raise RunDirError(f"{path} is not readable JSON ({problem}): the file is truncated or damaged; re-run the "
                          "`jsae sweep` command that made the run (same config and --out: it resumes from its "
                          "newest checkpoint and rewrites sweep.json), or restore the file from a copy of the "
                          "run.") from None
    if not isinstance(info, dict):
        raise RunDirError(f"{path} holds a JSON {type(info).__name__}, not the run's record (an object); re-run the "
                          "`jsae sweep` command that made the run to rewrite it, or restore it from a copy.")
    return info


def _from_checkpoint(run_dir: Path, cfg: SweepConfig, info: dict[str, Any], step: int | None):
    """Specs, per-model params, normaliser, meta and step of an orbax checkpoint (needs orbax,
    not the training code: the state is restored as plain dicts, its groups in the order of
    the specs recorded in ``sweep.json``/the checkpoint meta, one group per latent size and kind)."""
    from .checkpoint import restore_checkpoint

    if not (run_dir / CHECKPOINT_DIR).exists():
        raise MissingPathError(f"{run_dir}: no checkpoints/ folder; give a `jsae sweep` run directory "
                               "(one that reached a checkpoint).")
    state, meta, got = restore_checkpoint(run_dir, step=step)
    all_specs = [ModelSpec.from_dict(d) for d in meta.get("models") or info.get("models") or []]
    groups = {}
    for spec in all_specs:  # the grid's grouping: by (latent size, kind), in spec order
        groups.setdefault((spec.latent_size, spec.kind), []).append(spec)
    stacked = state["groups"]
    if len(stacked) != len(groups):
        raise MissingPathError(f"{run_dir}: checkpoint step {got} holds {len(stacked)} groups of models, its meta "
                               f"lists {len(groups)}; the checkpoint is damaged.")
    specs, params = [], []
    for members, gs in zip(groups.values(), stacked):
        p = {k: np.asarray(v) for k, v in gs["params"].items()}
        for i, spec in enumerate(members):
            specs.append(spec)
            params.append(sae.SAEParams(**{k: p[k][i] for k in ("W_enc", "b_enc", "W_dec", "b_pre")}))
    return specs, params, Normalizer.from_dict(meta["normalizer"]), meta, got


@contextlib.contextmanager
def _quiet_absl():
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_run(run_dir: str | os.PathLike, step: int | None = None) -> Sweep:
    """:func:`load_sweep`, with a missing, truncated or damaged run reported as a
    one-line :class:`RunDirError` (the cause stays chained for debugging)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} does not exist or is not a folder; give a `jsae sweep` run directory.")
    has_models = (run_dir / MODELS_DIR).is_dir() or (run_dir / CHECKPOINT_DIR).is_dir()
    if not (run_dir / SWEEP_FILE).is_file() or not has_models:
        missing = "sweep.json" if not (run_dir / SWEEP_FILE).is_file() else "models/ or checkpoints/"
        raise RunDirError(f"{run_dir}: no {missing}; give a `jsae sweep` run directory (one that reached "
                          "a checkpoint).")
    try:
        with _quiet_absl():  # orbax logs its own ERROR line before raising; the error below says it once
            return load_sweep(run_dir, step)
    except JsaeError:
        raise
    except Exception as err:  # noqa: BLE001 - orbax/tensorstore/json/yaml raise many kinds for a damaged file
        reason = " ".join(str(err).split())
        reason = reason if len(reason) <= 160 else reason[:157] + "…"
        raise RunDirError(
            f"{run_dir}: the run cannot be loaded ({type(err).__name__}: {reason}); its checkpoint or "
            "model files or metadata are missing, truncated or damaged. Re-run `jsae sweep` with the same config and --out "
            "to retrain it, or restore the run folder from a copy."
        ) from err
