"""A grid member trained by jsae equals an independent float64 numpy trainer (tests/reference_trainer.py).

The grid is trained through the public path (``jsae.training.loop.train_sweep`` on an array,
config overrides only) on both TopK paths; one member of a multi-model group is
compared, after ``STEPS`` steps, with :class:`reference_trainer.ReferenceSAE` started
from the same initial parameters and fed the same batches, with AuxK active.

Shared with jsae, and not under test here: the train/validation split
(``jsae.training.data.prepare_data``), the normaliser (``jsae.core.normalize.fit_normalizer``), the
batch rows of each step (``jsae.training.data.batch_indices``) and the initial parameters
(``GridTrainer.init`` with the run's key ``jax.random.key(train.seed)`` and ``b_pre``
= the mean of the normalised training rows, which is what ``sae.b_pre_init=mean`` gives
when ``sae.b_pre_init_samples`` covers every row). Everything the training step does
(TopK, decode, NMSE, AuxK on dead latents, gradients, decoder-gradient projection, Adam,
renormalisation, dead counters) is recomputed by the reference.
"""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jsae.config import load_config
from jsae.training.grid import GridTrainer, make_groups
from jsae.core.normalize import fit_normalizer
from jsae.runs.load import load_sweep
from jsae.training.data import batch_indices, prepare_data
from jsae.training.loop import train_sweep
from reference_trainer import PARAM_NAMES, ReferenceSAE, loss_and_grads, topk_mask

DIM, ROWS, STEPS, BATCH = 16, 1300, 24, 32
MEMBER_K, MEMBER_L = 2, 96  # k2_L96: the smaller k of the L=96 group (k_max 4), so ranks ≥ k are masked
OVERRIDES = ["grid.k=[2,4]", "grid.latent_size=[64,96]", f"train.batch_size={BATCH}", f"train.steps={STEPS}",
             "train.steps_per_call=8", f"train.checkpoint_every={STEPS}", "train.progress=false",
             "train.val_fraction=0.05", "train.seed=4", "optim.lr=1e-3", "optim.grad_clip=0",
             "optim.warmup_steps=0", "sae.k_aux=6", f"sae.dead_after_samples={BATCH}", "sae.fire_threshold=1e-3",
             "sae.b_pre_init=mean", "sae.b_pre_init_samples=100000", "sae.normalize=center_scale"]
# float32 (jsae, on a CPU) vs float64 (reference) after STEPS Adam steps: float32 rounding
# (~6e-8 relative per operation) gives gradients a ~1e-6 relative error; Adam's update
# lr·m̂/(√v̂+ε) is scale-free, so each step's update (≤ lr = 1e-3) is off by ~lr·1e-6 and
# the parameters drift by ≤ 3.5e-7 after 24 steps (measured: dense seeds 0–5, sparse 0 and 4).
# atol 3e-6 is ~10× that yet 300× below one Adam step: a wrong term, sign, mask, moment
# or bias correction moves some entry by ~lr within a step or two (the parameters move by
# ~2e-2 in total). rtol is kept small so that atol decides.
TOL = dict(rtol=1e-5, atol=3e-6)
# The drift above moves pre-activations by ~1e-6; a discrete choice (TopK cut, ReLU at 0,
# firing threshold) closer than this to flipping could go another way in float32, and
# then the trajectories part for a reason that is not a bug.
MIN_MARGIN = 2e-5


def _data() -> np.ndarray:
    rng = np.random.default_rng(11)
    spectrum = np.linspace(2.0, 0.2, DIM)  # anisotropic: some directions rarely win, so latents go dead
    return (rng.standard_normal((ROWS, DIM)) * spectrum + 0.5).astype(np.float32)


def _member_index(names: list[str], name: str) -> int:
    assert name in names, (name, names)
    return names.index(name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, topk_path):
    """(jsae run directory, reference after STEPS steps, initial params, config) for one TopK path."""
    data = _data()
    cfg = load_config(None, [*OVERRIDES, f"train.topk_path={topk_path}"])
    run = tmp_path_factory.mktemp(f"ref-{topk_path}")
    train_sweep(cfg, run, data=data)

    # Same split, normalisation, b_pre and initial state as train_sweep.
    td = prepare_data(cfg, data)
    x = fit_normalizer(td.fit, cfg.sae.normalize).apply(td.fit).astype(np.float32)
    b_pre = np.asarray(x.astype(np.float64).mean(axis=0), np.float32)
    trainer = GridTrainer(make_groups(cfg.grid), DIM, cfg.sae, cfg.optim)
    state = trainer.init(jax.random.key(cfg.train.seed), b_pre)
    name = f"k{MEMBER_K}_L{MEMBER_L}"
    init = None
    for group, gs in zip(trainer.groups, state.groups):
        names = [m.name for m in group.models]
        if name in names:
            assert len(names) > 1, "the compared member must share its group with another model"
            i = names.index(name)
            init = {n: np.asarray(getattr(gs.params, n))[i] for n in PARAM_NAMES}
    assert init is not None, f"{name} not in the grid"

    ref = ReferenceSAE(init, k=MEMBER_K, k_aux=cfg.sae.k_aux, auxk_coef=cfg.sae.auxk_coef,
                       dead_after_samples=cfg.sae.dead_after_samples, fire_threshold=cfg.sae.fire_threshold,
                       lr=cfg.optim.lr, b1=cfg.optim.b1, b2=cfg.optim.b2, eps=cfg.optim.eps)
    for rows in batch_indices(cfg.train.seed, 0, STEPS, td.n_train, BATCH):
        ref.step(x[rows])
    return run, ref, init, cfg


