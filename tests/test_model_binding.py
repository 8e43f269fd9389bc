"""A model belongs to its run and says exactly what it is (the integrity issue, item 2).

Each test plants what used to pass unnoticed: a ``cfg.json`` whose spec was edited, a model
folder copied in from another run, a tensor whose dtype in the safetensors header lies
(with the recorded sha256 recomputed), a shorter ``train.steps`` on a finished run, and
model files whose bytes depended on the process that wrote them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jsae.config import ConfigError, load_config
from jsae.core.normalize import Normalizer
from jsae.errors import JsaeError
from jsae.runs.load import load_run, load_sweep
from jsae.runs.modelfiles import ModelFileError, read_model_file, read_models, write_model_files

ROOT = Path(__file__).resolve().parents[1]


def _one_line(err: BaseException) -> str:
    msg = str(err)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture
def run_copy(tmp_path, trained_run) -> Path:
    """A private copy of the shared seed-0 run (the fixture itself is never changed)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def _cfg(folder: Path) -> dict:
    return json.loads((folder / "cfg.json").read_text())


def _write_cfg(folder: Path, cfg: dict) -> None:
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=1))


# ---------------------------------------------------------------- the run id

def test_sweep_json_has_a_run_id_that_every_model_repeats(trained_run, trained_run_seed1):
    ids = []
    for run in (trained_run, trained_run_seed1):
        rid = json.loads((run / "sweep.json").read_text())["run_id"]
        assert isinstance(rid, str) and len(rid) == 32 and int(rid, 16) >= 0  # a uuid4 hex
        index, files = read_models(run)
        assert files and all(f.run_id == rid and f.bound for f in files)
        ids.append(rid)
    assert ids[0] != ids[1]


# ---------------------------------------------------------------- an edited cfg.json

def test_edited_spec_in_cfg_json_is_refused(run_copy):
    folder = run_copy / "models" / "k4_L32"
    cfg = _cfg(folder)
    assert cfg["spec"]["k"] == 4
    cfg["spec"]["k"] = 16  # the weights are still those of k = 4 (and sae.safetensors is untouched)
    _write_cfg(folder, cfg)
    for load in (load_sweep, load_run):
        with pytest.raises(ModelFileError) as err:
            load(run_copy)
        msg = _one_line(err.value)
        assert "k4_L32" in msg and "spec.k = 16 (written as 4)" in msg and "cfg.json was edited" in msg


def test_edited_normaliser_kind_or_step_is_refused(run_copy):
    folder = run_copy / "models" / "k3_L8"
    cfg = _cfg(folder)
    cfg["normalizer"]["kind"] = "none" if cfg["normalizer"]["kind"] != "none" else "standardize"
    _write_cfg(folder, cfg)
    with pytest.raises(ModelFileError, match=r"normalizer\.kind"):
        read_model_file(folder)


# ---------------------------------------------------------------- a model from another run

def test_model_folder_copied_from_another_run_is_refused_naming_it(run_copy, trained_run_seed1):
    victim = run_copy / "models" / "k3_L16"
    shutil.rmtree(victim)
    shutil.copytree(trained_run_seed1 / "models" / "k3_L16", victim)  # same name, same step, another seed
    read_model_file(victim)  # a sound model file in itself
    for load in (load_sweep, load_run):
        with pytest.raises(ModelFileError) as err:
            load(run_copy)
        msg = _one_line(err.value)
        assert "k3_L16" in msg and "copied in from another run" in msg
        assert "copy the model back from its own run" in msg and "re-run" in msg


def test_copied_folder_with_its_run_id_edited_is_refused(run_copy, trained_run_seed1):
    """Editing the copy's run id to this run's does not make it this run's model."""
    victim = run_copy / "models" / "k3_L16"
    shutil.rmtree(victim)
    shutil.copytree(trained_run_seed1 / "models" / "k3_L16", victim)
    cfg = _cfg(victim)
    cfg["run"]["id"] = json.loads((run_copy / "sweep.json").read_text())["run_id"]
    _write_cfg(victim, cfg)
    with pytest.raises(ModelFileError, match=r"run_id = .*cfg\.json was edited"):
        load_sweep(run_copy)


# ---------------------------------------------------------------- a dtype that lies

def test_dtype_that_lies_in_the_header_is_refused_even_with_a_matching_sha256(run_copy):
    folder = run_copy / "models" / "k4_L16"
    blob = (folder / "sae.safetensors").read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = blob[8:8 + n]
    assert header.count(b'"W_dec":{"dtype":"F32"') == 1
    lied = header.replace(b'"W_dec":{"dtype":"F32"', b'"W_dec":{"dtype":"I32"')  # same length, same offsets
    new = blob[:8] + lied + blob[8 + n:]
    (folder / "sae.safetensors").write_bytes(new)
    cfg = _cfg(folder)
    cfg["sha256"] = hashlib.sha256(new).hexdigest()  # the checksum cannot catch it
    _write_cfg(folder, cfg)
    from safetensors.numpy import load

    assert load(new)["W_dec"].dtype == np.int32  # what a reader gets without the check
    with pytest.raises(ModelFileError) as err:
        load_sweep(run_copy)
    msg = _one_line(err.value)
    assert "W_dec is stored as int32, not float32" in msg and "k4_L16" in msg


# ---------------------------------------------------------------- a shorter train.steps

