"""Refuse before spending, and never report numbers that cannot be trusted.

1. memory: the grid's memory is estimated before anything is read or compiled (within 2× of
   the peak resident memory a sweep adds), printed when a sweep starts, and a grid that
   cannot fit is refused in one line;
2. hostile configs: a YAML alias bomb, a malformed or value-less override, a negative seed
   or row count are one line each, at once;
3. damaged run files (sweep.json, cfg.json, a checkpoint, a tampered models/index.json) are
   one line naming the file and the fix;
4. numbers: huge values give finite metrics, a metric that is not finite fails the sweep
   naming it, every JSON file is strict, identical rows are refused;
5. progress without a terminal is a plain line every N seconds, not a flood of bar redraws;
6. a read-only, forbidden or impossible ``--out`` is one line;
7. an in-memory sweep reads its rows from the store into the device copy, never holding them
   on the host, and trains exactly what the same rows given as an array train.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jsae.config import ConfigError, load_config
from jsae.store import write_store
from jsae.synthetic import make_dictionary_data, synthetic_table
from safety_helpers import jsae as cli

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "configs" / "default.yaml"
TINY = ["grid.k=[2,4]", "grid.latent_size=[16]", "train.batch_size=64", "train.steps=40", "train.steps_per_call=10",
        "train.checkpoint_every=20", "train.progress=false", "sae.b_pre_init=mean"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _one_line(rc: int, err: list[str], *needles: str) -> str:
    assert rc == 2, (rc, err)
    assert len(err) == 1, "\n".join(err)
    line = err[0]
    assert line.startswith("jsae") and ": error: " in line and "Traceback" not in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def _strict_json(path: Path):
    """Parse ``path`` as strict JSON: ``NaN`` / ``Infinity`` are refused."""
    def refuse(name):
        raise AssertionError(f"{path} holds {name}: not strict JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "emb"
    write_store(path, make_dictionary_data(2000, dim=16, n_atoms=32, active=3, seed=2).x, synthetic_table(2000))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, store) -> tuple[Path, str]:
    """A finished tiny run (checkpoints 20 and 40) and what `jsae sweep` printed on stdout."""
    from jsae.sweeps.cli import main

    run = tmp_path_factory.mktemp("run") / "run"
    capture = tmp_path_factory.mktemp("out") / "stdout.txt"
    with open(capture, "w") as f:
        old, sys.stdout = sys.stdout, f
        try:
            assert main(["sweep", str(DEFAULT), "--out", str(run), f"data.store={store}", *TINY]) == 0
        finally:
            sys.stdout = old
    return run, capture.read_text()


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".lock"))
    return dest


# ----------------------------------------------------------------------------------- 1. memory

_PEAK = r"""
import json, sys
from jsae.rss import proc_status
import jax.numpy as jnp
from jsae.config import load_config
from jsae.store import open_store
from jsae.training.data import planned_shape
from jsae.training.grid import GridTrainer, make_groups
from jsae.training.loop import train_sweep
from jsae.training.memory import estimate_memory
cfg = load_config(None, sys.argv[2:])
shape = planned_shape(cfg)
grid = GridTrainer(make_groups(cfg.grid), shape[2], cfg.sae, cfg.optim, topk_path=cfg.train.topk_path)
estimate = estimate_memory(cfg, *shape, groups=grid.groups, sparse=grid.sparse).total
open_store(cfg.data.store)
jnp.zeros(1).block_until_ready()
base = proc_status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the memory in use now
train_sweep(cfg, sys.argv[1])
print(json.dumps({"estimate": estimate, "measured": proc_status("VmHWM") - base}))
"""


@pytest.fixture(scope="module")
def store192(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store192") / "emb"
    write_store(path, make_dictionary_data(20000, dim=192, n_atoms=64, active=4, seed=1).x)
    return path


@pytest.mark.parametrize("grid", [
    ["grid.k=[8]", "grid.latent_size=[50000]", "train.batch_size=64", "train.topk_path=dense"],   # parameters
    ["grid.k=[8]", "grid.latent_size=[20000]", "train.batch_size=2048", "train.topk_path=sparse"],  # activations
], ids=["parameters", "activations"])
def test_the_memory_estimate_is_within_2x_of_the_measured_peak(tmp_path, store192, grid):
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("the peak resident memory cannot be reset here (/proc/self/clear_refs)")
    args = [f"data.store={store192}", *grid, "train.steps=2", "train.steps_per_call=2", "train.checkpoint_every=2",
            "train.progress=false"]
    out = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / "run"), *args], env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["measured"] > 300 * 2**20, got  # the models dominate the noise
    assert got["measured"] / 2 <= got["estimate"] <= 2 * got["measured"], got


def test_an_impossible_grid_is_refused_in_one_line_before_reading_or_compiling(tmp_path, capsys, store,
                                                                               monkeypatch):
    import jsae.training.grid
    import jsae.training.loop

    def never(*args, **kwargs):
        raise AssertionError("the rows were read or the step compiled before the memory check")

    monkeypatch.setattr(jsae.training.loop, "prepare_data", never)
    monkeypatch.setattr(jsae.training.grid.GridTrainer, "jit_run_steps", never)
    t0 = time.perf_counter()
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", tmp_path / "run", f"data.store={store}",
                   "grid.k=[2]", "grid.latent_size=[10000000000]")
    line = _one_line(rc, err, "needs about", "TiB", "available", "grid.latent_size", "train.batch_size")
    assert time.perf_counter() - t0 < 30, line
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_every_sweep_says_its_memory_estimate_when_it_starts(finished):
    _, stdout = finished
    first = stdout.splitlines()[0]
    assert first.startswith("memory: about ") and "available" in first and "host RAM" in first, stdout


def test_the_estimate_names_streaming_when_the_rows_dominate():
    from jsae.training.memory import Available, NotEnoughMemoryError, check_memory, estimate_memory

    cfg = load_config(None, ["grid.k=[8]", "grid.latent_size=[64]"])
    est = estimate_memory(cfg, 95_000_000, 5_000_000, 192)   # 100 M rows × 192: 68 GiB on the device
    assert est.parts()["training rows on the device"] == 95_000_000 * 192 * 4
    assert est.parts()["validation rows"] == 5_000_000 * 192 * 4 and "training rows" not in est.parts()
    given = estimate_memory(cfg, 95_000_000, 5_000_000, 192, from_array=True)  # plus the array's host copy
    assert given.parts()["training rows"] == 100_000_000 * 192 * 4
    with pytest.raises(NotEnoughMemoryError, match=r"data\.stream=true") as info:
        check_memory(cfg, est, Available(host=16 * 2**30))
    assert "\n" not in str(info.value) and "16.0 GiB" in str(info.value)
    streamed = estimate_memory(load_config(None, ["grid.k=[8]", "grid.latent_size=[64]", "data.stream=true"]),
                               95_000_000, 5_000_000, 192)
    check_memory(cfg, streamed, Available(host=16 * 2**30))  # streamed, the same rows fit


def test_on_a_cpu_every_device_and_every_process_of_the_sweep_on_this_machine_counts():
    """CPU devices and the processes of one sweep (``jsae launch -n N``) share the host's RAM."""
    from jsae.training.memory import Available, NotEnoughMemoryError, check_memory, estimate_memory

    cfg = load_config(None, ["grid.k=[8,16,32,64]", "grid.latent_size=[3000]", "train.batch_size=256"])
    one = estimate_memory(cfg, 10_000, 500, 192)
    four = estimate_memory(cfg, 10_000, 500, 192, devices=4, sharded=True)   # 4 devices of this process
    per_device = estimate_memory(cfg, 10_000, 500, 192, devices=4, sharded=True, local_devices=1)
    L, M = 3000, 192
    params = 4 * (2 * M * L + L + M)                                       # one model's float32 parameters
    assert one.parts()["parameters"] == 4 * params                         # the 4 models on one device
    assert per_device.parts()["parameters"] == params                      # a quarter of them on one of 4
    assert four.parts()["parameters"] == 4 * params                        # 4 devices × a quarter, in one RAM
    assert four.parts()["training rows on the device"] == 4 * 10_000 * M * 4   # every device holds the rows
    assert sum(four.parts().values()) == four.total == 4 * four.device_total + four.host_total
    # two processes of the sweep on this machine, two devices each: each needs its own, the RAM holds both
    two = estimate_memory(cfg, 10_000, 500, 192, devices=4, sharded=True, local_devices=2, processes_on_host=2)
    assert two.host_need == 2 * two.total and two.total == 2 * two.device_total + two.host_total
    assert "per process; 2 processes on this machine:" in two.summary()
    check_memory(cfg, two, Available(host=two.host_need + 1), 4)
    with pytest.raises(NotEnoughMemoryError) as info:
        check_memory(cfg, two, Available(host=two.total + (two.host_need - two.total) // 2), 4)  # fits one, not two
    message = str(info.value)
    assert "\n" not in message and "2 processes of the sweep on this machine" in message
    assert "fewer processes on this machine (now 2" in message
    # the processes on one machine share its host RAM on an accelerator too: their host parts add up
    gpus = estimate_memory(cfg, 10_000, 500, 192, devices=8, sharded=True, platform="gpu", local_devices=1,
                           processes_on_host=8)
    assert gpus.host_need == 8 * gpus.host_total
    with pytest.raises(NotEnoughMemoryError, match=r"host RAM together \(8 processes"):
        check_memory(cfg, gpus, Available(host=4 * gpus.host_total, device=10**15, where="GPU"), 8)


def test_on_an_accelerator_each_device_is_checked_against_its_own_memory(tmp_path):
    from jsae.training.memory import (Available, NotEnoughMemoryError, _cgroup_room, available_memory, check_memory,
                                      estimate_memory)

    class FakeGPU:
        platform, device_kind = "gpu", "NVIDIA H200"

        def __init__(self, limit, used):
            self.stats = {"bytes_limit": limit, "bytes_in_use": used}

        def memory_stats(self):
            return self.stats

    avail = available_memory([FakeGPU(100 * 2**30, 10 * 2**30), FakeGPU(100 * 2**30, 40 * 2**30)])
    assert avail.device == 60 * 2**30 and "GPU" in avail.where          # the fullest device decides
    cfg = load_config(None, ["grid.k=[8,16,32,64]", "grid.latent_size=[4000000]", "train.batch_size=256"])
    one = estimate_memory(cfg, 10_000, 500, 192, devices=1, platform="gpu")
    four = estimate_memory(cfg, 10_000, 500, 192, devices=4, platform="gpu")
    assert 3.5 < one.device["parameters"] / four.device["parameters"] <= 4   # sharded: a quarter per device
    assert "checkpoint copies" in one.host and "checkpoint copies" not in one.device
    with pytest.raises(NotEnoughMemoryError, match=r"GPU memory of NVIDIA H200 \(per device\)"):
        check_memory(cfg, one, avail, 1)
    check_memory(cfg, four, Available(host=10**15, device=int(1.1 * four.device_total), where="GPU"), 4)
    # a cgroup's limit counts its working set, not the file cache the kernel reclaims
    (tmp_path / "memory.max").write_text("8589934592\n")
    (tmp_path / "memory.current").write_text("6442450944\n")
    (tmp_path / "memory.stat").write_text("anon 1073741824\ninactive_file 4294967296\n")
    assert _cgroup_room(tmp_path) == 8 * 2**30 - (6 - 4) * 2**30


# ------------------------------------------------------------------------------------ 2. configs

_BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 9 if p else ['x'] * 9)}]\n"
                for p, a in zip([None, *"abcdefgh"], "abcdefghi"))


