"""Sweep configuration: nested frozen dataclasses, mirrored by the YAML files in ``configs/``.

A config is read with :func:`load_config` (a YAML file + ``dotted.key=value`` overrides,
e.g. ``grid.k=[5,10] train.steps=2000``). Every field has one docstring (the string under
it); choices are ``Literal`` fields; each section checks its own values in
``__post_init__`` (so a config built in Python is checked too), raising a one-line
:class:`ConfigError` that names the key, the value and the fix. Lists become tuples: a
config is immutable and hashable.

Config files and overrides are plain YAML: anchors and aliases (``&a`` / ``*a``, which can
expand a few lines into billions of values) and nesting deeper than :data:`MAX_YAML_DEPTH`
are refused before anything is built, naming the file (or the override) and the line.

>>> cfg = load_config("configs/default.yaml", ["grid.k=[5,20]", "train.steps=4000"])
>>> cfg.train.num_steps(n_train=100_000)
4000
>>> SweepConfig(grid=GridConfig(k=[20], latent_size=[200])).grid.k
(20,)
"""
from __future__ import annotations

import dataclasses
import difflib
import io
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .core.kinds import TOPK, ActivationKind
from .errors import JsaeError

__all__ = ["ConfigError", "GridConfig", "SAEConfig", "OptimConfig", "TrainConfig", "DataConfig", "SweepConfig",
           "load_config", "config_from_dict", "config_to_dict", "config_to_yaml", "choices", "check_plain_yaml",
           "MAX_SEED", "MAX_YAML_DEPTH"]

#: the largest ``train.seed`` (the seeds of JAX and NumPy are 64-bit signed integers here)
MAX_SEED = 2**63 - 1
#: the deepest nesting of lists / mappings a config file or an override may have
MAX_YAML_DEPTH = 32

Normalization = Literal["none", "scale", "center_scale", "standardize"]
BPreInit = Literal["geometric_median", "mean", "zeros"]
MatmulDtype = Literal["float32", "bfloat16"]
TopKPath = Literal["auto", "sparse", "dense"]
LogBackend = Literal["tensorboard", "wandb"]


class ConfigError(JsaeError, ValueError):
    """An invalid sweep configuration; the message names the key and the fix."""


class _ShapeError(ConfigError):
    """An unknown key or a value of the wrong type (the message then says where it was given)."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def choices(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` field, e.g. ``choices(SAEConfig, "normalize")``."""
    return typing.get_args(_hints(cls)[name])


class _Section:
    """Checks shared by every section: finite numbers, Literal choices, lists as tuples."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, value := tuple(value))
            key = self.key(f.name)
            for x in value if isinstance(value, tuple) else (value,):
                if isinstance(x, float) and not math.isfinite(x):
                    raise ConfigError(f"{key}={value} is not a finite number; give a real value "
                                      "(see configs/default.yaml).")
            allowed = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is Literal else None
            if allowed and value not in allowed:
                raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}.")
        self.check()

    def key(self, name: str) -> str:
        return f"{self.section}.{name}" if self.section else name

    def check(self) -> None:
        """The section's own rules (ranges, consistency)."""


@dataclass(frozen=True)
class GridConfig(_Section):
    """The models of a sweep: every combination of ``k`` (or ``l1_coef``) × ``latent_size``."""

    section: ClassVar[str] = "grid"
    k: tuple[int, ...] = (5, 10, 15, 20, 25, 30, 35)
    """TopK's k of the models (the sparsity axis of a ``topk`` grid)."""
    latent_size: tuple[int, ...] = tuple(range(100, 1300, 100))
    """Latent sizes L of the models."""
    activation: ActivationKind = "topk"
    """``topk`` (the paper's) or ``relu_l1`` (then the sparsity axis is ``l1_coef``)."""
    l1_coef: tuple[float, ...] = (1e-3,)
    """L1 coefficients of a ``relu_l1`` grid."""

    def check(self) -> None:
        if not self.latent_size:
            raise ConfigError("grid.latent_size is empty; give at least one latent size, e.g. grid.latent_size=[200].")
        if any(L <= 0 for L in self.latent_size):
            raise ConfigError(f"grid.latent_size must be positive; got {list(self.latent_size)}.")
        if len(set(self.latent_size)) != len(self.latent_size):
            raise ConfigError(f"grid.latent_size has duplicates: {list(self.latent_size)}.")
        if self.activation == TOPK:
            if not self.k:
                raise ConfigError("grid.k is empty; give at least one k, e.g. grid.k=[20].")
            if any(k <= 0 for k in self.k):
                raise ConfigError(f"grid.k must be positive; got {list(self.k)}.")
            if len(set(self.k)) != len(self.k):
                raise ConfigError(f"grid.k has duplicates: {list(self.k)}.")
            too_big = [(k, L) for k in self.k for L in self.latent_size if k > L]
            if too_big:
                k, L = too_big[0]
                raise ConfigError(f"k={k} is larger than latent_size={L}: TopK cannot keep more latents than exist. "
                                  "Remove that k or that latent size from the grid.")
        elif not self.l1_coef or any(c < 0 for c in self.l1_coef):
            raise ConfigError(f"grid.l1_coef must be a non-empty list of values >= 0; got {list(self.l1_coef)}.")


