"""The kernel operations: one problem (one model) per call, vmappable, XLA fallbacks elsewhere.

Each function runs its C++ kernel (``cpu_kernels.cc`` through ``jax.ffi``) on a CPU
where the library is loaded (:func:`jsae.kernels.load.available`), and the equivalent
XLA code otherwise — on GPU/TPU, or on a CPU without the library (with one warning,
since XLA's sort-based ``top_k`` and serial scatters are several times slower there).
The kernels see vmapped axes as a batch of problems.

These are plain forward operations: they define no derivatives. The differentiation
rules of the selections and of the sparse decoder/encoder are in :mod:`jsae.core.sparse`.

* :func:`top_k` ``x [..., L] → (values, indices) [..., k]``: the values and indices of
  ``lax.top_k`` (XLA's total order on floats, NaN largest; among equal values the lower
  index first).
* :func:`select` the top ``k ≤ width`` of each row in positions ``0..k-1`` (unordered),
  the next ranks after them: the training path's selection, with a traced ``k``;
  :func:`masked_select` the same among the entries of a mask (AuxK: the dead latents).
* :func:`sparse_decode` ``Σ_j v_j W[idx_j]``; :func:`gather_dot` ``g · W[idx_j]``;
  :func:`scatter_outer` ``Σ c_j g`` into rows ``idx_j`` (+ ``Σ c_j``); :func:`decoder_backward`
  the gather-dot and the decoder's scatter in one sweep.

``JSAE_KERNEL_THREADS`` sets the kernels' thread count (default: all CPUs).
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .load import available, load_error, on_cpu

__all__ = ["top_k", "select", "masked_select", "sparse_decode", "gather_dot", "scatter_outer", "scatter_sum",
           "decoder_backward"]

_warned: set[str] = set()


def _use_kernels() -> bool:
    """Whether to emit kernel calls; warns once per reason when a CPU run falls back to XLA."""
    if available():
        return True
    why = load_error() or "unknown"
    if on_cpu() and why not in _warned:
        _warned.add(why)
        warnings.warn(f"jsae CPU kernels unavailable: {why}; falling back to XLA's sort-based top_k and dense "
                      "TopK training, which are several times slower on a CPU.", RuntimeWarning, stacklevel=4)
    return False


def _ffi(name: str, out_shapes, *args, **attrs):
    return jax.ffi.ffi_call(name, out_shapes, vmap_method="broadcast_all")(*args, **attrs)


def _dispatch(kernel_fn, xla_fn, *args):
    """``kernel_fn(*args)`` on CPU when the library is usable, else ``xla_fn(*args)``."""
    if not _use_kernels():
        return xla_fn(*args)
    return jax.lax.platform_dependent(*args, cpu=kernel_fn, default=xla_fn)


def _check_row_op(x: jax.Array, k: int) -> None:
    if x.ndim < 1 or not 0 <= k <= x.shape[-1]:
        raise ValueError(f"k={k} must be between 0 and the row length {x.shape[-1] if x.ndim else None}")


def _selection(x: jax.Array, width: int, name: str, *args, sort: bool):
    out = (jax.ShapeDtypeStruct(x.shape[:-1] + (width,), jnp.float32),
           jax.ShapeDtypeStruct(x.shape[:-1] + (width,), jnp.int32))
    return tuple(_ffi(name, out, x, *args, sorted=np.int32(sort)))


def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``lax.top_k(x, k)``: x ``[..., L]`` (float32 for the kernel), k static ``0 ≤ k ≤ L``.

    Returns values ``[..., k]`` (descending) and int32 indices ``[..., k]``.
    """
    x = jnp.asarray(x)
    if x.dtype != jnp.float32:
        return jax.lax.top_k(x, k)
    _check_row_op(x, k)
    return _dispatch(lambda a: _selection(a, k, "jsae_topk", jnp.asarray(k, jnp.int32), sort=True),
                     lambda a: tuple(jax.lax.top_k(a, k)), x)


def select(x: jax.Array, k, width: int) -> tuple[jax.Array, jax.Array]:
    """The top ``k`` entries of each row in positions ``0..k-1``, in no particular order.

    Args: x ``[..., L]`` float32; k an int or traced int32 scalar, ``k ≤ width ≤ L``;
      width static. Positions ``k..width-1`` hold the ranks ``k..width-1`` (unordered):
      the top ``width`` as a set. Same tie rule as :func:`top_k`. The fallback is
      ``lax.top_k(x, width)`` (sorted, which satisfies the same contract).
    Returns: values, int32 indices ``[..., width]``.
    """
    x = jnp.asarray(x)
    if x.dtype != jnp.float32:
        return jax.lax.top_k(x, width)
    _check_row_op(x, width)
    return _dispatch(lambda a, kk: _selection(a, width, "jsae_topk", kk, sort=False),
                     lambda a, kk: tuple(jax.lax.top_k(a, width)), x, jnp.asarray(k, jnp.int32))


