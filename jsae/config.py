"""Sweep configuration: nested frozen dataclasses, mirrored by the YAML files in ``configs/``.

A config is read with :func:`load_config` (YAML file + ``dotted.key=value``
overrides, e.g. ``grid.k=[5,10] train.steps=2000``), validated against these
dataclasses (an unknown key or a wrongly typed value is an error that names the
key and the valid choices) and checked for consistency (:func:`validate_config`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import JsaeError

__all__ = [
    "ACTIVATIONS",
    "NORMALIZATIONS",
    "ConfigError",
    "GridConfig",
    "SAEConfig",
    "OptimConfig",
    "TrainConfig",
    "DataConfig",
    "SweepConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "validate_config",
]

ACTIVATIONS = ("topk", "relu_l1")
NORMALIZATIONS = ("none", "scale", "center_scale", "standardize")
B_PRE_INITS = ("geometric_median", "mean", "zeros")
MATMUL_DTYPES = ("float32", "bfloat16")
TOPK_PATHS = ("auto", "sparse", "dense")


class ConfigError(JsaeError, ValueError):
    """An invalid sweep configuration; the message names the key and the fix."""


@dataclass(frozen=True)
class GridConfig:
    """The models of a sweep: every combination of ``k`` × ``latent_size``.

    For ``activation: relu_l1`` the sparsity axis is ``l1_coef`` instead of ``k``.
    """

    k: list[int] = field(default_factory=lambda: [5, 10, 15, 20, 25, 30, 35])
    latent_size: list[int] = field(default_factory=lambda: list(range(100, 1300, 100)))
    activation: str = "topk"
    l1_coef: list[float] = field(default_factory=lambda: [1e-3])


@dataclass(frozen=True)
class SAEConfig:
    """Model and loss options shared by every model of the grid."""

    auxk_coef: float = 1.0 / 32.0
    k_aux: int = 0  # 0 → dim // 2 (clipped to the latent size)
    dead_after_samples: int = 100_000  # a latent is dead after this many samples without firing
    fire_threshold: float = 1e-3  # an activation above this counts as firing
    b_pre_init: str = "geometric_median"
    b_pre_init_samples: int = 8192
    normalize: str = "center_scale"


@dataclass(frozen=True)
class OptimConfig:
    """Adam, as in the OpenAI TopK recipe; ``grad_clip`` ≤ 0 disables clipping."""

    lr: float = 5e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 6.25e-10
    grad_clip: float = 0.0
    warmup_steps: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Steps, batches, checkpoints and devices.

    ``steps`` > 0 fixes the number of steps; otherwise ``epochs`` × rows / batch.
    ``steps_per_call`` steps run inside one compiled ``lax.scan`` per host call.
    """

    batch_size: int = 1024
    steps: int = 2000
    epochs: float = 0.0
    seed: int = 0
    val_fraction: float = 0.05
    steps_per_call: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    matmul_dtype: str = "float32"
    topk_path: str = "auto"  # auto | sparse | dense: how TopK groups train (see jsae.grid)
    shard_models: bool = True
    progress: bool = True