@dataclass(frozen=True)
class SAEConfig(_Section):
    """Model and loss options shared by every model of the grid."""

    section: ClassVar[str] = "sae"
    auxk_coef: float = 1.0 / 32.0
    """Weight of the AuxK loss (dead latents reconstruct the residual); 0 turns it off."""
    k_aux: int = 0
    """Dead latents AuxK uses per example; 0 → dim // 2 (clipped to the latent size)."""
    dead_after_samples: int = 100_000
    """A latent is dead after this many training samples without firing."""
    fire_threshold: float = 1e-3
    """An activation above this counts as firing."""
    b_pre_init: BPreInit = "geometric_median"
    """How ``b_pre`` starts: the geometric median or mean of a data sample, or zeros."""
    b_pre_init_samples: int = 8192
    """Rows the ``b_pre`` initialisation looks at."""
    normalize: Normalization = "center_scale"
    """Input normalisation fitted on the training rows (:mod:`jsae.core.normalize`)."""

    def check(self) -> None:
        if self.auxk_coef < 0:
            raise ConfigError(f"sae.auxk_coef must be >= 0; got {self.auxk_coef}.")
        if self.k_aux < 0 or self.dead_after_samples <= 0 or self.b_pre_init_samples <= 0:
            raise ConfigError("sae.k_aux must be >= 0, sae.dead_after_samples and sae.b_pre_init_samples > 0.")
        if self.fire_threshold < 0:
            raise ConfigError(f"sae.fire_threshold must be >= 0; got {self.fire_threshold}.")


@dataclass(frozen=True)
class OptimConfig(_Section):
    """Adam, as in the OpenAI TopK recipe."""

    section: ClassVar[str] = "optim"
    lr: float = 5e-4
    """Learning rate (after the warm-up)."""
    b1: float = 0.9
    """Adam's β₁."""
    b2: float = 0.999
    """Adam's β₂."""
    eps: float = 6.25e-10
    """Adam's ε."""
    grad_clip: float = 0.0
    """Per-model global-norm gradient clipping; ≤ 0 disables it."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps."""

    def check(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0; got {self.lr}.")
        for key, beta in (("optim.b1", self.b1), ("optim.b2", self.b2)):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"{key} must be in [0, 1); got {beta} (Adam's default is 0.9 / 0.999).")
        if self.eps <= 0:
            raise ConfigError(f"optim.eps must be > 0; got {self.eps}.")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0; got {self.warmup_steps}.")


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Steps, batches, checkpoints and devices."""

    section: ClassVar[str] = "train"
    batch_size: int = 1024
    """Rows per training batch (every model sees the same batches)."""
    steps: int = 2000
    """Training steps; ≤ 0: ``epochs`` × rows / batch_size."""
    epochs: float = 0.0
    """Passes over the training rows, used when ``steps`` ≤ 0."""
    seed: int = 0
    """Seed of the initialisation, the validation split and the batches (0 … 2⁶³ − 1)."""
    val_fraction: float = 0.05
    """Share of the rows held out for the validation metrics."""
    steps_per_call: int = 50
    """Steps inside one compiled ``lax.scan`` per host call."""
    checkpoint_every: int = 500
    """Steps between checkpoints (and model-file writes)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk."""
    matmul_dtype: MatmulDtype = "float32"
    """Dtype of the encoder GEMM (``bfloat16`` on accelerators)."""
    topk_path: TopKPath = "auto"
    """How TopK groups train: sparse CPU kernels or dense GEMMs (:func:`jsae.training.grid.prefers_sparse`)."""
    shard_models: bool = True
    """Shard the model axis over all devices."""
    progress: bool = True
    """Show a progress bar."""
    log: tuple[LogBackend, ...] = ()
    """Live training curves (:mod:`jsae.training.logs`): ``tensorboard`` (``RUN/logs/<model>/``) and/or ``wandb``."""

    def check(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"train.batch_size must be > 0; got {self.batch_size}.")
        if self.steps <= 0 and self.epochs <= 0:
            raise ConfigError("set train.steps > 0 or train.epochs > 0.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"train.val_fraction must be in (0, 1): the metrics are computed on validation rows; "
                              f"got {self.val_fraction}.")
        if self.steps_per_call <= 0 or self.checkpoint_every <= 0 or self.keep_checkpoints <= 0:
            raise ConfigError("train.steps_per_call, train.checkpoint_every and train.keep_checkpoints must be > 0.")
        fix = "write e.g. train.log=[tensorboard] or train.log=[tensorboard,wandb] ([] for none)"
        if isinstance(self.log, str):
            raise ConfigError(f"train.log={self.log!r} is not a list; {fix}.")
        for value in self.log:
            if value not in typing.get_args(LogBackend):
                raise ConfigError(f"train.log has {value!r}, which is not one of {list(typing.get_args(LogBackend))}; "
                                  f"{fix}.")
        if len(set(self.log)) != len(self.log):
            raise ConfigError(f"train.log={list(self.log)} names a backend twice; {fix}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"train.seed={self.seed} is out of range; give a whole number from 0 to {MAX_SEED} "
                              "(2^63 - 1), e.g. train.seed=0.")

    def num_steps(self, n_train: int) -> int:
        """``steps``, or ``ceil(epochs · n_train / batch_size)`` when ``steps`` ≤ 0."""
        if self.steps > 0:
            return self.steps
        return max(1, math.ceil(self.epochs * n_train / self.batch_size))


@dataclass(frozen=True)
class DataConfig(_Section):
    """Where the training embeddings come from."""

    section: ClassVar[str] = "data"
    store: str = "data/synthetic"
    """A jsae embedding store (a relative path is relative to the working directory)."""
    splits: tuple[str, ...] = ()
    """If not empty, only rows whose ``split`` column is one of these values (validation is a share of them)."""
    max_rows: int | None = None
    """Use at most this many rows (a positive number); null: all (0, the old spelling of all, reads as null)."""
    stream: bool = False
    """Read each host call's batches from the store (stores larger than memory)."""
    fit_rows: int = 200_000
    """When streaming: random training rows that fit the normalisation and ``b_pre``."""

    def check(self) -> None:
        if self.fit_rows <= 0:
            raise ConfigError(f"data.fit_rows must be > 0; got {self.fit_rows}.")
        if self.max_rows is not None and self.max_rows < 0:
            raise ConfigError(f"data.max_rows={self.max_rows} is not a number of rows; give a positive whole number "
                              "(e.g. data.max_rows=100000) or null for all rows (data.max_rows=null).")
        if self.max_rows == 0:  # written by configs from before null: all rows
            object.__setattr__(self, "max_rows", None)


