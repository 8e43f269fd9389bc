"""Whole-grid training: models of a group stay distinct, TopK SAEs work.

That a grid member trains exactly as the same model alone is tested against an
independent float64 trainer in test_reference_trainer.py (it replaced a comparison of
the grid with a one-model grid, which shared every line of the code under test).
"""
import json

import numpy as np
import pytest

from jsae.config import load_config
from jsae.training.grid import make_groups
from jsae.synthetic import dictionary_recovery, make_dictionary_data
from jsae.runs.load import load_sweep
from jsae.training.data import batch_indices
from jsae.training.loop import train_sweep

COMMON = ["train.batch_size=64", "train.steps=120", "train.steps_per_call=40", "train.checkpoint_every=1000",
          "train.progress=false", "optim.lr=3e-3", "sae.dead_after_samples=128", "sae.k_aux=6",
          "sae.b_pre_init=mean"]


@pytest.fixture(scope="module")
def data():
    return make_dictionary_data(3000, dim=16, n_atoms=10, active=2, noise=0.05, seed=5).x


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, data, topk_path):
    run = tmp_path_factory.mktemp("grid")
    cfg = load_config(None, ["grid.k=[2,5]", "grid.latent_size=[40,24]", *COMMON, f"train.topk_path={topk_path}"])
    train_sweep(cfg, run, data=data)
    return run


def test_grid_run_exercised_dead_latents_and_auxk(grid_run):
    """The tests on this run cover AuxK and per-model dead statistics only if they were active."""
    history = json.loads((grid_run / "sweep.json").read_text())["history"]
    assert np.max(history["dead_fraction"]) > 0


def test_models_of_a_group_differ_by_their_own_k(grid_run, data):
    sweep = load_sweep(grid_run)
    a, b = sweep.model(k=2, latent_size=40), sweep.model(k=5, latent_size=40)
    assert (a.encode(data[:50]) > 0).sum(1).max() <= 2
    assert (b.encode(data[:50]) > 0).sum(1).max() <= 5
    assert not np.allclose(np.asarray(a.params.W_dec), np.asarray(b.params.W_dec))


def test_decoder_rows_stay_unit_norm_after_training(grid_run):
    for m in load_sweep(grid_run).models():
        np.testing.assert_allclose(np.linalg.norm(m.decoder_directions, axis=1), 1.0, rtol=1e-5)


def test_topk_sae_recovers_a_known_dictionary(tmp_path, topk_path):
    """Sparse non-negative codes over a random dictionary plus noise: the right K finds the atoms."""
    d = make_dictionary_data(20000, dim=64, n_atoms=96, active=4, noise=0.01, seed=1)
    cfg = load_config(None, ["grid.k=[4]", "grid.latent_size=[128]", "train.steps=1000", "train.batch_size=256",
                             f"train.topk_path={topk_path}",
                             "train.checkpoint_every=100000", "train.progress=false", "optim.lr=2e-3"])
    records = train_sweep(cfg, tmp_path, data=d.x)
    model = load_sweep(tmp_path).model(k=4, latent_size=128)
    frac, mean_cos = dictionary_recovery(d.dictionary, model.decoder_directions, threshold=0.9)
    print(f"recovered {frac:.1%} of true directions at cos >= 0.9; mean max cosine {mean_cos:.4f}; "
          f"val NMSE {records[0]['val_nmse']:.4f}")
    assert frac >= 0.9
    assert records[0]["val_nmse"] < 0.1


def test_batches_depend_only_on_seed_and_step():
    whole = batch_indices(3, 0, 30, 1000, 64)
    parts = np.concatenate([batch_indices(3, 0, 7, 1000, 64), batch_indices(3, 7, 23, 1000, 64)])
    np.testing.assert_array_equal(whole, parts)
    per_epoch = 1000 // 64
    epoch0 = whole[:per_epoch].ravel()
    assert len(np.unique(epoch0)) == len(epoch0)  # no row twice within an epoch
    assert not np.array_equal(whole[0], batch_indices(4, 0, 1, 1000, 64)[0])


def test_groups_are_by_latent_size_with_sorted_k():
    cfg = load_config(None, ["grid.k=[20,5]", "grid.latent_size=[300,100]"])
    groups = make_groups(cfg.grid)
    assert [g.latent_size for g in groups] == [100, 300]
    assert [m.k for m in groups[0].models] == [5, 20]
    assert groups[0].k_max == 20


def test_relu_l1_grid_trains_and_a_larger_l1_coefficient_gives_sparser_codes(tmp_path, data):
    records = train_sweep(load_config(None, ["grid.activation=relu_l1", "grid.l1_coef=[0.3,0.003]",
                                             "grid.latent_size=[40]", *COMMON]), tmp_path, data=data)
    by_coef = {r["l1_coef"]: r for r in records}
    assert all(np.isfinite(r["val_nmse"]) and r["val_nmse"] < 1.0 for r in records)
    assert by_coef[0.3]["mean_l0"] < by_coef[0.003]["mean_l0"]
    assert load_sweep(tmp_path).model(latent_size=40, l1_coef=0.3).encode(data[:4]).shape == (4, 40)
