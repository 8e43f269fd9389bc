"""Checkpoints: a killed sweep resumes to the same end, and runs restore on other device sets."""
import json
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
from jsae.runs.load import load_sweep
from jsae.synthetic import make_dictionary_data, synthetic_table
from jsae.training.loop import train_sweep

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
    cmd = [sys.executable, "-m", "jsae.sweeps", *args[:2], "--out", str(killed), *args[2:]]
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


SHARDED_SCRIPT = r"""
# Run once with 8 host devices and once with 1: the same grid, trained and evaluated where it runs.
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jsae.core import sae
from jsae.config import load_config
from jsae.training.grid import GridTrainer, make_groups, make_mesh
from jsae.core.normalize import fit_normalizer
from jsae.training.data import batch_indices, prepare_data
from jsae.training.evaluate import evaluate
from jsae.training.loop import train_sweep

out, n_dev, x_path, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
assert jax.device_count() == n_dev, jax.devices()
cfg = load_config(None, overrides)
assert cfg.train.shard_models

# 1. The public path: train_sweep shards the model axis over every device present.
train_sweep(cfg, out + "/run")

# 2. The grid's own step, evaluation and encode/decode, on a state placed as train_sweep places
#    it (make_mesh + pad), to check where they run and to keep their outputs.
td = prepare_data(cfg)
norm = fit_normalizer(td.fit, cfg.sae.normalize)
x = norm.apply(td.fit).astype(np.float32)
mesh = make_mesh(cfg.train.shard_models)
assert (mesh is None) == (n_dev == 1)
trainer = GridTrainer(make_groups(cfg.grid), x.shape[1], cfg.sae, cfg.optim, mesh=mesh,
                      topk_path=cfg.train.topk_path)
state = trainer.pad(trainer.init(jax.random.key(cfg.train.seed), x.mean(axis=0)))
steps = 12
idx = batch_indices(cfg.train.seed, 0, steps, len(x), cfg.train.batch_size)
def gathers(jitted, *args):  # collectives that move models between devices in the compiled program
    text = jitted.lower(*args).compile().as_text()
    return sum(text.count(op) for op in ("all-gather(", "all-to-all(", "collective-permute("))
collectives = {"step": gathers(trainer.jit_run_steps(), state, jnp.asarray(x), jnp.asarray(idx)),
               "eval": gathers(jax.jit(trainer.eval_sums), state, jnp.asarray(x[:64]))}
state, metrics = trainer.jit_run_steps()(state, jnp.asarray(x), jnp.asarray(idx))
xq = jnp.asarray(norm.apply(np.load(x_path)).astype(np.float32))
res, placement = {}, {}
for g, gs, m in zip(trainer.groups, state.groups, metrics):
    p = gs.params
    n_pad = p.W_enc.shape[0]
    ks = np.array([mm.k for mm in g.models] + [g.models[-1].k] * (n_pad - g.size), np.int32)  # as padded
    recon = jax.jit(jax.vmap(lambda q, k, km=g.k_max: sae.decode(q, sae.encode(q, xq, k, km))))(p, jnp.asarray(ks))
    placement[g.models[0].name] = {"state": len(p.W_enc.sharding.device_set),
                                   "state_shards": len({s.device for s in p.W_enc.addressable_shards}),
                                   "recon": len(recon.sharding.device_set)}
    for i, spec in enumerate(g.models):
        for f in ("W_enc", "b_enc", "W_dec", "b_pre"):
            res[f"{spec.name}/{f}"] = np.asarray(getattr(p, f)[i])
        res[f"{spec.name}/recon"] = np.asarray(recon[i])
        res[f"{spec.name}/loss"] = np.asarray(m["loss"][:, i])
        res[f"{spec.name}/since_fired"] = np.asarray(gs.since_fired[i])
np.savez(out + "/outputs.npz", **res)
records = evaluate(trainer, state, td.val, norm)
json.dump({"placement": placement, "records": records, "collectives": collectives}, open(out + "/outputs.json", "w"))
"""


def _run_on(n_dev: int, out: Path, x_path: Path, overrides: list[str]) -> tuple[dict, dict]:
    script = out.parent / "sharded.py"
    script.write_text(SHARDED_SCRIPT)
    out.mkdir()
    env = _env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n_dev}", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(script), str(out), str(n_dev), str(x_path), *overrides], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out / "outputs.npz") as z:
        arrays = dict(z)
    return arrays, json.loads((out / "outputs.json").read_text())


