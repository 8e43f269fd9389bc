"""Runs that must not lie, lose or mix (issue 10): unfinished runs are flagged, resuming
on other data is refused, overflowing imports are refused, checkpoints carry checksums
(a corrupt newest one is refused by load and skipped by resume), one sweep per run
directory, a full disk is one line and a clean resume, stream row numbers are store
rows, and a diverged first try leaves a run directory the corrected command accepts."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from jsae.runs.checkpoint import CORRUPT_DIR, CheckpointError, checkpoint_steps
from jsae.config import load_config
from jsae.store import InvalidEmbeddingsError, open_array, open_store, write_store
from jsae.models import UnfinishedRunWarning
from jsae.runs.load import load_sweep
from jsae.synthetic import make_dictionary_data, make_labelled_data, synthetic_table
from jsae.runs.lock import RunLockedError, run_lock
from jsae.training.loop import CheckpointWarning, train_sweep
from jsae.training.resume import DataChangedError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.yaml")
# One latent-size group of two tiny models: 60 steps, checkpoints at 20, 40, 60.
TINY = ["grid.k=[2,4]", "grid.latent_size=[16]", "train.batch_size=64", "train.steps=60",
        "train.steps_per_call=10", "train.checkpoint_every=20", "train.keep_checkpoints=3",
        "train.progress=false", "optim.lr=3e-3"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jsae.sweeps", *args], env=_env(), capture_output=True, text=True,
                          timeout=600)


def _stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def _data(rows: int = 2000, seed: int = 2) -> np.ndarray:
    return make_dictionary_data(rows, dim=16, n_atoms=32, active=3, seed=seed).x


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "emb"
    write_store(path, _data(), synthetic_table(2000), rows_per_shard=512, rows_per_chunk=128)
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory, store) -> Path:
    """The reference: the tiny sweep trained without interruption."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train_sweep(load_config(DEFAULT, [f"data.store={store}", *TINY]), run)
    return run


def _assert_identical(run_a: Path, run_b: Path) -> None:
    a, b = load_sweep(run_a), load_sweep(run_b)
    assert a.step == b.step
    assert a.names == b.names
    for ga, gb in zip(a.params, b.params):
        for field in ("W_enc", "b_enc", "W_dec", "b_pre"):
            np.testing.assert_array_equal(np.asarray(getattr(ga, field)), np.asarray(getattr(gb, field)),
                                          err_msg=field)


# ---------------------------------------------------------------- unfinished runs

def test_unfinished_run_is_flagged_by_load_probe_steer_and_report(tmp_path):
    from jsae.analyses.probing import probe
    from jsae.report import build_report
    from jsae.analyses.steering import steer

    d = make_labelled_data(n_sae=800, n_train=200, n_test=200, feature_scale=3.0, seed=0)
    labelled = write_store(tmp_path / "labelled", d.x, d.table).path
    cfg = load_config(DEFAULT, [f"data.store={labelled}", "data.splits=[sae]", "grid.k=[3]",
                                "grid.latent_size=[8,16]", "train.batch_size=64", "train.steps=40",
                                "train.steps_per_call=10", "train.checkpoint_every=20", "train.progress=false",
                                "optim.lr=3e-3", "sae.b_pre_init=mean"])
    run = tmp_path / "run"
    train_sweep(cfg, run, stop_after=20)

    sweep = load_sweep(run)
    assert (sweep.step, sweep.total_steps, sweep.complete) == (20, 40, False)
    with pytest.warns(UnfinishedRunWarning, match=r"unfinished: step 20 of 40") as got:
        probe(sweep, labelled, "lang", "es")
    assert sum(issubclass(w.category, UnfinishedRunWarning) for w in got) == 1
    with pytest.warns(UnfinishedRunWarning, match=r"unfinished: step 20 of 40"):
        steer(sweep, labelled, "lang", "es", "en", k=3, latent_size=8)
    page = build_report(run).read_text()
    assert "unfinished: step 20 of 40" in page

    train_sweep(cfg, run)  # the same command finishes it
    sweep = load_sweep(run)
    assert (sweep.step, sweep.total_steps, sweep.complete) == (40, 40, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfinishedRunWarning)
        probe(sweep, labelled, "lang", "es")
    assert "unfinished:" not in build_report(run).read_text()


