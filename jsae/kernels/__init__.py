"""CPU kernels for exact top-k selection and sparse TopK algebra, reached through ``jax.ffi``.

XLA:CPU's ``lax.top_k`` sorts (it costs 2–6 encoder GEMMs per latent-size group)
and its scatters are serial; these C++ kernels (``cpu_kernels.cc``, built at install
time, see :mod:`jsae.kernels.build`) do the same work in linear time per row and
split it across threads. Every function here takes one problem (one model) and
works under ``vmap``: the kernels see the vmapped axes as a batch of problems.

* :func:`top_k` ``x [..., L] → (values, indices) [..., k]``: the same values and
  indices as ``lax.top_k`` (XLA's total order on floats, NaN largest; among equal
  values the lower index first), which it falls back to on GPU/TPU or where the
  library is not built (with one warning on CPU).
* :func:`select` the top ``k ≤ width`` of each row in positions ``0..k-1`` (unordered),
  the next ranks after them: the training path's selection, with a traced ``k``.
* :func:`sparse_decode` ``Σ_j v_j W[idx_j]``; :func:`gather_dot` ``g · W[idx_j]``;
  :func:`scatter_outer` ``Σ c_j g`` into rows ``idx_j`` (+ ``Σ c_j``): the pieces of a
  sparse decoder and of its backward pass; :func:`decoder_backward` does the gather-dot
  and the decoder's scatter in one sweep (:mod:`jsae.sparse`).

``JSAE_KERNELS=0`` disables the library (everything falls back to XLA);
``JSAE_KERNEL_THREADS`` sets the kernels' thread count (default: all CPUs).
"""
from __future__ import annotations

import ctypes
import os
import warnings
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .build import library_path

__all__ = ["available", "on_cpu", "load_error", "top_k", "select", "masked_select", "sparse_decode", "gather_dot",
           "scatter_outer", "scatter_sum", "decoder_backward"]

_TARGETS = {"jsae_topk": "JsaeTopk", "jsae_topk_masked": "JsaeTopkMasked", "jsae_sparse_decode": "JsaeSparseDecode",
            "jsae_gather_dot": "JsaeGatherDot", "jsae_scatter_outer": "JsaeScatterOuter",
            "jsae_decoder_backward": "JsaeDecoderBackward"}
_load_error: str | None = None


@lru_cache(maxsize=None)
def available() -> bool:
    """Whether the kernel library is built, loaded and registered with XLA (CPU targets)."""
    global _load_error
    if os.environ.get("JSAE_KERNELS", "1") == "0":
        _load_error = "disabled by JSAE_KERNELS=0"
        return False
    path = library_path()
    if not path.exists() or path.stat().st_size == 0:
        _load_error = (f"{path.name} is not built (reinstall with `pip install -e .` where a C++ compiler "
                       "is present, or run `python -m jsae.kernels build`)")
        return False
    try:
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except (OSError, AttributeError) as err:
        _load_error = f"{path.name} could not be loaded ({err}); rebuild it with `python -m jsae.kernels build`"
        return False
    return True


def load_error() -> str | None:
    """Why :func:`available` is False (``None`` when the library is loaded)."""
    available()
    return _load_error


def on_cpu() -> bool:
    """True when JAX's default backend is the CPU (where these kernels run)."""
    return jax.default_backend() == "cpu"


@lru_cache(maxsize=None)
def _warn_fallback() -> None:
    warnings.warn(f"jsae CPU kernels unavailable: {load_error()}; falling back to XLA's sort-based top_k "
                  "and dense TopK training, which are several times slower on a CPU.", RuntimeWarning, stacklevel=3)


def _use_kernels() -> bool:
    if available():
        return True
    if on_cpu():
        _warn_fallback()
    return False


def _ffi(name: str, out_shapes, *args, **attrs):
    return jax.ffi.ffi_call(name, out_shapes, vmap_method="broadcast_all")(*args, **attrs)


def _check_row_op(x: jax.Array, k: int) -> None:
    if x.dtype != jnp.float32:
        raise TypeError(f"top-k kernels take float32 rows, got {x.dtype}")
    if x.ndim < 1 or not 0 <= k <= x.shape[-1]:
        raise ValueError(f"k={k} must be between 0 and the row length {x.shape[-1] if x.ndim else None}")


