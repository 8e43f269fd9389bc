"""``jsae embed --ray``: the shards of an export embedded by encoder actors on a local Ray
cluster give the same store as the single-process export, a killed actor is restarted and its
shard made again, and a run resumes from the shards another worker finished.

Ray actors get one CPU each, so torch runs them on one thread; the plain exports compared with
them do too (a matrix product summed over other thread counts rounds differently in the last
bit). The resemblyzer encoder's weights ship in its package: everything runs offline.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.embed  # the ray + resemblyzer extras: `pytest -m 'not embed'` leaves it out
pytest.importorskip("resemblyzer")
pytest.importorskip("soundfile")
pytest.importorskip("ray.data")

import ray  # noqa: E402

from jsae.embed.cli import main  # noqa: E402
from jsae.embed.export import export_status  # noqa: E402
from embed_support import write_recording  # noqa: E402
from jsae.store import open_store  # noqa: E402

NUM_FILES = 6   # two 4.5 s segments each: 12 shards of one row


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-calls")
    for i in range(NUM_FILES):
        write_recording(root / f"call{i}.wav", [("silence", 0.3), ("speech", 9.0, 100.0 + 25 * i), ("silence", 0.3)],
                        sample_rate=8000 if i % 2 else 16000, seed=i)
    return root


def args(audio, out, *extra):
    return ["--audio-dir", str(audio), "--encoder", "resemblyzer", "--out", str(out), "--rows-per-shard", "1",
            "--batch-size", "4", "--device", "cpu", "--no-progress", "-q", *extra]


def plain_export(audio, out, *extra):
    """The single-process export, on one torch thread as the actors."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args(audio, out, *extra)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def reference(audio, tmp_path_factory):
    """The plain export with descriptors (the default)."""
    return plain_export(audio, tmp_path_factory.mktemp("ray-reference") / "store")


@pytest.fixture(scope="module")
def reference_plain(audio, tmp_path_factory):
    """The plain export without descriptors."""
    return plain_export(audio, tmp_path_factory.mktemp("ray-reference") / "store", "--no-describe")


def same_store(out, reference):
    got, want = open_store(out), open_store(reference)
    np.testing.assert_array_equal(got.read(), want.read())
    pd.testing.assert_frame_equal(got.metadata, want.metadata, check_exact=True)


@pytest.fixture
def short_tmp():
    """A short folder for Ray's session files (its socket paths must stay under 108 bytes)."""
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs, started here (``jsae embed --ray`` then uses it and leaves it running)."""
    assert not ray.is_initialized()
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=folder)
    yield
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


def test_without_ray_the_option_is_one_line_naming_the_extra(audio, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)       # `import ray` fails as if it were not installed
    assert main(args(audio, tmp_path / "store", "--ray")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'jsae[ray]'" in err, err
    assert not (tmp_path / "store").exists()          # refused before planning


def test_ray_export_on_a_local_cluster_equals_the_plain_export(audio, reference, tmp_path, short_tmp, monkeypatch):
    """No ADDRESS: the command starts a local Ray instance, and stops it at the end."""
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_TMPDIR", short_tmp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "store"
    assert main(args(audio, out, "--ray", "--ray-workers", "2")) == 0
    assert not ray.is_initialized()
    same_store(out, reference)
    markers = [json.loads(p.read_text()) for p in sorted((out / "progress").glob("*.done"))]
    assert len(markers) == 2 * NUM_FILES and all(m["worker"].startswith("ray:") for m in markers)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 2 * NUM_FILES and summary["describe"]["described"] == 2 * NUM_FILES


def test_a_killed_actor_is_restarted_and_its_shard_made_again(audio, reference_plain, tmp_path, local_ray):
    out = tmp_path / "store"
    killed: dict = {}

    def kill_an_actor():
        """SIGKILL the actor that wrote the first marker, at once (it is embedding its next shard)."""
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            done = sorted((out / "progress").glob("*.done")) if (out / "progress").exists() else []
            for marker in done:
                try:
                    worker = json.loads(marker.read_text())["worker"]
                except (OSError, ValueError):
                    continue            # being written
                killed["pid"], killed["done"] = int(worker.rsplit(":", 1)[1]), len(done)
                os.kill(killed["pid"], signal.SIGKILL)
                break
            time.sleep(0.002)

    killer = threading.Thread(target=kill_an_actor, daemon=True)
    killer.start()
    assert main(args(audio, out, "--no-describe", "--ray", "--ray-workers", "2")) == 0
    killer.join()
    assert killed and killed["done"] < 2 * NUM_FILES, killed      # killed while shards were left
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert ray.is_initialized()                                   # the caller's Ray is left running
    same_store(out, reference_plain)


def test_a_ray_run_resumes_from_the_shards_another_worker_finished(audio, reference_plain, tmp_path, local_ray):
    out = plain_export(audio, tmp_path / "store", "--no-describe", "--num-shards", "2", "--shard-index", "0")
    assert export_status(out)["missing"] == list(range(1, 2 * NUM_FILES, 2))
    before = {p.name: p.read_text() for p in (out / "progress").glob("*.done")}
    assert main(args(audio, out, "--no-describe", "--ray")) == 0
    same_store(out, reference_plain)
    assert before == {name: (out / "progress" / name).read_text() for name in before}   # kept, not redone
    made = [json.loads(p.read_text()) for p in (out / "progress").glob("*.done") if p.name not in before]
    assert sorted(m["shard"] for m in made) == list(range(1, 2 * NUM_FILES, 2))
    assert all(m["worker"].startswith("ray:") for m in made)
    assert main(args(audio, out, "--no-describe", "--ray")) == 0     # complete: nothing to do


def test_an_address_that_accepts_no_connection_is_one_line_at_once(audio, tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nothing listens on (bound, not listening: refused)
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
        # a fresh process: no Ray already running in it (which `--ray` would use as it is)
        done = subprocess.run([sys.executable, "-m", "jsae.embed", *args(audio, tmp_path / "s", "--ray", address)],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode == 2, done.stderr[-3000:]
    err = [line for line in done.stderr.splitlines() if line.strip() and "pkg_resources" not in line]
    assert len(err) == 1 and f"cannot reach the Ray cluster at {address}" in err[0], err
    assert "ray start --head" in err[0]
