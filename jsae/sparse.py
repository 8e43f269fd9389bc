"""The sparse TopK training path: only the k active latents of a row are touched after the encoder GEMM.

For one model and a batch ``x [B, M]`` with ``pre = (x − b_pre) W_enc + b_enc [B, L]``
and the selected latents ``idx [B, k]`` (values ``s = pre[idx]``):

* decode: ``x̂_b = Σ_j v_bj d_{idx_bj} + b_pre`` with ``v = ReLU(s)`` (ranks ≥ the
  model's k masked to 0) — ``B·k·M`` multiply-adds instead of a ``B·L·M`` GEMM;
* backward of the decoder (:func:`decode_active`): ``∂v_bj = g_b · d_{idx_bj}`` at the
  active entries (``v_bj ≠ 0``), and ``∂W_dec`` gets ``Σ_b v_bj g_b`` in the rows
  ``idx_bj`` only;
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

__all__ = ["active_codes", "decode_active", "encode_rows", "topk_loss_sparse"]


def active_codes(s: jax.Array, keep: jax.Array) -> jax.Array:
    """``v = ReLU(s)`` where ``keep``, else 0: the codes of the selected latents ``[B, k]``."""
    return jnp.where(keep & (s > 0), s, 0.0)


@jax.custom_vjp
def decode_active(w_dec: jax.Array, s: jax.Array, keep: jax.Array, idx: jax.Array) -> jax.Array:
    """``Σ_j v_bj w_dec[idx_bj]`` with ``v = active_codes(s, keep)``: ``w_dec [L, M]``, ``s, keep, idx [B, k]`` → ``[B, M]``.

    No bias. The backward pass works on the active entries (``v ≠ 0``) only: the other
    entries' cotangent is 0 (ReLU′ = 0 at ``s ≤ 0``, JAX's convention, or masked).
    """
    return kernels.sparse_decode(w_dec, active_codes(s, keep), idx)


def _decode_fwd(w_dec, s, keep, idx):
    v = active_codes(s, keep)
    return kernels.sparse_decode(w_dec, v, idx), (w_dec, v, idx)


def _decode_bwd(res, g):
    w_dec, v, idx = res
    ds, dw = kernels.decoder_backward(w_dec, g, v, idx)  # ds = 0 where v = 0
    return dw, ds, None, None


decode_active.defvjp(_decode_fwd, _decode_bwd)


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
    keep = jnp.arange(k_max) < k
    recon = decode_active(p.W_dec, s, keep, idx) + p.b_pre
    nmse = normalized_mse(recon, x)
    if with_auxk and auxk_coef > 0 and k_aux > 0:
        a_sel, a_idx = kernels.masked_select(pre, dead, k_aux)
        a = encode_rows(p.W_enc, p.b_enc, p.b_pre, x, a_idx, a_sel)
        aux_recon = decode_active(p.W_dec, a, a_sel > -jnp.inf, a_idx)  # -inf: not a dead latent
        aux = normalized_mse(aux_recon, x - jax.lax.stop_gradient(recon))
        aux = jnp.where(jnp.any(dead), aux, 0.0)
    else:
        aux = jnp.zeros(())
    v = active_codes(sel, keep)
    fired = kernels.scatter_sum((v > fire_threshold).astype(jnp.float32), idx, p.W_dec.shape[0])
    out = LossOutput(nmse=nmse, auxk=aux, l1=jnp.zeros(()), l0=jnp.mean(jnp.sum(v > 0, -1)), fired=fired > 0)
    return nmse + auxk_coef * aux, out
