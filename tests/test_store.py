"""The embedding store: round trips, streaming reads, and refusal of bad input."""
import json

import numpy as np
import pandas as pd
import pytest

from jsae.config import load_config
from jsae.store import (InvalidEmbeddingsError, StoreError, create_array, finalize_store, open_store,
                        read_table, write_rows, write_store)
from jsae.training.loop import train_sweep


@pytest.fixture
def emb():
    return np.random.default_rng(0).standard_normal((1000, 24)).astype(np.float32)


def test_round_trip_keeps_values_order_and_metadata(tmp_path, emb):
    table = pd.DataFrame({"id": [f"u{i}" for i in range(1000)], "lang": ["es", "en"] * 500,
                          "split": ["train"] * 900 + ["test"] * 100})
    store = write_store(tmp_path / "s", emb, table, rows_per_shard=256, rows_per_chunk=64,
                        attrs={"encoder": {"name": "x", "dim": 24}})
    again = open_store(tmp_path / "s")
    assert (again.num_rows, again.dim) == (1000, 24)
    np.testing.assert_array_equal(again.load(), emb)
    assert list(again.metadata["id"][:3]) == ["u0", "u1", "u2"]
    assert again.info["encoder"]["name"] == "x"
    np.testing.assert_array_equal(again.read(np.array([999, 3, 512])), emb[[999, 3, 512]])
    np.testing.assert_array_equal(store.rows_where(split="test"), np.arange(900, 1000))
    # the array is a sharded zarr3 array: one shard file per 256 rows
    meta = json.loads((tmp_path / "s" / "embeddings.zarr" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["codecs"][0]["name"] == "sharding_indexed"
    assert len(list((tmp_path / "s" / "embeddings.zarr").rglob("c/*/*"))) == 4


def test_streaming_blocks_cover_every_row_once(tmp_path, emb):
    store = write_store(tmp_path / "s", emb, rows_per_shard=128, rows_per_chunk=32)
    blocks = list(store.iter_blocks(300))
    assert [start for start, _ in blocks] == [0, 300, 600, 900]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), emb)


def test_nan_row_is_refused_with_its_row_and_nothing_is_written(tmp_path, emb):
    emb[417, 5] = np.nan
    emb[600, 0] = np.inf
    with pytest.raises(InvalidEmbeddingsError, match=r"row 417 contains NaN .*\[417, 600\]"):
        write_store(tmp_path / "s", emb)
    assert not any(tmp_path.iterdir())


def test_wrong_dimension_and_mismatched_rows_are_refused(tmp_path, emb):
    store_dir = tmp_path / "s"
    create_array(store_dir, 100, 24, rows_per_shard=64, rows_per_chunk=32)
    arr = __import__("jsae.store", fromlist=["open_array"]).open_array(store_dir, write=True)
    with pytest.raises(InvalidEmbeddingsError, match="dimension 25 but 24 is expected"):
        write_rows(arr, 0, np.ones((10, 25)))
    with pytest.raises(StoreError, match="metadata table has 99 rows but there are 1000 embeddings"):
        write_store(tmp_path / "t", emb, pd.DataFrame({"x": range(99)}))
    with pytest.raises(InvalidEmbeddingsError, match="2-D"):
        write_store(tmp_path / "u", emb[0])


def test_empty_and_incomplete_stores_are_refused(tmp_path):
    with pytest.raises(StoreError, match="empty store"):
        write_store(tmp_path / "e", np.zeros((0, 8)))
    create_array(tmp_path / "half", 10, 8)
    with pytest.raises(StoreError, match="not a jsae embedding store"):
        open_store(tmp_path / "half")
    (tmp_path / "half" / "store.json").write_text(json.dumps({"format": "jsae-store", "complete": False}))
    with pytest.raises(StoreError, match="incomplete"):
        open_store(tmp_path / "half")


def test_duplicate_ids_are_refused(tmp_path, emb):
    with pytest.raises(StoreError, match="id 'a' at row 1 is not unique"):
        write_store(tmp_path / "s", emb[:3], pd.DataFrame({"id": ["a", "a", "b"]}))


def test_sweep_refuses_a_store_with_a_nan_row_naming_it(tmp_path, emb):
    """Rows written by another tool are checked again when a sweep reads them."""
    store_dir = tmp_path / "s"
    arr = create_array(store_dir, 1000, 24, rows_per_shard=256, rows_per_chunk=64)
    bad = emb.copy()
    bad[731] = np.nan
    arr[...].write(bad).result()  # bypasses validation, as a foreign writer could
    finalize_store(store_dir, pd.DataFrame({"id": [str(i) for i in range(1000)]}))
    cfg = load_config(None, [f"data.store={store_dir}", "grid.k=[2]", "grid.latent_size=[8]", "train.steps=2",
                             "train.batch_size=32", "train.progress=false"])
    with pytest.raises(InvalidEmbeddingsError, match="row 731 contains NaN"):
        train_sweep(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_sweep_refuses_an_empty_split_selection(tmp_path, emb):
    write_store(tmp_path / "s", emb, pd.DataFrame({"split": ["train"] * 1000}))
    cfg = load_config(None, [f"data.store={tmp_path / 's'}", "data.splits=[sae]", "train.progress=false"])
    with pytest.raises(StoreError, match="no training rows"):
        train_sweep(cfg, tmp_path / "run")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_tables_are_read_from_csv_jsonl_and_parquet(tmp_path, suffix):
    df = pd.DataFrame({"id": ["001", "002"], "lang": ["es", "en"]})
    path = tmp_path / f"t{suffix}"
    {".csv": lambda: df.to_csv(path, index=False), ".jsonl": lambda: df.to_json(path, orient="records", lines=True),
     ".parquet": lambda: df.to_parquet(path)}[suffix]()
    got = read_table(path)
    assert list(got["id"]) == ["001", "002"] and list(got["lang"]) == ["es", "en"]
