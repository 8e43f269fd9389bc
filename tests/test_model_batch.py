"""ModelBatch and model files: any selection of a sweep's models, loaded without the optimiser.

* a batch's codes, pre-activations, reconstructions and raw directions equal a float64
  numpy reference of the SAE math (written here, independent of jsae.core.sae), for models
  of several latent sizes, k values and both activations, on fresh random parameters;
* ``select`` / ``model`` / iteration / names address models without groups;
* a trained run's ``models/`` hold what the checkpoint holds, load with orbax blocked,
  and an analysis runs from them with the checkpoints deleted;
* resuming restores the saved normaliser and checks it against a re-fit.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jsae.core.activation import ReluL1, TopK
from jsae.config import load_config
from jsae.errors import BadValueError, NotFoundError
from jsae.core.spec import ModelSpec
from jsae.models import ModelBatch, RunInfo, SAEModel
from jsae.core.normalize import Normalizer, fit_normalizer
from jsae.core.sae import SAEParams
from jsae.synthetic import make_dictionary_data
from jsae.runs.load import load_sweep
from jsae.training.loop import train_sweep
from jsae.training.resume import NormalizerChangedError, restored_normalizer

REPO = Path(__file__).resolve().parents[1]
M = 12


def random_params(rng, L):
    d = rng.standard_normal((L, M))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return SAEParams(W_enc=rng.standard_normal((M, L)).astype(np.float32),
                     b_enc=(0.2 * rng.standard_normal(L)).astype(np.float32),
                     W_dec=d.astype(np.float32), b_pre=(0.5 * rng.standard_normal(M)).astype(np.float32))


def reference_codes(p: SAEParams, norm: Normalizer, x: np.ndarray, spec: ModelSpec):
    """float64: x_n = (x − μ)/s; pre = (x_n − b_pre) W_enc + b_enc; TopK then ReLU, or ReLU."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    xn = (f(x) - norm.mean) / norm.scale
    pre = (xn - f(p.b_pre)) @ f(p.W_enc) + f(p.b_enc)
    if spec.kind == "relu_l1":
        return pre, np.maximum(pre, 0.0)
    keep = np.argsort(-pre, axis=1, kind="stable")[:, : spec.k]
    v = np.zeros_like(pre)
    np.put_along_axis(v, keep, np.maximum(np.take_along_axis(pre, keep, 1), 0.0), 1)
    return pre, v


def reference_decode(p: SAEParams, norm: Normalizer, v: np.ndarray) -> np.ndarray:
    return (v @ np.asarray(p.W_dec, np.float64) + np.asarray(p.b_pre, np.float64)) * norm.scale + norm.mean


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(7)
    specs = [ModelSpec(24, TopK(3)), ModelSpec(24, TopK(7)), ModelSpec(40, TopK(5)), ModelSpec(16, ReluL1(1e-3)),
             ModelSpec(40, TopK(2))]
    params = [random_params(rng, s.latent_size) for s in specs]
    norm = Normalizer("standardize", rng.standard_normal(M), rng.uniform(0.5, 2.0, M))
    return ModelBatch(specs, params, norm)


def test_batch_codes_reconstructions_and_directions_equal_a_float64_reference(batch):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((50, M)) * 2.0 + 1.0
    codes, pres, recon = batch.encode(x), batch.pre_activations(x), batch.reconstruct(x)
    dirs, raw = batch.raw_directions(), batch.raw_decoders()
    assert recon.shape == (len(batch), 50, M)
    for i, (spec, p) in enumerate(zip(batch.specs, batch.params)):
        pre_ref, v_ref = reference_codes(p, batch.normalizer, x, spec)
        assert codes[i].shape == (50, spec.latent_size)
        np.testing.assert_allclose(pres[i], pre_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(codes[i], v_ref, rtol=1e-4, atol=1e-4)
        if spec.kind == "topk":
            assert ((codes[i] > 0).sum(1) <= spec.k).all() and (codes[i] > 0).sum(1).max() == spec.k
        np.testing.assert_allclose(recon[i], reference_decode(p, batch.normalizer, v_ref), rtol=1e-4, atol=1e-3)
        d = np.asarray(p.W_dec, np.float64) * batch.normalizer.scale
        np.testing.assert_allclose(raw[i], d, rtol=1e-6)
        np.testing.assert_allclose(dirs[i], d / np.linalg.norm(d, axis=1, keepdims=True), rtol=1e-10)
        # the single model agrees with its batch
        one = batch[spec.name]
        np.testing.assert_array_equal(one.encode(x), codes[i])
        np.testing.assert_allclose(one.reconstruct(x), recon[i], rtol=1e-5, atol=1e-5)


def test_rows_are_encoded_in_blocks_without_changing_the_codes(batch):
    x = np.random.default_rng(3).standard_normal((37, M))
    whole, blocked = batch.encode(x), batch.encode(x, block_rows=8)
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a, b)


