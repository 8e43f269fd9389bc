"""The bundled demo stores (data/demo) are the paper's three datasets (Sec. IV-A), as the data card says."""
from pathlib import Path

import numpy as np
import pytest

from jsae.store import open_store

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


@pytest.fixture(scope="module")
def stores():
    return {name: open_store(DEMO / name) for name in ("sae_train", "language", "music")}


def test_every_store_is_complete_resemblyzer_embeddings(stores):
    for name, s in stores.items():
        assert s.dim == 256 and s.info["encoder"]["name"] == "resemblyzer", name
        x = s.load()
        assert np.isfinite(x).all()
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)   # GE2E embeddings are unit vectors
        assert len(s.metadata) == s.num_rows and s.metadata["id"].is_unique


def test_sae_training_set_is_large_unlabelled_use_and_mostly_english(stores):
    m = stores["sae_train"].metadata
    assert len(m) >= 5000
    voice = m[m["kind"] == "voice"]
    assert (voice["lang"] == "en").mean() >= 0.85 and (voice["lang"] == "es").any()
    assert (m["kind"] == "music").any()


def test_language_set_has_splits_genders_and_a_balanced_test(stores):
    m = stores["language"].metadata
    assert set(m["split"]) == {"train", "test"} and set(m["lang"]) == {"en", "es"}
    test = m[m["split"] == "test"]
    assert (test["lang"] == "es").sum() == (test["lang"] == "en").sum()
    assert set(m["gender"]) == {"female", "male"}


def test_music_set_has_music_and_voice_in_both_splits(stores):
    m = stores["music"].metadata
    for split in ("train", "test"):
        assert set(m.loc[m["split"] == split, "kind"]) == {"music", "voice"}, split


def test_feature_set_speakers_never_train_the_sae_and_train_test_speakers_are_disjoint(stores):
    sae = set(stores["sae_train"].metadata["family"].dropna())
    for name in ("language", "music"):
        m = stores[name].metadata.dropna(subset=["family"])
        families = {split: set(m.loc[m["split"] == split, "family"]) for split in ("train", "test")}
        assert families["train"] and families["test"]
        assert not (families["train"] | families["test"]) & sae, name
        assert not families["train"] & families["test"], name
