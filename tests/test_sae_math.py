"""The SAE math of jsae.core.sae / jsae.core.loss checked against an independent float64 numpy reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functools import partial

from jsae.core import loss as losses, sae
from reference_trainer import PARAM_NAMES, loss_and_grads

M, L, B = 24, 40, 16


def np_params(seed):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((L, M))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return {"W_enc": rng.standard_normal((M, L)) * 0.5, "b_enc": rng.standard_normal(L) * 0.1,
            "W_dec": d, "b_pre": rng.standard_normal(M) * 0.3}


def to_jax(p):
    return sae.SAEParams(**{k: jnp.asarray(v, jnp.float32) for k, v in p.items()})


def np_topk_codes(p, x, k):
    pre = (x - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
    v = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1)[:, :k]
    np.put_along_axis(v, top, np.maximum(np.take_along_axis(pre, top, axis=1), 0), axis=1)
    return pre, v


def np_nmse(recon, x):
    return np.sum((recon - x) ** 2) / np.sum((x - x.mean(0)) ** 2)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.mark.parametrize("k", [1, 5, 17])
def test_topk_keeps_exactly_k_largest_per_row(rng, k):
    p = np_params(k)
    x = rng.standard_normal((B, M)) + 2.0  # shifted so that most top pre-activations are positive
    p["b_enc"] += 5.0  # every kept value positive → exactly k non-zeros
    v = np.asarray(sae.encode(to_jax(p), jnp.asarray(x, jnp.float32), k))
    assert np.all((v != 0).sum(axis=1) == k)
    _, v_ref = np_topk_codes(p, x, k)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-5)


def test_traced_k_below_k_max_equals_topk_of_that_k(rng):
    p = to_jax(np_params(0))
    x = jnp.asarray(rng.standard_normal((B, M)), jnp.float32)
    dense_small = sae.encode(p, x, 3)
    masked = sae.encode(p, x, jnp.int32(3), k_max=11)
    np.testing.assert_array_equal(np.asarray(dense_small), np.asarray(masked))


def test_relu_after_topk_zeroes_negative_pre_activations(rng):
    p = np_params(3)
    p["b_enc"] -= 100.0  # all pre-activations negative
    v = np.asarray(sae.encode(to_jax(p), jnp.asarray(rng.standard_normal((B, M)), jnp.float32), 5))
    assert np.all(v == 0)


def test_encode_decode_match_numpy_float64(rng):
    p = np_params(7)
    x = rng.standard_normal((B, M))
    _, v_ref = np_topk_codes(p, x, 6)
    recon_ref = v_ref @ p["W_dec"] + p["b_pre"]
    jp = to_jax(p)
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(np.asarray(sae.reconstruct(jp, xj, 6)), recon_ref, rtol=1e-4, atol=1e-4)
    vals, idx = sae.encode_sparse(jp, xj, 6)
    np.testing.assert_allclose(np.asarray(sae.decode_sparse(jp, vals, idx)), recon_ref, rtol=1e-4, atol=1e-4)


def test_loss_value_matches_numpy_nmse(rng):
    p = np_params(8)
    x = rng.standard_normal((B, M))
    _, v = np_topk_codes(p, x, 4)
    ref = np_nmse(v @ p["W_dec"] + p["b_pre"], x)
    loss, out = losses.topk_loss(to_jax(p), jnp.asarray(x, jnp.float32), 4, jnp.zeros(L, bool), k_max=4,
                              k_aux=12, auxk_coef=1 / 32)
    np.testing.assert_allclose(float(out.nmse), ref, rtol=1e-5)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


def test_auxk_is_zero_when_nothing_is_dead(rng):
    p = to_jax(np_params(9))
    x = jnp.asarray(rng.standard_normal((B, M)), jnp.float32)
    _, out = losses.topk_loss(p, x, 4, jnp.zeros(L, bool), k_max=4, k_aux=12, auxk_coef=1 / 32)
    assert float(out.auxk) == 0.0


def test_auxk_matches_numpy_reference_with_dead_latents(rng):
    p = np_params(10)
    x = rng.standard_normal((B, M))
    dead = np.zeros(L, bool)
    dead[rng.choice(L, 15, replace=False)] = True
    k, k_aux = 4, 6
    pre, v = np_topk_codes(p, x, k)
    resid = x - (v @ p["W_dec"] + p["b_pre"])
    masked = np.where(dead, pre, -np.inf)
    top = np.argsort(-masked, axis=1)[:, :k_aux]
    aux_v = np.zeros_like(pre)
    np.put_along_axis(aux_v, top, np.maximum(np.take_along_axis(masked, top, axis=1), 0), axis=1)
    ref = np_nmse(aux_v @ p["W_dec"], resid)  # no b_pre: it is not counted twice
    _, out = losses.topk_loss(to_jax(p), jnp.asarray(x, jnp.float32), k, jnp.asarray(dead), k_max=k,
                           k_aux=k_aux, auxk_coef=1 / 32)
    assert ref > 0
    np.testing.assert_allclose(float(out.auxk), ref, rtol=1e-4)


@pytest.mark.parametrize("loss_fn", [losses.topk_loss, partial(losses.topk_loss, sparse_path=True)], ids=["dense", "sparse"])
def test_training_loss_gradients_with_auxk_match_the_float64_reference(rng, loss_fn):
    """The two loss functions training calls (jsae.training.grid picks one per group), differentiated by
    JAX, against the hand-derived float64 gradient of tests/reference_trainer.py: NMSE + AuxK on
    dead latents (residual detached, no b_pre), with a traced k below the group's k_max."""
    jp = to_jax(np_params(16))
    p = {n: np.asarray(getattr(jp, n), np.float64) for n in PARAM_NAMES}  # the float32 values, exactly
    x32 = rng.standard_normal((B, M)).astype(np.float32)
    dead = np.zeros(L, bool)
    dead[rng.choice(L, 15, replace=False)] = True
    k, k_max, k_aux, coef = 4, 7, 6, 0.25

    def loss(q):
        return loss_fn(q, jnp.asarray(x32), jnp.int32(k), jnp.asarray(dead), k_max=k_max, k_aux=k_aux,
                       auxk_coef=coef, fire_threshold=1e-3)

    (value, out), g = jax.value_and_grad(loss, has_aux=True)(jp)
    g_ref, info = loss_and_grads(p, x32.astype(np.float64), k, dead, k_aux=k_aux, auxk_coef=coef,
                                 fire_threshold=1e-3)
    g_main, _ = loss_and_grads(p, x32.astype(np.float64), k, np.zeros(L, bool), k_aux=k_aux, auxk_coef=coef,
                               fire_threshold=1e-3)
    assert info.auxk > 0 and info.margin > 1e-4  # AuxK active; no TopK/ReLU/threshold choice near a flip
    np.testing.assert_allclose(float(out.nmse), info.nmse, rtol=1e-5)
    np.testing.assert_allclose(float(out.auxk), info.auxk, rtol=1e-5)
    np.testing.assert_allclose(float(value), info.loss, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.fired), info.fired)
    for n in PARAM_NAMES:
        scale = np.abs(g_ref[n]).max()
        # float32 gradients: ~1e-6 relative error; 2e-5 of the largest entry leaves room for summation order.
        np.testing.assert_allclose(np.asarray(getattr(g, n), np.float64), g_ref[n], rtol=1e-4, atol=2e-5 * scale,
                                   err_msg=n)
        assert np.abs(g_ref[n] - g_main[n]).max() > 100 * 2e-5 * scale, n  # AuxK's share is far above that


