"""The sparse TopK training path: only the k active latents of a row are touched after the encoder GEMM.

For one model and a batch ``x [B, M]`` with ``pre = (x − b_pre) W_enc + b_enc [B, L]``
and the selected latents ``idx [B, k]`` (values ``s = pre[idx]``):

* decode: ``x̂_b = Σ_j v_bj d_{idx_bj} + b_pre`` with ``v = ReLU(s)`` (ranks ≥ the
  model's k masked to 0) — ``B·k·M`` multiply-adds instead of a ``B·L·M`` GEMM;
* backward of the decoder (:func:`decode_rows`): ``∂v_bj = g_b · d_{idx_bj}``, and
  ``∂W_dec`` gets ``Σ_b v_bj g_b`` in the rows ``idx_bj`` only;
* backward of the encoder (:func:`encode_rows`): for the code gradient ``∂s [B, k]``,
  ``∂W_enc[:, l] = Σ_{(b,j): idx_bj = l} ∂s_bj (x_b − b_pre)`` (a sparse outer
  product), ``∂b_enc[l] = Σ ∂s_bj``, ``∂b_pre = −W_enc ∂b_enc``.

AuxK runs on the same pieces: its top ``k_aux`` is selected among the dead latents
only (:func:`jsae.kernels.masked_select`). :func:`topk_loss_sparse` has the signature and
the results of :func:`jsae.sae.topk_loss` (the dense path): same loss, same gradients,
same diagnostics, up to float summation order. On CPU the pieces are the C++ kernels
of :mod:`jsae.kernels`; elsewhere they fall back to XLA gathers and scatters.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import kernels
from .sae import LossOutput, SAEParams, normalized_mse, pre_activation

__all__ = ["decode_rows", "encode_rows", "topk_loss_sparse"]


@jax.custom_vjp
def decode_rows(w_dec: jax.Array, v: jax.Array, idx: jax.Array) -> jax.Array:
    """``Σ_j v_bj w_dec[idx_bj]``: ``w_dec [L, M]``, ``v, idx [B, k]`` → ``[B, M]`` (no bias)."""
    return kernels.sparse_decode(w_dec, v, idx)


def _decode_fwd(w_dec, v, idx):
    return kernels.sparse_decode(w_dec, v, idx), (w_dec, v, idx)


def _decode_bwd(res, g):
    w_dec, v, idx = res
    dv = kernels.gather_dot(w_dec, g, idx)
    dw, _ = kernels.scatter_outer(g, v, idx, w_dec.shape[0])
    return dw, dv, None


decode_rows.defvjp(_decode_fwd, _decode_bwd)


@jax.custom_vjp
def encode_rows(w_enc: jax.Array, b_enc: jax.Array, b_pre: jax.Array, x: jax.Array, idx: jax.Array,
                values: jax.Array) -> jax.Array:
    """Pre-activations at the selected latents, ``pre[b, idx_bj]``, differentiable in the encoder.

    ``values [B, k]`` must be those pre-activations, as the selection returned them
    (they are not recomputed); only the backward pass does work: a sparse outer
    product into ``∂W_enc``, ``∂b_enc`` and ``∂b_pre``. ``x`` (data) gets no gradient.
    """
    del w_enc, b_enc, b_pre, x, idx
    return values


def _encode_fwd(w_enc, b_enc, b_pre, x, idx, values):
    return values, (w_enc, x - b_pre, idx)


def _encode_bwd(res, g):
    w_enc, xc, idx = res
    dw_t, db_enc = kernels.scatter_outer(xc, g, idx, w_enc.shape[-1])
    return dw_t.T, db_enc, -(w_enc @ db_enc), None, None, None


encode_rows.defvjp(_encode_fwd, _encode_bwd)


def topk_loss_sparse(p: SAEParams, x: jax.Array, k: jax.Array | int, dead: jax.Array, *, k_max: int,
                     k_aux: int, auxk_coef: float, fire_threshold: float = 1e-3,
                     matmul_dtype=jnp.float32, with_auxk: bool = True) -> tuple[jax.Array, LossOutput]:
    """Training loss of one TopK model on ``x [B, M]``, computed sparsely; see :func:`jsae.sae.topk_loss`.

    ``k ≤ k_max`` may be traced (a grid group selects ``k_max`` and masks ranks ≥ k).
    """
    pre = jax.lax.stop_gradient(pre_activation(p, x, matmul_dtype))
    sel, idx = kernels.select(pre, k, k_max)
    s = encode_rows(p.W_enc, p.b_enc, p.b_pre, x, idx, sel)
    v = jnp.where(jnp.arange(k_max) < k, jax.nn.relu(s), 0.0)
    recon = decode_rows(p.W_dec, v, idx) + p.b_pre
    nmse = normalized_mse(recon, x)
    if with_auxk and auxk_coef > 0 and k_aux > 0:
        a_sel, a_idx = kernels.masked_select(pre, dead, k_aux)
        a = encode_rows(p.W_enc, p.b_enc, p.b_pre, x, a_idx, a_sel)
        v_aux = jnp.where(a_sel > -jnp.inf, jax.nn.relu(a), 0.0)  # -inf: not a dead latent
        aux = normalized_mse(decode_rows(p.W_dec, v_aux, a_idx), x - jax.lax.stop_gradient(recon))
        aux = jnp.where(jnp.any(dead), aux, 0.0)
    else:
        aux = jnp.zeros(())
    fired = kernels.scatter_sum((v > fire_threshold).astype(jnp.float32), idx, p.W_dec.shape[0])
    out = LossOutput(nmse=nmse, auxk=aux, l1=jnp.zeros(()), l0=jnp.mean(jnp.sum(v > 0, -1)), fired=fired > 0)
    return nmse + auxk_coef * aux, out