def test_a_yaml_alias_bomb_is_refused_within_a_second(tmp_path, capsys, store):
    from jsae.runs.check import is_jsae_run

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_BOMB)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"anchor or alias .* line 1") as info:
        load_config(bomb)
    assert time.perf_counter() - t0 < 1.0
    assert str(bomb) in str(info.value) and "\n" not in str(info.value)
    rc, err = cli(capsys, "sweep", bomb, "--out", tmp_path / "run", f"data.store={store}")
    _one_line(rc, err, str(bomb), "line 1")
    # a folder whose config.yaml is a bomb is not taken for a run, at once
    folder = tmp_path / "folder"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(bomb, folder / "config.yaml")
    t0 = time.perf_counter()
    assert not is_jsae_run(folder)
    assert time.perf_counter() - t0 < 1.0


def test_a_malformed_override_is_one_line_naming_it(tmp_path, capsys, store):
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", tmp_path / "run", f"data.store={store}", "grid.k=[4,")
    _one_line(rc, err, "'grid.k=[4,'", "KEY=VALUE", "column")
    assert not (tmp_path / "run").exists()


def test_an_override_without_a_value_is_named_alone(tmp_path, capsys, store):
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", tmp_path / "run", f"data.store={store}", "grid.k")
    line = _one_line(rc, err, "'grid.k'", "KEY=VALUE")
    assert "data.store" not in line and "unrecognized" not in line, line


@pytest.mark.parametrize("override, needles", [
    ("train.seed=-1", ("train.seed=-1", "0", "2^63 - 1")),
    ("data.max_rows=-5", ("data.max_rows=-5", "positive", "null")),
])
def test_out_of_range_seeds_and_row_counts_are_one_line(tmp_path, capsys, store, override, needles):
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", tmp_path / "run", f"data.store={store}", *TINY, override)
    _one_line(rc, err, *needles)
    assert not (tmp_path / "run").exists()


def test_max_rows_null_means_all_and_zero_still_reads_as_all():
    assert load_config(None, ["data.max_rows=null"]).data.max_rows is None
    assert load_config(None, ["data.max_rows=0"]).data.max_rows is None   # configs written before null
    assert load_config(None, ["data.max_rows=none"]).data.max_rows is None
    assert load_config(None, ["data.max_rows=500"]).data.max_rows == 500


# -------------------------------------------------------------------------------- 3. run files

@pytest.mark.parametrize("damage", ["truncated", "junk"])
def test_a_damaged_sweep_json_is_one_line_and_the_same_command_rewrites_it(tmp_path, capsys, finished, store,
                                                                          damage):
    from jsae.errors import JsaeError
    from jsae.runs.load import load_run, load_sweep

    run = _copy(finished[0], tmp_path)
    info = run / "sweep.json"
    run_id = json.loads(info.read_text())["run_id"]
    info.write_bytes(info.read_bytes()[:57] if damage == "truncated" else b"\x00\xffnot json at all")
    for load in (load_sweep, load_run):
        with pytest.raises(JsaeError) as caught:
            load(run)
        message = str(caught.value)
        assert "\n" not in message and str(info) in message and "re-run" in message, message
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", run, f"data.store={store}", *TINY)
    assert rc == 0, err
    assert _strict_json(info)["run_id"] == run_id   # from the checkpoint: the models still belong to the run
    assert load_sweep(run).complete


def test_a_cfg_json_without_its_checksum_is_one_line(tmp_path, finished):
    from jsae.runs.modelfiles import ModelFileError, read_model_file

    run = _copy(finished[0], tmp_path)
    cfg_path = run / "models" / "k2_L16" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["sha256"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError) as caught:
        read_model_file(cfg_path.parent)
    message = str(caught.value)
    assert "\n" not in message and str(cfg_path) in message and "'sha256'" in message, message
    assert "None" not in message, message


def test_a_truncated_checkpoint_is_one_line_without_library_internals(tmp_path, finished):
    run = _copy(finished[0], tmp_path)
    shutil.rmtree(run / "models")
    data = sorted((run / "checkpoints" / "40" / "state").rglob("d/*"), key=lambda p: -p.stat().st_size)[0]
    data.write_bytes(data.read_bytes()[:100])
    code = ("import sys\nfrom jsae.runs.load import load_run\n"
            "try:\n    load_run(sys.argv[1])\nexcept Exception as err:\n    print(type(err).__name__, err)\n")
    out = subprocess.run([sys.executable, "-c", code, str(run)], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("CheckpointError"), out.stdout
    for internal in ("pybind", "TensorStore(", "<bound method", "source locations"):
        assert internal not in printed[0], printed[0]
    assert str(run / "checkpoints" / "40") in printed[0] and "re-run" in printed[0], printed[0]
    noise = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert not any("Exception ignored" in line or "Traceback" in line for line in noise), out.stderr[-3000:]


@pytest.mark.parametrize("name", ["../ESCM", "/etc", ".hidden", "", "a/b", "..", "x..y"])
def test_model_names_from_a_tampered_index_are_refused(tmp_path, finished, name):
    from jsae.runs.load import load_sweep
    from jsae.runs.modelfiles import ModelFileError

    run = _copy(finished[0], tmp_path)
    shutil.copytree(run / "models" / "k2_L16", run / "ESCM")  # a real model folder outside models/
    index_path = run / "models" / "index.json"
    index = json.loads(index_path.read_text())
    index["models"] = [name, *index["models"][1:]]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelFileError) as caught:
        load_sweep(run)
    message = str(caught.value)
    assert "\n" not in message and repr(name) in message and str(index_path) in message, message


# ---------------------------------------------------------------------------------- 4. numbers

def test_values_near_the_float32_limit_give_finite_metrics_and_strict_json(tmp_path, capsys):
    # rows the store accepts (every squared norm fits float32) whose raw-space errors overflowed float32 sums
    x = (np.random.default_rng(0).standard_normal((2000, 8)) * 1.5e18 + 2e18).astype(np.float32)
    huge = write_store(tmp_path / "huge", x).path
    run = tmp_path / "run"
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", run, f"data.store={huge}", "grid.k=[2]", "grid.latent_size=[16]",
                   "train.steps=20", "train.batch_size=64", "train.progress=false", "train.val_fraction=0.2")
    assert rc == 0, err
    for record in _strict_json(run / "metrics.json"):
        assert np.isfinite(record["val_nmse"]) and 0 < record["val_nmse"] < 2, record
    assert _strict_json(run / "sweep.json")["metrics"]


