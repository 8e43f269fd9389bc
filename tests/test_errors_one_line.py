"""One-line errors, always: bad configs, arrays, tables, checkpoints and model files give
exactly one stderr line ``jsae…: error: …`` and a non-zero exit, never a traceback — and
nothing is written. A real bug (any other exception) still shows its traceback."""
import os
import pickle
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest

import jsae.store as store_module
from jsae.errors import JsaeError, one_line
from safety_helpers import REPO, TINY_SWEEP, jsae, tiny_x


def assert_one_line(rc, err, *needles):
    assert rc != 0
    assert len(err) == 1, "\n".join(err)
    line = err[0]
    assert line.startswith("jsae") and ": error: " in line and "Traceback" not in line, line
    for needle in needles:
        assert needle in line, line
    return line


# ----------------------------------------------------------------------------- configs

def sweep(tmp_path, config, *overrides, store):
    return ["sweep", config, "--out", tmp_path / "run", f"data.store={store}", *TINY_SWEEP,
            *overrides]


def test_yaml_syntax_error(tmp_path, capsys, tiny_store):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  k: [1, 2\n")
    rc, err = jsae(capsys, *sweep(tmp_path, bad, store=tiny_store))
    assert_one_line(rc, err, "not valid YAML", "line")
    assert not (tmp_path / "run").exists()


def test_yaml_unsafe_tag_is_refused_not_run(tmp_path, capsys, tiny_store):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"grid: !!python/object/apply:os.system ['touch {marker}']\n")
    rc, err = jsae(capsys, *sweep(tmp_path, evil, store=tiny_store))
    assert_one_line(rc, err, "python/object")
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, needle", [
    ("optim.lr=nan", "optim.lr=nan"), ("optim.lr=inf", "optim.lr=inf"), ("optim.lr=-0.001", "optim.lr must be > 0"),
    ("optim.eps=nan", "optim.eps"), ("optim.eps=0", "optim.eps must be > 0"), ("optim.b1=1.0", "optim.b1"),
    ("optim.b2=-0.5", "optim.b2"), ("sae.auxk_coef=inf", "sae.auxk_coef"), ("grid.l1_coef=[nan]", "grid.l1_coef"),
    ("train.val_fraction=0", "train.val_fraction"), ("train.val_fraction=nan", "train.val_fraction"),
])
def test_non_finite_and_out_of_range_optimiser_values_are_refused(tmp_path, capsys, override, needle, tiny_store):
    rc, err = jsae(capsys, *sweep(tmp_path, REPO / "configs" / "default.yaml", override, store=tiny_store))
    assert_one_line(rc, err, needle)
    assert not (tmp_path / "run").exists()   # nothing written: the corrected command starts afresh


def test_a_store_too_small_for_the_validation_fraction_names_the_value_and_the_rows(tmp_path, capsys):
    small = store_module.write_store(tmp_path / "three", tiny_x(3)).path
    rc, err = jsae(capsys, *sweep(tmp_path, REPO / "configs" / "default.yaml", "train.val_fraction=0.05",
                                  "train.batch_size=1", store=small))
    assert_one_line(rc, err, "train.val_fraction=0.05", "3 training rows", "0 validation rows")
    assert not (tmp_path / "run").exists()


