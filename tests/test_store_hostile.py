"""Hostile conditions for stores: a full or read-only disk, a killed write, user files and links
inside a store, junk inputs, numbers that overflow, and data larger than the memory it needs.

Each case plants one condition and checks what the user sees: exactly one stderr line
``jsae …: error: …`` naming the thing and the fix (never a traceback), nothing partial left
behind, and nothing of the user's deleted or written through. The full-disk and read-only
cases use a real file system: a small tmpfs mounted for the test (they need root and are
skipped, with the reason, where mounting is not allowed).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jsae.store as store_module
from jsae.errors import JsaeError
from jsae.store import (MAX_SQUARED_NORM, InvalidEmbeddingsError, StoreError, create_array, finalize_store,
                        open_store, write_store)
from jsae.synthetic import dictionary_blocks, make_dictionary_data
from safety_helpers import REPO, jsae, snapshot

ROWS, DIM = 20000, 64   # 5 MB of float32: more than the 1 MB disk holds


def one_line(rc: int, err: list[str], *needles: str) -> str:
    """The single stderr line of a refused command, checked to hold every needle."""
    assert rc == 2, err
    assert len(err) == 1, "\n".join(err)
    line = err[0]
    assert line.startswith("jsae ") and ": error: " in line and "Traceback" not in line, line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def small_disk(tmpfs):
    """A 1 MB tmpfs: a disk that fills up."""
    return tmpfs("disk", "size=1m")


@pytest.fixture
def read_only_disk(tmpfs):
    """A read-only tmpfs."""
    return tmpfs("ro", "size=1m,ro")


@pytest.fixture
def big_npy(tmp_path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32))
    return path


def _small_store(path: Path, rows: int = 300, dim: int = 8, **attrs) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((rows, dim)).astype(np.float32)
    write_store(path, x, rows_per_shard=128, rows_per_chunk=64, attrs={"source": "x.npy", **attrs})
    return x


# ----------------------------------------------------------------------------- full, read-only, killed

def test_import_onto_a_full_disk_is_one_line_leaves_nothing_and_the_rerun_succeeds(small_disk, big_npy, capsys):
    out = small_disk / "store"
    line = one_line(*jsae(capsys, "store", "import", big_npy, "--out", out),
                    "no space left on device", f"the embedding store {out}", "nothing of the new store is kept",
                    "free space", "run the same command again")
    assert ".new-" not in line and ".tmp" not in line   # no temporary folder is named
    assert list(small_disk.iterdir()) == []              # no partial store, no temporary folder
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    rc, err = jsae(capsys, "store", "import", big_npy, "--out", out)
    assert rc == 0, err
    np.testing.assert_array_equal(open_store(out).load(), np.load(big_npy))


def test_overwrite_onto_a_full_disk_keeps_the_previous_store(small_disk, big_npy, capsys):
    out = small_disk / "store"
    before = _small_store(out)
    one_line(*jsae(capsys, "store", "import", big_npy, "--out", out, "--overwrite"),
             "no space left on device", f"the store already at {out} is unchanged")
    assert [p.name for p in small_disk.iterdir()] == ["store"]
    np.testing.assert_array_equal(open_store(out).load(), before)


def test_synth_onto_a_read_only_folder_is_one_line_naming_the_store(read_only_disk, capsys):
    out = read_only_disk / "store"
    line = one_line(*jsae(capsys, "store", "synth", "--rows", "100", "--dim", "8", "--out", out),
                    "read-only file system", f"the embedding store {out}", "choose a writable folder")
    assert ".tmp" not in line and ".new-" not in line


def test_embed_onto_a_read_only_folder_is_one_line_before_the_encoder_loads(read_only_disk, tmp_path, capsys,
                                                                            monkeypatch):
    export = pytest.importorskip("jsae.embed.export")

    def never(*args, **kwargs):
        raise AssertionError("the encoder was loaded for an --out that cannot be written")

    monkeypatch.setattr(export, "get_encoder", never)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(tmp_path / "a.wav")}) + "\n")
    out = read_only_disk / "store"
    one_line(*jsae(capsys, "embed", "--manifest", manifest, "--out", out, "--encoder", "resemblyzer",
                   "--no-describe", "--no-progress"),
             "read-only file system", f"the embedding store {out}", "nothing was written", "choose a writable folder")


def test_store_synth_into_a_folder_this_user_may_not_write_is_one_line():
    """EACCES needs a user other than root: the command runs as ``nobody`` in a subprocess."""
    if os.geteuid() != 0:
        pytest.skip("switching to the user nobody needs root")
    base = Path(tempfile.mkdtemp(prefix="jsae-noperm-"))
    try:
        os.chmod(base, 0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        os.chmod(locked, 0o555)
        out = locked / "store"

        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to run a command as the user nobody")
        proc = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                               "jsae.sweeps", "store", "synth", "--rows", "50", "--dim", "8", "--out", str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HOME": str(base)})
        err = [line for line in proc.stderr.splitlines() if line.strip() and "pkg_resources" not in line]
        if proc.returncode != 2 or not err or not err[-1].startswith("jsae store synth"):
            pytest.skip(f"python cannot run as the user nobody here: {proc.stderr.strip()[-200:]}")
        one_line(2, err, "permission denied", f"the embedding store {out}", "choose a folder you can write to")
        assert list(locked.iterdir()) == []
    finally:
        if (base / "locked").exists():
            os.chmod(base / "locked", 0o755)
        shutil.rmtree(base, ignore_errors=True)


_KILLED_IMPORT = """
import os, signal, sys
import numpy as np
import jsae.store as s
s.finalize_store = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # killed after the rows were written
s.write_store(sys.argv[1], np.ones((3000, 16), np.float32), rows_per_shard=1024, rows_per_chunk=256)
"""


def _aged(folder: Path, seconds: float = 2 * 3600) -> Path:
    then = time.time() - seconds
    for p in [folder, *folder.rglob("*")]:
        os.utime(p, (then, then))
    return folder


def test_a_killed_import_leaves_a_temporary_folder_that_the_next_run_removes(tmp_path, capsys):
    out = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-c", _KILLED_IMPORT, str(out)], cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    left = sorted(tmp_path.iterdir())
    assert left and not out.exists()                     # the rows of the killed run, in a temporary folder
    assert sum(p.stat().st_size for d in left for p in d.rglob("*") if p.is_file()) > 0
    # what must stay: a temporary folder of a running process (this one), a folder named like an
    # old temporary folder of this store that holds a user's file, and one of another store
    running = tmp_path / f".store.new-{os.getpid()}-0123abcd"
    (running / "embeddings.zarr").mkdir(parents=True)
    users = tmp_path / "store.tmp-usersdir"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    _aged(users)
    other = tmp_path / "other.tmp-abcdefgh"
    (other / "embeddings.zarr").mkdir(parents=True)
    (other / "embeddings.zarr" / "zarr.json").write_text("{}")
    _aged(other)
    # what an older jsae left (NAME.tmp-XXXXXXXX with store files only, untouched for hours): removed
    legacy = tmp_path / "store.tmp-k3q9x_2m"
    (legacy / "embeddings.zarr" / "c" / "0").mkdir(parents=True)
    (legacy / "embeddings.zarr" / "c" / "0" / "0").write_bytes(b"\0" * 4096)
    (legacy / "store.json.tmp-77").write_text("{}")
    _aged(legacy)
    np.save(tmp_path / "x.npy", np.zeros((10, 4), np.float32))
    capsys.readouterr()
    from jsae.sweeps.cli import main

    assert main(["store", "import", str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert all(not p.exists() for p in left) and not legacy.exists()
    assert running.exists() and (users / "notes.txt").exists() and other.exists()
    assert len(err) == 1 and "warning" in err[0] and "2 temporary folder(s)" in err[0] and str(tmp_path) in err[0], \
        err
    assert open_store(out).num_rows == 10


# ----------------------------------------------------------------------------- user files and links inside

def test_overwrite_refuses_a_store_holding_a_user_file_and_deletes_nothing(tmp_path, capsys):
    out = tmp_path / "store"
    _small_store(out)
    (out / "embeddings.zarr" / "notes.txt").write_text("my notes")
    before = snapshot(out)
    np.save(tmp_path / "x.npy", np.zeros((10, 4), np.float32))
    one_line(*jsae(capsys, "store", "import", tmp_path / "x.npy", "--out", out, "--overwrite"),
             "embeddings.zarr/notes.txt", "nothing was deleted", "Move embeddings.zarr/notes.txt out")
    assert snapshot(out) == before


def test_overwrite_refuses_a_store_holding_a_link_and_never_follows_it(tmp_path, capsys):
    out = tmp_path / "store"
    _small_store(out)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")
    (out / "clips").symlink_to(mine, target_is_directory=True)
    one_line(*jsae(capsys, "store", "synth", "--rows", "20", "--dim", "4", "--out", out, "--overwrite"),
             "clips", "symbolic link", "nothing was deleted")
    assert (out / "clips").is_symlink() and (mine / "keep.txt").read_text() == "keep"


def test_embed_overwrite_refuses_a_store_holding_a_user_file(tmp_path, capsys, monkeypatch):
    export = pytest.importorskip("jsae.embed.export")
    monkeypatch.setattr(export, "get_encoder", lambda *a, **k: pytest.fail("reached the encoder"))
    out = tmp_path / "store"
    _small_store(out)
    (out / "progress").mkdir()
    (out / "progress" / "my-results.csv").write_text("a,b\n")
    before = snapshot(out)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(tmp_path / "a.wav")}) + "\n")
    one_line(*jsae(capsys, "embed", "--manifest", manifest, "--out", out, "--encoder", "resemblyzer",
                   "--no-describe", "--no-progress", "--overwrite"),
             "progress/my-results.csv", "nothing was deleted")
    assert snapshot(out) == before


def test_embed_never_writes_into_a_linked_folder_inside_its_store(tmp_path, capsys, monkeypatch):
    export = pytest.importorskip("jsae.embed.export")
    monkeypatch.setattr(export, "get_encoder", lambda *a, **k: pytest.fail("reached the encoder"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("precious")
    out = tmp_path / "store"
    out.mkdir()
    (out / "embeddings.zarr").symlink_to(mine, target_is_directory=True)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(tmp_path / "a.wav")}) + "\n")
    one_line(*jsae(capsys, "embed", "--manifest", manifest, "--out", out, "--encoder", "resemblyzer",
                   "--no-describe", "--no-progress"),
             "embeddings.zarr", "symbolic link", "never writes through a link")
    assert [p.name for p in mine.iterdir()] == ["precious.txt"]


def test_finalize_never_writes_through_a_link_inside_the_store(tmp_path):
    folder = tmp_path / "store"
    array = create_array(folder, 10, 4, rows_per_shard=8, rows_per_chunk=4)
    array[...].write(np.ones((10, 4), np.float32)).result()
    theirs = tmp_path / "theirs.parquet"
    theirs.write_bytes(b"someone else's table")
    (folder / "metadata.parquet").symlink_to(theirs)
    with pytest.raises(JsaeError) as caught:
        finalize_store(folder, pd.DataFrame({"id": [str(i) for i in range(10)]}))
    message = str(caught.value)
    assert "\n" not in message and "metadata.parquet" in message and "symbolic link" in message, message
    assert theirs.read_bytes() == b"someone else's table"


# ----------------------------------------------------------------------------- junk inputs

@pytest.mark.parametrize("damage", ["truncated", "junk", "folder"])
@pytest.mark.parametrize("legacy", [False, True], ids=["hashed", "legacy"])
def test_a_junk_metadata_table_in_a_store_is_one_line(tmp_path, capsys, damage, legacy):
    out = tmp_path / "store"
    _small_store(out)
    if legacy:   # written before store.json recorded hashes: the table itself must be parsed
        info = json.loads((out / "store.json").read_text())
        info.pop("integrity")
        (out / "store.json").write_text(json.dumps(info))
    table = out / "metadata.parquet"
    if damage == "truncated":
        table.write_bytes(table.read_bytes()[:200])
    elif damage == "junk":
        table.write_bytes(b"id,split\n0,train\n")
    else:
        table.unlink()
        table.mkdir()
    rc, err = jsae(capsys, "store", "info", out)
    err = [e for e in err if ": warning: " not in e]
    one_line(rc, err, "metadata.parquet", "jsae store import x.npy")
    if legacy and damage != "folder":
        rc, err = jsae(capsys, "store", "verify", "--record", out)
        one_line(rc, [e for e in err if ": warning: " not in e], "metadata.parquet", "jsae store import x.npy")


def test_a_jsonl_table_with_a_column_of_mixed_types_is_one_line_naming_it(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float32))
    table = tmp_path / "m.jsonl"
    table.write_text('{"id": "a", "lang": 1}\n{"id": "b", "lang": "en"}\n{"id": "c", "lang": 2}\n')
    one_line(*jsae(capsys, "store", "import", tmp_path / "x.npy", "--metadata", table, "--out", tmp_path / "s"),
             "'lang'", "mixes types", "row 0", "row 1", "quote the numbers")
    assert not (tmp_path / "s").exists()


def test_a_csv_that_names_a_column_twice_is_refused_naming_it(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    table = tmp_path / "m.csv"
    table.write_text("id,lang,split,lang\na,es,train,en\nb,en,train,es\n")
    one_line(*jsae(capsys, "store", "import", tmp_path / "x.npy", "--metadata", table, "--out", tmp_path / "s"),
             "'lang'", "columns 2 and 4", "Rename one")
    assert not (tmp_path / "s").exists()


def test_a_semicolon_separated_csv_is_refused_with_a_hint(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    table = tmp_path / "m.csv"
    table.write_text("id;lang\na;es\nb;en\n")
    one_line(*jsae(capsys, "store", "import", tmp_path / "x.npy", "--metadata", table, "--out", tmp_path / "s"),
             "one column named 'id;lang'", "looks `;`-separated", "Save it with commas")
    assert not (tmp_path / "s").exists()


def test_a_manifest_that_is_not_utf8_is_one_line_naming_the_line(tmp_path, capsys, monkeypatch):
    export = pytest.importorskip("jsae.embed.export")
    from jsae.embed.plan import ManifestError, read_manifest

    (tmp_path / "a.wav").write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(('{"audio_filepath": "a.wav", "lang": "en"}\n'
                          '{"audio_filepath": "a.wav", "lang": "espa\u00f1ol"}\n').encode("latin-1"))
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: not UTF-8 text \(byte 0xf1 at column 42\)"):
        read_manifest(manifest)
    monkeypatch.setattr(export, "get_encoder", lambda *a, **k: _StubEncoder())
    one_line(*jsae(capsys, "embed", "--manifest", manifest, "--out", tmp_path / "s", "--encoder", "resemblyzer",
                   "--no-describe", "--no-progress"),
             "m.jsonl:2", "not UTF-8", "iconv")
    bom = tmp_path / "bom.jsonl"   # a byte-order mark (a UTF-8 file saved by some editors) is fine
    bom.write_bytes(b"\xef\xbb\xbf" + '{"audio_filepath": "a.wav"}\n'.encode())
    assert len(read_manifest(bom)) == 1


class _StubEncoder:
    """Stands in for a loaded encoder: the manifest is read after loading."""

    name, dim, sample_rate = "resemblyzer", 4, 16000

    def load(self, *args, **kwargs):
        return self

    def info(self):
        return {"name": self.name, "dim": self.dim, "sample_rate": self.sample_rate}


@pytest.mark.parametrize("producer, fix", [("jsae embed", "re-run the same `jsae embed"),
                                           (None, "re-import it: `jsae store import x.npy")])
def test_a_damaged_shard_index_names_the_shard_its_rows_and_the_fix(tmp_path, monkeypatch, producer, fix):
    """A store from before the index checksum and store.json's hashes: the damage shows only when rows
    are read (tensorstore's DATA_LOSS), and is one line naming the shard, its rows and how to make it again."""
    spec = store_module._array_spec

    def old_spec(*args, **kwargs):   # no crc32c on the chunks and the index, as stores written before
        made = spec(*args, **kwargs)
        if "metadata" in made:
            sharding = made["metadata"]["codecs"][0]["configuration"]
            sharding["codecs"], sharding["index_codecs"] = sharding["codecs"][:2], sharding["index_codecs"][:1]
        return made

    monkeypatch.setattr(store_module, "_array_spec", old_spec)
    out = tmp_path / "store"
    _small_store(out, rows=300, **({"producer": producer} if producer else {}))
    info = json.loads((out / "store.json").read_text())
    info.pop("integrity")
    (out / "store.json").write_text(json.dumps(info))
    shard = out / "embeddings.zarr" / "c" / "1" / "0"
    data = bytearray(shard.read_bytes())
    data[-16:-8] = struct.pack("<Q", 10 ** 9)        # the last chunk's offset points far past the file's end
    shard.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="verify --record"):
        opened = open_store(out)
    with pytest.raises(StoreError) as caught:
        opened.load()
    message = str(caught.value)
    assert "\n" not in message and "DATA_LOSS" not in message, message
    for needle in ("shard embeddings.zarr/c/1/0 (rows 128..255)", "its index points outside the shard file", fix):
        assert needle in message, message
    assert opened.read(slice(0, 128)).shape == (128, 8)   # the other shards still read