def test_a_metric_that_is_not_finite_fails_the_sweep_in_one_line(tmp_path, capsys, store, monkeypatch):
    import jsae.training.loop

    real = jsae.training.loop.evaluate

    def inf_evaluate(*args, **kwargs):
        records = real(*args, **kwargs)
        records[1]["val_nmse"] = float("inf")
        records[1]["fraction_variance_explained"] = float("-inf")
        return records

    monkeypatch.setattr(jsae.training.loop, "evaluate", inf_evaluate)
    run = tmp_path / "run"
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", run, f"data.store={store}", *TINY)
    _one_line(rc, err, "k4_L16", "val_nmse", "not finite", "step 40")
    assert not (run / "metrics.json").exists()          # no numbers that cannot be trusted
    for path in run.rglob("*.json"):
        _strict_json(path)


def test_a_store_of_identical_rows_is_refused_at_the_start(tmp_path, capsys):
    row = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    same = write_store(tmp_path / "same", np.repeat(row, 500, axis=0)).path
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", tmp_path / "run", f"data.store={same}", "grid.k=[2]",
                   "grid.latent_size=[16]", "train.steps=20", "train.batch_size=64", "train.progress=false")
    _one_line(rc, err, "identical", "variance 0", str(same))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- 5. progress

def test_without_a_terminal_progress_is_a_plain_line_every_n_seconds(tmp_path, store):
    cmd = [sys.executable, "-m", "jsae.sweeps", "sweep", str(DEFAULT), "--out", str(tmp_path / "run"),
           f"data.store={store}", *TINY, "train.progress=true", "train.steps_per_call=5"]
    out = subprocess.run(cmd, env=_env(JSAE_PROGRESS_SECONDS="0.000001"), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "\r" not in out.stderr and "\x1b" not in out.stderr, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 8, out.stderr      # 8 host calls: at most one line each
    assert all(line.startswith("sweep 2 models: step ") for line in lines), lines
    assert lines[-1].startswith("sweep 2 models: step 40/40 (100%)"), lines


def test_line_progress_waits_n_seconds_between_lines():
    import io

    from jsae.training.hooks import LineProgress

    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(1000, 0, "sweep 3 models", every=30, file=out, clock=lambda: now[0])
    for _ in range(100):            # 100 host calls of 10 steps, 1 s apart
        now[0] += 1.0
        bar.set_postfix(loss_best="0.1")
        bar.update(10)
    assert out.getvalue().splitlines() == ["sweep 3 models: step 300/1000 (30%), loss_best 0.1",
                                           "sweep 3 models: step 600/1000 (60%), loss_best 0.1",
                                           "sweep 3 models: step 900/1000 (90%), loss_best 0.1"]


# ---------------------------------------------------------------------------------- 6. --out

def test_a_read_only_out_is_one_line(tmpfs, capsys, store):
    mnt = tmpfs("ro", "size=1m,ro")
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", mnt / "run", f"data.store={store}", *TINY)
    _one_line(rc, err, "read-only file system", str(mnt / "run"))


def test_a_permission_denied_while_saving_names_the_run_and_what_is_kept(tmp_path, capsys, store, monkeypatch):
    import jsae.training.hooks

    def denied(manager, step, *args, **kwargs):  # how tensorstore words EACCES under orbax
        raise ValueError(f"PERMISSION_DENIED: Error opening file: Permission denied [os_error_code={errno.EACCES}]")

    monkeypatch.setattr(jsae.training.hooks, "save_checkpoint", denied)
    run = tmp_path / "run"
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", run, f"data.store={store}", *TINY)
    _one_line(rc, err, "permission denied", str(run), "checkpoint step 20", "no checkpoint was saved", "writable")


def test_an_out_that_cannot_be_created_is_one_line(tmp_path, capsys, store):
    (tmp_path / "a-file").write_text("not a folder\n")
    rc, err = cli(capsys, "sweep", DEFAULT, "--out", tmp_path / "a-file" / "run", f"data.store={store}", *TINY)
    _one_line(rc, err, str(tmp_path / "a-file" / "run"), "cannot be created", "--out")


# ----------------------------------------------------------------- 7. rows never held on the host

def test_an_in_memory_sweep_never_holds_its_rows_on_the_host(tmp_path):
    """numpy's allocations (tracemalloc; the device copy is XLA's, not traced) stay a small
    fraction of the rows: the validation rows and one block of reads, no host copy of the
    training rows, no float64 copy, no normalised host copy."""
    import tracemalloc

    from jsae.training.loop import train_sweep

    n, m = 600_000, 64
    write_store(tmp_path / "store", np.random.default_rng(0).standard_normal((n, m)).astype(np.float32))
    cfg = load_config(None, [f"data.store={tmp_path / 'store'}", "grid.k=[2]", "grid.latent_size=[16]",
                             "train.steps=4", "train.batch_size=64", "train.steps_per_call=4",
                             "train.checkpoint_every=4", "train.progress=false", "sae.b_pre_init=mean"])
    tracemalloc.start()
    try:
        train_sweep(cfg, tmp_path / "run")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows = n * m * 4
    # what does not grow with the rows: about 45 MiB (plotting the sweep's figures, index arrays)
    assert peak <= 0.25 * rows + 48 * 2**20, f"host peak {peak / rows:.2f} × the rows ({rows / 2**20:.0f} MiB)"


def test_store_rows_read_what_the_store_holds_in_any_order_and_shape(tmp_path):
    from jsae.store import open_store
    from jsae.training.data import StoreRows

    x = np.random.default_rng(5).standard_normal((3000, 12)).astype(np.float32)
    write_store(tmp_path / "s", x)
    rows = np.sort(np.random.default_rng(6).choice(3000, 1700, replace=False))
    view = StoreRows(open_store(tmp_path / "s"), rows)
    assert view.shape == (1700, 12) and len(view) == 1700 and view.dtype == np.float32
    np.testing.assert_array_equal(view[100:1300], x[rows[100:1300]])
    np.testing.assert_array_equal(view[::-7], x[rows[::-7]])
    idx = np.random.default_rng(7).integers(0, 1700, (4, 9))            # repeats, any order, 2-D
    np.testing.assert_array_equal(view[idx], x[rows[idx]])
    with pytest.raises(TypeError, match="integer indices"):
        view[np.array([0.5])]


def test_device_rows_filled_from_the_store_equal_the_normalised_rows(tmp_path):
    from jsae.core.normalize import Normalizer
    from jsae.store import open_store
    from jsae.training.data import StoreRows
    from jsae.training.loop import rows_on_device

    rng = np.random.default_rng(8)
    x = (3 * rng.standard_normal((5000, 10)) + 1).astype(np.float32)
    write_store(tmp_path / "s", x)
    rows = np.sort(rng.choice(5000, 4321, replace=False))
    norm = Normalizer("standardize", rng.standard_normal(10), rng.uniform(0.5, 2.0, 10))
    expected = ((x[rows].astype(np.float64) - norm.mean) / norm.scale).astype(np.float32)  # float64 reference
    got = np.asarray(rows_on_device(StoreRows(open_store(tmp_path / "s"), rows), norm, block_rows=1000))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got, norm.apply(x[rows]))             # the host path's float32 arithmetic


def test_a_store_trained_in_memory_gives_the_models_of_the_same_rows_as_an_array(tmp_path):
    from safetensors.numpy import load_file

    from jsae.training.loop import train_sweep

    x = make_dictionary_data(3000, dim=16, n_atoms=32, active=3, seed=9).x
    write_store(tmp_path / "store", x)
    over = [f"data.store={tmp_path / 'store'}", *TINY]
    train_sweep(load_config(None, over), tmp_path / "from-store")
    train_sweep(load_config(None, over), tmp_path / "from-array", data=x)
    a, b = tmp_path / "from-store" / "models", tmp_path / "from-array" / "models"
    names = sorted(p.name for p in a.iterdir() if p.is_dir())
    assert names and names == sorted(p.name for p in b.iterdir() if p.is_dir())
    for name in names:  # the same tensors, bit for bit (the files' headers name their runs)
        ta, tb = load_file(a / name / "sae.safetensors"), load_file(b / name / "sae.safetensors")
        assert sorted(ta) == sorted(tb)
        for key in ta:
            np.testing.assert_array_equal(ta[key], tb[key], err_msg=f"{name} {key}")
