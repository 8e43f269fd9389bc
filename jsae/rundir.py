"""Run directories: what ``jsae sweep --out DIR`` may write into, and loading one back.

* :func:`check_run_dir` — a run directory must be absent, empty, or a jsae run (which
  is then resumed); anything else (``--out .`` in a project folder, a folder with the
  user's own ``config.yaml`` or ``metrics.json``) is refused before anything is written.
* :func:`is_jsae_run` — recognises a run by what :func:`jsae.train.train_sweep` writes:
  a ``sweep.json`` with its keys, or a jsae ``config.yaml`` next to ``checkpoints/``.
* :func:`check_validation_rows` — refuses, before training, a store too small for
  ``train.val_fraction`` to leave a validation row (:func:`validation_row_count`, which
  :func:`jsae.train.prepare_data` applies too).
* :func:`load_run` — :func:`jsae.sweep.load_sweep` whose failures on a missing,
  truncated or damaged checkpoint become one-line :class:`RunDirError` messages.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import JsaeError

if TYPE_CHECKING:
    from .config import SweepConfig
    from .sweep import Sweep

__all__ = ["RunDirError", "is_jsae_run", "check_run_dir", "check_validation_rows", "validation_row_count",
           "load_run"]

#: left by a sweep that could not start (its run lock): the folder still counts as empty
_IGNORED = {".lock"}
#: keys of the ``sweep.json`` that jsae writes (train_sweep's metadata)
_SWEEP_KEYS = {"config", "models", "normalizer"}


class RunDirError(JsaeError, ValueError):
    """A run directory that jsae must not write into, or cannot load."""


def _sweep_json_is_ours(path: Path) -> bool:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and _SWEEP_KEYS <= set(info)


def _config_yaml_is_ours(path: Path) -> bool:
    import yaml

    from .config import ConfigError, config_from_dict

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            return False
        config_from_dict(data)
    except (OSError, ValueError, yaml.YAMLError, ConfigError):
        return False
    return True


def is_jsae_run(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a run written by ``jsae sweep`` (finished or interrupted)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / "sweep.json").is_file() and _sweep_json_is_ours(path / "sweep.json"):
        return True
    return (path / "checkpoints").is_dir() and (path / "config.yaml").is_file() \
        and _config_yaml_is_ours(path / "config.yaml")


def check_run_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse a run directory that is neither absent, empty, nor a jsae run.

    ``jsae sweep`` writes ``config.yaml``, ``metrics.json``, ``sweep.json``, figures and
    ``checkpoints/`` into it; in any other non-empty folder these would overwrite the
    user's files. Raises :class:`RunDirError` (nothing is written).
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise RunDirError(f"{option} {path} is a dangling symbolic link; choose another {option}.")
        return
    if not path.is_dir():
        raise RunDirError(f"{option} {path} is a file, not a folder; choose a new or empty folder for the run.")
    entries = sorted(p.name for p in path.iterdir() if p.name not in _IGNORED)
    if not entries or is_jsae_run(path):
        return
    shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
    raise RunDirError(
        f"{option} {path} is neither empty nor a jsae run (it holds {shown}); a sweep would overwrite files "
        f"there (config.yaml, metrics.json, …). Choose a new or empty folder, e.g. {option} runs/NAME."
    )


def validation_row_count(val_fraction: float, n: int, source: str) -> int:
    """The validation rows ``round(val_fraction × n)`` of ``n`` training rows of ``source``;
    a :class:`~jsae.config.ConfigError` (one line naming ``train.val_fraction`` and ``n``)
    when that leaves no validation row or no training row."""
    from .config import ConfigError

    frac = val_fraction
    n_val = int(round(frac * n))
    if n_val == 0:
        need = 0.5 / n
        raise ConfigError(
            f"train.val_fraction={frac:g} of the {n} training rows of {source} gives 0 validation rows "
            f"(round({frac:g} × {n}) = 0); metrics need at least one: raise train.val_fraction above {need:.3g} "
            "or use a store with more rows."
        )
    if n_val >= n:
        raise ConfigError(
            f"train.val_fraction={frac:g} of the {n} training rows of {source} leaves no training row; "
            "lower train.val_fraction or use a store with more rows."
        )
    return n_val


def check_validation_rows(cfg: "SweepConfig") -> None:
    """Refuse a config whose ``train.val_fraction`` leaves no validation row of its store
    (the run would train and then fail to compute its metrics); see :func:`validation_row_count`."""
    from .store import open_store

    store = open_store(cfg.data.store)
    n = store.num_rows
    if cfg.data.splits:
        if "split" not in store.metadata.columns:
            return  # train_sweep names this problem itself
        n = int(store.metadata["split"].astype(str).isin(cfg.data.splits).sum())
    if cfg.data.max_rows > 0:
        n = min(n, cfg.data.max_rows)
    if n == 0:
        return  # train_sweep names this problem itself
    validation_row_count(cfg.train.val_fraction, n, str(store.path))


@contextlib.contextmanager
def _quiet_absl():
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_run(run_dir: str | os.PathLike, step: int | None = None) -> "Sweep":
    """:func:`jsae.sweep.load_sweep`, with a missing, truncated or damaged run reported as a
    one-line :class:`RunDirError` (the cause stays chained for debugging)."""
    from .sweep import load_sweep

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} does not exist or is not a folder; give a `jsae sweep` run directory.")
    has_models = (run_dir / "models").is_dir() or (run_dir / "checkpoints").is_dir()
    if not (run_dir / "sweep.json").is_file() or not has_models:
        missing = "sweep.json" if not (run_dir / "sweep.json").is_file() else "models/ or checkpoints/"
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