# ----------------------------------------------------------------------------- numbers

def test_rows_whose_squares_overflow_float32_are_refused_at_import(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    x[3] = 3e38                      # finite float32, but x² is not
    x[17, 2] = 2e19                  # one value: Σx² = 4e38
    np.save(tmp_path / "x.npy", x)
    one_line(*jsae(capsys, "store", "import", tmp_path / "x.npy", "--out", tmp_path / "s"),
             "row 3 has the squared norm", "overflow float32", "2 row(s) in total", "[3, 17]", "Rescale")
    assert not (tmp_path / "s").exists()


def test_the_squared_norm_criterion_at_its_boundary(tmp_path):
    limit = np.sqrt(MAX_SQUARED_NORM)
    ok = np.zeros((2, 4), np.float32)
    ok[1, 0] = np.float32(limit * 0.999)
    write_store(tmp_path / "ok", ok)
    bad = ok.copy()
    bad[1, :2] = np.float32(limit * 0.75)          # each square fits; their sum does not
    with pytest.raises(InvalidEmbeddingsError, match=r"row 1 has the squared norm .* first ones: \[1\]"):
        write_store(tmp_path / "bad", bad)
    assert not (tmp_path / "bad").exists()


def test_reading_a_store_whose_rows_overflow_is_refused_naming_the_row(tmp_path):
    folder = tmp_path / "store"
    array = create_array(folder, 300, 8, rows_per_shard=128, rows_per_chunk=64)
    rows = np.ones((300, 8), np.float32)
    rows[250] = 1e20
    array[...].write(rows).result()  # a foreign writer: no checks
    finalize_store(folder, pd.DataFrame({"id": [str(i) for i in range(300)]}))
    with pytest.raises(InvalidEmbeddingsError, match=r"row 250 has the squared norm"):
        open_store(folder).load()


def test_synth_refuses_settings_whose_rows_no_store_takes(tmp_path, capsys):
    one_line(*jsae(capsys, "store", "synth", "--rows", "10", "--dim", "8", "--noise", "1e19", "--out", tmp_path / "a"),
             "--noise 1e+19", "overflows float32", "give --noise below")
    one_line(*jsae(capsys, "store", "synth", "--rows", "10", "--noise", "nan", "--out", tmp_path / "b"), "--noise")
    one_line(*jsae(capsys, "store", "synth", "--rows", "10", "--atoms", "4", "--active", "5", "--out", tmp_path / "c"),
             "--active 5", "--atoms 4")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- memory that fits the data

def test_synthetic_blocks_are_the_same_rows_bit_for_bit():
    for n, block, kw in [(1, 5, {}), (5000, 1024, {}), (3001, 8192, {"dim": 24, "n_atoms": 24, "active": 3, "seed": 4})]:
        whole = make_dictionary_data(n, **kw).x
        blocks = list(dictionary_blocks(n, rows_per_block=block, **kw))
        assert all(b.dtype == np.float32 and b.shape[0] <= block for b in blocks)
        assert np.concatenate(blocks).tobytes() == whole.tobytes()


def test_store_synth_writes_the_rows_of_make_dictionary_data(tmp_path, capsys):
    rc, err = jsae(capsys, "store", "synth", "--rows", "9000", "--dim", "16", "--atoms", "32", "--active", "4",
                   "--seed", "3", "--out", tmp_path / "s")
    assert rc == 0, err
    stored = open_store(tmp_path / "s").load()
    assert stored.tobytes() == make_dictionary_data(9000, dim=16, n_atoms=32, active=4, seed=3).x.tobytes()


#: runs argv[1:] and prints its peak resident memory in kB: a small process in between, because a
#: child's ru_maxrss starts from the memory of the process that started it (pytest's, here)
_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) or print(usage.ru_maxrss))
"""


def _peak_rss(argv: list[str], cwd: Path) -> int:
    """Peak resident memory (bytes) of one process running ``argv``."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1]) * 1024   # Linux: kilobytes


