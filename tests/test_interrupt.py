"""Ctrl-C and SIGTERM stop cleanly, and a preempted job loses nothing.

* :class:`jsae.console.SignalStop`: a first SIGINT / SIGTERM sets a flag, a second raises
  :class:`~jsae.errors.StoppedAtOnce` at once; the old handlers come back afterwards;
* :func:`jsae.console.run`: :class:`~jsae.errors.Interrupted` is one line and exit status
  130 / 143, a bare Ctrl-C one line and 130 (no traceback);
* ``jsae sweep`` (a real subprocess, a real signal): exit 130 / 143, one line naming the
  step, a checkpoint and model files at that step, and the same command finishes the run
  with exactly the parameters of an uninterrupted one;
* ``jsae embed``: SIGTERM abandons the current shard, keeps the finished ones (one line,
  exit 143), and the same command completes the store equal to an uninterrupted export.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jsae.console import ArgumentParser, SignalStop, add_command, add_commands, run
from jsae.errors import Interrupted, JsaeError, StoppedAtOnce

ROOT = Path(__file__).resolve().parents[1]


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.005)


# ---------------------------------------------------------------- the handler

def _signalled(cmd: list[str], run: Path, *signums: int) -> tuple[int, str]:
    """Start the sweep ``cmd``, send it ``signums`` (back to back) once its step-50 checkpoint is
    written, and return its exit status and stderr."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while _step(run) < 50:  # sweep.json is written last by the step-50 checkpoint
            assert proc.poll() is None, f"the sweep ended before it was signalled: {proc.stderr.read()[-3000:]}"
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.005)
        for signum in signums:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_first_signal_sets_the_flag_and_a_second_raises_at_once(signum, status):
    before = {s: signal.getsignal(s) for s in SignalStop.SIGNALS}
    with SignalStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signum)
        _wait(lambda: stop.requested)           # the process goes on: only the flag is set
        assert stop.signum == signum and stop.exit_status == status
        with pytest.raises(StoppedAtOnce) as caught:
            os.kill(os.getpid(), signal.SIGINT)  # any second signal
            _wait(lambda: False)
        assert caught.value.exit_status == 130 and isinstance(caught.value, KeyboardInterrupt)
        assert "second signal" in str(caught.value)
    assert {s: signal.getsignal(s) for s in SignalStop.SIGNALS} == before


def test_outside_the_main_thread_it_installs_nothing():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def work():
        with SignalStop() as stop:
            seen.append((stop.requested, signal.getsignal(signal.SIGTERM)))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [(False, before)]


def _cli_raising(err: BaseException) -> ArgumentParser:
    parser = ArgumentParser(prog="jsae")
    sub = add_commands(parser, "command", "commands")

    def fail(args):
        raise err

    add_command(sub, "go", fail, "raise")
    return parser


@pytest.mark.parametrize("err, status, line", [
    (Interrupted("interrupted at step 4 of 9; checkpoint 4 saved; run the same command to resume", 143), 143,
     "jsae go: interrupted at step 4 of 9; checkpoint 4 saved; run the same command to resume"),
    (StoppedAtOnce(signal.SIGTERM), 143,
     "jsae go: stopped at once by a second signal (SIGTERM); only what was saved before is kept; "
     "run the same command to resume"),
    (KeyboardInterrupt(), 130, "jsae go: interrupted"),
])
def test_run_prints_one_line_and_returns_the_signal_status(capsys, err, status, line):
    assert isinstance(Interrupted("x"), JsaeError)
    assert run(_cli_raising(err), ["go"]) == status
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [line] and captured.out == ""


# ---------------------------------------------------------------- jsae sweep

# One model big enough that a host call of 2 steps takes a few ms on a CPU: 200 steps,
# checkpoints every 50; the test signals once the step-50 checkpoint is written.
SWEEP = ["grid.k=[4]", "grid.latent_size=[1024]", "train.batch_size=512", "train.steps=200",
         "train.steps_per_call=2", "train.checkpoint_every=50", "train.keep_checkpoints=2", "train.progress=false"]
TOTAL = 200
LINE = re.compile(r"jsae sweep: interrupted at step (\d+) of 200; checkpoint \1 saved; run the same command to resume")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _sweep_cmd(run: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "jsae.sweeps", "sweep", str(ROOT / "configs" / "default.yaml"), "--out", str(run),
            f"data.store={store}", *SWEEP]