def test_a_killed_run_reports_its_last_checkpoint_step_not_zero(tmp_path, store, monkeypatch):
    """sweep.json follows the checkpoints: a run killed after its step-20 checkpoint says
    'step 20 of 60, unfinished' (it said 'step 0')."""
    import json

    import jsae.training.loop
    from jsae.report import build_report

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies right after the checkpoint

    monkeypatch.setattr(jsae.training.loop, "evaluate", killed)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_sweep(load_config(DEFAULT, [f"data.store={store}", *TINY]), run, stop_after=20)
    info = json.loads((run / "sweep.json").read_text())
    assert (info["step"], info["total_steps"], info["complete"]) == (20, 60, False)
    sweep = load_sweep(run)
    assert (sweep.step, sweep.total_steps, sweep.complete) == (20, 60, False)
    assert "unfinished: step 20 of 60" in build_report(run).read_text()


# ---------------------------------------------------------------- data fingerprint

def test_resume_on_changed_data_is_refused_naming_both_fingerprints(tmp_path):
    path = tmp_path / "store"
    x = _data(2000)
    write_store(path, x, synthetic_table(2000))
    cfg = load_config(DEFAULT, [f"data.store={path}", *TINY])
    run = tmp_path / "run"
    train_sweep(cfg, run, stop_after=20)
    saved = load_sweep(run).meta["data"]["fingerprint"]
    assert saved["n_train"] + saved["n_val"] == 2000 and len(saved["blake2b"]) == 32

    more = np.concatenate([x, _data(1000, seed=5)])  # 2 000 → 3 000 rows
    write_store(path, more, synthetic_table(3000), overwrite=True)
    with pytest.raises(DataChangedError, match=r"1900\+100 rows × 16.*2850\+150 rows × 16") as err:
        train_sweep(cfg, run)
    assert "\n" not in str(err.value) and saved["blake2b"][:16] in str(err.value)

    changed = x.copy()
    changed[1234, 5] += 0.5  # same row count, one value changed
    write_store(path, changed, synthetic_table(2000), overwrite=True)
    with pytest.raises(DataChangedError, match=r"1900\+100 rows × 16, blake2b \w+\) than .*1900\+100 rows × 16"):
        train_sweep(cfg, run)
    assert load_sweep(run).step == 20 and checkpoint_steps(run) == [20]  # nothing was trained on it

    write_store(path, x, synthetic_table(2000), overwrite=True)  # the original data: resumes
    train_sweep(cfg, run)
    assert load_sweep(run).complete


def test_streaming_and_in_memory_fingerprints_agree(tmp_path, store):
    from jsae.training.data import data_fingerprint, prepare_data

    base = [f"data.store={store}", *TINY]
    mem = data_fingerprint(prepare_data(load_config(DEFAULT, base)))
    streamed = data_fingerprint(prepare_data(load_config(DEFAULT, [*base, "data.stream=true"])), block_rows=97)
    assert mem == streamed


# ---------------------------------------------------------------- store import

def test_float64_values_beyond_float32_are_refused_naming_the_row(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 8))
    x[7, 3] = 1e39  # finite in float64, Inf once stored as float32
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(InvalidEmbeddingsError, match=r"row 7 contains 1e\+39, beyond float32"):
        write_store(tmp_path / "direct", x)
    assert not (tmp_path / "direct").exists()

    out = _cli("store", "import", str(tmp_path / "x.npy"), "--out", str(tmp_path / "cli"))
    assert out.returncode != 0
    lines = _stderr_lines(out)
    assert len(lines) == 1 and "row 7" in lines[0], out.stderr
    assert not (tmp_path / "cli").exists()


# ---------------------------------------------------------------- checkpoint checksums

