"""Every custom differentiation rule of jsae: differentiable selections and the sparse TopK pieces.

**Selections** (:func:`top_k`, :func:`select`, :func:`masked_select`) are the kernel
operations of :mod:`jsae.kernels.ops` made differentiable with ``lax.top_k``'s rule:
the values' tangent is the input's tangent at the selected indices (entries outside a
mask, filled with ``-inf``, get none); indices have no tangent.

**The sparse path.** For one model and a batch ``x [B, M]`` with
``pre = (x − b_pre) W_enc + b_enc [B, L]`` and the selected latents ``idx [B, k]``
(values ``s = pre[idx]``), only the k active latents of a row are touched after the
encoder GEMM:

* decode (:func:`decode_active`): ``x̂_b = Σ_j v_bj d_{idx_bj}`` with ``v = ReLU(s)``
  (ranks ≥ the model's k masked to 0) — ``B·k·M`` multiply-adds instead of a
  ``B·L·M`` GEMM; its backward pass: ``∂v_bj = g_b · d_{idx_bj}`` at the active
  entries (``v_bj ≠ 0``), and ``∂W_dec`` gets ``Σ_b v_bj g_b`` in the rows ``idx_bj`` only;
* encode (:func:`encode_rows`): for the code gradient ``∂s [B, k]``,
  ``∂W_enc[:, l] = Σ_{(b,j): idx_bj = l} ∂s_bj (x_b − b_pre)`` (a sparse outer product),
  ``∂b_enc[l] = Σ ∂s_bj``, ``∂b_pre = −W_enc ∂b_enc``.

:func:`jsae.core.loss.topk_loss` assembles the training loss from these pieces
(``sparse=True``). On CPU they run the C++ kernels; elsewhere XLA gathers and scatters.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..kernels import ops

__all__ = ["top_k", "select", "masked_select", "active_codes", "decode_active", "encode_rows"]


def _with_value_jvp(select_fn, x: jax.Array, *args, tangent_mask=None):
    """``select_fn(x, *args) → (values, indices)`` with ``values = x[indices]``, differentiable in ``x``."""

    @jax.custom_jvp
    def f(x, *args):
        return select_fn(x, *args)

    @f.defjvp
    def f_jvp(primals, tangents):
        vals, idx = f(*primals)
        dx = tangents[0] if tangent_mask is None else jnp.where(tangent_mask, tangents[0], 0.0)
        return (vals, idx), (jnp.take_along_axis(dx, idx, axis=-1), np.zeros(idx.shape, jax.dtypes.float0))

    return f(x, *args)


def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``lax.top_k(x, k)`` (:func:`jsae.kernels.ops.top_k`), differentiable in ``x``."""
    return _with_value_jvp(lambda a: ops.top_k(a, k), jnp.asarray(x))


def select(x: jax.Array, k, width: int) -> tuple[jax.Array, jax.Array]:
    """:func:`jsae.kernels.ops.select` (top ``k`` first, traced ``k``), differentiable in ``x``."""
    return _with_value_jvp(lambda a, kk: ops.select(a, kk, width), jnp.asarray(x), jnp.asarray(k, jnp.int32))


def masked_select(x: jax.Array, mask: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """:func:`jsae.kernels.ops.masked_select`, differentiable in ``x`` (no tangent outside ``mask``)."""
    mask = jnp.asarray(mask, bool)
    return _with_value_jvp(lambda a, m: ops.masked_select(a, m, width), jnp.asarray(x), mask, tangent_mask=mask)


def active_codes(s: jax.Array, keep: jax.Array) -> jax.Array:
    """``v = ReLU(s)`` where ``keep``, else 0: the codes of the selected latents ``[B, k]``."""
    return jnp.where(keep & (s > 0), s, 0.0)


@jax.custom_vjp
def decode_active(w_dec: jax.Array, s: jax.Array, keep: jax.Array, idx: jax.Array) -> jax.Array:
    """``Σ_j v_bj w_dec[idx_bj]`` with ``v = active_codes(s, keep)``: ``w_dec [L, M]``, ``s, keep, idx [B, k]`` → ``[B, M]``.

    No bias. The backward pass works on the active entries (``v ≠ 0``) only: the other
    entries' cotangent is 0 (ReLU′ = 0 at ``s ≤ 0``, JAX's convention, or masked).
    """
    return ops.sparse_decode(w_dec, active_codes(s, keep), idx)


def _decode_fwd(w_dec, s, keep, idx):
    v = active_codes(s, keep)
    return ops.sparse_decode(w_dec, v, idx), (w_dec, v, idx)


def _decode_bwd(res, g):
    w_dec, v, idx = res
    ds, dw = ops.decoder_backward(w_dec, g, v, idx)  # ds = 0 where v = 0
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
    dw_t, db_enc = ops.scatter_outer(xc, g, idx, w_enc.shape[-1])
    return dw_t.T, db_enc, -(w_enc @ db_enc), None, None, None


encode_rows.defvjp(_encode_fwd, _encode_bwd)
