"""The analysis math against float64 numpy on fresh random inputs (no training)."""
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from jsae.core.activation import TopK
from jsae.core.spec import ModelSpec
from jsae.core.normalize import Normalizer
from jsae.analyses.probing import scores_from_counts, single_latent_counts
from jsae.core.sae import SAEParams
from jsae.analyses.steering import class_centroids, relative_similarity, steer_codes, steer_latents
from jsae.models import SAEModel
from jsae.analyses.universality import best_correlation_match, best_cosine_match


def random_model(seed=0, dim=12, latent_size=20, k=4):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((latent_size, dim))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    params = SAEParams(W_enc=jnp.asarray(rng.standard_normal((dim, latent_size)), jnp.float32),
                       b_enc=jnp.asarray(0.1 * rng.standard_normal(latent_size), jnp.float32),
                       W_dec=jnp.asarray(d, jnp.float32), b_pre=jnp.asarray(rng.standard_normal(dim), jnp.float32))
    norm = Normalizer("standardize", rng.standard_normal(dim), rng.uniform(0.5, 2.0, dim))
    return SAEModel(ModelSpec(latent_size, TopK(k)), params, norm), rng


def test_relative_similarity_is_eq3_in_float64():
    rng = np.random.default_rng(1)
    x, c_pos, c_neg = rng.standard_normal((50, 16)), rng.standard_normal(16), rng.standard_normal(16)
    want = np.array([xi @ c_pos / np.linalg.norm(xi) / np.linalg.norm(c_pos)
                     - xi @ c_neg / np.linalg.norm(xi) / np.linalg.norm(c_neg) for xi in x])
    np.testing.assert_allclose(relative_similarity(x, c_pos, c_neg), want, rtol=1e-12, atol=1e-12)
    # Positive means closer to the positive centroid.
    assert relative_similarity(c_pos, c_pos, c_neg) > 0 > relative_similarity(c_neg, c_pos, c_neg)


def test_class_centroids_are_class_means():
    rng = np.random.default_rng(2)
    recon, y = rng.standard_normal((3, 40, 8)), rng.random(40) < 0.4
    c_pos, c_neg = class_centroids(recon, y)
    np.testing.assert_allclose(c_pos, recon[:, y].mean(1))
    np.testing.assert_allclose(c_neg, recon[:, ~y].mean(1))


def test_steer_codes_sets_only_the_steered_latent_eq1_eq2():
    rng = np.random.default_rng(3)
    v = np.abs(rng.standard_normal((6, 10)))
    y = np.array([True, False, True, False, False, True])
    a = 1.0
    out = steer_codes(v, 4, np.where(y, -a, a))
    np.testing.assert_array_equal(np.delete(out, 4, axis=1), np.delete(v, 4, axis=1))
    np.testing.assert_array_equal(out[y, 4], -a)  # Eq. 1: deactivated for positives
    np.testing.assert_array_equal(out[~y, 4], a)  # Eq. 2: activated for negatives
    assert v[0, 4] != -a  # the input is not modified


def test_steer_latents_equals_decoding_the_steered_codes_by_hand():
    model, rng = random_model()
    x = rng.standard_normal((9, 12)).astype(np.float32)
    latents, values = np.array([0, 5, 19]), np.array([-1.0, 0.0, 2.5])
    got = steer_latents(model, x, latents, values)  # [J, B, M]
    v = model.encode(x).astype(np.float64)
    W, b = np.asarray(model.params.W_dec, np.float64), np.asarray(model.params.b_pre, np.float64)
    for j, (lat, val) in enumerate(zip(latents, values)):
        vt = v.copy()
        vt[:, lat] = val
        want = (vt @ W + b) * model.normalizer.scale + model.normalizer.mean
        np.testing.assert_allclose(got[j], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got[j], model.decode(steer_codes(v, lat, val)), rtol=1e-4, atol=1e-4)


def test_single_latent_counts_match_sklearn_for_every_model_and_latent():
    rng = np.random.default_rng(4)
    active = rng.random((3, 70, 11)) < 0.3
    active[0, :, 2] = False  # a latent that never fires: precision defined as 0
    y = rng.random(70) < 0.5
    p, r, f = scores_from_counts(*single_latent_counts(active, y))
    for m in range(3):
        for j in range(11):
            kw = dict(zero_division=0)
            assert p[m, j] == pytest.approx(precision_score(y, active[m, :, j], **kw))
            assert r[m, j] == pytest.approx(recall_score(y, active[m, :, j], **kw))
            assert f[m, j] == pytest.approx(f1_score(y, active[m, :, j], **kw))


def test_best_cosine_match_equals_brute_force():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 7, 9)), rng.standard_normal((2, 13, 9))
    idx, cos = best_cosine_match(a, b)
    for n in range(2):
        for i in range(7):
            c = [a[n, i] @ b[n, j] / np.linalg.norm(a[n, i]) / np.linalg.norm(b[n, j]) for j in range(13)]
            assert idx[n, i] == int(np.argmax(c)) and cos[n, i] == pytest.approx(max(c))


def test_best_correlation_match_equals_corrcoef_and_skips_dead_latents():
    rng = np.random.default_rng(6)
    va, vb = rng.standard_normal((50, 5)), rng.standard_normal((50, 6))
    vb[:, 3] = 0.0  # dead: never chosen
    va[:, 1] = 0.0  # dead: no score
    idx, corr = best_correlation_match(va, vb)
    with np.errstate(invalid="ignore", divide="ignore"):
        full = np.corrcoef(va.T, vb.T)[:5, 5:]
    for i in (0, 2, 3, 4):
        live = [j for j in range(6) if j != 3]
        j = live[int(np.argmax(full[i, live]))]
        assert idx[i] == j and corr[i] == pytest.approx(full[i, j])
    assert np.isnan(corr[1])
