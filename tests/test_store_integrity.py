"""A damaged store is never read as data: every planted damage is refused in one line.

Each case plants one kind of damage in a small store (3 shards of 256 rows × 32, chunks of
64 rows) and checks that ``jsae store info`` / :func:`open_store` / ``load`` refuse it in one
line naming the shard (or the table / the array) — before this was built, each of them
opened as a complete store and read zeros, another table or changed values.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jsae.store import StoreError, add_columns, open_store, verify_store, write_store
from safety_helpers import REPO, TINY_SWEEP, jsae
from jsae.sweeps.cli import main

ROWS, DIM, SHARD, CHUNK = 700, 32, 256, 64


def _store(path: Path, seed: int = 0) -> Path:
    x = np.random.default_rng(seed).standard_normal((ROWS, DIM)).astype(np.float32)
    table = pd.DataFrame({"id": [f"s{seed}-{i}" for i in range(ROWS)], "split": ["train"] * ROWS})
    write_store(path, x, table, rows_per_shard=SHARD, rows_per_chunk=CHUNK,
                attrs={"encoder": {"name": "imported", "dim": DIM}, "source": "x.npy"})
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    return _store(tmp_path / "store")


def _verify(capsys, *argv) -> tuple[int, str, list[str]]:
    """``jsae store verify ARGV``: (exit status, stdout, the non-empty stderr lines)."""
    capsys.readouterr()
    rc = main(["store", "verify", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, [line for line in err.splitlines() if line.strip()]


def _shard(store: Path, i: int) -> Path:
    return store / "embeddings.zarr" / "c" / str(i) / "0"


def _refused_by_info(capsys, store: Path, *needles: str) -> str:
    rc, err = jsae(capsys, "store", "info", store)
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("jsae store info: error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def _refused_by_open(store: Path, *needles: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(store).load()
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_a_healthy_store_opens_reads_and_verifies_clean(store, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no legacy note for a store written now
        opened = open_store(store)
        assert opened.load().shape == (ROWS, DIM)
    record = opened.info["integrity"]
    assert [s["key"] for s in record["shards"]] == ["c/0/0", "c/1/0", "c/2/0"]
    assert record["dtype"] == "float32" and record["shape"] == [ROWS, DIM]
    rc, out, err = _verify(capsys, store)
    assert rc == 0 and not err and "verified 3 shard(s)" in out and "all match" in out
    rc, err = jsae(capsys, "store", "info", store)
    assert rc == 0 and not err


def test_a_deleted_shard_is_refused_naming_it_and_its_rows(store, capsys):
    _shard(store, 1).unlink()
    line = _refused_by_info(capsys, store, "embeddings.zarr/c/1/0", "rows 256..511", "missing",
                            "jsae store import x.npy")
    assert "--overwrite" in line
    _refused_by_open(store, "c/1/0", "rows 256..511", "missing")
    rc, out, err = _verify(capsys, store)
    assert rc == 2 and len(err) == 1 and "c/1/0" in err[0] and "missing" in err[0], err
    assert out.splitlines() == ["bad: shard embeddings.zarr/c/1/0 (rows 256..511): missing"]


def test_a_flipped_bit_inside_a_chunk_is_a_read_error_not_another_value(store, capsys):
    path = _shard(store, 0)
    data = bytearray(path.read_bytes())
    assert len(data) > 4096 + 200  # the flip lies outside the tail checked at every open
    data[100] ^= 0x04              # inside the first chunk
    path.write_bytes(bytes(data))
    opened = open_store(store)      # size and last bytes unchanged: opening reads no data
    with pytest.raises(StoreError) as caught:
        opened.load()
    message = str(caught.value)
    assert "\n" not in message and "c/0/0" in message and "rows 0..255" in message and "checksum" in message
    with pytest.raises(StoreError, match="c/0/0"):
        opened.read(np.array([3, 300]))
    with pytest.raises(StoreError, match="c/0/0"):
        list(opened.iter_blocks())
    assert opened.read(slice(300, 400)).shape == (100, DIM)  # the other shards still read
    rc, out, err = _verify(capsys, store)
    assert rc == 2 and len(err) == 1 and "c/0/0" in err[0], err
    assert out.splitlines() == ["bad: shard embeddings.zarr/c/0/0 (rows 0..255): its bytes changed (hash differs "
                                "from store.json)"]


def test_a_flipped_bit_near_a_shards_end_is_refused_at_open(store, capsys):
    path = _shard(store, 2)
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x01
    path.write_bytes(bytes(data))
    _refused_by_info(capsys, store, "embeddings.zarr/c/2/0", "rows 512..699")
    _refused_by_open(store, "c/2/0")


def test_a_truncated_shard_is_refused_at_open(store, capsys):
    path = _shard(store, 1)
    path.write_bytes(path.read_bytes()[:-500])
    _refused_by_info(capsys, store, "embeddings.zarr/c/1/0", "rows 256..511", "truncated")
    _refused_by_open(store, "c/1/0", "truncated")


def _drop_hashes(store: Path) -> None:
    info = json.loads((store / "store.json").read_text())
    del info["integrity"]
    (store / "store.json").write_text(json.dumps(info))


def test_a_truncated_shard_of_an_old_store_is_one_line_when_read(store):
    _drop_hashes(store)  # no sizes to compare: the read itself must fail in one line
    path = _shard(store, 1)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.warns(UserWarning, match="verify --record"):
        opened = open_store(store)
    with pytest.raises(StoreError) as caught:
        opened.load()
    message = str(caught.value)
    assert "\n" not in message and "c/1/0" in message and "rows 256..511" in message
    assert "truncated" in message and "re-import" in message


def test_a_foreign_metadata_table_with_the_same_row_count_is_refused(store, tmp_path, capsys):
    other = _store(tmp_path / "other", seed=1)
    shutil.copyfile(other / "metadata.parquet", store / "metadata.parquet")
    _refused_by_info(capsys, store, "metadata.parquet", "hash differs")
    _refused_by_open(store, "metadata.parquet")


def test_a_reordered_metadata_table_is_refused(store, capsys):
    table = pd.read_parquet(store / "metadata.parquet")
    table.iloc[::-1].reset_index(drop=True).to_parquet(store / "metadata.parquet", index=False)
    _refused_by_info(capsys, store, "metadata.parquet", "reordered")
    _refused_by_open(store, "metadata.parquet")


def test_a_swapped_embeddings_array_is_refused(store, tmp_path, capsys):
    other = _store(tmp_path / "other", seed=1)
    shutil.rmtree(store / "embeddings.zarr")
    shutil.copytree(other / "embeddings.zarr", store / "embeddings.zarr")
    _refused_by_info(capsys, store, "embeddings.zarr/c/0/0", "replaced")
    _refused_by_open(store, "c/0/0")


def test_an_edited_dtype_in_zarr_json_is_refused(store, capsys):
    path = store / "embeddings.zarr" / "zarr.json"
    meta = json.loads(path.read_text())
    meta["data_type"] = "int32"
    meta["fill_value"] = 0
    path.write_text(json.dumps(meta))
    _refused_by_info(capsys, store, "int32", "float32", "zarr.json")
    _refused_by_open(store, "int32")


def test_an_old_store_opens_with_one_note_and_verify_record_adds_the_hashes(store, capsys):
    _drop_hashes(store)
    with pytest.warns(UserWarning, match=r"jsae store verify --record"):
        open_store(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_store(store)  # once per store
    rc, out, err = _verify(capsys, store)
    assert rc == 2 and len(err) == 1 and "--record" in err[0], err
    rc, out, err = _verify(capsys, "--record", store)
    assert rc == 0 and not err and "recorded the hashes of 3 shard(s)" in out
    info = json.loads((store / "store.json").read_text())
    assert len(info["integrity"]["shards"]) == 3
    assert verify_store(store)["bad"] == []
    _shard(store, 2).unlink()  # and from now on damage is refused
    _refused_by_open(store, "c/2/0", "missing")


def test_verify_record_refuses_to_bless_a_damaged_old_store(store):
    _drop_hashes(store)
    path = _shard(store, 0)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x04
    path.write_bytes(bytes(data))
    result = verify_store(store, record=True, progress=False)
    assert [what for what, _ in result["bad"]] == ["shard embeddings.zarr/c/0/0 (rows 0..255)"]
    assert not result["recorded"] and "integrity" not in json.loads((store / "store.json").read_text())


def test_add_columns_rebinds_the_table(store):
    table = open_store(store).metadata
    add_columns(store, pd.DataFrame({"id": table["id"], "gender": ["f"] * ROWS}))
    info = json.loads((store / "store.json").read_text())
    assert "metadata_next" not in info["integrity"]
    assert "gender" in open_store(store).metadata.columns
    assert verify_store(store, progress=False)["bad"] == []


def test_a_sweep_on_a_damaged_store_fails_in_one_line_before_training(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((240, 8)).astype(np.float32)
    table = pd.DataFrame({"id": [f"r{i}" for i in range(240)], "split": ["train"] * 240})
    store = write_store(tmp_path / "store", x, table, rows_per_shard=64, rows_per_chunk=16).path
    _shard(store, 1).unlink()
    run = tmp_path / "run"
    rc, err = jsae(capsys, "sweep", REPO / "configs" / "default.yaml", "--out", run, f"data.store={store}",
                   *TINY_SWEEP)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("jsae sweep: error: ") and "c/1/0" in err[0] and "rows 64..127" in err[0]
    assert not (run / "checkpoints").exists()
