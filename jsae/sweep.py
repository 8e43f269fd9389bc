"""A trained sweep loaded for analysis: :func:`load_sweep` → :class:`Sweep`.

Every public function takes and returns embeddings in the original (raw) space;
the normalisation fitted at training time is applied inside.

>>> sweep = load_sweep("runs/paper")
>>> m = sweep.model(k=20, latent_size=200)
>>> v = m.encode(x)            # [B, 200] sparse codes
>>> x_hat = m.reconstruct(x)   # [B, 192] raw space
>>> codes = sweep.encode_all(x)  # one [n_models_in_group, B, L] array per latent size
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import sae
from .checkpoint import restore_checkpoint
from .config import SweepConfig, load_config
from .errors import MissingPathError, NotFoundError
from .grid import GridTrainer, GroupSpec, ModelSpec, make_groups
from .normalize import Normalizer

__all__ = ["SAEModel", "Sweep", "load_sweep", "UnfinishedRunWarning"]


class UnfinishedRunWarning(UserWarning):
    """An analysis ran on a sweep that has not reached its last training step."""


@dataclass(frozen=True)
class SAEModel:
    """One model of a sweep, with its normalisation; raw embeddings in and out."""

    spec: ModelSpec
    params: sae.SAEParams
    normalizer: Normalizer

    @property
    def k(self) -> int:
        return self.spec.k

    @property
    def latent_size(self) -> int:
        return self.spec.latent_size

    @property
    def decoder_directions(self) -> np.ndarray:
        """``[L, M]`` unit decoder directions ``d_ℓ`` (normalised space)."""
        return np.asarray(self.params.W_dec)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Latent codes ``v [..., L]`` of raw embeddings ``x [..., M]``."""
        return np.asarray(_encode(self.params, jnp.asarray(self.normalizer.apply(np.asarray(x, np.float32))),
                                  self.spec.k, self.spec.activation))

    def pre_activations(self, x: np.ndarray) -> np.ndarray:
        """``(x_n − b_pre) W_enc + b_enc`` before the activation, ``[..., L]``."""
        return np.asarray(sae.pre_activation(self.params, jnp.asarray(self.normalizer.apply(np.asarray(x, np.float32)))))

    def decode(self, v: np.ndarray) -> np.ndarray:
        """Raw embeddings ``[..., M]`` from latent codes ``v [..., L]`` (any values, steered too)."""
        return np.asarray(self.normalizer.invert(sae.decode(self.params, jnp.asarray(v, jnp.float32))))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``decode(encode(x))``: raw ``[..., M]`` → raw ``[..., M]``."""
        return self.decode(self.encode(x))


@partial(jax.jit, static_argnums=(2, 3))
def _encode(p: sae.SAEParams, xn: jax.Array, k: int, activation: str) -> jax.Array:
    return sae.encode(p, xn, k, k, activation)


@partial(jax.jit, static_argnums=(3, 4))
def _encode_group(params: sae.SAEParams, xn: jax.Array, sparsity: jax.Array, k_max: int, activation: str):
    return jax.vmap(lambda p, s: sae.encode(p, xn, s, k_max, activation))(params, sparsity)


@dataclass
class Sweep:
    """All models of a trained sweep, stacked by latent-size group.

    Attributes:
      run_dir: where the run lives. config: its resolved config.
      groups: the latent-size groups; ``group_params[i]`` has a leading model axis.
      normalizer: the normalisation fitted on the training data.
      metrics: per-model validation records (``metrics.json``), in spec order;
        empty when the run's metrics are not of the loaded step.
      step: the training step of the loaded checkpoint. total_steps: the step the
        run trains to. complete: ``step >= total_steps`` (an unfinished run was
        killed or stopped with ``stop_after``; the same ``jsae sweep`` command
        continues it). Analyses call :meth:`warn_if_unfinished`.
    """

    run_dir: Path
    config: SweepConfig
    groups: tuple[GroupSpec, ...]
    group_params: tuple[sae.SAEParams, ...]
    normalizer: Normalizer
    metrics: list[dict[str, Any]]
    step: int
    meta: dict[str, Any]
    total_steps: int | None = None

    @property
    def complete(self) -> bool:
        """Whether the loaded checkpoint is the run's last step (unknown total: assumed so)."""
        return self.total_steps is None or self.step >= self.total_steps

    def warn_if_unfinished(self, what: str = "analysis") -> bool:
        """Warn (:class:`UnfinishedRunWarning`) ``run X is unfinished: step S of T`` when
        the sweep is not complete; returns whether it warned."""
        if self.complete:
            return False
        warnings.warn(f"run {self.run_dir} is unfinished: step {self.step} of {self.total_steps}; the {what} "
                      "uses partly trained models (re-run the same `jsae sweep` command to finish it).",
                      UnfinishedRunWarning, stacklevel=3)
        return True

    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        return tuple(m for g in self.groups for m in g.models)

    def __len__(self) -> int:
        return len(self.specs)

    def _locate(self, k: int | None, latent_size: int, l1_coef: float | None = None) -> tuple[int, int]:
        for gi, g in enumerate(self.groups):
            if g.latent_size != latent_size:
                continue
            for mi, m in enumerate(g.models):
                if (k is not None and m.k == k) or (l1_coef is not None and np.isclose(m.l1_coef, l1_coef)):
                    return gi, mi
        have = ", ".join(m.name for m in self.specs)
        raise NotFoundError(f"no model k={k} latent_size={latent_size} in {self.run_dir}; models: {have}; "
                            "give one of these (sweep.model(k=K, latent_size=L)).")

    def model(self, k: int | None = None, latent_size: int | None = None, *, l1_coef: float | None = None) -> SAEModel:
        """The model with this ``k`` (or ``l1_coef``) and ``latent_size``."""
        if latent_size is None or (k is None and l1_coef is None):
            raise TypeError("give latent_size and k (or l1_coef), e.g. sweep.model(k=20, latent_size=200)")
        gi, mi = self._locate(k, latent_size, l1_coef)
        params = jax.tree.map(lambda a: a[mi], self.group_params[gi])
        return SAEModel(self.groups[gi].models[mi], params, self.normalizer)

    def models(self) -> list[SAEModel]:
        """Every model, in spec order (grouped by latent size, then k)."""
        return [self.model(m.k if m.activation == "topk" else None, m.latent_size,
                           l1_coef=m.l1_coef if m.activation != "topk" else None) for m in self.specs]

    def encode_group(self, index: int, x: np.ndarray) -> np.ndarray:
        """Codes of every model of group ``index``: ``[n_models_in_group, B, L]``."""
        g, p = self.groups[index], self.group_params[index]
        xn = jnp.asarray(self.normalizer.apply(np.asarray(x, np.float32)))
        k_max = g.k_max if g.activation == "topk" else 0
        return np.asarray(_encode_group(p, xn, jnp.asarray(g.sparsity()), k_max, g.activation))

    def encode_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Codes of every model: one ``[n_models_in_group, B, L]`` array per group."""
        return [self.encode_group(i, x) for i in range(len(self.groups))]

    def reconstruct_all(self, x: np.ndarray) -> np.ndarray:
        """Raw reconstructions by every model: ``[n_models, B, M]`` in spec order."""
        recs = []
        for codes, p in zip(self.encode_all(x), self.group_params):
            recs.append(np.asarray(jax.vmap(sae.decode)(p, jnp.asarray(codes))))
        return np.asarray(self.normalizer.invert(np.concatenate(recs, axis=0)))

    def metric(self, key: str) -> np.ndarray:
        """One metric for every model, in spec order."""
        return np.array([r[key] for r in self.metrics])


def load_sweep(run_dir: str | Path, step: int | None = None) -> Sweep:
    """Restore a sweep's newest (or given) checkpoint on the devices present now.

    The checkpoint's checksums are verified: a newest (or given) checkpoint that
    fails them raises :class:`~jsae.checkpoint.CheckpointError` naming the step —
    there is no silent fall-back to an older one. Re-running the sweep command
    moves the bad step aside and retrains it from the newest good checkpoint;
    ``load_sweep(run, step=S)`` loads an older good step explicitly.
    ``Sweep.step``/``total_steps``/``complete`` say how far the run got.

    A run directory without ``checkpoints/``, ``config.yaml`` or ``sweep.json`` raises
    :class:`~jsae.errors.MissingPathError` (also a ``FileNotFoundError``); a damaged
    ``config.yaml`` a :class:`~jsae.config.ConfigError`.
    """
    run_dir = Path(run_dir)
    info_path = run_dir / "sweep.json"
    if not (run_dir / "checkpoints").exists():
        raise MissingPathError(f"{run_dir}: no checkpoints/ folder; give a `jsae sweep` run directory "
                               "(one that reached a checkpoint).")
    if not (run_dir / "config.yaml").is_file():
        raise MissingPathError(f"{run_dir}: config.yaml is missing; give a `jsae sweep` run directory, or restore "
                               "its config.yaml from a copy of the run.")
    cfg = load_config(run_dir / "config.yaml")  # safe YAML; a damaged file is a one-line ConfigError
    groups = make_groups(cfg.grid)
    # dim from the saved meta; the abstract target needs it before restoring.
    info = json.loads(info_path.read_text()) if info_path.exists() else None
    if info is None:
        raise MissingPathError(f"{run_dir}: sweep.json is missing (the run never reached a checkpoint); re-run "
                               "the `jsae sweep` command that made it.")
    trainer = GridTrainer(groups, info["dim"], cfg.sae, cfg.optim)
    state, meta, got = restore_checkpoint(run_dir, trainer.abstract_state(), step)
    metrics = info.get("metrics", []) if info.get("step") == got else []
    total = meta.get("total_steps", info.get("total_steps"))
    if total is None and (meta.get("data") or {}).get("n_train"):
        from .train import num_steps

        total = num_steps(cfg, int(meta["data"]["n_train"]))
    return Sweep(run_dir=run_dir, config=cfg, groups=groups, group_params=tuple(g.params for g in state.groups),
                 normalizer=Normalizer.from_dict(meta["normalizer"]), metrics=metrics, step=got, meta=meta,
                 total_steps=None if total is None else int(total))

