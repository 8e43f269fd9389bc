"""CPU kernels for exact top-k selection and sparse TopK algebra, reached through ``jax.ffi``.

XLA:CPU's ``lax.top_k`` sorts and its scatters are serial; the C++ kernels of
``cpu_kernels.cc`` (built at install time, :mod:`jsae.kernels.build`) do the same work
in linear time per row, split across threads. :mod:`~jsae.kernels.load` finds and
registers the library; :mod:`~jsae.kernels.ops` holds the operations (forward only:
their derivatives are defined in :mod:`jsae.core.sparse`).
"""
from .load import available, load_error, on_cpu
from .ops import decoder_backward, gather_dot, masked_select, scatter_outer, scatter_sum, select, sparse_decode, top_k

__all__ = ["available", "on_cpu", "load_error", "top_k", "select", "masked_select", "sparse_decode", "gather_dot",
           "scatter_outer", "scatter_sum", "decoder_backward"]