def test_train_sweep_refuses_a_val_fraction_without_validation_rows_before_training(tmp_path, monkeypatch, tiny_store):
    """The library path (no CLI pre-check) refuses in prepare_data, naming the configured
    value and the row count, for a store and for an array; evaluate() is never reached."""
    import jsae.training.loop
    from jsae.config import ConfigError, load_config
    from jsae.training.loop import train_sweep

    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(jsae.training.loop, "GridTrainer", never)
    default = REPO / "configs" / "default.yaml"
    for overrides, data, needles in [
        (["train.val_fraction=0.001"], None, ("train.val_fraction=0.001 of the 240 training rows of",
                                              str(tiny_store), "0 validation rows")),
        (["train.val_fraction=0.001"], tiny_x(240), ("train.val_fraction=0.001 of the 240 training rows of the "
                                                     "data array", "0 validation rows")),
        (["train.val_fraction=0.999"], None, ("train.val_fraction=0.999 of the 240 training rows",
                                              "leaves no training row")),
        (["train.val_fraction=0.005"], None, ("train.val_fraction=0.005 of the 240 training rows",  # 1 row: FVE 0/0
                                              "gives 1 validation row", "at least two")),
    ]:
        cfg = load_config(default, [f"data.store={tiny_store}", *TINY_SWEEP, *overrides])
        with pytest.raises(ConfigError) as info:
            train_sweep(cfg, tmp_path / "run", data=data)
        msg = str(info.value)
        assert "\n" not in msg and all(n in msg for n in needles), msg
        assert not (tmp_path / "run").exists()


def test_evaluate_without_validation_rows_does_not_invent_a_val_fraction():
    from jsae.errors import BadValueError
    from jsae.training.evaluate import evaluate

    with pytest.raises(BadValueError, match="0 validation rows") as info:
        evaluate(None, None, np.zeros((0, 8), np.float32), None)
    assert "val_fraction=0" not in str(info.value)


def test_resuming_a_run_whose_saved_config_is_not_yaml_is_one_line(tmp_path, capsys, tiny_store, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.yaml").write_text("grid:\n  k: [1, 2\n")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    rc, err = jsae(capsys, "sweep", REPO / "configs" / "default.yaml", "--out", run, f"data.store={tiny_store}",
                   *TINY_SWEEP)
    line = assert_one_line(rc, err, str(run), "saved config.yaml is damaged", "not valid YAML", "line 3")
    assert "new --out" in line
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing deleted or rewritten: the run keeps its checkpoints


# ----------------------------------------------------------------------------- store import

@pytest.fixture
def arrays(tmp_path):
    np.save(tmp_path / "one_d.npy", np.zeros(5, np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "strings.npy", np.array([["a", "b"]]))
    (tmp_path / "text.npy").write_text("hello, I am not an array\n")
    with open(tmp_path / "pickle.npy", "wb") as f:
        pickle.dump({"x": 1}, f)
    np.save(tmp_path / "good.npy", tiny_x(4))
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "broken.csv").write_text('a,b\n1,"2\n')
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    return tmp_path


@pytest.mark.parametrize("name, needle", [
    ("one_d.npy", "2-D"), ("empty.npy", "0 rows"), ("objects.npy", "never loaded"), ("strings.npy", "real numbers"),
    ("text.npy", "not a NumPy .npy array"), ("pickle.npy", "not a NumPy .npy array"), ("missing.npy", "does not exist"),
])
def test_store_import_of_a_bad_array(arrays, capsys, name, needle):
    rc, err = jsae(capsys, "store", "import", arrays / name, "--out", arrays / "out")
    line = assert_one_line(rc, err, needle)
    assert "allow_pickle" not in line
    assert not (arrays / "out").exists()


@pytest.mark.parametrize("name, needle", [
    ("empty.csv", "cannot be read as csv"), ("broken.csv", "cannot be read as csv"),
    ("broken.parquet", "cannot be read as parquet"), ("missing.csv", "does not exist"),
])
def test_store_import_with_a_bad_metadata_table(arrays, capsys, name, needle):
    rc, err = jsae(capsys, "store", "import", arrays / "good.npy", "--metadata", arrays / name,
                   "--out", arrays / "out")
    assert_one_line(rc, err, needle)
    assert not (arrays / "out").exists()


def test_store_info_of_a_missing_or_corrupt_store(tmp_path, capsys):
    assert_one_line(*jsae(capsys, "store", "info", tmp_path / "nope"), "does not exist")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "store.json").write_text("{not json")
    assert_one_line(*jsae(capsys, "store", "info", bad), "corrupt")