def test_select_addresses_models_by_k_latent_size_and_name(batch):
    assert batch.select(k=[3, 5]).names == ["k3_L24", "k5_L40"]
    assert batch.select(latent_size=40).names == ["k5_L40", "k2_L40"]
    assert batch.select(l1_coef=1e-3).names == ["l1_0.001_L16"]
    assert batch.select(names=["k2_L40", "k3_L24"]).names == ["k3_L24", "k2_L40"]
    assert batch.model(k=7, latent_size=24).name == "k7_L24"
    assert [m.name for m in batch] == batch.names
    assert isinstance(batch[0], SAEModel) and batch.latent_sizes == [16, 24, 40] and batch.ks == [2, 3, 5, 7]
    with pytest.raises(NotFoundError, match=r"no model with k=9.*models: k3_L24, k7_L24"):
        batch.select(k=9)
    with pytest.raises(NotFoundError, match="no model 'k1_L1'"):
        batch["k1_L1"]
    sub = batch.select(latent_size=24)
    np.testing.assert_array_equal(sub.encode(np.ones((2, M)))[1], batch.encode(np.ones((2, M)))[1])


def test_a_batch_refuses_inconsistent_models():
    rng = np.random.default_rng(0)
    norm = fit_normalizer(rng.standard_normal((20, M)), "scale")
    with pytest.raises(BadValueError, match="W_enc has 24 latents, the spec says 16"):
        ModelBatch([ModelSpec(16, TopK(2))], [random_params(rng, 24)], norm)
    with pytest.raises(BadValueError, match="appear twice"):
        ModelBatch([ModelSpec(8, TopK(2))] * 2, [random_params(rng, 8)] * 2, norm)
    with pytest.raises(BadValueError, match=r"expected embeddings \[B, 12\], got shape \(3, 5\)"):
        ModelBatch([ModelSpec(8, TopK(2))], [random_params(rng, 8)], norm).encode(np.ones((3, 5)))


def test_an_activation_is_a_type_not_a_string_flag():
    assert ModelSpec(200, TopK(20)).name == "k20_L200" and ModelSpec(100, ReluL1(1e-3)).name == "l1_0.001_L100"
    for spec in (ModelSpec(200, TopK(20)), ModelSpec(100, ReluL1(0.25))):
        assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec(100, ReluL1(0.25)).k == 0 and ModelSpec(200, TopK(20)).l1_coef == 0.0


# ------------------------------------------------------------------ model files of a trained run

