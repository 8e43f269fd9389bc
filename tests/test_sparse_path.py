"""The sparse TopK training path (jsae.core.sparse) equals the dense path it replaces."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsae import kernels
from jsae.core import loss as losses, sae
from jsae.config import GridConfig, OptimConfig, SAEConfig
from jsae.core.activation import ReluL1, TopK
from jsae.core.spec import ModelSpec
from jsae.training.grid import GridTrainer, GroupSpec, make_groups, prefers_sparse
from jsae.synthetic import make_dictionary_data
from jsae.training.data import batch_indices

RTOL = 1e-5


def _params(seed: int, dim: int, L: int, duplicate: bool = False) -> sae.SAEParams:
    rng = np.random.default_rng(seed)
    p = sae.init_params(jax.random.key(seed), dim, L, jnp.asarray(rng.standard_normal(dim) * 0.1, jnp.float32))
    p = p.replace(b_enc=jnp.asarray(rng.standard_normal(L) * 0.1, jnp.float32))
    if duplicate:  # latents 1..L/2 copy latent 0's encoder: equal pre-activations, exact ties in every row
        w = np.asarray(p.W_enc).copy()
        b = np.asarray(p.b_enc).copy()
        w[:, 1: L // 2] = w[:, :1]
        b[1: L // 2] = b[0] + 2.0  # positive and large: the tied latents are selected and active
        b[0] = b[0] + 2.0
        p = p.replace(W_enc=jnp.asarray(w), b_enc=jnp.asarray(b))
    return p


def _loss_and_grads(fn, p, x, k, dead, k_max, k_aux):
    return jax.value_and_grad(lambda p: fn(p, x, k, dead, k_max=k_max, k_aux=k_aux, auxk_coef=1 / 32),
                              has_aux=True)(p)


@pytest.mark.parametrize("k,L,k_max,ties", [(5, 64, 5, False), (3, 64, 12, False), (24, 24, 24, False),
                                            (8, 40, 8, True), (4, 40, 10, True), (30, 200, 30, False)])
def test_sparse_loss_and_every_gradient_equal_the_dense_path(k, L, k_max, ties):
    dim, B = 16, 48
    rng = np.random.default_rng(k * L)
    p = _params(L + k, dim, L, duplicate=ties)
    x = jnp.asarray(rng.standard_normal((B, dim)), jnp.float32)
    dead = jnp.asarray(rng.random(L) < 0.4)  # AuxK active
    k_aux = min(dim // 2, L)
    (ld, outd), gd = _loss_and_grads(losses.topk_loss, p, x, k, dead, k_max, k_aux)
    (ls, outs), gs = _loss_and_grads(partial(losses.topk_loss, sparse_path=True), p, x, k, dead, k_max, k_aux)
    assert float(outd.auxk) > 0
    np.testing.assert_allclose(float(ls), float(ld), rtol=RTOL)
    for field in ("nmse", "auxk", "l0"):
        np.testing.assert_allclose(float(getattr(outs, field)), float(getattr(outd, field)), rtol=RTOL)
    np.testing.assert_array_equal(np.asarray(outs.fired), np.asarray(outd.fired))
    for name in ("W_enc", "b_enc", "W_dec", "b_pre"):
        a, b = np.asarray(getattr(gs, name)), np.asarray(getattr(gd, name))
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * np.abs(b).max(), err_msg=name)


def test_tied_latents_are_resolved_by_the_lower_index_on_both_paths():
    dim, L, k = 8, 20, 3
    p = _params(0, dim, L, duplicate=True)  # latents 0..9 tie in every row
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, dim)), jnp.float32)
    pre = sae.pre_activation(p, x)
    ref_v, ref_i = jax.lax.top_k(pre, k)
    expected = np.zeros(pre.shape, np.float32)
    np.put_along_axis(expected, np.asarray(ref_i), np.maximum(np.asarray(ref_v), 0), axis=-1)
    assert (np.asarray(ref_i)[:, 1] == 1).sum() > 10  # many rows pick tied latents 0, 1, 2
    np.testing.assert_array_equal(np.asarray(sae.topk_dense(pre, k, k)), expected)
    vals, idx = kernels.select(pre, k, k)
    sparse_codes = np.zeros(pre.shape, np.float32)
    np.put_along_axis(sparse_codes, np.asarray(idx), np.maximum(np.asarray(vals), 0), axis=-1)
    np.testing.assert_array_equal(sparse_codes, expected)


def _trained(topk_path: str, steps: int = 100):
    data = make_dictionary_data(2048, dim=24, n_atoms=48, active=4, seed=3).x
    groups = make_groups(GridConfig(k=[2, 5], latent_size=[16, 40]))  # k = 2 masked inside each group
    cfg = SAEConfig(dead_after_samples=64 * 3, k_aux=8)  # dead latents appear: AuxK active
    trainer = GridTrainer(groups, data.shape[1], cfg, OptimConfig(lr=1e-3), topk_path=topk_path)
    state = trainer.init(jax.random.key(0), np.zeros(data.shape[1], np.float32))
    run = trainer.jit_run_steps()
    state, metrics = run(state, jnp.asarray(data), jnp.asarray(batch_indices(0, 0, steps, len(data), 64)))
    return trainer, state, metrics


def test_grid_parameters_after_100_steps_with_auxk_equal_the_dense_path():
    ts, ss, ms = _trained("sparse")
    td, sd, md = _trained("dense")
    assert ts.sparse == (True, True) and td.sparse == (False, False)
    assert max(float(np.max(m["auxk"])) for m in md) > 0  # AuxK was on during training
    for gs_s, gs_d in zip(ss.groups, sd.groups):
        for a, b in zip(jax.tree.leaves(gs_s.params), jax.tree.leaves(gs_d.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=RTOL)
        np.testing.assert_array_equal(np.asarray(gs_s.since_fired), np.asarray(gs_d.since_fired))
    for a, b in zip(ms, md):
        np.testing.assert_allclose(np.asarray(a["loss"]), np.asarray(b["loss"]), rtol=1e-4)


def test_the_trainer_picks_the_path_per_group_by_the_cost_rule():
    sparse_group = GroupSpec(400, "topk", (ModelSpec(400, TopK(5)), ModelSpec(400, TopK(35))))
    dense_group = GroupSpec(100, "topk", (ModelSpec(100, TopK(5)), ModelSpec(100, TopK(35))))  # k_max / L = 0.35
    relu = GroupSpec(100, "relu_l1", (ModelSpec(100, ReluL1(1e-3)),))
    assert prefers_sparse(sparse_group) == (kernels.available() and kernels.on_cpu())
    assert not prefers_sparse(dense_group)
    assert prefers_sparse(dense_group, "sparse") and not prefers_sparse(sparse_group, "dense")
    assert not prefers_sparse(relu, "sparse")
    trainer = GridTrainer((sparse_group, dense_group), 16, SAEConfig(), OptimConfig())
    assert trainer.sparse == (prefers_sparse(sparse_group), False)