def test_projected_decoder_gradient_has_no_component_along_its_row(rng):
    p = to_jax(np_params(12))
    g = sae.SAEParams(*(jnp.asarray(rng.standard_normal(a.shape), jnp.float32) for a in (p.W_enc, p.b_enc, p.W_dec, p.b_pre)))
    proj = np.asarray(sae.project_decoder_grad(p, g).W_dec, np.float64)
    d = np.asarray(p.W_dec, np.float64)
    np.testing.assert_allclose(np.sum(proj * d, axis=1), 0.0, atol=1e-5)
    ref = np.asarray(g.W_dec, np.float64) - np.sum(np.asarray(g.W_dec, np.float64) * d, 1, keepdims=True) * d
    np.testing.assert_allclose(proj, ref, atol=1e-5)


def test_normalize_decoder_gives_unit_rows(rng):
    p = to_jax(np_params(13))
    p = p.replace(W_dec=p.W_dec * jnp.asarray(rng.uniform(0.1, 5.0, (L, 1)), jnp.float32))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sae.normalize_decoder(p).W_dec), axis=1), 1.0, rtol=1e-6)


def test_init_ties_encoder_to_decoder_transpose_with_unit_rows():
    p = sae.init_params(jax.random.key(0), M, L, jnp.ones(M))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(p.W_dec), axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(p.W_enc), np.asarray(p.W_dec).T)
    np.testing.assert_array_equal(np.asarray(p.b_pre), np.ones(M))


def test_relu_l1_loss_matches_numpy(rng):
    p = np_params(14)
    x = rng.standard_normal((B, M))
    v = np.maximum((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0)
    coef = 0.01
    ref = np_nmse(v @ p["W_dec"] + p["b_pre"], x) + coef * np.mean(v.sum(1))
    loss, out = losses.relu_l1_loss(to_jax(p), jnp.asarray(x, jnp.float32), coef, jnp.zeros(L, bool))
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    np.testing.assert_allclose(float(out.l0), np.mean((v > 0).sum(1)), rtol=1e-6)


def test_bf16_matmul_is_close_to_float32(rng):
    p = to_jax(np_params(15))
    x = jnp.asarray(rng.standard_normal((B, M)), jnp.float32)
    a = np.asarray(sae.pre_activation(p, x))
    b = np.asarray(sae.pre_activation(p, x, jnp.bfloat16))
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, atol=0.1 * np.abs(a).max())