TINY = ["grid.k=[2,4]", "grid.latent_size=[16,24]", "train.batch_size=64", "train.steps=60",
        "train.steps_per_call=20", "train.checkpoint_every=40", "train.progress=false", "sae.b_pre_init=mean",
        "sae.dead_after_samples=64", "sae.k_aux=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("modelfiles") / "run"
    x = make_dictionary_data(1500, dim=M, n_atoms=8, active=2, noise=0.05, seed=3).x
    train_sweep(load_config(None, TINY), out, data=x)
    np.save(out.parent / "x.npy", x)
    return out


def test_model_files_hold_what_the_checkpoint_holds(run):
    index = json.loads((run / "models" / "index.json").read_text())
    assert index["step"] == 60 and index["complete"] and index["models"] == ["k2_L16", "k4_L16", "k2_L24", "k4_L24"]
    a, b = load_sweep(run), load_sweep(run, source="checkpoint")
    assert a.source == "models" and b.source == "checkpoint" and a.names == b.names and a.step == b.step == 60
    for pa, pb in zip(a.params, b.params):
        for f in ("W_enc", "b_enc", "W_dec", "b_pre"):
            np.testing.assert_array_equal(np.asarray(getattr(pa, f)), np.asarray(getattr(pb, f)))
    np.testing.assert_array_equal(a.normalizer.mean, b.normalizer.mean)
    np.testing.assert_array_equal(a.normalizer.scale, b.normalizer.scale)
    assert a.complete and len(a.metrics) == 4


def test_an_older_step_loads_from_its_checkpoint(run):
    old = load_sweep(run, step=40)
    assert old.source == "checkpoint" and old.step == 40 and not old.complete
    with pytest.raises(BadValueError, match="holds step 60, not 40"):
        load_sweep(run, step=40, source="models")


def test_analyses_run_from_model_files_alone_without_orbax(run, tmp_path):
    """A copy of the run without checkpoints/, in a process where importing orbax fails."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["orbax"] = None  # any `import orbax...` now raises ImportError
        sys.modules["orbax.checkpoint"] = None
        import numpy as np
        from jsae.runs.load import load_sweep
        sweep = load_sweep({str(copy)!r})
        x = np.load({str(run.parent / 'x.npy')!r})[:200]
        batch = sweep.select(k=4)
        codes = batch.encode(x)
        assert sweep.source == "models" and batch.names == ["k4_L16", "k4_L24"]
        assert [c.shape for c in codes] == [(200, 16), (200, 24)]
        assert all(((c > 0).sum(1) <= 4).all() for c in codes)
        assert not any(m.startswith("orbax") and sys.modules[m] is not None for m in sys.modules)
        print("ok", float(((batch.reconstruct(x) - x) ** 2).mean()))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok ")


def test_resume_restores_the_saved_normaliser_and_checks_it_against_a_refit(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, M)) * 3 + 1
    saved = fit_normalizer(x, "center_scale")
    again = restored_normalizer(saved.to_dict(), fit_normalizer(x.copy(), "center_scale"), tmp_path)
    np.testing.assert_array_equal(again.mean, saved.mean)
    with pytest.raises(NormalizerChangedError, match="mean differs from a re-fit"):
        restored_normalizer(saved.to_dict(), fit_normalizer(x + 0.5, "center_scale"), tmp_path)
    with pytest.raises(NormalizerChangedError, match="normalised with 'center_scale', the config now says 'scale'"):
        restored_normalizer(saved.to_dict(), fit_normalizer(x, "scale"), tmp_path)


def test_a_resumed_run_trains_in_its_saved_normaliser(run, tmp_path, monkeypatch):
    """The saved normaliser (not a re-fit) is what the resumed steps use: planting a tiny
    difference in the re-fit (within tolerance) leaves the run identical to the straight one."""
    import jsae.training.loop as train_mod

    x = np.load(run.parent / "x.npy")
    part = tmp_path / "part"
    train_sweep(load_config(None, TINY), part, data=x, stop_after=40)
    real_fit = train_mod.fit_normalizer

    def nudged(rows, kind="center_scale"):
        n = real_fit(rows, kind)
        return Normalizer(n.kind, n.mean + 1e-7 * np.abs(n.mean).max(), n.scale)

    monkeypatch.setattr(train_mod, "fit_normalizer", nudged)
    train_sweep(load_config(None, TINY), part, data=x)
    a, b = load_sweep(run), load_sweep(part)
    for pa, pb in zip(a.params, b.params):
        np.testing.assert_array_equal(np.asarray(pa.W_enc), np.asarray(pb.W_enc))
    np.testing.assert_array_equal(a.normalizer.mean, b.normalizer.mean)


def test_models_of_no_run_need_an_output_folder(batch):
    from jsae.outputs.folders import analysis_dir

    assert batch.info == RunInfo() and batch.run_dir is None
    with pytest.raises(BadValueError, match="come from no run directory.*pass out=DIR"):
        analysis_dir(batch.run_dir, "probe-lang-es")