def _flip_bytes(step_dir: Path) -> Path:
    """Flip 16 bytes in the middle of the largest array data file of a checkpoint."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + 16):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def test_bit_flipped_checkpoint_is_refused_by_load_and_skipped_by_resume(tmp_path, store, straight):
    cfg = load_config(DEFAULT, [f"data.store={store}", *TINY])
    run = tmp_path / "run"
    train_sweep(cfg, run, stop_after=40)
    assert checkpoint_steps(run) == [20, 40]
    _flip_bytes(run / "checkpoints" / "40")

    with pytest.raises(CheckpointError, match=r"checkpoint step 40 of .*(checksum|cannot be read)"):
        load_sweep(run, source="checkpoint")  # analyses read models/; the checkpoint is what resumes
    assert load_sweep(run, step=20).step == 20  # an older good step loads when asked for

    with pytest.warns(CheckpointWarning, match=r"step 40 .*resuming from step 20"):
        train_sweep(cfg, run)
    assert (run / CORRUPT_DIR / "40").is_dir()
    assert checkpoint_steps(run) == [20, 40, 60]
    _assert_identical(run, straight)


def test_load_sweep_refuses_a_run_whose_only_checkpoint_is_corrupt(tmp_path, store):
    run = tmp_path / "run"
    train_sweep(load_config(DEFAULT, [f"data.store={store}", *TINY]), run, stop_after=20)
    _flip_bytes(run / "checkpoints" / "20")
    with pytest.raises(CheckpointError, match=r"step 20"):
        load_sweep(run, source="checkpoint")
    with pytest.raises(CheckpointError, match=r"no checkpoint of .* verifies"):
        train_sweep(load_config(DEFAULT, [f"data.store={store}", *TINY]), run)


# ---------------------------------------------------------------- one writer per run directory

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("locked", flush=True)
time.sleep(600)
"""


def test_second_sweep_on_one_run_dir_is_refused(tmp_path, store, straight):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != ".lock"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / ".lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"another sweep \(pid {holder.pid}\) is writing to"):
            train_sweep(load_config(DEFAULT, [f"data.store={store}", *TINY]), run)
        out = _cli("sweep", DEFAULT, "--out", str(run), f"data.store={store}", *TINY)
        assert out.returncode != 0
        lines = _stderr_lines(out)
        assert len(lines) == 1 and f"another sweep (pid {holder.pid})" in lines[0], out.stderr
        assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != ".lock"} == before  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    # The holder died: the kernel released its lock, and the run is ours again.
    with run_lock(run):
        pass
    train_sweep(load_config(DEFAULT, [f"data.store={store}", *TINY]), run)


def test_a_locked_run_dir_is_left_untouched(tmp_path, store):
    """The lock is taken before anything is read or written: a refused sweep writes nothing."""
    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run):
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}"):
            train_sweep(load_config(DEFAULT, [f"data.store={store}", *TINY]), run)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]


# ---------------------------------------------------------------- full disk