def _kernel_select(x: jax.Array, k, width: int, sort: bool):
    out = (jax.ShapeDtypeStruct(x.shape[:-1] + (width,), jnp.float32),
           jax.ShapeDtypeStruct(x.shape[:-1] + (width,), jnp.int32))
    return tuple(_ffi("jsae_topk", out, x, jnp.asarray(k, jnp.int32), sorted=np.int32(sort)))


def _value_jvp(select_fn, x: jax.Array, *args, tangent_mask=None):
    """``select_fn(x, *args) → (values, indices)`` with ``values = x[indices]``, made differentiable in ``x``.

    The values' tangent is the input's tangent at the selected indices (``lax.top_k``'s
    rule); with ``tangent_mask``, entries outside it (selected as -inf fill) get none.
    """

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
    """``lax.top_k(x, k)``, computed by the selection kernel on CPU.

    Args: x ``[..., L]`` float32; k static, ``0 ≤ k ≤ L``.
    Returns: values ``[..., k]`` (descending) and int32 indices ``[..., k]``.
    """
    x = jnp.asarray(x)
    if x.dtype != jnp.float32 or not _use_kernels():
        return jax.lax.top_k(x, k)
    _check_row_op(x, k)
    return _value_jvp(lambda a: jax.lax.platform_dependent(a, cpu=lambda a: _kernel_select(a, k, k, True),
                                                           default=lambda a: tuple(jax.lax.top_k(a, k))), x)


def select(x: jax.Array, k, width: int) -> tuple[jax.Array, jax.Array]:
    """The top ``k`` entries of each row in positions ``0..k-1``, in no particular order.

    Args: x ``[..., L]`` float32; k an int or traced int32 scalar, ``k ≤ width ≤ L``;
      width static. Positions ``k..width-1`` hold the ranks ``k..width-1`` (unordered):
      the top ``width`` as a set. Same tie rule as :func:`top_k`. Falls back to
      ``lax.top_k(x, width)`` (sorted, which satisfies the same contract).
    Returns: values, int32 indices ``[..., width]``.
    """
    x = jnp.asarray(x)
    if x.dtype != jnp.float32 or not _use_kernels():
        return jax.lax.top_k(x, width)
    _check_row_op(x, width)
    return _value_jvp(lambda a, kk: jax.lax.platform_dependent(
        a, kk, cpu=lambda a, kk: _kernel_select(a, kk, width, False),
        default=lambda a, kk: tuple(jax.lax.top_k(a, width))), x, jnp.asarray(k, jnp.int32))


def masked_select(x: jax.Array, mask: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """``select(where(mask, x, -inf), width, width)`` with one ``mask [L]`` for all rows of ``x [..., L]``.

    The kernel compacts the unmasked entries once and selects among them, so the
    cost follows the number of unmasked entries (AuxK: the dead latents), not ``L``.
    Entries beyond the unmasked ones are ``-inf`` at the lowest other indices.
    """
    x = jnp.asarray(x)

    def xla(a, m):
        return tuple(jax.lax.top_k(jnp.where(m, a, -jnp.inf), width))

    if x.dtype != jnp.float32 or not _use_kernels():
        return xla(x, mask)
    _check_row_op(x, width)

    def kernel(a, m):
        out = (jax.ShapeDtypeStruct(a.shape[:-1] + (width,), jnp.float32),
               jax.ShapeDtypeStruct(a.shape[:-1] + (width,), jnp.int32))
        return tuple(_ffi("jsae_topk_masked", out, a, m, sorted=np.int32(False)))

    mask = jnp.asarray(mask, bool)
    return _value_jvp(lambda a, m: jax.lax.platform_dependent(a, m, cpu=kernel, default=xla), x, mask,
                      tangent_mask=mask)


def _rows(a: jax.Array) -> jax.Array:
    return a.reshape((-1, a.shape[-1]))


def _dispatch(kernel_fn, xla_fn, *args):
    """``kernel_fn(*args)`` on CPU when the library is loaded, else ``xla_fn(*args)``."""
    if not _use_kernels():
        return xla_fn(*args)
    return jax.lax.platform_dependent(*args, cpu=kernel_fn, default=xla_fn)


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