def masked_select(x: jax.Array, mask: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """``select(where(mask, x, -inf), width, width)`` with one ``mask [L]`` for all rows of ``x [..., L]``.

    The kernel compacts the unmasked entries once and selects among them, so the
    cost follows the number of unmasked entries (AuxK: the dead latents), not ``L``.
    Entries beyond the unmasked ones are ``-inf`` at the lowest other indices.
    """
    x = jnp.asarray(x)
    mask = jnp.asarray(mask, bool)

    def xla(a, m):
        return tuple(jax.lax.top_k(jnp.where(m, a, -jnp.inf), width))

    if x.dtype != jnp.float32:
        return xla(x, mask)
    _check_row_op(x, width)
    return _dispatch(lambda a, m: _selection(a, width, "jsae_topk_masked", m, sort=False), xla, x, mask)


def _rows(a: jax.Array) -> jax.Array:
    return a.reshape((-1, a.shape[-1]))


def sparse_decode(w: jax.Array, v: jax.Array, idx: jax.Array) -> jax.Array:
    """``out_b = Σ_j v_bj · w[idx_bj]``: ``w [L, M]``, ``v, idx [..., K]`` → ``[..., M]``."""
    lead, m = v.shape[:-1], w.shape[-1]

    def kernel(w, v, idx):
        out = jax.ShapeDtypeStruct((int(np.prod(lead, dtype=int)), m), jnp.float32)
        return _ffi("jsae_sparse_decode", out, w, _rows(v), _rows(idx)).reshape(lead + (m,))

    return _dispatch(kernel, lambda w, v, idx: jnp.einsum("...k,...km->...m", v, w[idx]), w, v,
                     idx.astype(jnp.int32))


def gather_dot(w: jax.Array, g: jax.Array, idx: jax.Array, v: jax.Array | None = None) -> jax.Array:
    """``out_bj = g_b · w[idx_bj]``: ``w [L, M]``, ``g [..., M]``, ``idx [..., K]`` → ``[..., K]``.

    With ``v [..., K]``, entries where ``v_bj = 0`` are skipped and set to 0 (the
    cotangent of a code that is 0 because ReLU or the TopK mask cut it, which the
    caller zeroes anyway).
    """
    shape = idx.shape
    v = jnp.ones(shape, jnp.float32) if v is None else v

    def kernel(w, g, idx, v):
        out = jax.ShapeDtypeStruct((int(np.prod(shape[:-1], dtype=int)), shape[-1]), jnp.float32)
        return _ffi("jsae_gather_dot", out, w, _rows(g), _rows(idx), _rows(v)).reshape(shape)

    def xla(w, g, idx, v):
        return jnp.where(v != 0, jnp.einsum("...m,...km->...k", g, w[idx]), 0.0)

    return _dispatch(kernel, xla, w, g, idx.astype(jnp.int32), v.astype(jnp.float32))


def scatter_outer(g: jax.Array, c: jax.Array, idx: jax.Array, num_rows: int) -> tuple[jax.Array, jax.Array]:
    """``out[l] = Σ_{(b,j): idx_bj = l} c_bj g_b`` and ``csum[l] = Σ c_bj``.

    Args: g ``[..., M]``, c and idx ``[..., K]`` (same leading shape), num_rows ``L``.
    Returns: ``out [L, M]``, ``csum [L]``.
    """
    m = g.shape[-1]

    def kernel(g, c, idx):
        out = (jax.ShapeDtypeStruct((num_rows, m), jnp.float32), jax.ShapeDtypeStruct((num_rows,), jnp.float32))
        return tuple(_ffi("jsae_scatter_outer", out, _rows(g), _rows(c), _rows(idx)))

    def xla(g, c, idx):
        g2, c2, i2 = _rows(g), _rows(c), _rows(idx)
        out = jnp.zeros((num_rows, m), g.dtype).at[i2].add(c2[..., None] * g2[:, None, :])
        return out, jnp.zeros((num_rows,), c.dtype).at[i2].add(c2)

    return _dispatch(kernel, xla, g, c, idx.astype(jnp.int32))


def scatter_sum(c: jax.Array, idx: jax.Array, num_rows: int) -> jax.Array:
    """``out[l] = Σ_{(b,j): idx_bj = l} c_bj``: ``c, idx [..., K]`` → ``[L]``."""
    return scatter_outer(jnp.zeros(c.shape[:-1] + (1,), jnp.float32), c, idx, num_rows)[1]


def decoder_backward(w: jax.Array, g: jax.Array, v: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The backward pass of :func:`sparse_decode` at codes ``v``: ``(gather_dot(w, g, idx, v), ∂w)``.

    Args: w ``[L, M]``, g ``[B, M]`` (the output's cotangent), v and idx ``[B, K]``.
    Returns: ``dv [B, K]`` (0 where ``v = 0``) and ``∂w [L, M] = Σ v_bj g_b`` in rows ``idx_bj``.
    """

    def kernel(w, g, v, idx):
        out = (jax.ShapeDtypeStruct(v.shape, jnp.float32), jax.ShapeDtypeStruct(w.shape, jnp.float32))
        return tuple(_ffi("jsae_decoder_backward", out, w, g, v, idx))

    def xla(w, g, v, idx):
        return gather_dot(w, g, idx, v), scatter_outer(g, v, idx, w.shape[0])[0]

    if g.ndim != 2 or v.ndim != 2:
        raise ValueError(f"decoder_backward takes g [B, M] and v [B, K], got {g.shape} and {v.shape}")
    return _dispatch(kernel, xla, w, g, v.astype(jnp.float32), idx.astype(jnp.int32))