def _safetensors(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    index = json.loads((run / "models" / "index.json").read_text())
    return {f"{name}.{key}": value for name in index["models"]
            for key, value in load_file(run / "models" / name / "sae.safetensors").items()}


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory) -> Path:
    from jsae.store import write_store
    from jsae.synthetic import make_dictionary_data, synthetic_table

    path = tmp_path_factory.mktemp("store") / "emb"
    d = make_dictionary_data(4000, dim=64, n_atoms=128, active=4, seed=2)
    write_store(path, d.x, synthetic_table(4000), rows_per_shard=1024, rows_per_chunk=256)
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory, sweep_store) -> Path:
    """The same sweep, uninterrupted."""
    run = tmp_path_factory.mktemp("straight") / "run"
    done = subprocess.run(_sweep_cmd(run, sweep_store), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def _step(run: Path) -> int:
    try:
        return json.loads((run / "sweep.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signalled_sweep_saves_its_step_and_resumes_to_the_uninterrupted_parameters(
        tmp_path, sweep_store, straight, signum, status):
    from jsae.runs.checkpoint import checkpoint_steps

    run = tmp_path / "run"
    cmd = _sweep_cmd(run, sweep_store)
    returncode, err = _signalled(cmd, run, signum)
    assert returncode == status, err[-3000:]
    # one line (besides the CLI's one-line warnings about the data, if any): no traceback
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("jsae sweep: warning: ")]
    assert len(lines) == 1 and LINE.fullmatch(lines[0]), err[-3000:]
    step = int(LINE.fullmatch(lines[0]).group(1))
    assert 50 <= step < TOTAL and step % 2 == 0
    assert max(checkpoint_steps(run)) == step                       # a checkpoint at the step reached
    index = json.loads((run / "models" / "index.json").read_text())
    assert index["step"] == step and not index["complete"]          # and the model files
    assert _step(run) == step

    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "models" / "index.json").read_text())["step"] == TOTAL
    a, b = _safetensors(run), _safetensors(straight)
    assert a.keys() == b.keys() and any(k.endswith(".W_enc") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_second_signal_stops_the_sweep_at_once_and_the_rerun_resumes_from_a_saved_checkpoint(
        tmp_path, sweep_store, straight):
    """SIGINT then SIGTERM, back to back: two different signals are two handler calls (two of
    the same could merge into one while the process is inside a compiled call), so the first
    asks to stop and the second stops at once — one line, exit 143, no checkpoint half-written
    that the rerun would trust — and the same command ends with the uninterrupted parameters."""
    from jsae.runs.checkpoint import checkpoint_steps

    run = tmp_path / "run"
    cmd = _sweep_cmd(run, sweep_store)
    returncode, err = _signalled(cmd, run, signal.SIGINT, signal.SIGTERM)
    assert returncode == 143, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("jsae sweep: warning: ")]
    assert lines == ["jsae sweep: stopped at once by a second signal (SIGTERM); only what was saved before is kept; "
                     "run the same command to resume"], err[-3000:]
    assert max(checkpoint_steps(run)) >= 50

    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = _safetensors(run), _safetensors(straight)
    assert a.keys() == b.keys() and any(k.endswith(".W_enc") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------- jsae embed

def _embed_extra() -> None:
    for extra in ("soundfile", "torch", "nemo"):
        pytest.importorskip(extra)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    _embed_extra()
    from embed_support import write_recording

    root = tmp_path_factory.mktemp("calls")
    for i in range(4):
        write_recording(root / f"call{i:02d}.wav", [("silence", 0.5), ("speech", 14.0, 100.0 + 15 * i),
                                                    ("silence", 0.5)], seed=i)
    return root


def _embed_args(audio_dir: Path, out: Path) -> list[str]:
    from embed_support import tiny_titanet

    return ["--audio-dir", str(audio_dir), "--encoder", "titanet", "--model", str(tiny_titanet()), "--out", str(out),
            "--rows-per-shard", "1", "--batch-size", "1", "--device", "cpu", "--no-progress", "--no-describe", "-q"]


@pytest.mark.embed
def test_a_sigterm_during_embed_keeps_finished_shards_and_the_same_command_completes(audio_dir, tmp_path):
    _embed_extra()
    from jsae.embed.cli import main
    from jsae.embed.export import export_status
    from jsae.store import open_store

    reference = tmp_path / "reference"
    assert main(_embed_args(audio_dir, reference)) == 0
    out = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "jsae.embed", *_embed_args(audio_dir, out)], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not ((out / "progress").is_dir() and any(p.suffix == ".done" for p in (out / "progress").iterdir())):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "no shard finished within 240 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    pattern = re.compile(r"jsae embed: interrupted; (\d+) of 8 shards done and kept in \S+"
                         r"(, shard \d+ abandoned)?; run the same command to resume")
    ours = [line for line in err.splitlines() if "interrupted" in line]
    assert len(ours) == 1 and pattern.fullmatch(ours[0]), err[-3000:]
    assert "Traceback" not in err
    status = export_status(out)
    kept = int(pattern.fullmatch(ours[0]).group(1))
    assert 1 <= kept == len(status["done"]) < 8 and not status["complete"]

    assert main(_embed_args(audio_dir, out)) == 0          # the same command finishes it
    a, b = open_store(out), open_store(reference)
    assert list(a.metadata["id"]) == list(b.metadata["id"])
    np.testing.assert_array_equal(a.read(), b.read())