def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_lowering_train_steps_on_a_finished_run_is_refused_and_changes_nothing(run_copy):
    from jsae.training.loop import train_sweep

    info = json.loads((run_copy / "sweep.json").read_text())
    assert info["complete"] and info["step"] == 600
    before = _snapshot(run_copy)
    cfg = load_config(run_copy / "config.yaml", ["train.steps=300"])
    with pytest.raises(ConfigError) as err:
        train_sweep(cfg, run_copy)
    msg = _one_line(err.value)
    assert "has trained 600 steps, more than train.steps = 300 asks for" in msg
    assert "set train.steps to 600 or more" in msg and "new --out" in msg
    assert _snapshot(run_copy) == before  # config.yaml, sweep.json, models/, checkpoints/: untouched


# ---------------------------------------------------------------- byte-identical files

WRITE_SCRIPT = r"""
import sys
from pathlib import Path
import numpy as np
from jsae.core.normalize import Normalizer
from jsae.runs.modelfiles import write_model_files

out = Path(sys.argv[1])
rng = np.random.default_rng(7)
M = 10
models = []
for k, L in ((2, 8), (3, 12)):
    models.append(({"k": k, "latent_size": L, "activation": "topk", "l1_coef": 0.0, "name": f"k{k}_L{L}"},
                   {"W_enc": rng.normal(size=(M, L)), "b_enc": rng.normal(size=L), "W_dec": rng.normal(size=(L, M)),
                    "b_pre": rng.normal(size=M)}))
norm = Normalizer("standardize", rng.normal(size=M), rng.uniform(0.5, 2.0, M))
run = {"id": "0123456789abcdef0123456789abcdef", "version": "x", "data": "store",
       "config": {"train": {"steps": 10, "seed": 0, "lr": 1e-3}, "grid": {"k": [2, 3], "latent_size": [8, 12]},
                  "data": {"store": "s", "splits": ["a", "b"]}, "sae": {"normalize": "standardize"}}}
for i in range(4):  # safetensors' own writer ordered its metadata differently from one call to the next
    write_model_files(out / f"w{i}", models, normalizer=norm, step=5, total_steps=10, complete=False, run=run)
"""


def test_same_parameters_give_byte_identical_files_in_separate_processes(tmp_path):
    script = tmp_path / "write.py"
    script.write_text(WRITE_SCRIPT)
    outs = []
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        out = tmp_path / f"p{seed}"
        proc = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs += [out / f"w{i}" for i in range(4)]
    files = [f"models/{n}/{f}" for n in ("k2_L8", "k3_L12") for f in ("sae.safetensors", "cfg.json")]
    files.append("models/index.json")
    for rel in files:
        ref = (outs[0] / rel).read_bytes()
        for other in outs[1:]:
            assert (other / rel).read_bytes() == ref, f"{rel} differs between {outs[0]} and {other}"
    cfg_text = (outs[0] / "models/k2_L8/cfg.json").read_text()
    cfg = json.loads(cfg_text)
    assert list(cfg) == sorted(cfg) and list(cfg["run"]["config"]) == sorted(cfg["run"]["config"])
    _, read = read_models(outs[0])
    assert all(f.bound and f.run_id == "0123456789abcdef0123456789abcdef" for f in read)


# ---------------------------------------------------------------- files from before

def test_files_from_before_the_binding_still_read(tmp_path):
    """A model file with only the weights' sha256 (no definition in its header, no run id), in
    a run whose sweep.json has no run_id, reads as before (``bound`` is False)."""
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    M, L = 6, 8
    spec = {"k": 2, "latent_size": L, "activation": "topk", "l1_coef": 0.0, "name": "k2_L8"}
    params = {"W_enc": rng.normal(size=(M, L)).astype(np.float32), "b_enc": np.zeros(L, np.float32),
              "W_dec": rng.normal(size=(L, M)).astype(np.float32), "b_pre": np.zeros(M, np.float32)}
    norm = Normalizer("standardize", rng.normal(size=M), rng.uniform(0.5, 2.0, M))
    write_model_files(tmp_path, [(spec, params)], normalizer=norm, step=3, total_steps=3, complete=True,
                      run={"version": "0.0.1"})
    folder = tmp_path / "models" / "k2_L8"
    old = save(dict(params, norm_mean=norm.mean, norm_scale=norm.scale),
               metadata={"format": "jsae-sae", "version": "1"})  # as jsae wrote them before
    (folder / "sae.safetensors").write_bytes(old)
    cfg = _cfg(folder)
    cfg["sha256"] = hashlib.sha256(old).hexdigest()
    _write_cfg(folder, cfg)
    (tmp_path / "sweep.json").write_text(json.dumps({"config": {}, "models": [spec], "normalizer": {}}))
    _, files = read_models(tmp_path)
    assert files[0].name == "k2_L8" and not files[0].bound and files[0].run_id is None
    np.testing.assert_array_equal(files[0].params["W_enc"], params["W_enc"])
    # and such a folder does not pass as a model of a run that has a run id
    (tmp_path / "sweep.json").write_text(json.dumps({"run_id": "f" * 32, "config": {}, "models": [spec],
                                                     "normalizer": {}}))
    with pytest.raises(JsaeError, match=r"k2_L8 was written by a run from before run ids"):
        read_models(tmp_path)
