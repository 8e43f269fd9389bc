"""jsae.runs.modelfiles: RUN/models/ written and read back exactly; every damage is a one-line error."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from jsae.runs import modelfiles as mfmod
from jsae.errors import BadValueError, JsaeError, MissingPathError, NotFoundError
from jsae.runs.modelfiles import (ModelFileError, has_model_files, read_model_file, read_models, write_model_file,
                             write_model_files)
from jsae.core.normalize import Normalizer

M = 12


def _nonzero(rng, shape):
    """Random float32, never 0 (a round trip of zeros would prove little)."""
    return (rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def _params(rng, latent_size, dim=M):
    w_dec = _nonzero(rng, (latent_size, dim))
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    return {"W_enc": _nonzero(rng, (dim, latent_size)), "b_enc": _nonzero(rng, (latent_size,)),
            "W_dec": w_dec.astype(np.float32), "b_pre": _nonzero(rng, (dim,))}


def _spec(k, latent_size, activation="topk", l1_coef=0.0):
    name = f"k{k}_L{latent_size}" if activation == "topk" else f"l1_{l1_coef:g}_L{latent_size}"
    return {"k": k, "latent_size": latent_size, "activation": activation, "l1_coef": l1_coef, "name": name}


def _normalizer(rng, dim=M):
    return Normalizer("standardize", rng.normal(size=dim) * 3.0, rng.uniform(0.2, 2.0, dim))


@pytest.fixture
def run(tmp_path):
    """A run with two models (TopK and ReLU+L1) at step 40 of 100; returns (run_dir, models, normalizer)."""
    rng = np.random.default_rng(0)
    models = [(_spec(5, 24), _params(rng, 24)), (_spec(0, 16, "relu_l1", 1e-3), _params(rng, 16))]
    norm = _normalizer(rng)
    out = write_model_files(tmp_path, models, normalizer=norm, step=40, total_steps=100, complete=False,
                            run={"version": "0.1.0", "data": "store", "path": tmp_path})
    assert out == tmp_path / "models"
    return tmp_path, models, norm


def _one_line(err: BaseException) -> str:
    msg = str(err)
    assert "\n" not in msg and msg
    return msg


def test_round_trip_exact(run):
    run_dir, models, norm = run
    assert has_model_files(run_dir)
    index, files = read_models(run_dir)
    assert index == {"format": "jsae-models", "version": 1, "step": 40, "total_steps": 100, "complete": False,
                     "dim": M, "models": ["k5_L24", "l1_0.001_L16"]}
    assert [f.name for f in files] == ["k5_L24", "l1_0.001_L16"]
    for (spec, params), f in zip(models, files):
        assert f.spec == spec
        assert f.step == 40 and f.dim == M and f.latent_size == spec["latent_size"]
        assert f.path == run_dir / "models" / spec["name"]
        assert f.run == {"version": "0.1.0", "data": "store", "path": str(run_dir)}
        for k in ("W_enc", "b_enc", "W_dec", "b_pre"):
            assert f.params[k].dtype == np.float32
            np.testing.assert_array_equal(f.params[k], params[k])  # bit-exact
        assert f.normalizer.kind == "standardize"
        assert f.normalizer.mean.dtype == np.float64 and f.normalizer.scale.dtype == np.float64
        np.testing.assert_array_equal(f.normalizer.mean, norm.mean)
        np.testing.assert_array_equal(f.normalizer.scale, norm.scale)
    assert files[0].k == 5 and files[0].activation == "topk" and files[1].activation == "relu_l1"
    cfg = json.loads((run_dir / "models" / "k5_L24" / "cfg.json").read_text())
    assert set(cfg) == {"format", "version", "name", "spec", "dim", "latent_size", "normalizer", "step", "sha256",
                        "run"}
    assert cfg["normalizer"] == {"kind": "standardize"} and cfg["latent_size"] == 24


def test_names_subset_and_order(run):
    run_dir, _, _ = run
    index, files = read_models(run_dir, ["l1_0.001_L16", "k5_L24"])
    assert [f.name for f in files] == ["l1_0.001_L16", "k5_L24"]
    _, files = read_models(run_dir, ["k5_L24"])
    assert [f.name for f in files] == ["k5_L24"]


def test_unknown_name_lists_the_names(run):
    run_dir, _, _ = run
    with pytest.raises(NotFoundError) as err:
        read_models(run_dir, ["k20_L200"])
    msg = _one_line(err.value)
    assert "k20_L200" in msg and "k5_L24" in msg and "l1_0.001_L16" in msg


def test_flipped_byte_is_a_sha256_error(run):
    run_dir, _, _ = run
    path = run_dir / "models" / "k5_L24" / "sae.safetensors"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # a bit flip in the tensor data: still a valid safetensors file
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError) as err:
        read_models(run_dir)
    msg = _one_line(err.value)
    assert "sha256" in msg and str(path) in msg and "torn or damaged" in msg
    # the other model still reads
    _, files = read_models(run_dir, ["l1_0.001_L16"])
    assert files[0].name == "l1_0.001_L16"


def test_mixed_steps_is_an_interrupted_write(run):
    run_dir, models, norm = run
    spec, params = models[1]
    write_model_file(run_dir / "models" / spec["name"], spec, params, normalizer=norm, step=50)
    with pytest.raises(ModelFileError) as err:
        read_models(run_dir)
    msg = _one_line(err.value)
    assert "different steps" in msg and "interrupted write" in msg and "source='checkpoint'" in msg
    assert "l1_0.001_L16" in msg


@pytest.mark.parametrize("victim", ["cfg.json", "sae.safetensors", "folder", "index.json"])
def test_missing_file(run, victim):
    run_dir, _, _ = run
    folder = run_dir / "models" / "k5_L24"
    if victim == "folder":
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    elif victim == "index.json":
        (run_dir / "models" / "index.json").unlink()
        assert not has_model_files(run_dir)
    else:
        (folder / victim).unlink()
    with pytest.raises(MissingPathError) as err:
        read_models(run_dir)
    msg = _one_line(err.value)
    assert "re-run the `jsae sweep` command that made the run to write them" in msg
    assert (victim if victim != "folder" else "k5_L24") in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_run_dir(tmp_path):
    with pytest.raises(MissingPathError) as err:
        read_models(tmp_path / "nope")
    assert "nope" in _one_line(err.value)
    assert not has_model_files(tmp_path / "nope")


def _rewrite_weights(folder: Path, arrays: dict) -> None:
    """Replace sae.safetensors and fix up the sha256: damage that the checksum cannot catch."""
    import hashlib

    from safetensors.numpy import save

    blob = save(arrays)
    (folder / "sae.safetensors").write_bytes(blob)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["sha256"] = hashlib.sha256(blob).hexdigest()
    (folder / "cfg.json").write_text(json.dumps(cfg))


def test_shape_mismatch(run):
    run_dir, _, _ = run
    folder = run_dir / "models" / "k5_L24"
    f = read_model_file(folder)
    arrays = dict(f.params) | {"norm_mean": f.normalizer.mean, "norm_scale": f.normalizer.scale}
    arrays["W_dec"] = np.ascontiguousarray(arrays["W_dec"][:-1])
    _rewrite_weights(folder, arrays)
    with pytest.raises(ModelFileError) as err:
        read_model_file(folder)
    msg = _one_line(err.value)
    assert "W_dec" in msg and "shape" in msg and "sae.safetensors" in msg


def test_spec_latent_size_mismatch(run):
    run_dir, _, _ = run
    folder = run_dir / "models" / "k5_L24"
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["spec"]["latent_size"] = 25
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError) as err:
        read_model_file(folder)
    assert "latent_size" in _one_line(err.value) and "cfg.json" in str(err.value)


def test_non_finite_values(run):
    run_dir, _, _ = run
    folder = run_dir / "models" / "k5_L24"
    f = read_model_file(folder)
    arrays = dict(f.params) | {"norm_mean": f.normalizer.mean, "norm_scale": f.normalizer.scale}
    arrays["b_enc"] = arrays["b_enc"].copy()
    arrays["b_enc"][3] = np.nan
    _rewrite_weights(folder, arrays)
    with pytest.raises(ModelFileError) as err:
        read_model_file(folder)
    assert "NaN" in _one_line(err.value)


def test_not_a_model_file(run):
    run_dir, _, _ = run
    (run_dir / "models" / "index.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelFileError) as err:
        read_models(run_dir)
    assert "index.json" in _one_line(err.value)
    (run_dir / "models" / "index.json").write_text('{"form')  # torn
    with pytest.raises(JsaeError):
        read_models(run_dir)


def test_stale_folders_are_not_read(run):
    run_dir, _, norm = run
    rng = np.random.default_rng(1)
    write_model_files(run_dir, [(_spec(3, 20), _params(rng, 20))], normalizer=norm, step=7, total_steps=7,
                      complete=True)
    (run_dir / "models" / "k5_L24" / "sae.safetensors").write_bytes(b"garbage")  # a stale, broken folder
    index, files = read_models(run_dir)
    assert index["models"] == ["k3_L20"] and index["complete"] is True
    assert [f.name for f in files] == ["k3_L20"]
    with pytest.raises(NotFoundError):
        read_models(run_dir, ["k5_L24"])


def test_rewrite_same_run_each_checkpoint(run):
    run_dir, models, norm = run
    rng = np.random.default_rng(2)
    new = [(spec, _params(rng, spec["latent_size"])) for spec, _ in models]
    write_model_files(run_dir, new, normalizer=norm, step=100, total_steps=100, complete=True)
    index, files = read_models(run_dir)
    assert index["step"] == 100 and index["complete"] is True and all(f.step == 100 for f in files)
    np.testing.assert_array_equal(files[0].params["W_enc"], new[0][1]["W_enc"])


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_atomic_writer_leaves_no_temp_file(run, monkeypatch):
    run_dir, models, norm = run
    assert _tmp_files(run_dir) == []
    folder = run_dir / "models" / "k5_L24"
    before = (folder / "sae.safetensors").read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mfmod.os, "replace", boom)
    rng = np.random.default_rng(3)
    with pytest.raises(OSError):
        write_model_file(folder, models[0][0], _params(rng, 24), normalizer=norm, step=41)
    monkeypatch.undo()
    assert _tmp_files(run_dir) == []
    assert (folder / "sae.safetensors").read_bytes() == before  # the old file is intact
    _, files = read_models(run_dir)  # and the run still reads
    assert files[0].step == 40


def test_write_order_weights_then_cfg_then_index(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    order: list[str] = []
    real = os.replace

    def spy(src, dst):
        order.append(f"{Path(dst).parent.name}/{Path(dst).name}")
        return real(src, dst)

    monkeypatch.setattr(mfmod.os, "replace", spy)
    write_model_files(tmp_path, [(_spec(2, 8), _params(rng, 8)), (_spec(3, 8), _params(rng, 8))],
                      normalizer=_normalizer(rng), step=1, total_steps=None, complete=False)
    assert order == ["k2_L8/sae.safetensors", "k2_L8/cfg.json", "k3_L8/sae.safetensors", "k3_L8/cfg.json",
                     "models/index.json"]


def test_write_refuses_bad_input(tmp_path):
    rng = np.random.default_rng(5)
    norm = _normalizer(rng)
    p = _params(rng, 10)
    with pytest.raises(BadValueError, match="latent_size"):
        write_model_file(tmp_path / "a", _spec(2, 11), p, normalizer=norm, step=0)
    bad = dict(p, b_enc=np.full(10, np.inf, np.float32))
    with pytest.raises(BadValueError, match="NaN or Inf"):
        write_model_file(tmp_path / "a", _spec(2, 10), bad, normalizer=norm, step=0)
    with pytest.raises(BadValueError, match="shape"):
        write_model_file(tmp_path / "a", _spec(2, 10), dict(p, b_pre=p["b_pre"][:-1]), normalizer=norm, step=0)
    with pytest.raises(BadValueError, match="distinct"):
        write_model_files(tmp_path, [(_spec(2, 10), p), (_spec(2, 10), p)], normalizer=norm, step=0,
                          total_steps=1, complete=False)
    with pytest.raises(BadValueError, match="folder name"):
        write_model_file(tmp_path / "a", dict(_spec(2, 10), name="../x"), p, normalizer=norm, step=0)
    assert not (tmp_path / "models").exists()


def test_no_jax_needed():
    """The module is numpy + safetensors only (model files are read without JAX)."""
    import subprocess
    import sys

    code = ("import sys; import jsae.runs.modelfiles, jsae.export; "
            "bad = [m for m in ('jax', 'torch', 'orbax', 'flax') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