def test_a_cli_run_as_a_subprocess_prints_one_line(arrays):
    proc = subprocess.run([sys.executable, "-m", "jsae.sweeps", "store", "import", str(arrays / "text.npy"), "--out",
                           str(arrays / "out")], capture_output=True, text=True, cwd=REPO, timeout=120)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("jsae store import: error:"), proc.stderr


# ----------------------------------------------------------------------------- checkpoints

@pytest.fixture
def damaged(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def probe(run, store):
    return ["probe", run, "--data", store, "--label", "split", "--positive", "train"]


def _truncate(files) -> None:
    files = [p for p in files if p.is_file() and p.stat().st_size > 64]
    assert files
    for p in files:  # every data file cut in half
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _probe_subprocess(run, store) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-m", "jsae.sweeps", *map(str, probe(run, store))], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def test_probe_of_truncated_model_files(damaged, tiny_store):
    """Analyses read RUN/models: truncated weights are one line naming the file (in a subprocess:
    nothing else reaches stderr either)."""
    _truncate((damaged / "models").rglob("*.safetensors"))
    code, err = _probe_subprocess(damaged, tiny_store)
    assert_one_line(code, err, str(damaged / "models"))
    assert err[0].startswith("jsae probe: error:")


def test_probe_of_a_truncated_checkpoint_without_model_files(damaged, tiny_store):
    """Without models/, the checkpoint is read: orbax's own log lines stay off stderr."""
    shutil.rmtree(damaged / "models")
    _truncate((damaged / "checkpoints").rglob("*"))
    code, err = _probe_subprocess(damaged, tiny_store)
    assert_one_line(code, err, str(damaged))
    assert err[0].startswith("jsae probe: error:")


def test_probe_of_a_run_without_models_or_checkpoints(damaged, capsys, tiny_store):
    shutil.rmtree(damaged / "models")
    for step in (damaged / "checkpoints").iterdir():
        shutil.rmtree(step)
    assert_one_line(*jsae(capsys, *probe(damaged, tiny_store)), str(damaged))
    shutil.rmtree(damaged / "checkpoints")
    assert_one_line(*jsae(capsys, *probe(damaged, tiny_store)), "no models/ or checkpoints/")


def test_probe_of_a_run_with_a_broken_config(damaged, capsys, tiny_store):
    (damaged / "config.yaml").write_text("grid: [unclosed\n")
    assert_one_line(*jsae(capsys, *probe(damaged, tiny_store)), str(damaged))


# ----------------------------------------------------------------------------- model files

@pytest.mark.embed
def test_a_hostile_pt_model_is_never_unpickled(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("resemblyzer")
    from jsae.embed.cli import main

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "weights.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model_state": Evil()}, f)
    import torch

    zipped = tmp_path / "zipped.pt"
    torch.save({"model_state": Evil()}, zipped)  # the zip format torch.save writes
    audio = tmp_path / "audio"
    audio.mkdir()
    with wave.open(str(audio / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000, "<i2").tobytes())
    for model in (evil, zipped):
        capsys.readouterr()
        rc = main(["--audio-dir", str(audio), "--encoder", "resemblyzer", "--model", str(model),
                   "--out", str(tmp_path / "store"), "-q", "--no-progress"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert rc != 0 and len(err) == 1 and err[0].startswith("jsae embed: error:"), err
        assert "never pickled" in err[0] or "plain weights" in err[0]
        assert not marker.exists()


# ----------------------------------------------------------------------------- the error classes

def test_every_deliberate_error_is_a_jsae_error_and_keeps_its_old_base():
    from jsae.embed.audio import AudioReadError
    from jsae.embed.encoders import EncoderLoadError
    from jsae.embed.export import ExportError
    from jsae.embed.plan import ManifestError
    from jsae.config import ConfigError
    from jsae.runs.check import RunDirError
    from jsae.safety import UnsafeDeleteError
    from jsae.store import StoreError
    from tools.demo_corpus.build import CorpusExistsError
    from tools.demo_corpus.tools import MissingToolsError
    from tools.demo_corpus.voices import SynthesisError

    for cls, old in [(ExportError, RuntimeError), (EncoderLoadError, RuntimeError), (ManifestError, ValueError),
                     (AudioReadError, RuntimeError), (CorpusExistsError, RuntimeError),
                     (MissingToolsError, RuntimeError), (SynthesisError, RuntimeError), (ConfigError, ValueError),
                     (StoreError, ValueError), (RunDirError, ValueError), (UnsafeDeleteError, ValueError)]:
        assert issubclass(cls, JsaeError) and issubclass(cls, old), cls


def test_load_sweep_and_model_lookup_raise_jsae_errors_with_their_old_bases(tmp_path, tiny_run):
    from jsae.config import ConfigError
    from jsae.errors import MissingPathError, NotFoundError
    from jsae.runs.load import load_sweep

    sweep = load_sweep(tiny_run)
    with pytest.raises(KeyError, match="k=3, latent_size=8") as info:
        sweep.model(k=3, latent_size=8)
    assert isinstance(info.value, NotFoundError) and str(info.value).startswith("no model with k=3")
    assert "k2_L8" in str(info.value)  # names the models there are

    with pytest.raises(FileNotFoundError, match="config.yaml is missing") as info:
        load_sweep(tmp_path)  # an empty folder
    assert isinstance(info.value, MissingPathError)
    with pytest.raises(FileNotFoundError, match="no such run directory") as info:
        load_sweep(tmp_path / "nope")
    run = tmp_path / "without-models-and-checkpoints"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("models", "checkpoints"))
    with pytest.raises(MissingPathError, match="no checkpoints/"):
        load_sweep(run)
    for name, needle in (("config.yaml", "config.yaml is missing"), ("sweep.json", "sweep.json is missing")):
        run = tmp_path / f"without-{name}"
        shutil.copytree(tiny_run, run)
        (run / name).unlink()
        with pytest.raises(MissingPathError, match=needle) as info:
            load_sweep(run)
        assert isinstance(info.value, FileNotFoundError) and "\n" not in str(info.value)
    run = tmp_path / "broken"
    shutil.copytree(tiny_run, run)
    (run / "config.yaml").write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(run)


def test_messages_with_a_table_are_one_line(tmp_path):
    from jsae.embed.export import ExportError, _check_settings
    from tools.demo_corpus.tools import MissingToolsError

    msg = str(MissingToolsError(["program sox", "program flite"], ["sox", "flite"]))
    assert "\n" not in msg and "program sox; program flite" in msg
    with pytest.raises(ExportError) as info:
        _check_settings(tmp_path, {"encoder": "titanet", "rows_per_shard": 1024},
                        {"encoder": "resemblyzer", "rows_per_shard": 64})
    assert "\n" not in str(info.value) and "; rows_per_shard:" in str(info.value)
    assert one_line("a table:\n  a: 1\n  b: 2\nfix it") == "a table: a: 1; b: 2; fix it"


def test_a_real_bug_keeps_its_traceback(monkeypatch, capsys, tiny_store):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(store_module, "open_store", broken)
    with pytest.raises(ZeroDivisionError):
        jsae(capsys, "store", "info", tiny_store)



def test_a_write_abandoned_half_way_adds_nothing_after_the_one_line(capsys):
    """A checkpoint save cut short by a full disk leaves orbax's write coroutines unawaited; when
    they are collected, Python's "coroutine … was never awaited" must not follow the command's line."""
    import argparse
    import gc
    import warnings

    from jsae import console
    from jsae.errors import StorageError

    async def write_fragment():  # stands in for orbax's serialisation coroutine
        pass

    def command(args):
        pending = [write_fragment()]
        pending.append(pending)  # a cycle: only the collector frees it, after the command returned
        raise StorageError("no space left on device while saving checkpoint step 60; re-run the same command")

    parser = argparse.ArgumentParser(prog="jsae")
    console.add_command(console.add_commands(parser, "command", "commands"), "save", command, "save")
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:  # every warning, and the filters restored after
        warnings.simplefilter("always")
        assert console.run(parser, ["save"]) == 2
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err, err
