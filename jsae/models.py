"""Trained SAEs for analysis: one model (:class:`SAEModel`) or any selection (:class:`ModelBatch`).

Both take and return embeddings in the original (raw) space ``[..., M]``; the
normalisation fitted at training time (:class:`~jsae.core.normalize.Normalizer`,
``x_n = (x − μ) / s``) is applied inside. A batch is what every analysis takes:

>>> batch = sweep.select(k=20)               # the k = 20 models of every latent size
>>> codes = batch.encode(x)                   # one [B, L_i] array per model, in batch order
>>> recon = batch.reconstruct(x)              # [n, B, M], raw space
>>> for model in batch: model.spec.name       # single models
>>> batch.raw_directions()                    # one [L_i, M] array of unit raw-space directions per model

Models of one latent size and activation kind are encoded together (stacked
parameters, one ``vmap``); how they are stacked is private to this module — the
analyses see models in batch order, never groups or padding.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .core import sae
from .core.activation import TopK, stack_activations
from .core.normalize import Normalizer
from .core.spec import ModelSpec
from .errors import BadValueError, NotFoundError

__all__ = ["SAEModel", "ModelBatch", "RunInfo", "UnfinishedRunWarning", "as_batch"]


class UnfinishedRunWarning(UserWarning):
    """An analysis ran on a sweep that has not reached its last training step."""


@dataclass(frozen=True)
class RunInfo:
    """Where models came from: the run, its training step, and its training data.

    ``step``/``total_steps``: how far the run got (``None``: unknown, e.g. models built
    in memory). ``data_source``: the store (or ``"array"``) the models were trained on.
    """

    run_dir: Path | None = None
    step: int | None = None
    total_steps: int | None = None
    data_source: str | None = None

    @property
    def complete(self) -> bool:
        """Whether the models are of the run's last step (unknown: assumed so)."""
        return self.total_steps is None or self.step is None or self.step >= self.total_steps


@dataclass(frozen=True)
class SAEModel:
    """One trained SAE with its normalisation; raw embeddings in and out.

    Attributes: ``spec`` (latent size and activation), ``params`` (one model's
    :class:`~jsae.core.sae.SAEParams`, normalised space), ``normalizer``.
    """

    spec: ModelSpec
    params: sae.SAEParams
    normalizer: Normalizer

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def k(self) -> int:
        return self.spec.k

    @property
    def latent_size(self) -> int:
        return self.spec.latent_size

    @property
    def dim(self) -> int:
        return int(np.shape(self.params.W_enc)[0])

    @property
    def decoder_directions(self) -> np.ndarray:
        """``[L, M]`` unit decoder directions ``d_ℓ`` (normalised space)."""
        return np.asarray(self.params.W_dec)

    def raw_decoder(self) -> np.ndarray:
        """``[L, M]`` raw-space effect of one unit of each latent: ``d_ℓ ⊙ s``."""
        return np.asarray(self.params.W_dec, np.float32) * self.normalizer.scale.astype(np.float32)

    def raw_directions(self) -> np.ndarray:
        """``[L, M]`` unit raw-space directions ``(d_ℓ ⊙ s) / ‖d_ℓ ⊙ s‖`` (float64)."""
        return _unit(np.asarray(self.params.W_dec, np.float64) * np.asarray(self.normalizer.scale))

    def pre_activations(self, x: np.ndarray) -> np.ndarray:
        """``(x_n − b_pre) W_enc + b_enc`` before the activation: ``[..., M] → [..., L]``."""
        return np.asarray(sae.pre_activation(self.params, jnp.asarray(self.normalizer.apply(_f32(x)))))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Latent codes ``v [..., L]`` of raw embeddings ``x [..., M]``."""
        return np.asarray(_encode_one(self.params, jnp.asarray(self.normalizer.apply(_f32(x))),
                                      self.spec.activation))

    def decode(self, v: np.ndarray) -> np.ndarray:
        """Raw embeddings ``[..., M]`` from codes ``v [..., L]`` (any values, steered too)."""
        return np.asarray(self.normalizer.invert(sae.decode(self.params, jnp.asarray(v, jnp.float32))))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(encode(x))``: raw ``[..., M]`` → raw ``[..., M]``."""
        return self.decode(self.encode(x))


