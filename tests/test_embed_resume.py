"""Robust, resumable, shardable export: broken files are skipped, a killed export resumes,
several workers give the same store as one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.embed  # the NeMo/torch extra: `pytest -m 'not embed'` leaves it out
for _extra in ("soundfile", "torch", "nemo"):
    pytest.importorskip(_extra)

from jsae.embed.cli import main  # noqa: E402
from jsae.embed.export import export_status  # noqa: E402
from embed_support import REPO, tiny_titanet, write_recording  # noqa: E402
from jsae.store import StoreError, open_store  # noqa: E402

NUM_GOOD = 10


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    """Ten good recordings (two 7 s segments each), one corrupt and one empty file."""
    root = tmp_path_factory.mktemp("calls")
    for i in range(NUM_GOOD):
        write_recording(root / f"call{i:02d}.wav",
                        [("silence", 0.5), ("speech", 14.0, 100.0 + 15 * i), ("silence", 0.5)],
                        sample_rate=8000 if i % 2 else 16000, seed=i)
    (root / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(3000))
    (root / "empty.flac").write_bytes(b"")
    return root


def args(audio_dir, out, *extra):
    return ["--audio-dir", str(audio_dir), "--encoder", "titanet", "--model", str(tiny_titanet()),
            "--out", str(out), "--rows-per-shard", "1", "--batch-size", "2", "--device", "cpu",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(audio_dir, tmp_path_factory):
    """An uninterrupted single-worker export of ``audio_dir``."""
    out = tmp_path_factory.mktemp("reference") / "store"
    assert main(args(audio_dir, out)) == 0
    store = open_store(out)
    return store.metadata, store.read()


def same_store(out, reference):
    meta, x = reference
    store = open_store(out)
    assert list(store.metadata["id"]) == list(meta["id"])
    np.testing.assert_array_equal(store.read(), x)


def spawn(cmd_args, log_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "jsae.embed", *cmd_args], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT), log


def test_broken_files_are_skipped_with_reasons_and_the_rest_is_exported(audio_dir, reference, tmp_path):
    meta, x = reference
    assert len(meta) == 2 * NUM_GOOD and x.shape == (2 * NUM_GOOD, 192)
    assert sorted(set(meta.source)) == [f"call{i:02d}.wav" for i in range(NUM_GOOD)]
    out = tmp_path / "again"
    assert main(args(audio_dir, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    reasons = {s["source"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"broken.wav", "empty.flac"}
    assert "corrupt" in reasons["broken.wav"] and "empty file" in reasons["empty.flac"]
    assert summary["files"] == {"total": NUM_GOOD + 2, "embedded": NUM_GOOD, "skipped": 2}
    assert summary["rows"] == summary["segments"] == 2 * NUM_GOOD
    assert summary["audio_seconds"] == pytest.approx(float(meta.duration.sum()))
    assert summary["wall_seconds"]["embed"] > 0 and summary["real_time_factor"] > 0


def test_killed_export_resumes_to_exactly_the_uninterrupted_rows(audio_dir, reference, tmp_path):
    out = tmp_path / "store"
    proc, log = spawn(args(audio_dir, out), tmp_path / "worker.log")
    progress = out / "progress"
    deadline = time.time() + 240
    try:
        while not (progress.exists() and any(p.suffix == ".done" for p in progress.iterdir())):
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.time() < deadline, "no shard finished within 240 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        log.close()
    assert proc.returncode == -signal.SIGKILL
    status = export_status(out)
    assert status["planned"] and not status["complete"]
    assert 1 <= len(status["done"]) < status["num_shards"] == 2 * NUM_GOOD, status
    with pytest.raises(StoreError):
        open_store(out)
    assert main(args(audio_dir, out)) == 0          # the same command again
    same_store(out, reference)


def test_two_workers_and_a_merge_equal_one_worker(audio_dir, reference, tmp_path, capsys):
    out = tmp_path / "store"
    assert main(args(audio_dir, out, "--num-shards", "2", "--shard-index", "0")) == 0
    status = export_status(out)
    assert status["missing"] == list(range(1, 2 * NUM_GOOD, 2))        # worker 1's shards
    assert main(["--merge", "--out", str(out)]) == 2                    # refuses: not all shards done
    assert "not done yet" in capsys.readouterr().err
    with pytest.raises(StoreError):
        open_store(out)
    assert main(args(audio_dir, out, "--num-shards", "2", "--shard-index", "1")) == 0   # last worker merges
    same_store(out, reference)
    assert main(["--merge", "--out", str(out)]) == 0                    # merging again is harmless
    same_store(out, reference)


def test_concurrent_worker_processes_share_one_store(audio_dir, reference, tmp_path):
    out = tmp_path / "store"
    # worker 1 starts first and waits for the plan that worker 0 makes
    procs = [spawn(args(audio_dir, out, "--num-shards", "2", "--shard-index", str(i)), tmp_path / f"w{i}.log")
             for i in (1, 0)]
    for proc, log in procs:
        proc.wait(timeout=300)
        log.close()
    for i, (proc, _) in zip((1, 0), procs):
        assert proc.returncode == 0, (tmp_path / f"w{i}.log").read_text()[-3000:]
    same_store(out, reference)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == ["0/2", "1/2"]
