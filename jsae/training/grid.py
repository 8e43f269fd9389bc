"""The grid: every model of a sweep in one stacked state, trained by one jitted step.

Models are grouped by latent size ``L`` (and activation). Inside a group the
parameters carry a leading model axis ``n`` and the step is a ``vmap`` over it:
TopK runs ``top_k`` at the group's largest k and masks ranks ``≥ k`` per model,
so each model computes exactly its own TopK_k. Groups are unrolled inside the
same jitted function, so one host call trains the whole grid. The loss of the
grid is the sum of the models' losses: each model's gradient is its own, and
its Adam state, dead-latent counters and batches are its own too — a grid
member trains exactly as it would alone.

Each TopK group trains on one of two paths that compute the same loss and
gradients (:func:`prefers_sparse`, :func:`jsae.core.loss.topk_loss`): dense (codes
``[B, L]``, decoder and backward as GEMMs) or sparse (after the encoder GEMM only the
k active latents of a row are touched, through the CPU kernels of :mod:`jsae.kernels`).

The model axis can be sharded over devices (mesh axis ``"model"``); groups are
padded to a multiple of the device count with zero-weight copies that are
dropped before anything is saved. With a mesh, each group's step and validation
sums run under ``shard_map``: every device computes only the models it holds (the
CPU kernels are custom calls, which XLA's partitioner would otherwise run on the
whole gathered group on every device), and no model's step needs another's.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .. import kernels
from ..cluster import is_multiprocess, to_global, to_host
from ..config import GridConfig, OptimConfig, SAEConfig
from ..core import loss, sae
from ..core.activation import Activation, ReluL1, TopK, leading, stack_activations
from ..core.spec import ModelSpec

__all__ = [
    "GroupSpec",
    "GroupState",
    "GridState",
    "make_groups",
    "make_optimizer",
    "prefers_sparse",
    "GridTrainer",
    "make_mesh",
]

_SINCE_FIRED_CAP = 2**30


@dataclass(frozen=True)
class GroupSpec:
    """Models sharing one latent size and activation kind: one vmapped stack."""

    latent_size: int
    kind: str
    models: tuple[ModelSpec, ...]

    @property
    def size(self) -> int:
        return len(self.models)

    @property
    def k_max(self) -> int:
        """The largest k of the group (``top_k``'s static size; 0 for ReLU+L1)."""
        return max(m.k for m in self.models)

    def activations(self) -> Activation:
        """The models' activations stacked: ``TopK(k [n] int32)`` or ``ReluL1(coef [n] float32)``."""
        return stack_activations([m.activation for m in self.models])


def make_groups(grid: GridConfig) -> tuple[GroupSpec, ...]:
    """Group the grid's models by latent size; models sorted by k (or l1_coef)."""
    groups = []
    for L in sorted(grid.latent_size):
        if grid.activation == TopK.kind:
            models = tuple(ModelSpec(L, TopK(int(k))) for k in sorted(grid.k))
        else:
            models = tuple(ModelSpec(L, ReluL1(float(c))) for c in sorted(grid.l1_coef))
        groups.append(GroupSpec(L, grid.activation, models))
    return tuple(groups)


class GroupState(struct.PyTreeNode):
    """Stacked state of one group; every leaf has a leading model axis ``[n, ...]``."""

    params: sae.SAEParams
    opt_state: Any
    since_fired: jax.Array  # [n, L] int32: training samples since the latent last fired


class GridState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar
    groups: tuple[GroupState, ...]


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """Adam (β₁, β₂, ε) with optional warm-up and per-model global-norm clipping."""
    lr = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    return optax.chain(*parts)


# Measured cost rule (benchmarks/RESULTS.md, "sparse vs dense per group"): the sparse
# path does ~4·B·k·M scattered multiply-adds where the dense one does 4 GEMMs of
# B·L·M, at a few times the GEMM's cost per multiply-add; it wins while k_max / L
# stays below this ratio.
SPARSE_MAX_K_OVER_L = 0.25


def prefers_sparse(group: GroupSpec, topk_path: str = "auto") -> bool:
    """Whether ``group`` trains on the sparse TopK path (:mod:`jsae.core.sparse`).

    ``topk_path``: ``"sparse"`` / ``"dense"`` force a path (ReLU+L1 groups are always
    dense); ``"auto"`` takes the sparse path on a CPU with the kernels of
    :mod:`jsae.kernels` built, when ``k_max / L ≤ SPARSE_MAX_K_OVER_L``.
    """
    if group.kind != TopK.kind or topk_path == "dense":
        return False
    if topk_path == "sparse":
        return True
    return kernels.on_cpu() and kernels.available() and group.k_max <= SPARSE_MAX_K_OVER_L * group.latent_size


def _model_key(key: jax.Array, spec: ModelSpec) -> jax.Array:
    """A model's init key depends only on (seed, its spec), never on its grid position."""
    return jax.random.fold_in(key, zlib.crc32(spec.name.encode()) & 0x7FFFFFFF)


class GridTrainer:
    """Static description of a grid plus its pure, jittable step functions.

    Args:
      groups: from :func:`make_groups`.
      dim: embedding dimension ``M``.
      sae_cfg, optim_cfg: model/loss and optimiser options.
      mesh: optional device mesh with an axis ``"model"``; ``None`` = one device.
      matmul_dtype: ``float32`` or ``bfloat16`` for the encoder GEMM.
      topk_path: ``auto`` | ``sparse`` | ``dense`` (see :func:`prefers_sparse`); the
        chosen path per group is ``self.sparse``.
    """

    def __init__(self, groups: Sequence[GroupSpec], dim: int, sae_cfg: SAEConfig, optim_cfg: OptimConfig,
                 *, mesh: Mesh | None = None, matmul_dtype: str = "float32", topk_path: str = "auto"):
        self.groups = tuple(groups)
        self.dim = int(dim)
        self.sae_cfg = sae_cfg
        self.tx = make_optimizer(optim_cfg)
        self.mesh = mesh
        self.matmul_dtype = jnp.bfloat16 if matmul_dtype == "bfloat16" else jnp.float32
        ndev = 1 if mesh is None else mesh.shape["model"]
        self.padded_sizes = tuple(-(-g.size // ndev) * ndev for g in self.groups)
        self.k_aux = tuple(min(sae_cfg.k_aux or dim // 2, g.latent_size) for g in self.groups)
        self.sparse = tuple(prefers_sparse(g, topk_path) for g in self.groups)

    # ------------------------------------------------------------------ state
    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        return tuple(m for g in self.groups for m in g.models)

    def init(self, key: jax.Array, b_pre: np.ndarray) -> GridState:
        """Fresh, unpadded state: per-model params, Adam state, zeroed counters."""
        groups = []
        for g in self.groups:
            keys = jnp.stack([_model_key(key, m) for m in g.models])
            params = jax.vmap(lambda k: sae.init_params(k, self.dim, g.latent_size, jnp.asarray(b_pre)))(keys)
            opt_state = jax.vmap(self.tx.init)(params)
            since = jnp.zeros((g.size, g.latent_size), jnp.int32)
            groups.append(GroupState(params, opt_state, since))
        return GridState(step=jnp.zeros((), jnp.int32), groups=tuple(groups))

    def abstract_state(self, sharding: jax.sharding.Sharding | None = None) -> GridState:
        """Shapes/dtypes of an unpadded state (for restoring a checkpoint)."""
        shapes = jax.eval_shape(lambda: self.init(jax.random.key(0), np.zeros(self.dim, np.float32)))
        if sharding is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # each process: a copy
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

    def pad(self, state: GridState) -> GridState:
        """Pad each group's model axis to a multiple of the device count and shard it."""
        groups = []
        for g, n_pad, gs in zip(self.groups, self.padded_sizes, state.groups):
            if n_pad > g.size:
                extra = n_pad - g.size
                gs = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]), gs)
            groups.append(gs)
        state = state.replace(groups=tuple(groups))
        if self.mesh is not None:  # from the host (the same on every process) onto the global mesh
            state = to_host(state)
            state = GridState(step=to_global(state.step, self.replicated),
                              groups=jax.tree.map(lambda a: to_global(a, self.model_sharded), state.groups))
        return state

    @property
    def replicated(self) -> NamedSharding | None:
        """Every device holds all of it (``None`` without a mesh)."""
        return None if self.mesh is None else NamedSharding(self.mesh, P())

    @property
    def model_sharded(self) -> NamedSharding | None:
        """The leading (model) axis split over the mesh's devices (``None`` without a mesh)."""
        return None if self.mesh is None else NamedSharding(self.mesh, P("model"))

    def unpad(self, state: GridState) -> GridState:
        """Drop padding copies (the inverse of :meth:`pad`).

        With a mesh, each slice of a sharded leaf is a program that moves shards between
        devices (and processes); each is finished before the next is dispatched, so every
        process runs these programs in one order with at most one in flight. Several
        cross-process CPU programs in flight at once could pair up differently on different
        processes and wait on each other for ever (seen after a resumed multi-process sweep)."""
        if self.mesh is None:
            groups = tuple(jax.tree.map(lambda a, n=g.size: a[:n], gs) for g, gs in zip(self.groups, state.groups))
            return state.replace(groups=groups)
        jax.block_until_ready(state)
        groups = tuple(jax.tree.map(lambda a, n=g.size: jax.block_until_ready(a[:n]), gs)
                       for g, gs in zip(self.groups, state.groups))
        return state.replace(groups=groups)

    def _per_device(self, fn, in_specs, out_specs):
        """``fn`` as it is without a mesh; with one, ``shard_map``-ed over the mesh's ``"model"``
        axis (``P("model")``: the leading model axis split, ``P()``: every device the whole),
        so that each device runs ``fn`` on its own models only."""
        if self.mesh is None:
            return fn
        return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    def _padded_activations(self, gi: int) -> tuple[Activation, np.ndarray]:
        """The group's stacked activations padded to its padded size, and the loss
        weights (0 for padding copies)."""
        g, n_pad = self.groups[gi], self.padded_sizes[gi]
        w = np.ones(n_pad, np.float32)
        w[g.size:] = 0.0
        return jax.tree.map(jnp.asarray, leading(g.activations(), n_pad)), w

    # ------------------------------------------------------------------ math
    def _group_loss(self, gi: int, params: sae.SAEParams, x: jax.Array, dead: jax.Array, acts: Activation,
                    w: jax.Array):
        """The weighted sum of the models' losses (``w``: 1, 0 for padding copies) and each one's outputs."""
        g = self.groups[gi]
        c = self.sae_cfg

        def losses(with_auxk: bool):
            if isinstance(acts, TopK):
                fn = partial(loss.topk_loss, k_max=g.k_max, k_aux=self.k_aux[gi], auxk_coef=c.auxk_coef,
                             fire_threshold=c.fire_threshold, matmul_dtype=self.matmul_dtype, with_auxk=with_auxk,
                             sparse_path=self.sparse[gi])
                ls, outs = jax.vmap(lambda p, a, d: fn(p, x, a.k, d))(params, acts, dead)
            else:
                fn = partial(loss.relu_l1_loss, fire_threshold=c.fire_threshold, matmul_dtype=self.matmul_dtype)
                ls, outs = jax.vmap(lambda p, a, d: fn(p, x, a.coef, d))(params, acts, dead)
            return jnp.sum(ls * w), (ls, outs)

        if not isinstance(acts, TopK) or c.auxk_coef <= 0:
            return losses(False)
        # The AuxK top-k is only paid for while some model of the group has a dead latent.
        return jax.lax.cond(jnp.any(dead), lambda: losses(True), lambda: losses(False))

    def _group_step(self, gi: int, gs: GroupState, x: jax.Array, acts: Activation, w: jax.Array):
        """One step of the models of ``gs`` (a group, or one device's share of it) on ``x [B, M]``."""
        dead = gs.since_fired >= self.sae_cfg.dead_after_samples
        grads, (losses, outs) = jax.grad(partial(self._group_loss, gi), argnums=0, has_aux=True)(
            gs.params, x, dead, acts, w)
        grads = jax.vmap(sae.project_decoder_grad)(gs.params, grads)
        updates, opt_state = jax.vmap(self.tx.update)(grads, gs.opt_state, gs.params)
        params = jax.vmap(sae.normalize_decoder)(optax.apply_updates(gs.params, updates))
        since = jnp.where(outs.fired, 0, jnp.minimum(gs.since_fired + x.shape[0], _SINCE_FIRED_CAP))
        metrics = {"loss": losses, "nmse": outs.nmse, "auxk": outs.auxk, "l0": outs.l0,
                   "dead_fraction": jnp.mean(dead, axis=-1)}
        return GroupState(params, opt_state, since), metrics

    def step(self, state: GridState, x: jax.Array) -> tuple[GridState, tuple[dict[str, jax.Array], ...]]:
        """One optimisation step of every model on the batch ``x [B, M]`` (normalised)."""
        new_groups, metrics = [], []
        for gi, gs in enumerate(state.groups):
            acts, w = self._padded_activations(gi)
            step = self._per_device(partial(self._group_step, gi), (P("model"), P(), P("model"), P("model")),
                                    (P("model"), P("model")))
            ngs, m = step(gs, x, acts, jnp.asarray(w))
            new_groups.append(ngs)
            metrics.append(m)
        return GridState(state.step + 1, tuple(new_groups)), tuple(metrics)

    def run_steps(self, state: GridState, data: jax.Array, batch_index: jax.Array | None = None,
                  count: jax.Array | int | None = None):
        """``lax.scan`` of :meth:`step` over ``S`` slots, of which the first ``count`` run.

        Either ``data [N, M]`` on device plus ``batch_index [S, B]`` (rows of each
        step's batch), or ``data [S, B, M]`` (streamed batches) with no index.
        ``count`` (traced; default ``S``): slots ``≥ count`` are skipped (their inputs
        are ignored and their metrics are 0), so one compiled program serves every
        number of steps up to ``S`` — no recompilation for a short last call.
        Returns the new state and per-step metrics (leaves ``[S, n]``).
        """
        xs = data if batch_index is None else batch_index
        slots = xs.shape[0]
        count = slots if count is None else count

        def batch(item):
            return item if batch_index is None else jnp.take(data, item, axis=0)

        metric_shapes = jax.eval_shape(lambda st, it: self.step(st, batch(it))[1], state, xs[0])
        skipped = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

        def body(st, slot):
            i, item = slot
            return jax.lax.cond(i < count, lambda: self.step(st, batch(item)), lambda: (st, skipped))

        return jax.lax.scan(body, state, (jnp.arange(slots), xs))

    def jit_run_steps(self):
        """``run_steps`` jitted once, with the state buffers donated."""
        return jax.jit(self.run_steps, donate_argnums=0)

    # ------------------------------------------------------------ evaluation
    def eval_sums(self, state: GridState, x: jax.Array):
        """Per-model sums over a validation block ``x [B, M]`` (normalised), for the state as
        trained (padded: the leading axis of every result is the group's padded size, and
        rows past the group's size belong to padding copies).

        Returns per group: the squared error per dimension in the normalised space
        (``[n, M]``: ``e_d = Σ_b (x̂_bd − x_bd)²``; the raw-space error ``Σ_d s_d² e_d`` is
        formed on the host in float64, so raw values near float32's limit cannot overflow it),
        number of active latents, and ``[n, L]`` bool of latents that fired.
        """
        out = []
        for gi, (g, gs) in enumerate(zip(self.groups, state.groups)):
            def sums(params, acts, x, g=g):
                def one(p, act):
                    v = sae.encode(p, x, act, g.k_max or None, matmul_dtype=self.matmul_dtype)
                    err = jnp.sum(jnp.square(sae.decode(p, v) - x), axis=0)
                    return err, jnp.sum(v > 0), jnp.any(v > self.sae_cfg.fire_threshold, axis=0)
                return jax.vmap(one)(params, acts)

            acts, _ = self._padded_activations(gi)
            out.append(self._per_device(sums, (P("model"), P("model"), P()), P("model"))(gs.params, acts, x))
        return tuple(out)


def make_mesh(shard_models: bool) -> Mesh | None:
    """A 1-D mesh ``("model",)`` over all devices (of every process), or ``None`` for one device.

    With several processes (:mod:`jsae.cluster`) the models are always sharded over all of
    their devices, whatever ``shard_models`` says: that is what the processes are for."""
    devices = jax.devices()
    if is_multiprocess():
        return Mesh(np.array(devices), ("model",))
    if not shard_models or len(devices) == 1:
        return None
    return Mesh(np.array(devices), ("model",))