@pytest.mark.slow
def test_grid_computed_on_8_devices_equals_1_device_and_restores_on_1(tmp_path, store, topk_path):
    """The model axis sharded over 8 (host) devices: training, evaluation and encode/decode
    computed there equal the same computed on 1 device, and the 8-device checkpoint restores
    on 1 device.

    Tolerances: sharding moves whole models between devices and never splits one model's
    sums, but XLA partitions the per-device programs differently (3 models stacked vs 1 per
    device), so float32 summation order may differ. Measured after the 12 direct steps: ≤ 1.2e-7
    on the parameters and the loss, ≤ 1e-6 on reconstructions (values of O(1–10)); the
    tolerance there is rtol 1e-5 / atol 2e-6, ~10× that and 250× below one Adam step (lr 5e-4),
    which a model that saw another's gradient, batch, k or Adam state (a sharding or padding
    bug) would move by. train_sweep's 60 steps keep rtol 1e-4 / atol 1e-5. Dead counters are
    integers: equal.
    """
    overrides = [f"data.store={store}", f"train.topk_path={topk_path}", "grid.k=[3,6,9]", "grid.latent_size=[48,80]",
                 "train.batch_size=128", "train.steps=60", "train.steps_per_call=20", "train.checkpoint_every=60",
                 "train.progress=false", "train.shard_models=true", "sae.dead_after_samples=256"]
    x = make_dictionary_data(40, dim=32, n_atoms=64, active=4, seed=99).x
    np.save(tmp_path / "x.npy", x)
    a8, j8 = _run_on(8, tmp_path / "dev8", tmp_path / "x.npy", overrides)
    a1, j1 = _run_on(1, tmp_path / "dev1", tmp_path / "x.npy", overrides)

    # Where it ran: 3 models per group padded to 8, one per device; on 1 device, one device.
    for name, where in j8["placement"].items():
        assert where == {"state": 8, "state_shards": 8, "recon": 8}, (name, where)
    # Each device computes only the models it holds: no model's parameters or activations are
    # gathered onto other devices in the compiled step or evaluation (the CPU kernels are custom
    # calls; partitioned by XLA alone, every device would run them on the whole gathered group).
    assert j8["collectives"] == {"step": 0, "eval": 0}, j8["collectives"]
    assert all(w == {"state": 1, "state_shards": 1, "recon": 1} for w in j1["placement"].values())

    # What it computed: the grid's step (parameters, per-step loss, dead counters), encode/decode
    # and the validation metrics.
    assert a8.keys() == a1.keys() and len(a8) == 6 * 7
    for key in sorted(a8):
        if key.endswith("since_fired"):
            np.testing.assert_array_equal(a8[key], a1[key], err_msg=key)
        else:
            np.testing.assert_allclose(a8[key], a1[key], rtol=1e-5, atol=2e-6, err_msg=key)
    assert max(np.abs(a1[k]).max() for k in a1 if k.endswith("/loss")) > 0
    r8, r1 = j8["records"], j1["records"]
    assert [r["name"] for r in r8] == [r["name"] for r in r1] and len(r8) == 6
    for a, b in zip(r8, r1):
        for key in ("val_nmse", "mean_l0", "dead_fraction", "train_dead_fraction"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["name"], key)

    # train_sweep on 8 devices vs 1: the saved models, and the run's own records and history.
    run8, run1 = tmp_path / "dev8" / "run", tmp_path / "dev1" / "run"
    _assert_same_params(_params(run8), _params(run1), rtol=1e-4, atol=1e-5)
    m8, m1 = (json.loads((r / "metrics.json").read_text()) for r in (run8, run1))
    assert [r["val_nmse"] for r in m8] == pytest.approx([r["val_nmse"] for r in m1], rel=1e-4)
    h8, h1 = (json.loads((r / "sweep.json").read_text())["history"] for r in (run8, run1))
    np.testing.assert_allclose(h8["loss"], h1["loss"], rtol=1e-4)

    # The 8-device checkpoint restored here, on 1 device: never saved padded, same models.
    import jax

    assert jax.device_count() == 1
    sweep = load_sweep(run8)
    assert len(sweep) == 6 and sweep.step == 60
    recon8 = np.stack([m.reconstruct(x) for m in sweep.models()])
    recon1 = np.stack([m.reconstruct(x) for m in load_sweep(run1).models()])
    np.testing.assert_allclose(recon8, recon1, rtol=1e-4, atol=1e-4)


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
    codes = sweep.encode(x)  # every model at once, one [B, L] array each
    np.testing.assert_allclose(codes[sweep.index("k8_L64")], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="k=20, latent_size=64"):
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
    from jsae.training.data import prepare_data

    td = prepare_data(cfg)
    assert td.train is None and td.fit.shape == (500, 32) and td.n_train == 6000 - len(td.val_rows)
    idx = np.array([[0, 5], [td.n_train - 1, 5]])
    from jsae.store import open_store

    np.testing.assert_array_equal(td.read_batches(idx), open_store(store).read(td.train_rows[idx.ravel()]).reshape(2, 2, 32))
