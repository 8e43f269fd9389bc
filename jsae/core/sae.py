"""The sparse autoencoder, for one model and one example (OpenAI TopK formulation).

Notation: input ``x ∈ R^M`` (already normalised, see :mod:`jsae.core.normalize`),
``L`` latents.

* encode: ``pre = (x − b_pre) W_enc + b_enc ∈ R^L``;
  TopK: ``v = ReLU(TopK_k(pre))`` — the k largest entries kept, all others 0;
  ReLU+L1 (the paper's rejected alternative): ``v = ReLU(pre)``.
* decode: ``x̂ = Σ_ℓ v_ℓ d_ℓ + b_pre``, where ``d_ℓ`` (row ℓ of ``W_dec``, the
  paper's column ℓ of its decoder matrix) has unit norm.
* normalised MSE over a batch ``X ∈ R^{B×M}``:
  ``NMSE = Σ_b ‖x̂_b − x_b‖² / Σ_b ‖x_b − mean_b(x)‖²`` (the training losses built on it,
  with AuxK or L1, are in :mod:`jsae.core.loss`).

Shapes: ``W_enc [M, L]``, ``b_enc [L]``, ``W_dec [L, M]``, ``b_pre [M]``.
Every function here is for one model; the batch of examples is a plain leading
axis or a ``vmap``; the grid of models is a ``vmap`` in :mod:`jsae.training.grid`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from .activation import Activation, ReluL1, TopK
from .sparse import top_k

__all__ = [
    "SAEParams",
    "init_params",
    "pre_activation",
    "topk_codes",
    "topk_dense",
    "activate",
    "encode",
    "encode_sparse",
    "decode",
    "decode_sparse",
    "reconstruct",
    "normalized_mse",
    "project_decoder_grad",
    "normalize_decoder",
]


class SAEParams(struct.PyTreeNode):
    """Parameters of one SAE (or of a stack of them, with a leading model axis)."""

    W_enc: jax.Array  # [M, L]
    b_enc: jax.Array  # [L]
    W_dec: jax.Array  # [L, M], unit-norm rows d_ℓ
    b_pre: jax.Array  # [M]

    @property
    def latent_size(self) -> int:
        return self.W_enc.shape[-1]

    @property
    def dim(self) -> int:
        return self.W_enc.shape[-2]


def init_params(key: jax.Array, dim: int, latent_size: int, b_pre: jax.Array | None = None) -> SAEParams:
    """Random unit directions ``d_ℓ``; ``W_dec = D``, ``W_enc = Dᵀ``, ``b_enc = 0``.

    ``b_pre`` defaults to 0 (pass the geometric median or mean of the data).
    """
    d = jax.random.normal(key, (latent_size, dim), jnp.float32)
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    if b_pre is None:
        b_pre = jnp.zeros((dim,), jnp.float32)
    return SAEParams(W_enc=d.T, b_enc=jnp.zeros((latent_size,), jnp.float32), W_dec=d,
                     b_pre=jnp.asarray(b_pre, jnp.float32))


def pre_activation(p: SAEParams, x: jax.Array, matmul_dtype=jnp.float32) -> jax.Array:
    """``(x − b_pre) W_enc + b_enc``: ``x [..., M] → [..., L]``.

    ``matmul_dtype=bfloat16`` runs the GEMM in bf16 with float32 accumulation.
    """
    xc = (x - p.b_pre).astype(matmul_dtype)
    pre = jnp.matmul(xc, p.W_enc.astype(matmul_dtype), preferred_element_type=jnp.float32)
    return pre + p.b_enc


def topk_codes(pre: jax.Array, k: jax.Array | int, k_max: int) -> tuple[jax.Array, jax.Array]:
    """Sparse TopK codes: ``(values [..., k_max], indices [..., k_max])``.

    The ``k_max`` largest pre-activations are found (:func:`jsae.core.sparse.top_k`:
    ``lax.top_k``'s values, order and tie rule); ranks ``≥ k`` are zeroed, so a traced
    ``k ≤ k_max`` gives exactly the TopK_k of a model with that k. Values are passed
    through ReLU.
    """
    vals, idx = top_k(pre, k_max)
    keep = jnp.arange(k_max) < k
    return jnp.where(keep, jax.nn.relu(vals), 0.0), idx


def topk_dense(pre: jax.Array, k: jax.Array | int, k_max: int) -> jax.Array:
    """Dense TopK codes ``[..., L]``: ``ReLU(pre)`` at the ``k`` latents ``top_k`` selects, else 0.

    With ``(v, i) = top_k(pre, k_max)`` and the k-th pick ``(v_k, i_k)`` (``k`` may be
    traced, ``≤ k_max``), latent ℓ is kept iff ``pre_ℓ > v_k`` or (``pre_ℓ = v_k`` and
    ``ℓ ≤ i_k``): exactly the k that ``top_k`` picks, ties included (the lower index
    wins), found by comparisons — no scatter forward or backward, which on CPUs is far
    cheaper than scattering sparse codes.
    """
    vals, idx = top_k(jax.lax.stop_gradient(pre), k_max)
    rank = jnp.broadcast_to(jnp.asarray(k, jnp.int32) - 1, vals.shape[:-1] + (1,))
    kth = jnp.take_along_axis(vals, rank, axis=-1)
    kth_idx = jnp.take_along_axis(idx, rank, axis=-1)
    iota = jax.lax.broadcasted_iota(jnp.int32, pre.shape, pre.ndim - 1)
    keep = (pre > kth) | ((pre == kth) & (iota <= kth_idx))
    return jnp.where(keep, jax.nn.relu(pre), 0.0)


def encode_sparse(p: SAEParams, x: jax.Array, k: jax.Array | int, k_max: int | None = None,
                  matmul_dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """TopK codes of ``x [..., M]`` as ``(values, indices) [..., k_max]``."""
    k_max = int(k) if k_max is None else k_max
    return topk_codes(pre_activation(p, x, matmul_dtype), k, k_max)


def activate(pre: jax.Array, act: Activation | jax.Array | int, k_max: int | None = None) -> jax.Array:
    """Dense codes ``v [..., L]`` of pre-activations ``pre [..., L]`` under ``act``.

    ``act``: a :class:`~jsae.core.activation.TopK` (``v = ReLU(TopK_k(pre))``; ``k`` may be
    traced, ``≤ k_max``) or a :class:`~jsae.core.activation.ReluL1` (``v = ReLU(pre)``); a
    bare int / int array is read as ``TopK(k)``. ``k_max``: the static number of
    entries ``top_k`` finds (default: ``k`` itself, which must then be concrete).
    """
    if isinstance(act, ReluL1):
        return jax.nn.relu(pre)
    k = act.k if isinstance(act, TopK) else act
    k_max = int(k) if k_max is None else k_max
    return topk_dense(pre, k, k_max)


def encode(p: SAEParams, x: jax.Array, act: Activation | jax.Array | int, k_max: int | None = None,
           matmul_dtype=jnp.float32) -> jax.Array:
    """Dense latent codes ``v [..., L]`` of ``x [..., M]``: :func:`activate` of :func:`pre_activation`."""
    return activate(pre_activation(p, x, matmul_dtype), act, k_max)


def decode(p: SAEParams, v: jax.Array) -> jax.Array:
    """``x̂ = v W_dec + b_pre``: ``v [..., L] → [..., M]``."""
    return v @ p.W_dec + p.b_pre


def decode_sparse(p: SAEParams, vals: jax.Array, idx: jax.Array, *, with_bias: bool = True) -> jax.Array:
    """``Σ_j vals_j d_{idx_j} (+ b_pre)`` from sparse codes ``[..., k] → [..., M]``."""
    out = jnp.einsum("...k,...km->...m", vals, p.W_dec[idx])
    return out + p.b_pre if with_bias else out


def reconstruct(p: SAEParams, x: jax.Array, k: jax.Array | int, k_max: int | None = None) -> jax.Array:
    """``decode(encode(x))`` for TopK: ``[..., M] → [..., M]``."""
    vals, idx = encode_sparse(p, x, k, k_max)
    return decode_sparse(p, vals, idx)


def normalized_mse(recon: jax.Array, x: jax.Array) -> jax.Array:
    """``Σ_b ‖recon_b − x_b‖² / Σ_b ‖x_b − mean_b(x)‖²`` over a batch ``[B, M]``."""
    err = jnp.sum(jnp.square(recon - x))
    var = jnp.sum(jnp.square(x - jnp.mean(x, axis=0, keepdims=True)))
    return err / jnp.maximum(var, 1e-12)


def project_decoder_grad(p: SAEParams, grads: SAEParams) -> SAEParams:
    """Remove from each decoder-row gradient its component along the (unit) row."""
    g = grads.W_dec
    parallel = jnp.sum(g * p.W_dec, axis=-1, keepdims=True) * p.W_dec
    return grads.replace(W_dec=g - parallel)


def normalize_decoder(p: SAEParams) -> SAEParams:
    """Rescale every decoder row ``d_ℓ`` to unit norm."""
    norm = jnp.linalg.norm(p.W_dec, axis=-1, keepdims=True)
    return p.replace(W_dec=p.W_dec / jnp.maximum(norm, 1e-12))
