"""Training losses of one model on a batch ``x [B, M]`` (normalised space).

TopK (:func:`topk_loss`)::

    loss = NMSE(x̂, x) + auxk_coef · AuxK
    NMSE(x̂, x) = Σ_b ‖x̂_b − x_b‖² / Σ_b ‖x_b − mean_b(x)‖²
    AuxK = NMSE(ê, e),  e = x − stop_grad(x̂),  ê = Σ_{ℓ ∈ top_{k_aux} dead} pre_ℓ d_ℓ

AuxK: the top ``k_aux`` pre-activations among the *dead* latents (``dead [L]``)
reconstruct the residual, without ``b_pre`` (it is in ``x̂`` already); it is 0 when no
latent is dead. Two paths compute the same loss, gradients and diagnostics (up to float
summation order): **dense** — codes ``[B, L]`` (:func:`jsae.core.sae.topk_dense`),
decoder and backward as GEMMs; **sparse** — after the encoder GEMM only the ``k``
selected latents of a row are touched (:mod:`jsae.core.sparse`). The loss is assembled
once, from the path's reconstruction and AuxK reconstruction.

ReLU+L1 (:func:`relu_l1_loss`): ``NMSE + l1_coef · mean_b Σ_ℓ |v_ℓ| ‖d_ℓ‖``.

Every loss returns ``(loss, LossOutput)``; ``k ≤ k_max`` may be traced (a grid group
selects ``k_max`` and masks ranks ≥ k per model).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..kernels import ops
from . import sparse
from .sae import SAEParams, decode, normalized_mse, pre_activation, topk_dense

__all__ = ["LossOutput", "auxk_loss", "topk_loss", "relu_l1_loss"]


class LossOutput(NamedTuple):
    """Per-batch diagnostics of one model (scalars unless noted)."""

    nmse: jax.Array
    auxk: jax.Array
    l1: jax.Array
    l0: jax.Array  # mean number of active latents per example
    fired: jax.Array  # [L] bool: latent fired (> threshold) for some example of the batch


class _Codes(NamedTuple):
    """What a path gives the loss: the reconstruction and the diagnostics of its codes."""

    recon: jax.Array  # [B, M], with b_pre
    l0: jax.Array
    fired: jax.Array  # [L] bool


def _dense_codes(p: SAEParams, pre: jax.Array, k, k_max: int, fire_threshold: float) -> _Codes:
    v = topk_dense(pre, k, k_max)
    return _Codes(decode(p, v), jnp.mean(jnp.sum(v > 0, -1)), jnp.any(v > fire_threshold, axis=0))


def _dense_aux(p: SAEParams, pre: jax.Array, dead: jax.Array, k_aux: int) -> jax.Array:
    masked = jnp.where(dead, pre, -jnp.inf)
    v_aux = jnp.where(dead, topk_dense(masked, k_aux, k_aux), 0.0)  # fewer dead than k_aux: all of them
    return v_aux @ p.W_dec


def _sparse_codes(p: SAEParams, x: jax.Array, pre: jax.Array, k, k_max: int, fire_threshold: float) -> _Codes:
    sel, idx = sparse.select(pre, k, k_max)
    s = sparse.encode_rows(p.W_enc, p.b_enc, p.b_pre, x, idx, sel)
    keep = jnp.arange(k_max) < k
    recon = sparse.decode_active(p.W_dec, s, keep, idx) + p.b_pre
    v = sparse.active_codes(sel, keep)
    fired = ops.scatter_sum((v > fire_threshold).astype(jnp.float32), idx, p.W_dec.shape[0])
    return _Codes(recon, jnp.mean(jnp.sum(v > 0, -1)), fired > 0)


def _sparse_aux(p: SAEParams, x: jax.Array, pre: jax.Array, dead: jax.Array, k_aux: int) -> jax.Array:
    a_sel, a_idx = sparse.masked_select(pre, dead, k_aux)
    a = sparse.encode_rows(p.W_enc, p.b_enc, p.b_pre, x, a_idx, a_sel)
    return sparse.decode_active(p.W_dec, a, a_sel > -jnp.inf, a_idx)  # -inf: not a dead latent


def auxk_loss(p: SAEParams, pre: jax.Array, residual: jax.Array, dead: jax.Array, k_aux: int) -> jax.Array:
    """AuxK on the dense path: ``pre [B, L]``, ``residual [B, M]`` = ``x − stop_grad(x̂)``, ``dead [L]`` bool."""
    return jnp.where(jnp.any(dead), normalized_mse(_dense_aux(p, pre, dead, k_aux), residual), 0.0)


def topk_loss(p: SAEParams, x: jax.Array, k: jax.Array | int, dead: jax.Array, *, k_max: int, k_aux: int,
              auxk_coef: float, fire_threshold: float = 1e-3, matmul_dtype=jnp.float32, with_auxk: bool = True,
              sparse_path: bool = False) -> tuple[jax.Array, LossOutput]:
    """Training loss of one TopK model on ``x [B, M]``; ``dead [L]`` bool.

    ``sparse_path``: compute it on the sparse path (see the module docstring).
    ``with_auxk=False`` skips the AuxK term (exactly 0 anyway when no latent is dead).
    """
    if sparse_path:
        pre = jax.lax.stop_gradient(pre_activation(p, x, matmul_dtype))  # the encoder's gradient: encode_rows
        codes = _sparse_codes(p, x, pre, k, k_max, fire_threshold)
    else:
        pre = pre_activation(p, x, matmul_dtype)
        codes = _dense_codes(p, pre, k, k_max, fire_threshold)
    nmse = normalized_mse(codes.recon, x)
    if with_auxk and auxk_coef > 0 and k_aux > 0:
        aux_recon = _sparse_aux(p, x, pre, dead, k_aux) if sparse_path else _dense_aux(p, pre, dead, k_aux)
        aux = normalized_mse(aux_recon, x - jax.lax.stop_gradient(codes.recon))
        aux = jnp.where(jnp.any(dead), aux, 0.0)
    else:
        aux = jnp.zeros(())
    out = LossOutput(nmse=nmse, auxk=aux, l1=jnp.zeros(()), l0=codes.l0, fired=codes.fired)
    return nmse + auxk_coef * aux, out


def relu_l1_loss(p: SAEParams, x: jax.Array, l1_coef: jax.Array | float, dead: jax.Array, *,
                 fire_threshold: float = 1e-3, matmul_dtype=jnp.float32) -> tuple[jax.Array, LossOutput]:
    """Training loss of one ReLU+L1 model: ``NMSE + l1_coef · mean_b Σ_ℓ |v_ℓ| ‖d_ℓ‖``."""
    del dead
    v = jax.nn.relu(pre_activation(p, x, matmul_dtype))
    recon = decode(p, v)
    nmse = normalized_mse(recon, x)
    l1 = jnp.mean(jnp.sum(v * jnp.linalg.norm(p.W_dec, axis=-1), -1))
    out = LossOutput(nmse=nmse, auxk=jnp.zeros(()), l1=l1, l0=jnp.mean(jnp.sum(v > 0, -1)),
                     fired=jnp.any(v > fire_threshold, axis=0))
    return nmse + l1_coef * l1, out