@dataclass(frozen=True)
class SweepConfig(_Section):
    """A whole sweep: grid, model, optimiser, training and data."""

    name: str = "sweep"
    """A name for the sweep (recorded with the run)."""
    grid: GridConfig = field(default_factory=GridConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)


# ------------------------------------------------------------------------------------------ reading


def _key_hint(cls: type, name: str) -> str:
    valid = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, valid, n=1)
    return (f"; did you mean '{close[0]}'?" if close else "") + f" Valid keys here: {', '.join(valid)}"


#: how a missing value (an ``X | None`` field) may be written
_NULL_WORDS = ("null", "none", "~")


def _optional(want: Any) -> Any:
    """``X`` when ``want`` is ``X | None`` (or ``Optional[X]``), else None."""
    if typing.get_origin(want) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(want) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(want)) == 2:
            return args[0]
    return None


def _scalar(value: Any, want: Any, key: str) -> Any:
    """``value`` as the scalar type ``want`` (int, float, bool, str, a Literal or ``X | None``), or a ConfigError."""
    if typing.get_origin(want) is Literal:
        return value  # checked by the section, with its choices in the message
    inner = _optional(want)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULL_WORDS):
            return None
        return _scalar(value, inner, key)
    if isinstance(value, str) and want in (int, float):  # "nan", "1e-3" given as text
        try:
            value = want(value)
        except ValueError:
            pass
    ok = ((want is bool and isinstance(value, bool))
          or (want is int and isinstance(value, int) and not isinstance(value, bool))
          or (want is float and isinstance(value, (int, float)) and not isinstance(value, bool))
          or (want is str and isinstance(value, (str, int, float)) and not isinstance(value, bool)))
    if not ok:
        raise _ShapeError(f"{key}={value!r} could not be converted to {getattr(want, '__name__', want)} "
                          f"[key: {key}]. See configs/default.yaml for every key and its type.")
    return want(value)