def _f32(x) -> np.ndarray:
    return np.asarray(x, np.float32)


def _unit(d: np.ndarray) -> np.ndarray:
    return d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)


@partial(jax.jit, static_argnums=(2,))
def _encode_one(p: sae.SAEParams, xn: jax.Array, act) -> jax.Array:
    return sae.encode(p, xn, act)


@partial(jax.jit, static_argnums=(3,))
def _encode_stack(params: sae.SAEParams, xn: jax.Array, acts, k_max: int | None) -> jax.Array:
    return jax.vmap(lambda p, a: sae.encode(p, xn, a, k_max))(params, acts)


@jax.jit
def _pre_stack(params: sae.SAEParams, xn: jax.Array) -> jax.Array:
    return jax.vmap(lambda p: sae.pre_activation(p, xn))(params)


@dataclass(frozen=True)
class _Stack:
    """Models of one latent size and activation kind, stacked (private)."""

    members: tuple[int, ...]  # positions in the batch
    params: sae.SAEParams  # leaves [n, ...]
    acts: Any  # stacked activation, leaves [n]
    k_max: int | None


class ModelBatch:
    """Any selection of trained SAEs sharing one normalisation; raw embeddings in and out.

    Args:
      specs: ``n`` model specs (batch order). params: ``n`` single-model
        :class:`~jsae.core.sae.SAEParams` (numpy or jax arrays, ``W_enc [M, L_i]``).
      normalizer: the normalisation all of them were trained with.
      info: where they came from (:class:`RunInfo`).

    Per-model outputs come as lists in batch order (latent sizes may differ);
    outputs in the embedding space are stacked ``[n, ..., M]``.
    """

    def __init__(self, specs: Sequence[ModelSpec], params: Sequence[sae.SAEParams], normalizer: Normalizer,
                 info: RunInfo | None = None):
        specs, params = tuple(specs), tuple(params)
        if len(specs) != len(params):
            raise BadValueError(f"{len(specs)} specs but {len(params)} parameter sets; give one per model.")
        if not specs:
            raise NotFoundError("a ModelBatch needs at least one model.")
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise BadValueError(f"models {dup} appear twice in the batch; give each model once.")
        dims = {int(np.shape(p.W_enc)[0]) for p in params}
        if len(dims) != 1:
            raise BadValueError(f"models of different embedding dimensions {sorted(dims)} cannot share a batch.")
        for s, p in zip(specs, params):
            if int(np.shape(p.W_enc)[-1]) != s.latent_size:
                raise BadValueError(f"model {s.name}: W_enc has {np.shape(p.W_enc)[-1]} latents, the spec says "
                                    f"{s.latent_size}.")
        self.specs = specs
        self.params = params
        self.normalizer = normalizer
        self.info = info or RunInfo()
        self._by_name = {n: i for i, n in enumerate(names)}

    # ------------------------------------------------------------ selection
    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def dim(self) -> int:
        return int(np.shape(self.params[0].W_enc)[0])

    @property
    def latent_sizes(self) -> list[int]:
        """The distinct latent sizes, ascending."""
        return sorted({s.latent_size for s in self.specs})

    @property
    def ks(self) -> list[int]:
        """The distinct k of the TopK models, ascending."""
        return sorted({s.k for s in self.specs if s.kind == TopK.kind})

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[SAEModel]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key: int | str) -> SAEModel:
        """A model by batch position or by name (``"k20_L200"``)."""
        i = self.index(key) if isinstance(key, str) else int(key)
        return SAEModel(self.specs[i], self.params[i], self.normalizer)

    def __repr__(self) -> str:
        where = f" from {self.info.run_dir}" if self.info.run_dir else ""
        return f"ModelBatch({len(self)} models{where}: {', '.join(self.names[:6])}{', …' if len(self) > 6 else ''})"

    def index(self, name: str) -> int:
        """Batch position of the model called ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFoundError(f"no model {name!r} in {self._where()}; models: {', '.join(self.names)}") from None

    def _where(self) -> str:
        return str(self.info.run_dir) if self.info.run_dir else "this batch"

    def select(self, *, k: int | Sequence[int] | None = None, latent_size: int | Sequence[int] | None = None,
               l1_coef: float | Sequence[float] | None = None, names: Sequence[str] | None = None) -> "ModelBatch":
        """The models matching every given criterion (each an int/float, a list, or ``None`` for any),
        in batch order. Raises :class:`~jsae.errors.NotFoundError` naming the models there are."""
        def ok(value, wanted, close=False):
            if wanted is None:
                return True
            wanted = [wanted] if np.isscalar(wanted) else list(wanted)
            return any(np.isclose(value, w) if close else value == w for w in wanted)

        if names is not None:
            for n in names:
                self.index(n)
        keep = [i for i, s in enumerate(self.specs)
                if ok(s.k, k) and ok(s.latent_size, latent_size) and ok(s.l1_coef, l1_coef, close=True)
                and (names is None or s.name in names)]
        if not keep:
            asked = ", ".join(f"{n}={v}" for n, v in (("k", k), ("latent_size", latent_size), ("l1_coef", l1_coef),
                                                      ("names", names)) if v is not None)
            raise NotFoundError(f"no model with {asked} in {self._where()}; models: {', '.join(self.names)}")
        return self._subset(keep)

    def _subset(self, keep: Sequence[int]) -> "ModelBatch":
        return ModelBatch([self.specs[i] for i in keep], [self.params[i] for i in keep], self.normalizer, self.info)

    def model(self, k: int | None = None, latent_size: int | None = None, *, l1_coef: float | None = None) -> SAEModel:
        """The one model with this ``k`` (or ``l1_coef``) and ``latent_size``."""
        if latent_size is None or (k is None and l1_coef is None):
            raise TypeError("give latent_size and k (or l1_coef), e.g. sweep.model(k=20, latent_size=200)")
        return self[self.select(k=k, latent_size=latent_size, l1_coef=l1_coef).specs[0].name]

    def models(self) -> list[SAEModel]:
        """Every model, in batch order."""
        return list(self)

    # ------------------------------------------------------------ run state
    @property
    def run_dir(self) -> Path | None:
        return self.info.run_dir

    @property
    def step(self) -> int | None:
        return self.info.step

    @property
    def total_steps(self) -> int | None:
        return self.info.total_steps

    @property
    def complete(self) -> bool:
        return self.info.complete

    def warn_if_unfinished(self, what: str = "analysis") -> bool:
        """Warn (:class:`UnfinishedRunWarning`) ``run X is unfinished: step S of T`` when the
        models are not of the run's last step; returns whether it warned."""
        if self.complete:
            return False
        warnings.warn(f"run {self.run_dir} is unfinished: step {self.step} of {self.total_steps}; the {what} "
                      "uses partly trained models (re-run the same `jsae sweep` command to finish it).",
                      UnfinishedRunWarning, stacklevel=3)
        return True

    # ------------------------------------------------------------ the math
    @cached_property
    def _stacks(self) -> tuple[_Stack, ...]:
        buckets: dict[tuple[int, str], list[int]] = {}
        for i, s in enumerate(self.specs):
            buckets.setdefault((s.latent_size, s.kind), []).append(i)
        stacks = []
        for (L, kind), members in sorted(buckets.items()):
            params = jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *[self.params[i] for i in members])
            acts = stack_activations([self.specs[i].activation for i in members])
            k_max = max(self.specs[i].k for i in members) if kind == TopK.kind else None
            stacks.append(_Stack(tuple(members), params, acts, k_max))
        return tuple(stacks)

    def _normalised(self, x: np.ndarray) -> jax.Array:
        x = _f32(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise BadValueError(f"expected embeddings [B, {self.dim}], got shape {x.shape}.")
        return jnp.asarray(self.normalizer.apply(x))

    def _per_model(self, fn, x: np.ndarray, block_rows: int) -> list[np.ndarray]:
        """``fn(stack, xn_block) → [n_stack, b, L]`` for every stack, rows in blocks, in batch order."""
        xn = self._normalised(x)
        out: list[np.ndarray | None] = [None] * len(self)
        for st in self._stacks:
            parts = [np.asarray(fn(st, xn[i:i + block_rows])) for i in range(0, max(len(xn), 1), block_rows)]
            codes = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
            for j, m in enumerate(st.members):
                out[m] = codes[j]
        return out  # type: ignore[return-value]

    def encode(self, x: np.ndarray, *, block_rows: int = 8192) -> list[np.ndarray]:
        """Codes of raw embeddings ``x [B, M]``: one ``[B, L_i]`` float32 array per model."""
        return self._per_model(lambda st, xb: _encode_stack(st.params, xb, st.acts, st.k_max), x, block_rows)

    def pre_activations(self, x: np.ndarray, *, block_rows: int = 8192) -> list[np.ndarray]:
        """Pre-activations ``(x_n − b_pre) W_enc + b_enc``: one ``[B, L_i]`` array per model."""
        return self._per_model(lambda st, xb: _pre_stack(st.params, xb), x, block_rows)

    def decode(self, codes: Sequence[np.ndarray]) -> np.ndarray:
        """Raw embeddings ``[n, B, M]`` from one code array ``[B, L_i]`` per model (any values)."""
        if len(codes) != len(self):
            raise BadValueError(f"decode takes one code array per model: got {len(codes)} for {len(self)} models.")
        out = [np.asarray(v, np.float32) @ np.asarray(p.W_dec, np.float32) + np.asarray(p.b_pre, np.float32)
               for v, p in zip(codes, self.params)]
        return np.asarray(self.normalizer.invert(np.stack(out)))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(encode(x))``: raw ``x [B, M]`` → ``[n, B, M]``."""
        return self.decode(self.encode(x))

    def decoder_directions(self) -> list[np.ndarray]:
        """Unit decoder directions ``d_ℓ`` (normalised space): one ``[L_i, M]`` array per model."""
        return [np.asarray(p.W_dec) for p in self.params]

    def raw_decoders(self) -> list[np.ndarray]:
        """Raw-space effect of one unit of each latent, ``d_ℓ ⊙ s``: one ``[L_i, M]`` array per model."""
        return [m.raw_decoder() for m in self]

    def raw_directions(self) -> list[np.ndarray]:
        """Unit raw-space directions ``(d_ℓ ⊙ s) / ‖d_ℓ ⊙ s‖`` (float64): one ``[L_i, M]`` per model."""
        return [m.raw_directions() for m in self]

    def with_params(self, params: Sequence[sae.SAEParams]) -> "ModelBatch":
        """The same models with other parameters (e.g. perturbed ones in a test)."""
        return ModelBatch(self.specs, params, self.normalizer, self.info)


def as_batch(models: "ModelBatch | SAEModel") -> ModelBatch:
    """A :class:`ModelBatch` of a batch (itself, a Sweep included) or of one :class:`SAEModel`."""
    if isinstance(models, ModelBatch):
        return models
    if isinstance(models, SAEModel):
        return ModelBatch([models.spec], [models.params], models.normalizer)
    raise BadValueError(f"expected a ModelBatch, a Sweep or an SAEModel, got {type(models).__name__}.")