def _npy(path: Path, rows: int, dim: int) -> Path:
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 50_000):
        x[start:start + 50_000] = rng.standard_normal((min(50_000, rows - start), dim), dtype=np.float32)
    x.flush()
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kilobytes is Linux's")
def test_synth_and_import_hold_a_shard_of_rows_not_all_of_them(tmp_path):
    """200 000 rows × 192 (154 MB of float32): beyond what the same command needs for 1 000 rows
    (the libraries it loads), synth and import of a .npy need less than the rows' size (before,
    synth made float64 copies of every row and of a [rows, atoms] code matrix — about 14 times
    the rows — and import read the .npy through a memory map: all of it resident)."""
    rows, dim = 200_000, 192
    size = rows * dim * 4
    cli = [sys.executable, "-m", "jsae.sweeps", "store"]

    def synth(n: int) -> int:
        return _peak_rss(cli + ["synth", "--rows", str(n), "--dim", str(dim), "--out", str(tmp_path / f"s{n}")],
                         REPO)

    def imported(n: int) -> int:
        npy = _npy(tmp_path / f"x{n}.npy", n, dim)
        return _peak_rss(cli + ["import", str(npy), "--out", str(tmp_path / f"i{n}")], REPO)

    base_synth, base_import = synth(1000), imported(1000)
    peak_synth, peak_import = synth(rows), imported(rows)
    assert peak_synth - base_synth < 0.75 * size, (base_synth, peak_synth, size)
    assert peak_import - base_import < 0.75 * size, (base_import, peak_import, size)