@dataclass(frozen=True)
class DataConfig:
    """Where the training embeddings come from.

    ``store``: a jsae embedding store (relative paths are relative to the working
    directory). ``splits``: if not empty, only rows whose ``split`` column is one of
    these values are used (validation is a random ``val_fraction`` of them).
    ``stream``: keep the training rows in the store and read every host call's
    batches from it (the validation rows and ``fit_rows`` random training rows,
    which fit the normalisation and ``b_pre``, are loaded).
    """

    store: str = "data/synthetic"
    splits: list[str] = field(default_factory=list)
    max_rows: int = 0  # 0 → all rows
    stream: bool = False  # read each host call's batches from the store (stores larger than memory)
    fit_rows: int = 200_000  # when streaming: rows that fit the normalisation and b_pre


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep: grid, model, optimiser, training and data."""

    name: str = "sweep"
    grid: GridConfig = field(default_factory=GridConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)


def _merge(sources: Sequence[Any], where: str) -> SweepConfig:
    try:
        base = _writable(OmegaConf.structured(SweepConfig))
        merged = OmegaConf.merge(base, *sources)
        cfg = _freeze(OmegaConf.to_object(merged))
    except OmegaConfBaseException as err:
        msg = str(err).strip().splitlines()[0]
        key = getattr(err, "full_key", None) or ""
        hint = _key_hint(key) if isinstance(err, ConfigKeyError) else ""
        raise ConfigError(
            f"invalid config ({where}): {msg}" + (f" [key: {key}]" if key else "") + hint
            + ". See configs/default.yaml for every key and its type."
        ) from None
    validate_config(cfg)
    return cfg


def _key_hint(full_key: str) -> str:
    """'Did you mean' and the valid keys of the section an unknown key was given in."""
    parts = full_key.split(".")
    node: Any = SweepConfig
    for part in parts[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            break
        node = fields[part].default_factory() if fields[part].default_factory is not dataclasses.MISSING else None
    if not dataclasses.is_dataclass(node):
        return ""
    valid = [f.name for f in dataclasses.fields(node)]
    close = difflib.get_close_matches(parts[-1], valid, n=1)
    return (f"; did you mean '{close[0]}'?" if close else "") + f" Valid keys here: {', '.join(valid)}"


def _writable(node: Any) -> Any:
    """Frozen dataclasses give read-only nodes; lift that to merge, then freeze again."""
    OmegaConf.set_readonly(node, False)
    if isinstance(node, DictConfig):
        for key in node:
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                _writable(child)
    return node


def _freeze(obj: Any) -> Any:
    """Lists → tuples, recursively, so a config is immutable and hashable."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _freeze(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    if isinstance(obj, list):
        return tuple(_freeze(x) for x in obj)
    return obj


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> SweepConfig:
    """Read a YAML config (or the defaults) and apply ``key=value`` overrides."""
    sources = []
    where = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist.")
        sources.append(_load_yaml(path))
        where = str(path)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value (e.g. train.steps=2000).")
    if overrides:
        sources.append(OmegaConf.from_dotlist(list(overrides)))
        where += " + overrides " + " ".join(overrides)
    return _merge(sources, where)


def _load_yaml(path: Path) -> Any:
    """Parse a YAML config safely (no Python tags); a syntax error or an unsafe tag is a ConfigError."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"config {path} is not a file; give a sweep YAML such as configs/default.yaml.")
    try:
        data = OmegaConf.load(path)  # a yaml.SafeLoader: Python tags are refused, never constructed
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"config {path} is not valid YAML{where}: {' '.join(str(problem).split())}. "
                          "Only plain YAML (mappings, lists, numbers, strings) is accepted; "
                          "see configs/default.yaml.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config {path} cannot be read ({type(err).__name__}); give a UTF-8 YAML file.") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"config {path}: {str(err).strip().splitlines()[0]}. See configs/default.yaml.") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"config {path} must be a YAML mapping of sections (grid:, sae:, optim:, train:, data:); "
                          f"got a {type(data).__name__}. See configs/default.yaml.")
    return data


def config_from_dict(d: dict[str, Any]) -> SweepConfig:
    """Build a validated config from a nested dict (e.g. a saved ``config.yaml``)."""
    return _merge([OmegaConf.create(d)], "dict")


def config_to_dict(cfg: SweepConfig) -> dict[str, Any]:
    """A plain nested dict (tuples as lists) of a config."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v
    return conv(cfg)


def config_to_yaml(cfg: SweepConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)))


