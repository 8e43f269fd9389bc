"""Steering (paper III-D, V-C): Eqs. 1-3 exactly, and the sign of δ_s flips for both classes."""
import numpy as np
import pytest

from jsae.analyses.steering import class_centroids, relative_similarity, steer, steer_codes


def test_steering_flips_the_sign_of_mean_delta_for_both_classes(sweep, labelled_store):
    """Tables III-IV: es rows move to the en side, en rows to the es side."""
    res = steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=8, alpha=1.0,
                alpha_units="mean_active")
    t = res.table().set_index("samples")
    assert t.loc["es", "before_steering"] > 0 > t.loc["es", "after_steering"]
    assert t.loc["en", "before_steering"] < 0 < t.loc["en", "after_steering"]
    row = res.summary.iloc[0]
    assert row.pos_sign_flipped and row.neg_sign_flipped
    assert row.alpha_units == "mean_active" and row.a == pytest.approx(row.mean_active)


def test_eq1_to_eq3_by_hand_in_float64(sweep, splits, labelled_store):
    train, test = splits
    m = sweep.model(k=3, latent_size=8)
    res = steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=8, alpha=1.0,
                alpha_units="normalized")  # paper: a = 1, here in latent units (v_φ = ∓1)
    phi = int(res.summary.latent.iloc[0])
    # Centroids: SAE reconstructions of the training rows, per class, raw space.
    c_pos, c_neg = class_centroids(m.reconstruct(train.x).astype(np.float64), train.y)
    v = m.encode(test.x).astype(np.float64)
    vt = steer_codes(v, phi, np.where(test.y, -1.0, 1.0))  # Eq. 1 (positives), Eq. 2 (negatives)
    W, b = np.asarray(m.params.W_dec, np.float64), np.asarray(m.params.b_pre, np.float64)
    eps = (v @ W + b) * m.normalizer.scale + m.normalizer.mean
    eps_t = (vt @ W + b) * m.normalizer.scale + m.normalizer.mean
    np.testing.assert_allclose(res.delta_before["k3_L8"], relative_similarity(eps, c_pos, c_neg), atol=2e-5)
    np.testing.assert_allclose(res.delta_after["k3_L8"][0], relative_similarity(eps_t, c_pos, c_neg), atol=2e-5)


def test_grid_steering_equals_one_model_at_a_time(sweep, labelled_store):
    grid = steer(sweep, labelled_store, "lang", "es", "en", alpha=[0.5, 2.0])
    assert len(grid.summary) == 2 * len(sweep.specs)
    one = steer(sweep, labelled_store, "lang", "es", "en", k=4, latent_size=32, alpha=[0.5, 2.0])
    np.testing.assert_allclose(grid.delta_after["k4_L32"], one.delta_after["k4_L32"], atol=1e-6)


def test_stronger_steering_moves_further(sweep, labelled_store):
    res = steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=8, alpha=[0.5, 1.0, 2.0, 4.0])
    s = res.summary.sort_values("alpha")
    assert np.all(np.diff(s.pos_after) < 0) and np.all(np.diff(s.neg_after) > 0)


def test_zero_ablation_moves_positives_toward_the_negative_class_only(sweep, labelled_store):
    res = steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=8, mode="ablate")
    row = res.summary.iloc[0]
    assert row.pos_after < row.pos_before - 0.2
    assert row.neg_after == pytest.approx(row.neg_before, abs=0.05)


def test_any_latent_can_be_steered(sweep, labelled_store):
    res = steer(sweep, labelled_store, "lang", "es", "en", k=4, latent_size=16, latent=0, alpha=1.0)
    assert res.summary.latent.tolist() == [0]
    with pytest.raises(IndexError, match="out of range"):
        steer(sweep, labelled_store, "lang", "es", "en", k=4, latent_size=16, latent=16)