def test_full_disk_is_one_line_and_the_same_command_resumes(tmpfs, store, straight):
    ckpt_kib = int(subprocess.run(["du", "-sk", str(straight / "checkpoints" / "20")], capture_output=True,
                                  text=True, check=True).stdout.split()[0])
    # room for config.yaml, sweep.json and one checkpoint, not two
    size_kib = int(ckpt_kib * 1.5) + 48
    mnt = tmpfs("small", f"size={size_kib}k")
    args = ["sweep", DEFAULT, "--out", str(mnt / "run"), f"data.store={store}", *TINY]
    out = _cli(*args)
    assert out.returncode != 0
    lines = _stderr_lines(out)
    assert len(lines) == 1, out.stderr[-3000:]
    assert "no space left on device" in lines[0] and "re-run the same command" in lines[0], lines[0]
    saved = checkpoint_steps(mnt / "run")
    assert saved, f"the tmpfs of {size_kib} KiB did not fit one checkpoint: {lines[0]}"
    assert f"the last good checkpoint is step {saved[-1]}" in lines[0]
    assert not list((mnt / "run" / "checkpoints").glob("*tmp*"))  # the partial save was removed

    subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)  # space freed
    out = _cli(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_identical(mnt / "run", straight)


def test_orbax_failures_that_asyncio_reports_at_gc_are_dropped_and_nothing_else():
    """What made the full-disk CLI print more than its one line: asyncio logs a failed
    tensorstore write (a plain Future, not a Task) as 'Future exception was never
    retrieved' (or '_GatheringFuture exception …' for orbax's gather of them) when the
    garbage collector gets to it — timing-dependent, so not in every run. The filter drops those of orbax/tensorstore and keeps any other, whatever
    handler prints them."""
    import asyncio
    import gc
    import logging

    from jsae.runs.checkpoint import _quiet_orbax_threads

    _quiet_orbax_threads()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("asyncio")
    handler = Keep(level=logging.DEBUG)
    logger.addHandler(handler)
    loop = asyncio.new_event_loop()
    try:
        def unretrieved_future(exc: BaseException) -> None:
            fut = loop.create_future()
            fut.set_exception(exc)
            del fut
            gc.collect()

        unretrieved_future(ValueError('RESOURCE_EXHAUSTED: Error writing "groups.0.W_enc/0.0.0" in OCDBT database at '
                                      'local file "/r/checkpoints/40.orbax-checkpoint-tmp/state/": No space left '
                                      "on device [os_error_code='28']"))
        unretrieved_future(OSError(28, "No space left on device"))  # no orbax mark: kept
        unretrieved_future(ValueError("a real bug"))

        async def failing_save():
            raise ValueError("Error writing local file /r/checkpoints/60.orbax-checkpoint-tmp/meta")

        task = loop.create_task(failing_save())
        loop.run_until_complete(asyncio.sleep(0))
        assert task.done()
        del task
        gc.collect()

        async def gather_writes():  # orbax gathers its tensorstore writes: a _GatheringFuture
            return asyncio.gather(failing_save())

        gathered = loop.run_until_complete(gather_writes())
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0))
        assert gathered.done() and type(gathered).__name__ == "_GatheringFuture"
        del gathered
        gc.collect()
    finally:
        logger.removeHandler(handler)
        loop.close()
    assert len(seen) == 2, seen
    assert all(m.startswith("Future exception was never retrieved") for m in seen)
    assert "No space left on device" in seen[0] and "a real bug" in seen[1]


# ---------------------------------------------------------------- stream row numbers

def test_streaming_names_the_store_row_of_a_nan(tmp_path):
    path = tmp_path / "store"
    write_store(path, _data(600), synthetic_table(600), rows_per_shard=128, rows_per_chunk=64)
    arr = open_array(path, write=True)
    arr[500, 3].write(np.float32("nan")).result()  # damage behind the store's back
    # ... of a store without recorded shard hashes (written before they were recorded; a store
    # that has them refuses the changed shard at open: tests/test_store_integrity.py)
    info = json.loads((path / "store.json").read_text())
    info.pop("integrity")
    (path / "store.json").write_text(json.dumps(info))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*store verify --record.*")
        store = open_store(path)
        with pytest.raises(InvalidEmbeddingsError, match=r"row 500 contains NaN"):
            store.read(np.array([3, 500, 17]))
        cfg = load_config(DEFAULT, [f"data.store={path}", "data.stream=true", *TINY])
        with pytest.raises(InvalidEmbeddingsError, match=r"row 500 contains NaN .*first ones: \[500\]"):
            train_sweep(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing left behind


# ---------------------------------------------------------------- diverged first try

def test_diverged_run_leaves_a_run_dir_that_accepts_the_corrected_command(tmp_path, store):
    run = tmp_path / "run"
    common = ["sweep", DEFAULT, "--out", str(run), f"data.store={store}", *TINY]
    for bad in ("optim.lr=nan", "optim.lr=1e30"):  # refused up front, or diverges at the first call
        out = _cli(*common, bad)
        assert out.returncode != 0
        lines = _stderr_lines(out)
        assert len(lines) == 1 and "optim.lr" in lines[0], out.stderr[-3000:]
        assert not (run / "config.yaml").exists() and not checkpoint_steps(run)
    out = _cli(*common, "optim.lr=1e-3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert load_sweep(run).complete and load_sweep(run).config.optim.lr == 1e-3