def _choice(value: str, choices: Sequence[str], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {list(choices)}.")


def _non_finite(obj: Any, prefix: str = "") -> tuple[str, Any] | None:
    """The first float value (or list element) of a config that is NaN or ±Inf."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            bad = _non_finite(v, key + ".")
            if bad:
                return bad
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(x, float) and not math.isfinite(x):
                return key, v
    return None


def validate_config(cfg: SweepConfig) -> None:
    """Consistency checks beyond types; raise :class:`ConfigError` naming the key."""
    g, s, o, t = cfg.grid, cfg.sae, cfg.optim, cfg.train
    bad = _non_finite(cfg)
    if bad:
        key, value = bad
        raise ConfigError(f"{key}={value} is not a finite number; give a real value (see configs/default.yaml).")
    _choice(g.activation, ACTIVATIONS, "grid.activation")
    _choice(s.normalize, NORMALIZATIONS, "sae.normalize")
    _choice(s.b_pre_init, B_PRE_INITS, "sae.b_pre_init")
    _choice(t.matmul_dtype, MATMUL_DTYPES, "train.matmul_dtype")
    _choice(t.topk_path, TOPK_PATHS, "train.topk_path")
    if not g.latent_size:
        raise ConfigError("grid.latent_size is empty; give at least one latent size, e.g. grid.latent_size=[200].")
    if any(L <= 0 for L in g.latent_size):
        raise ConfigError(f"grid.latent_size must be positive; got {list(g.latent_size)}.")
    if len(set(g.latent_size)) != len(g.latent_size):
        raise ConfigError(f"grid.latent_size has duplicates: {list(g.latent_size)}.")
    if g.activation == "topk":
        if not g.k:
            raise ConfigError("grid.k is empty; give at least one k, e.g. grid.k=[20].")
        if any(k <= 0 for k in g.k):
            raise ConfigError(f"grid.k must be positive; got {list(g.k)}.")
        if len(set(g.k)) != len(g.k):
            raise ConfigError(f"grid.k has duplicates: {list(g.k)}.")
        too_big = [(k, L) for k in g.k for L in g.latent_size if k > L]
        if too_big:
            k, L = too_big[0]
            raise ConfigError(
                f"k={k} is larger than latent_size={L}: TopK cannot keep more latents than exist. "
                "Remove that k or that latent size from the grid."
            )
    else:
        if not g.l1_coef or any(c < 0 for c in g.l1_coef):
            raise ConfigError(f"grid.l1_coef must be a non-empty list of values >= 0; got {list(g.l1_coef)}.")
    if s.auxk_coef < 0:
        raise ConfigError(f"sae.auxk_coef must be >= 0; got {s.auxk_coef}.")
    if s.k_aux < 0 or s.dead_after_samples <= 0 or s.b_pre_init_samples <= 0:
        raise ConfigError("sae.k_aux must be >= 0, sae.dead_after_samples and sae.b_pre_init_samples > 0.")
    if o.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0; got {o.lr}.")
    for key, beta in (("optim.b1", o.b1), ("optim.b2", o.b2)):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"{key} must be in [0, 1); got {beta} (Adam's default is 0.9 / 0.999).")
    if o.eps <= 0:
        raise ConfigError(f"optim.eps must be > 0; got {o.eps}.")
    if o.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps must be >= 0; got {o.warmup_steps}.")
    if s.fire_threshold < 0:
        raise ConfigError(f"sae.fire_threshold must be >= 0; got {s.fire_threshold}.")
    if t.batch_size <= 0:
        raise ConfigError(f"train.batch_size must be > 0; got {t.batch_size}.")
    if t.steps <= 0 and t.epochs <= 0:
        raise ConfigError("set train.steps > 0 or train.epochs > 0.")
    if not 0.0 < t.val_fraction < 1.0:
        raise ConfigError(f"train.val_fraction must be in (0, 1): the metrics are computed on validation rows; "
                          f"got {t.val_fraction}.")
    if cfg.data.fit_rows <= 0:
        raise ConfigError(f"data.fit_rows must be > 0; got {cfg.data.fit_rows}.")
    if t.steps_per_call <= 0 or t.checkpoint_every <= 0 or t.keep_checkpoints <= 0:
        raise ConfigError("train.steps_per_call, train.checkpoint_every and train.keep_checkpoints must be > 0.")
