"""One sweep over several processes (``jsae launch``, ``jax.distributed``), on this machine's CPU.

Each process simulates two host devices; the grid's model axis is sharded over the devices of
all processes (gloo collectives). Specification:

1. a sweep on 2 and on 4 processes gives the model files and metrics of the one-process run
   (4 processes × 2 devices = 8 shards of a 2-model group: two processes hold only padding);
2. a checkpoint written by 4 processes resumes on 1, to the same models;
3. a process killed mid-run stops the others with one line naming it, and the same command resumes;
4. SIGINT to the launcher stops every process at the same step with one line and exit 130;
5. the pieces: the launcher's environment and command, the run id every process shares.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "configs" / "default.yaml"
GRID = ["grid.k=[2,4]", "grid.latent_size=[16,32]", "train.batch_size=64", "train.steps=40",
        "train.steps_per_call=10", "train.checkpoint_every=20", "train.progress=false", "sae.b_pre_init=mean",
        "train.shard_models=true"]
#: a longer run, to be stopped in the middle
LONG = [*GRID, "train.steps=300", "train.steps_per_call=10", "train.checkpoint_every=20", "train.keep_checkpoints=2"]


def _env(devices: int = 2) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    for key in ("JSAE_COORDINATOR_ADDRESS", "JSAE_NUM_PROCESSES", "JSAE_PROCESS_ID"):
        env.pop(key, None)
    return env


def _sweep(run: Path, store: Path, *overrides: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["jsae", "sweep", str(DEFAULT), "--out", str(run), f"data.store={store}", *overrides, *extra]


def _launch(n: int, command: list[str]) -> list[str]:
    return [sys.executable, "-m", "jsae.sweeps", "launch", "-n", str(n), "--devices-per-process", "2", "--", *command]


def _single(command: list[str]) -> list[str]:
    return [sys.executable, "-m", "jsae.sweeps", *command[1:]]


def _run(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _models(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    index = json.loads((run / "models" / "index.json").read_text())
    assert index["complete"], index
    return {f"{name}.{key}": value for name in index["models"]
            for key, value in load_file(run / "models" / name / "sae.safetensors").items()}


def _assert_same_models(a: Path, b: Path) -> None:
    ma, mb = _models(a), _models(b)
    assert ma.keys() == mb.keys() and any(k.endswith(".W_enc") for k in ma)
    for key in ma:
        np.testing.assert_allclose(ma[key], mb[key], rtol=0, atol=1e-6, err_msg=key)


def _step(run: Path) -> int:
    try:
        return json.loads((run / "sweep.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from jsae.store import write_store
    from jsae.synthetic import make_dictionary_data, synthetic_table

    path = tmp_path_factory.mktemp("store") / "emb"
    write_store(path, make_dictionary_data(2000, dim=16, n_atoms=32, active=3, seed=2).x, synthetic_table(2000))
    return path


def _one_process_run(tmp_path_factory, store, *overrides: str) -> Path:
    run = tmp_path_factory.mktemp("one") / "run"
    done = _run(_single(_sweep(run, store, *GRID, *overrides)))
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, store) -> Path:
    return _one_process_run(tmp_path_factory, store)


@pytest.fixture(scope="module")
def one_process_streamed(tmp_path_factory, store) -> Path:
    return _one_process_run(tmp_path_factory, store, "data.stream=true")


@pytest.mark.parametrize("n, stream", [(2, False), (4, False), (2, True)], ids=["2", "4", "2-streamed"])
def test_a_sweep_on_several_processes_equals_the_one_process_run(tmp_path, store, request, n, stream):
    """In memory every device holds the training rows; streamed every process reads the same batches."""
    one = request.getfixturevalue("one_process_streamed" if stream else "one_process")
    run = tmp_path / "run"
    done = _run(_launch(n, _sweep(run, store, *GRID, *(["data.stream=true"] if stream else []))))
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_models(run, one)
    got = json.loads((run / "metrics.json").read_text())
    want = json.loads((one / "metrics.json").read_text())
    assert [r["name"] for r in got] == [r["name"] for r in want]
    for g, w in zip(got, want):
        for key in ("val_nmse", "fraction_variance_explained", "dead_fraction", "mean_l0", "steps"):
            assert g[key] == pytest.approx(w[key], rel=1e-6, abs=1e-9), (g["name"], key)
    # process 0 printed the results; the run's files name one run id
    assert "run directory:" in done.stdout
    # its memory line counts every process on this machine: they share its RAM
    memory = next(line for line in done.stdout.splitlines() if line.startswith("memory: "))
    assert f"per process; {n} processes on this machine:" in memory, memory
    run_id = json.loads((run / "sweep.json").read_text())["run_id"]
    for name in json.loads((run / "models" / "index.json").read_text())["models"]:
        assert json.loads((run / "models" / name / "cfg.json").read_text())["run"]["id"] == run_id


def test_a_checkpoint_written_by_four_processes_resumes_on_one(tmp_path, store, one_process):
    run = tmp_path / "run"
    half = _run(_launch(4, _sweep(run, store, *GRID, extra=("--stop-after", "20"))))
    assert half.returncode == 0, half.stderr[-3000:]
    assert _step(run) == 20
    rest = _run(_single(_sweep(run, store, *GRID)))
    assert rest.returncode == 0, rest.stderr[-3000:]
    _assert_same_models(run, one_process)


def _start_and_wait(cmd: list[str], run: Path, step: int = 20) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _step(run) < step:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"ended before step {step}: {err[-3000:]}")
        assert time.time() < deadline, f"no checkpoint at step {step} within 300 s"
        time.sleep(0.01)
    return proc


@pytest.fixture(scope="module")
def long_one(tmp_path_factory, store) -> Path:
    run = tmp_path_factory.mktemp("long") / "run"
    done = _run(_single(_sweep(run, store, *LONG)))
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def test_a_killed_process_stops_the_others_in_one_line_and_the_same_command_resumes(tmp_path, store, long_one):
    run = tmp_path / "run"
    cmd = _launch(2, _sweep(run, store, *LONG))
    proc = _start_and_wait(cmd, run)
    try:
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 137, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("jsae launch:")]
    assert len(lines) == 1 and "process 1 of 2 was killed by SIGKILL" in lines[0], err[-3000:]
    assert "run the same command to resume" in lines[0]
    for pid in workers:  # none is left waiting for its dead peer
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    again = _run(cmd, timeout=600)  # the same command, on the same 2 processes
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same_models(run, long_one)


def test_sigint_to_the_launcher_stops_every_process_at_one_step(tmp_path, store, long_one):
    run = tmp_path / "run"
    cmd = _launch(2, _sweep(run, store, *LONG))
    proc = _start_and_wait(cmd, run)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("jsae sweep: warning: ")]
    assert len(lines) == 1 and "interrupted at step" in lines[0] and "saved" in lines[0], err[-3000:]
    step = _step(run)
    assert 20 <= step < 300 and json.loads((run / "models" / "index.json").read_text())["step"] == step
    again = _run(_single(_sweep(run, store, *LONG)))  # and it resumes on one process
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same_models(run, long_one)


def test_a_refusal_on_process_0_is_its_one_line_and_the_others_do_not_wait(tmp_path, store):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file\n")
    t0 = time.monotonic()
    done = _run(_launch(2, _sweep(out, store, *GRID)))
    assert done.returncode == 2 and time.monotonic() - t0 < 120
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jsae sweep: error: ") and str(out) in lines[0], done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------------- the pieces

def test_the_launcher_gives_each_process_the_coordinator_its_id_and_its_devices():
    from jsae.launch import _env as launch_env, process_command

    env = launch_env({"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=8"}, "127.0.0.1:9", 4, 3, 2)
    assert env["JSAE_COORDINATOR_ADDRESS"] == "127.0.0.1:9" and env["JSAE_NUM_PROCESSES"] == "4"
    assert env["JSAE_PROCESS_ID"] == "3"
    assert env["XLA_FLAGS"].split() == ["--xla_foo=1", "--xla_force_host_platform_device_count=2"]
    assert process_command(["jsae", "sweep", "x"]) == [sys.executable, "-m", "jsae.sweeps", "sweep", "x"]
    assert process_command(["python", "train.py"]) == ["python", "train.py"]


def test_the_launcher_names_the_cause_not_a_peer_that_stopped_because_of_it():
    from jsae.errors import EXIT_PEER_LOST
    from jsae.launch import _cause

    lost = EXIT_PEER_LOST
    assert _cause([2, lost]) == 0 and _cause([lost, 2]) == 1      # a refusal, not the peer that lost it
    assert _cause([lost, -9, 1]) == 1                              # killed by a signal comes first
    assert _cause([1, None, 2]) == 0 and _cause([None, 2, 1]) == 1  # equals: the lowest id
    assert _cause([lost, None]) == 0 and _cause([None, 0, lost]) == 2  # only peers-lost: still one of them


def test_a_lost_peer_is_its_own_exit_status_through_the_command_line(monkeypatch, capsys):
    import jax

    from jsae import cluster
    from jsae.errors import EXIT_PEER_LOST
    from jsae.sweeps import cli

    err = jax.errors.JaxRuntimeError("UNAVAILABLE: Barrier failed: tensorflow.CoordinationServiceError=''")
    monkeypatch.setattr(cluster, "is_multiprocess", lambda: True)
    assert cluster.peer_lost(err) and not cluster.peer_lost(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: oom"))
    assert not cluster.peer_lost(RuntimeError("coordination"))

    def train_sweep(*args, **kwargs):
        raise err
    monkeypatch.setattr("jsae.training.loop.train_sweep", train_sweep)
    monkeypatch.setattr(cluster, "initialize", lambda *a: False)
    code = cli.main(["sweep", str(DEFAULT), "--out", "/nonexistent/never/made", "train.progress=false"])
    assert code == EXIT_PEER_LOST
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "another process of the sweep ended" in lines[0] and "resume" in lines[0], lines


def test_inconsistent_launch_variables_are_one_line():
    from jsae.cluster import ClusterError, launched_by, slurm_tasks

    assert launched_by({}) is None
    assert launched_by({"JSAE_COORDINATOR_ADDRESS": "h:1", "JSAE_NUM_PROCESSES": "2",
                        "JSAE_PROCESS_ID": "1"}) == ("h:1", 2, 1)
    for n, pid in (("2", "2"), ("two", "0"), ("0", "0")):
        with pytest.raises(ClusterError, match="jsae launch") as info:
            launched_by({"JSAE_COORDINATOR_ADDRESS": "h:1", "JSAE_NUM_PROCESSES": n, "JSAE_PROCESS_ID": pid})
        assert "\n" not in str(info.value)
    assert slurm_tasks({}) == 1 and slurm_tasks({"SLURM_NTASKS": "4"}) == 1        # a job, not a job step
    assert slurm_tasks({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}) == 4   # under srun


def test_a_launch_with_a_failing_command_says_which_process_and_returns_its_status(tmp_path):
    from jsae.launch import launch

    script = tmp_path / "fail.py"
    script.write_text("import os, sys, time\n"
                      "if os.environ['JSAE_PROCESS_ID'] == '1':\n"
                      "    print('disk on fire', file=sys.stderr); sys.exit(3)\n"
                      "time.sleep(60)\n")
    err = tmp_path / "err.txt"
    t0 = time.monotonic()
    with open(err, "w") as f:
        status = launch(2, [sys.executable, str(script)], err=f)
    assert status == 3 and time.monotonic() - t0 < 30           # process 0 was stopped, not waited for
    line = err.read_text().strip()
    assert line.startswith("jsae launch: process 1 of 2 exited with status 3 (its last line: disk on fire)"), line
    assert "stopped process 0" in line and "\n" not in line
