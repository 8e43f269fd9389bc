"""Checkpoints: a killed sweep resumes to the same end, and runs restore on other device sets."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jsae.config import load_config
from jsae.store import write_store
from jsae.sweep import load_sweep
from jsae.synthetic import make_dictionary_data, synthetic_table
from jsae.train import train_sweep

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "emb"
    d = make_dictionary_data(6000, dim=32, n_atoms=64, active=4, seed=2)
    write_store(path, d.x, synthetic_table(6000), rows_per_shard=1024, rows_per_chunk=256)
    return path


def _params(run):
    sweep = load_sweep(run)
    return {m.spec.name: m.params for m in sweep.models()}


def _assert_same_params(a, b, **tol):
    assert a.keys() == b.keys()
    for name in a:
        for field in ("W_enc", "b_enc", "W_dec", "b_pre"):
            np.testing.assert_allclose(np.asarray(getattr(a[name], field)), np.asarray(getattr(b[name], field)),
                                       err_msg=f"{name}.{field}", **tol)


def test_killed_sweep_resumes_to_the_same_parameters(tmp_path, store, topk_path):
    args = ["sweep", str(ROOT / "configs" / "default.yaml"), f"data.store={store}", f"train.topk_path={topk_path}",
            "grid.k=[4,8]",
            "grid.latent_size=[64,96]", "train.batch_size=256", "train.steps=1500", "train.steps_per_call=25",
            "train.checkpoint_every=100", "train.keep_checkpoints=3", "train.progress=false", "optim.lr=1e-3"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sweeps", *args[:2], "--out", str(killed), *args[2:]]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in (killed / "checkpoints").glob("*") if p.name.isdigit()]
        if steps and max(steps) >= 200:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = max(int(p.name) for p in (killed / "checkpoints").glob("*") if p.name.isdigit())
    assert 200 <= done < 1500

    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = tmp_path / "straight"
    train_sweep(load_config(args[1], args[2:]), straight)
    assert load_sweep(killed).step == load_sweep(straight).step == 1500
    _assert_same_params(_params(killed), _params(straight), rtol=1e-5, atol=1e-6)


SHARDED_SCRIPT = """
import sys, jax, numpy as np
from jsae.config import load_config
from jsae.train import train_sweep, make_mesh
from jsae.sweep import load_sweep
assert jax.device_count() == 8, jax.devices()
assert make_mesh(True) is not None
cfg = load_config(None, sys.argv[3:])
train_sweep(cfg, sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[1] + "/recon8.npy", load_sweep(sys.argv[1]).reconstruct_all(x))
"""


def test_sweep_sharded_over_8_devices_restores_on_1_device(tmp_path, store, topk_path):
    overrides = [f"data.store={store}", f"train.topk_path={topk_path}", "grid.k=[3,6,9]", "grid.latent_size=[48,80]", "train.batch_size=128",
                 "train.steps=60", "train.steps_per_call=20", "train.checkpoint_every=60", "train.progress=false",
                 "train.shard_models=true"]
    x = make_dictionary_data(40, dim=32, n_atoms=64, active=4, seed=99).x
    np.save(tmp_path / "x.npy", x)
    run8 = tmp_path / "run8"
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(run8), str(tmp_path / "x.npy"), *overrides],
                         env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]

    import jax

    assert jax.device_count() == 1
    sweep = load_sweep(run8)
    assert len(sweep) == 6  # 3 models per group, padded to 8 while training, never saved padded
    np.testing.assert_array_equal(sweep.reconstruct_all(x), np.load(run8 / "recon8.npy"))
    m = sweep.model(k=6, latent_size=80)
    np.testing.assert_allclose(m.reconstruct(x), np.load(run8 / "recon8.npy")[4], rtol=1e-6, atol=1e-6)

    # Sharding the model axis changes nothing but placement: the same sweep on one device agrees.
    run1 = tmp_path / "run1"
    train_sweep(load_config(None, overrides), run1)
    _assert_same_params(_params(run8), _params(run1), rtol=1e-4, atol=1e-5)


def test_load_sweep_answers_model_queries_with_raw_space_functions(tmp_path, store):
    run = tmp_path / "run"
    train_sweep(load_config(None, [f"data.store={store}", "grid.k=[4,8]", "grid.latent_size=[64]",
                                   "train.batch_size=256", "train.steps=400", "optim.lr=2e-3",
                                   "train.progress=false"]), run)
    sweep = load_sweep(run)
    m = sweep.model(k=8, latent_size=64)
    x = make_dictionary_data(30, dim=32, n_atoms=64, active=4, seed=2).x
    v = m.encode(x)
    assert v.shape == (30, 64) and np.all((v > 0).sum(1) <= 8)
    x_hat = m.reconstruct(x)
    # raw space in and out: the reconstruction error is small relative to the raw spread
    assert np.sum((x_hat - x) ** 2) < 0.5 * np.sum((x - x.mean(0)) ** 2)
    np.testing.assert_allclose(m.decode(v), x_hat, rtol=1e-5, atol=1e-5)
    # the same in float64 numpy from the stored parameters and normalisation
    p = {f: np.asarray(getattr(m.params, f), np.float64) for f in ("W_enc", "b_enc", "W_dec", "b_pre")}
    xn = (x - sweep.normalizer.mean) / sweep.normalizer.scale
    pre = (xn - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
    top = np.argsort(-pre, axis=1)[:, :8]
    v_ref = np.zeros_like(pre)
    np.put_along_axis(v_ref, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    np.testing.assert_allclose(v, v_ref, rtol=1e-4, atol=1e-4)
    ref = (v_ref @ p["W_dec"] + p["b_pre"]) * sweep.normalizer.scale + sweep.normalizer.mean
    np.testing.assert_allclose(x_hat, ref, rtol=1e-4, atol=1e-4)
    codes = sweep.encode_all(x)
    np.testing.assert_allclose(codes[0][1], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="k=20 latent_size=64"):
        sweep.model(k=20, latent_size=64)


def test_streaming_from_the_store_trains_the_same_models_as_in_memory(tmp_path, store, topk_path):
    """data.stream reads every host call's batches from the store instead of loading the rows."""
    base = [f"data.store={store}", f"train.topk_path={topk_path}", "grid.k=[4]", "grid.latent_size=[64,32]", "train.batch_size=128",
            "train.steps=90", "train.steps_per_call=30", "train.progress=false"]
    mem = train_sweep(load_config(None, base), tmp_path / "mem")
    streamed = train_sweep(load_config(None, [*base, "data.stream=true"]), tmp_path / "stream")
    _assert_same_params(_params(tmp_path / "mem"), _params(tmp_path / "stream"), rtol=1e-5, atol=1e-6)
    assert [r["val_nmse"] for r in mem] == pytest.approx([r["val_nmse"] for r in streamed], rel=1e-5)


def test_streaming_fits_normalisation_on_a_sample_of_fit_rows(tmp_path, store):
    cfg = load_config(None, [f"data.store={store}", "data.stream=true", "data.fit_rows=500", "grid.k=[4]",
                             "grid.latent_size=[32]", "train.batch_size=128", "train.steps=5", "train.progress=false"])
    from jsae.train import prepare_data

    td = prepare_data(cfg)
    assert td.train is None and td.fit.shape == (500, 32) and td.n_train == 6000 - len(td.val_rows)
    idx = np.array([[0, 5], [td.n_train - 1, 5]])
    from jsae.store import open_store

    np.testing.assert_array_equal(td.read_batches(idx), open_store(store).read(td.train_rows[idx.ravel()]).reshape(2, 2, 32))
