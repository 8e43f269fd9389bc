"""Resuming a run: the same config (up to :data:`RESUMABLE_KEYS`), the same data, the same normaliser,
and no fewer steps than it has trained.

Only a run with a checkpoint binds its config; a run directory without one (a sweep
that failed or was killed before its first checkpoint) starts afresh.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, SweepConfig, config_to_dict, load_config
from ..core.normalize import Normalizer
from ..errors import JsaeError, one_line
from ..runs.checkpoint import checkpoint_steps
from ..runs.layout import CONFIG_FILE, SWEEP_FILE
from .data import fingerprint_text

__all__ = ["RESUMABLE_KEYS", "NORMALIZER_RTOL", "NormalizerChangedError", "DataChangedError", "check_resumable",
           "check_same_data", "restored_normalizer"]

# Keys that may differ when a run is resumed (they do not change the trained models).
RESUMABLE_KEYS = ("train.steps", "train.topk_path", "train.epochs", "train.progress", "train.keep_checkpoints",
                  "train.checkpoint_every", "train.steps_per_call", "train.log")


class DataChangedError(JsaeError):
    """Resuming a run on training data whose fingerprint differs from the one it was trained on."""


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


def check_resumable(run_dir: Path, cfg: SweepConfig) -> None:
    """Refuse a config that differs from the run's in anything but :data:`RESUMABLE_KEYS`.

    Only a run with a checkpoint binds its config: a run directory without one (a
    sweep that failed or was killed before its first checkpoint) starts afresh. A saved
    ``config.yaml`` that is not valid YAML or not a valid config is a one-line ConfigError.
    """
    saved_path = run_dir / CONFIG_FILE
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
    _check_not_below_trained(run_dir, cfg, saved)


def _check_not_below_trained(run_dir: Path, cfg: SweepConfig, saved: dict[str, Any]) -> None:
    """Refuse a length (``train.steps`` / ``train.epochs``) shorter than what the run has trained:
    its config, ``sweep.json`` and model files would disagree about how far it got."""
    trained = max(checkpoint_steps(run_dir))
    n_train = None
    try:
        info = json.loads((run_dir / SWEEP_FILE).read_text(encoding="utf-8"))
        n_train = int(info["data"]["n_train"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if cfg.train.steps <= 0 and n_train is None:
        return  # an epoch count with no record of the rows: train_sweep finds out from the data
    total = cfg.train.num_steps(n_train or 0)
    if total >= trained:
        return
    asked = (f"train.steps = {cfg.train.steps}" if cfg.train.steps > 0
             else f"train.epochs = {cfg.train.epochs:g} ({total} steps)")
    was = saved.get("train", {})
    before = f"train.steps = {was.get('steps')}" if (was.get("steps") or 0) > 0 else f"train.epochs = {was.get('epochs')}"
    raise ConfigError(
        f"{run_dir} has trained {trained} steps, more than {asked} asks for; to continue it, set train.steps to "
        f"{trained} or more (its config.yaml has {before}), or train this sweep into a new --out directory."
    )


def check_same_data(run_dir: Path, saved: dict[str, Any] | None, now: dict[str, Any], source: str) -> None:
    """Refuse (:class:`DataChangedError`) resuming on data whose fingerprint is not the run's."""
    if saved is not None and saved != now:
        raise DataChangedError(
            f"{run_dir} was trained on other data ({fingerprint_text(saved)}) than {source} gives now "
            f"({fingerprint_text(now)}); resume it with the data it was trained on, or train on this "
            "data into a new --out directory."
        )
