"""The names inside a run directory (``jsae sweep --out RUN``)::

    RUN/config.yaml          the resolved sweep config
    RUN/sweep.json           run_id (a uuid4 hex made when the run starts, repeated by every model's cfg.json),
                             grid, normaliser, data fingerprint, history, step / total_steps / complete, metrics
    RUN/metrics.json         one validation record per model
    RUN/checkpoints/<step>/  orbax: stacked training state + JSON meta, with checksums
    RUN/checkpoints.corrupt/ checkpoints that failed their checksums, set aside
    RUN/models/              per-model safetensors + cfg.json, models/index.json (:mod:`jsae.runs.modelfiles`)
    RUN/analysis/            analysis outputs and report.html
    RUN/logs/                live training curves (``train.log``): <model>/ TensorBoard event files, wandb/
    RUN/*.png                heatmaps over K × L, loss curves
    RUN/.lock                flock held by the sweep writing here (pid inside)
"""
from __future__ import annotations

__all__ = ["CONFIG_FILE", "SWEEP_FILE", "METRICS_FILE", "CHECKPOINT_DIR", "CORRUPT_DIR", "MODELS_DIR",
           "ANALYSIS_DIR", "LOGS_DIR", "LOCK_NAME", "SWEEP_KEYS"]

CONFIG_FILE = "config.yaml"
SWEEP_FILE = "sweep.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints.corrupt"
MODELS_DIR = "models"
ANALYSIS_DIR = "analysis"
LOGS_DIR = "logs"
LOCK_NAME = ".lock"
#: keys every ``sweep.json`` that jsae writes has
SWEEP_KEYS = frozenset({"config", "models", "normalizer"})