def _build(cls: type, data: Any, prefix: str) -> Any:
    """A ``cls`` instance from nested plain data: unknown keys and wrong types are ConfigErrors."""
    if not isinstance(data, dict):
        raise _ShapeError(f"{prefix.rstrip('.') or 'the config'} must be a mapping of keys; got {data!r}. "
                          "See configs/default.yaml.")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise _ShapeError(f"invalid config: key '{key}' is not in the config [key: {key}]"
                              f"{_key_hint(cls, str(name))}. See configs/default.yaml for every key and its type.")
        want = hints[name]
        if dataclasses.is_dataclass(want):
            kwargs[name] = _build(want, value, key + ".")
        elif typing.get_origin(want) is tuple:
            item = typing.get_args(want)[0]
            if not isinstance(value, (list, tuple)):
                raise _ShapeError(f"{key}={value!r} could not be converted to a list [key: {key}]; write it as "
                                  f"{key}=[...]. See configs/default.yaml.")
            kwargs[name] = tuple(_scalar(v, item, key) for v in value)
        else:
            kwargs[name] = _scalar(value, want, key)
    return cls(**kwargs)


def _merge(sources: Sequence[Any], where: str) -> SweepConfig:
    try:
        merged = OmegaConf.merge(*sources) if sources else OmegaConf.create({})
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config ({where}): {str(err).strip().splitlines()[0]}. "
                          "See configs/default.yaml for every key and its type.") from None
    try:
        return _build(SweepConfig, data, "")
    except _ShapeError as err:
        raise ConfigError(f"{err} ({where})") from None


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
    if overrides:
        sources += [_parse_override(str(o)) for o in overrides]
        where += " + overrides " + " ".join(overrides)
    return _merge(sources, where)


#: a dotted key of an override: ``train.steps``, ``grid.k``
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _parse_override(override: str) -> Any:
    """One ``KEY=VALUE`` override as a config fragment; a missing ``=``, a bad key or a value that
    is not plain YAML is a one-line ConfigError naming this override (and the column)."""
    import yaml

    key, eq, value = override.partition("=")
    if not eq:
        raise ConfigError(f"override {override!r} is not KEY=VALUE; give a value, e.g. {override}=VALUE "
                          "(train.steps=2000, grid.k=[5,10]).")
    if not _KEY_RE.match(key.strip()):
        raise ConfigError(f"override {override!r}: {key.strip()!r} is not a config key; write KEY=VALUE with a "
                          "dotted key, e.g. train.steps=2000 (see configs/default.yaml).")
    try:
        check_plain_yaml(value, f"override {override!r}")
        return OmegaConf.from_dotlist([f"{key.strip()}={value}"])
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        column = f" at column {len(key) + 2 + mark.column}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or type(err).__name__).split())
        raise ConfigError(f"override {override!r} is not KEY=VALUE with a YAML value{column}: {problem}; write "
                          "e.g. grid.k=[5,10] or train.steps=2000 (quote text with spaces).") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"override {override!r} cannot be read: {str(err).strip().splitlines()[0]}; write "
                          "KEY=VALUE, e.g. grid.k=[5,10] or train.steps=2000.") from None


def check_plain_yaml(text: str, what: str) -> None:
    """Refuse YAML anchors / aliases and nesting deeper than :data:`MAX_YAML_DEPTH` in ``text``.

    Reads the parser's events only (linear in the text: nothing is built or expanded), so a
    "billion laughs" file — nine lines of ``b: &b [*a, *a, …]`` that expand to 10⁹ values — is
    refused at once instead of hanging the loader. A syntax error is left to the loader's
    message (a ``yaml.YAMLError``). Raises a one-line ConfigError naming ``what`` and the line.
    """
    import yaml

    depth = 0
    for event in yaml.parse(io.StringIO(text), Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else "?"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = ("*" if isinstance(event, yaml.AliasEvent) else "&") + str(event.anchor)
            raise ConfigError(f"{what} uses a YAML anchor or alias ({mark}) at line {line}; anchors and aliases are "
                              "not accepted in sweep configs (they can expand to billions of values): write the "
                              "values out in full.")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{what} nests lists / mappings more than {MAX_YAML_DEPTH} deep at line {line}; "
                                  "a sweep config is a few flat sections (see configs/default.yaml).")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _load_yaml(path: Path) -> Any:
    """Parse a YAML config safely (no Python tags, no anchors or aliases); a syntax error, an
    unsafe tag or an alias is a one-line ConfigError naming the file and the line."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"config {path} is not a file; give a sweep YAML such as configs/default.yaml.")
    try:
        text = path.read_text(encoding="utf-8")
        check_plain_yaml(text, f"config {path}")
        data = OmegaConf.load(io.StringIO(text))  # a yaml.SafeLoader: Python tags are refused, never constructed
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
    """Build a checked config from a nested dict (e.g. a saved ``config.yaml``)."""
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
