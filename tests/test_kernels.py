"""The CPU kernels (jsae.kernels) equal XLA's top_k and a float64 reference of the sparse algebra.

Every test here compares the kernels with XLA: without the built library both sides would be
XLA, so each one first asserts that the library loads (:func:`kernels_loaded`), unless the
environment says it is not expected (``JSAE_EXPECT_KERNELS=0``, e.g. a machine without a
C++ compiler), where they are skipped with that reason.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsae import kernels
from jsae.core import sparse as differentiable
from jsae.kernels import ops


@pytest.fixture(autouse=True)
def kernels_loaded(request):
    """The library must load for these comparisons to mean anything (the fallback test excepted)."""
    if "fallback" in request.node.name:
        return
    if os.environ.get("JSAE_EXPECT_KERNELS", "1") == "0":
        pytest.skip("JSAE_EXPECT_KERNELS=0: the kernel library is not expected on this machine")
    assert kernels.available(), f"the kernel library is expected but does not load: {kernels.load_error()}"


def test_the_kernel_library_is_built_and_loads():
    # The install builds it (setup.py); kernels_loaded fails every comparison below otherwise.
    assert kernels.available(), kernels.load_error()


def test_the_comparisons_run_on_the_portable_variant_the_loader_picks_for_this_cpu():
    """The library compared below is the one a default install loads here: the x86-64-v3 build
    on a CPU with every v3 feature, else the baseline (``JSAE_KERNELS_VARIANT=baseline``: the
    baseline; tests/test_kernels_variants.py runs this file that way too), never a library
    built for one CPU (``-march=native``)."""
    from jsae.kernels.build import choose_variant, library_path, variants
    from jsae.kernels.load import ENV_VARIANT, loaded_variant, this_cpu_flags

    baseline = variants()[0]
    want = baseline if os.environ.get(ENV_VARIANT) == "baseline" else choose_variant(this_cpu_flags())
    lib = loaded_variant()
    assert (lib.path, lib.march) == (library_path(suffix=want.suffix), want.march or "default")


def test_a_missing_library_fails_the_comparisons_instead_of_passing_them(tmp_path, monkeypatch):
    """kernels_loaded's condition: with the library path pointing at nothing, available() is
    False and says why (so a test comparing kernels with XLA fails instead of comparing XLA
    with itself)."""
    from jsae.kernels import load

    monkeypatch.setattr(load, "library_path", lambda: tmp_path / "_jsae_cpu.so")
    assert not kernels.available()
    assert "is not built" in kernels.load_error()


def _assert_same_topk(x: np.ndarray, k: int) -> None:
    got_v, got_i = jax.jit(lambda a: kernels.top_k(a, k))(jnp.asarray(x))
    ref_v, ref_i = jax.lax.top_k(jnp.asarray(x), k)
    np.testing.assert_array_equal(np.asarray(got_i), np.asarray(ref_i))
    np.testing.assert_array_equal(np.asarray(got_v).view(np.int32), np.asarray(ref_v).view(np.int32))


@pytest.mark.parametrize("shape,k", [((1, 1), 1), ((3, 7), 3), ((5, 8), 8), ((4, 9), 1), ((16, 100), 35),
                                     ((64, 1200), 35), ((2, 3, 300), 96), ((40, 50), 49), ((6, 64), 0)])
def test_top_k_equals_lax_top_k_on_random_rows(shape, k):
    x = np.random.default_rng(sum(shape) + k).standard_normal(shape).astype(np.float32)
    _assert_same_topk(x, k)


@pytest.mark.parametrize("k", [1, 4, 20, 64])
def test_top_k_on_constant_rows_and_exact_ties(k):
    rng = np.random.default_rng(k)
    constant = np.full((3, 64), 0.25, np.float32)
    ties = rng.integers(-3, 4, size=(50, 64)).astype(np.float32)  # 7 distinct values: ties everywhere
    zeros = np.where(rng.random((5, 64)) < 0.5, 0.0, -0.0).astype(np.float32)  # +0 ranks above -0
    for x in (constant, ties, zeros):
        _assert_same_topk(x, k)


def test_top_k_with_infinities_and_nan():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 100)).astype(np.float32)
    x[rng.random(x.shape) < 0.7] = -np.inf  # AuxK masks live latents with -inf
    x[0] = -np.inf
    x[1, :5] = np.inf
    x[2, [3, 50]] = np.nan  # XLA's total order: NaN above +inf
    for k in (1, 10, 40, 100):
        _assert_same_topk(x, k)


def test_top_k_under_vmap_and_with_leading_dims():
    x = np.random.default_rng(1).standard_normal((3, 4, 200)).astype(np.float32)
    got = jax.vmap(jax.vmap(lambda r: kernels.top_k(r, 12)))(jnp.asarray(x))
    ref = jax.lax.top_k(jnp.asarray(x), 12)
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(ref[1]))
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(ref[0]))


def _rank_sets(idx: np.ndarray, k: int, width: int):
    return set(idx[:k].tolist()), set(idx[:width].tolist())


@pytest.mark.parametrize("L,width", [(1200, 35), (100, 35), (300, 96), (30, 30)])
def test_select_puts_the_top_k_first_for_a_traced_k_per_model(L, width):
    rng = np.random.default_rng(L + width)
    x = rng.standard_normal((4, 500, L)).astype(np.float32)
    x[:, ::7, : L // 2] = np.round(x[:, ::7, : L // 2])  # exact ties in some rows
    ks = jnp.asarray([1, width // 3, width - 1, width], jnp.int32)
    vals, idx = jax.jit(jax.vmap(lambda r, k: kernels.select(r, k, width)))(jnp.asarray(x), ks)
    ref_v, ref_i = jax.lax.top_k(jnp.asarray(x), width)
    vals, idx, ref_i = np.asarray(vals), np.asarray(idx), np.asarray(ref_i)
    for m, k in enumerate(np.asarray(ks)):
        for r in range(x.shape[1]):
            assert _rank_sets(idx[m, r], k, width) == _rank_sets(ref_i[m, r], k, width)
    np.testing.assert_array_equal(vals, np.take_along_axis(x, idx, axis=-1))


@pytest.mark.parametrize("n_live", [0, 3, 40, 250, 300])
def test_masked_select_equals_top_k_of_the_masked_rows(n_live):
    rng = np.random.default_rng(n_live)
    L, width = 300, 40
    x = rng.standard_normal((3, 64, L)).astype(np.float32)
    mask = np.zeros((3, L), bool)
    for m in range(3):
        mask[m, rng.permutation(L)[:n_live]] = True
    vals, idx = jax.vmap(lambda a, mm: kernels.masked_select(a, mm, width))(jnp.asarray(x), jnp.asarray(mask))
    masked = jnp.where(jnp.asarray(mask)[:, None, :], jnp.asarray(x), -jnp.inf)
    ref_v, ref_i = jax.lax.top_k(masked, width)
    vals, idx, ref_v, ref_i = map(np.asarray, (vals, idx, ref_v, ref_i))
    for m in range(3):
        for r in range(64):
            assert set(idx[m, r]) == set(ref_i[m, r])
            assert sorted(vals[m, r].tolist()) == sorted(ref_v[m, r].tolist())


def _sparse_inputs(seed: int, L=57, M=24, B=33, K=6):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((L, M)).astype(np.float32)
    g = rng.standard_normal((B, M)).astype(np.float32)
    v = rng.standard_normal((B, K)).astype(np.float32)
    v[rng.random(v.shape) < 0.2] = 0.0  # masked ranks: skipped by the kernels
    idx = np.stack([rng.permutation(L)[:K] for _ in range(B)]).astype(np.int32)
    idx[::5, 1] = idx[::5, 0] if K > 1 else idx[::5, 0]  # repeated latents within a row add up
    return w, g, v, idx


def test_sparse_decode_gather_dot_scatter_outer_match_float64_numpy():
    w, g, v, idx = _sparse_inputs(3)
    w64, g64, v64 = w.astype(np.float64), g.astype(np.float64), v.astype(np.float64)
    ref_decode = np.einsum("bk,bkm->bm", v64, w64[idx])
    ref_dot = np.einsum("bm,bkm->bk", g64, w64[idx])
    ref_out = np.zeros_like(w64)
    ref_sum = np.zeros(len(w64))
    for b in range(idx.shape[0]):
        for j in range(idx.shape[1]):
            ref_out[idx[b, j]] += v64[b, j] * g64[b]
            ref_sum[idx[b, j]] += v64[b, j]
    np.testing.assert_allclose(np.asarray(kernels.sparse_decode(w, v, idx)), ref_decode, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(kernels.gather_dot(w, g, idx)), ref_dot, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(kernels.gather_dot(w, g, idx, v)), np.where(v != 0, ref_dot, 0.0),
                               rtol=1e-5, atol=1e-5)
    out, csum = kernels.scatter_outer(g, v, idx, w.shape[0])
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(csum), ref_sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(kernels.scatter_sum(v, idx, w.shape[0])), ref_sum, rtol=1e-5, atol=1e-5)
    dv, dw = kernels.decoder_backward(w, g, v, idx)
    np.testing.assert_allclose(np.asarray(dv), np.where(v != 0, ref_dot, 0.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dw), ref_out, rtol=1e-5, atol=1e-5)


def test_sparse_algebra_under_vmap_over_models():
    inputs = [_sparse_inputs(s) for s in range(3)]
    w, g, v, idx = (np.stack(a) for a in zip(*inputs))
    dec = jax.vmap(kernels.sparse_decode)(w, v, idx)
    out, csum = jax.vmap(lambda g, v, i: kernels.scatter_outer(g, v, i, w.shape[1]))(g, v, idx)
    for m in range(3):
        np.testing.assert_allclose(np.asarray(dec[m]), np.asarray(kernels.sparse_decode(w[m], v[m], idx[m])),
                                   rtol=1e-6)
        one = kernels.scatter_outer(g[m], v[m], idx[m], w.shape[1])
        np.testing.assert_allclose(np.asarray(out[m]), np.asarray(one[0]), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(csum[m]), np.asarray(one[1]), rtol=1e-6)


def test_without_the_library_the_xla_fallback_gives_the_same_results_and_warns_once(monkeypatch):
    """JSAE_KERNELS=0 is read at each call (no import-time caching): set in this process, it
    switches the operations to XLA, with one warning."""
    import warnings

    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 50)).astype(np.float32))
    monkeypatch.setenv("JSAE_KERNELS", "0")
    monkeypatch.setattr(ops, "_warned", set())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = kernels.top_k(x, 5)
        kernels.select(x, 3, 5)
    assert not kernels.available() and "JSAE_KERNELS=0" in kernels.load_error()
    assert sum("kernels unavailable" in str(m.message) for m in w) == 1, [str(m.message) for m in w]
    np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(jax.lax.top_k(x, 5)[1]))
    monkeypatch.delenv("JSAE_KERNELS")
    if os.environ.get("JSAE_EXPECT_KERNELS", "1") != "0":  # the switch is undone at the next call
        assert kernels.available(), kernels.load_error()


def test_selections_are_differentiable_like_lax_top_k():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((6, 40)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(6).standard_normal((6, 9)), jnp.float32)
    ref = jax.grad(lambda a: jnp.sum(jax.lax.top_k(a, 9)[0] * w))(x)
    np.testing.assert_array_equal(jax.grad(lambda a: jnp.sum(differentiable.top_k(a, 9)[0] * w))(x), ref)
    got = jax.grad(lambda a: jnp.sum(jnp.sort(differentiable.select(a, 4, 9)[0]) * jnp.sort(w)))(x)
    np.testing.assert_array_equal(np.asarray(got) != 0, np.asarray(ref) != 0)  # the same 9 entries get gradient
    mask = jnp.arange(40) % 3 == 0  # 14 unmasked of 40: 9 selected among them
    g = jax.grad(lambda a: jnp.sum(differentiable.masked_select(a, mask, 20)[0].clip(-1e3)))(x)
    assert np.all(np.asarray(g)[:, ~np.asarray(mask)] == 0) and np.all(np.asarray(g)[:, np.asarray(mask)] == 1)
