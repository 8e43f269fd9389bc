"""Universality: two seeds on the same data learn matching features; a random control does not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsae.runs.load import load_sweep
from jsae.analyses.universality import compare_sweeps


@pytest.fixture(scope="module")
def sweeps(trained_run, trained_run_seed1):
    return load_sweep(trained_run), load_sweep(trained_run_seed1)


def random_directions(sweep, seed=0):
    """The same sweep with every decoder direction replaced by a random unit vector."""
    key = jax.random.key(seed)
    params = []
    for i, p in enumerate(sweep.params):
        d = jax.random.normal(jax.random.fold_in(key, i), p.W_dec.shape)
        params.append(p.replace(W_dec=d / jnp.linalg.norm(d, axis=-1, keepdims=True)))
    return sweep.with_params(params)


def test_two_seeds_score_clearly_higher_than_random_directions(sweeps):
    a, b = sweeps
    res = compare_sweeps(a, b)
    assert res.params["method"] == "decoder"
    ctrl = compare_sweeps(a, random_directions(b))
    assert res.score > ctrl.score + 0.25
    assert res.score > res.control_score + 0.25  # the built-in chance level agrees
    assert abs(ctrl.score - res.control_score) < 0.1
    assert res.params["frac_matched"] > ctrl.params["frac_matched"] + 0.2


def test_a_sweep_matches_itself_perfectly(sweeps):
    a, _ = sweeps
    res = compare_sweeps(a, a)
    np.testing.assert_allclose(res.pairs.mean_max_ab, 1.0, atol=1e-5)
    assert (res.pairs.frac_matched_ab == 1.0).all()


def test_activation_matching_over_shared_rows(sweeps, labelled_store):
    a, b = sweeps
    res = compare_sweeps(a, b, store=labelled_store, method="activation")
    assert res.params["method"] == "activation" and res.params["n_rows"] == 5000
    assert res.score > res.control_score + 0.4
    # Latents dead on the rows are left out.
    assert (res.pairs.n_a <= res.pairs.latent_size).all()