def test_reference_gradients_match_finite_differences():
    """The hand-derived gradient (main NMSE + AuxK with dead latents) is the loss's derivative."""
    rng = np.random.default_rng(0)
    M, L, B, k, k_aux = 6, 12, 10, 3, 4
    d = rng.standard_normal((L, M))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    p = {"W_enc": d.T + 0.1 * rng.standard_normal((M, L)), "b_enc": 0.1 * rng.standard_normal(L), "W_dec": d,
         "b_pre": 0.1 * rng.standard_normal(M)}
    x = rng.standard_normal((B, M)) + 0.3
    dead = np.zeros(L, bool)
    dead[[1, 4, 5, 8, 10]] = True
    kw = dict(k_aux=k_aux, auxk_coef=0.25, fire_threshold=1e-3)
    g, info = loss_and_grads(p, x, k, dead, **kw)
    # The AuxK residual x − x̂ is a constant of the gradient (stop_grad): hold it fixed while differencing.
    pre = (x - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
    v = np.where(topk_mask(pre, k) & (pre > 0), pre, 0.0)
    kw["residual"] = x - (v @ p["W_dec"] + p["b_pre"])
    assert info.auxk > 0 and info.margin > 1e-4  # AuxK active; no choice within reach of h (moves pre by ~1e-5)
    h = 1e-6
    for n in PARAM_NAMES:
        fd = np.zeros_like(p[n])
        for idx in np.ndindex(p[n].shape):
            plus, minus = {a: b.copy() for a, b in p.items()}, {a: b.copy() for a, b in p.items()}
            plus[n][idx] += h
            minus[n][idx] -= h
            fd[idx] = (loss_and_grads(plus, x, k, dead, **kw)[1].loss
                       - loss_and_grads(minus, x, k, dead, **kw)[1].loss) / (2 * h)
        np.testing.assert_allclose(g[n], fd, rtol=1e-5, atol=1e-8, err_msg=n)


def test_initial_state_is_the_documented_init(runs):
    """What the reference starts from: W_enc = W_decᵀ with unit rows, b_enc = 0."""
    _, _, init, _ = runs
    np.testing.assert_array_equal(init["W_enc"], init["W_dec"].T)
    np.testing.assert_allclose(np.linalg.norm(init["W_dec"], axis=1), 1.0, rtol=1e-6)
    assert not init["b_enc"].any()


def test_auxk_and_dead_latents_were_active(runs):
    """The comparison below covers AuxK and the dead counters only because they were active."""
    _, ref, _, cfg = runs
    aux = np.array([s.auxk for s in ref.history])
    dead = np.array([s.n_dead for s in ref.history])
    assert aux[0] == 0 and dead[0] == 0  # nothing is dead before the first batch
    assert (aux > 0).sum() >= STEPS // 2, aux
    assert dead.max() > cfg.sae.k_aux  # more dead latents than k_aux: the AuxK top-k selects among them


def test_reference_steps_stay_away_from_float_ties(runs):
    """TopK cuts, ReLU zeros and firing thresholds were decided with a margin float32 cannot cross."""
    _, ref, _, _ = runs
    margins = [s.margin for s in ref.history]
    assert min(margins) > MIN_MARGIN, f"a discrete choice at step {int(np.argmin(margins))} is within " \
        f"{min(margins):.2e} of flipping: pick another train.seed for this test"


def test_grid_member_parameters_equal_the_float64_reference(runs):
    run, ref, init, _ = runs
    got = load_sweep(run).model(k=MEMBER_K, latent_size=MEMBER_L).params
    for n in PARAM_NAMES:
        a = np.asarray(getattr(got, n), np.float64)
        moved = np.abs(ref.params[n] - init[n]).max()
        assert moved > 10 * TOL["atol"], f"{n} barely trained ({moved:.1e}): the comparison would prove nothing"
        np.testing.assert_allclose(a, ref.params[n], **TOL, err_msg=f"{n} after {STEPS} steps")


def test_grid_metrics_equal_the_reference_per_call(runs):
    """sweep.json's per-call history (loss, NMSE, dead fraction) of the member equals the reference's."""
    run, ref, _, cfg = runs
    info = json.loads((run / "sweep.json").read_text())
    i = _member_index([m["name"] for m in info["models"]], f"k{MEMBER_K}_L{MEMBER_L}")
    hist, per = info["history"], cfg.train.steps_per_call
    assert hist["step"] == list(range(per, STEPS + 1, per))
    assert all(hist["loss"][c][i] > hist["nmse"][c][i] for c in range(STEPS // per))  # jsae's AuxK term was on
    for c in range(STEPS // per):
        steps = ref.history[c * per:(c + 1) * per]
        np.testing.assert_allclose(hist["nmse"][c][i], np.mean([s.nmse for s in steps]), rtol=1e-4)
        np.testing.assert_allclose(hist["loss"][c][i], np.mean([s.loss for s in steps]), rtol=1e-4)
        aux_grid = (hist["loss"][c][i] - hist["nmse"][c][i]) / cfg.sae.auxk_coef
        np.testing.assert_allclose(aux_grid, np.mean([s.auxk for s in steps]), rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(hist["dead_fraction"][c][i], np.mean([s.n_dead / MEMBER_L for s in steps]),
                                   rtol=1e-6)
