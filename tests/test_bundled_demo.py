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


def test_labelled_stores_bundle_every_segment_as_a_small_opus_clip(stores):
    """Every row of the language and music sets carries its segment's audio (``clip``: an
    Ogg/Opus file inside the store, as long as the segment), so the demo's atlas plays every
    example without the corpus; together at most 25 MB."""
    import soundfile as sf

    total = 0
    for name in ("language", "music"):
        s = stores[name]
        m = s.metadata
        assert m["clip"].str.match(r"^clips/\d+-[0-9a-f]{8}\.opus$").all(), name
        files = [Path(s.path) / c for c in m["clip"]]
        assert len(set(files)) == len(files) and all(f.is_file() for f in files), name
        rng = np.random.default_rng(0)
        for i in rng.choice(len(files), 20, replace=False):  # a sample: decoding all takes a while
            info = sf.info(str(files[i]))
            assert (info.format, info.subtype) == ("OGG", "OPUS"), files[i]
            assert abs(info.duration - m["duration"].iloc[i]) < 0.05, files[i]
        total += sum(f.stat().st_size for f in files)
        assert s.info["clips"]["rows"] == len(m)
    assert total <= 25e6


def test_labelled_stores_carry_acoustic_descriptors_that_tell_music_from_speech(stores):
    music = stores["music"].metadata
    for name in ("language", "music"):
        m = stores[name].metadata
        cols = [c for c in m.columns if c.startswith(("acoustic.", "vad."))]
        assert len(cols) == 90 and m[cols].notna().all().all() and (m["describe.error"] == "").all(), name
    # silero-vad hears no speech in the hold music and speech in the voices
    by_kind = music.groupby("kind")["vad.speech_prob"].mean()
    assert by_kind["music"] < 0.1 and by_kind["voice"] > 0.8
    # and openSMILE's pitch is higher for the female voices (semitones above 27.5 Hz)
    lang = stores["language"].metadata
    f0 = lang.groupby("gender")["acoustic.F0semitoneFrom27.5Hz_sma3nz_amean"].mean()
    assert f0["female"] - f0["male"] > 3
