"""TitaNet export: a tiny random TitaNet saved as .nemo, loaded by restore_from like a real one.

Tolerance: an exported row equals NeMo's own single-clip result (``infer_segment`` and
``get_embedding``) to a relative L2 error < 1e-4; measured ≈ 1e-6 (float32 rounding of
different batch shapes). Rows of different segments are ≥ 1000× further apart.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.embed  # the NeMo/torch extra: `pytest -m 'not embed'` leaves it out
sf = pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")
pytest.importorskip("nemo")

from nemo.collections.asr.models import EncDecSpeakerLabelModel  # noqa: E402

from jsae.embed.audio import load_audio  # noqa: E402
from jsae.embed.cli import main  # noqa: E402
from jsae.embed.encoders import EncoderLoadError, get_encoder  # noqa: E402
from embed_support import tiny_titanet, write_recording  # noqa: E402
from jsae.store import open_store  # noqa: E402
from stand_ins import speechlike  # noqa: E402

TOL = 1e-4


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="session")
def tiny_nemo():
    return tiny_titanet()


@pytest.fixture(scope="session")
def nemo_model(tiny_nemo):
    model = EncDecSpeakerLabelModel.restore_from(str(tiny_nemo), map_location=torch.device("cpu"))
    model.eval()
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_nemo):
    """A labelled manifest (16 kHz, 8 kHz stereo, an excerpt) exported with the tiny TitaNet."""
    root = tmp_path_factory.mktemp("titanet")
    write_recording(root / "audio" / "es_f.wav",
                    [("silence", 0.7), ("speech", 6.5, 210.0), ("silence", 1.0), ("speech", 11.0, 190.0)], seed=1)
    write_recording(root / "audio" / "en_m_8k.wav",
                    [("silence", 0.5), ("speech", 9.5, 110.0), ("silence", 0.5)], sample_rate=8000, channels=2, seed=2)
    write_recording(root / "audio" / "long.flac",
                    [("speech", 5.0, 150.0), ("silence", 1.0), ("speech", 7.2, 160.0), ("silence", 1.0)], seed=3)
    entries = [
        {"audio_filepath": "audio/es_f.wav", "lang": "es", "gender": "female", "speaker": "s1"},
        {"audio_filepath": "audio/en_m_8k.wav", "lang": "en", "gender": "male", "speaker": "s2"},
        {"audio_filepath": "audio/long.flac", "offset": 5.5, "duration": 8.5, "lang": "en", "gender": "male",
         "speaker": "s3"},
    ]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    out = root / "store"
    rc = main(["--manifest", str(manifest), "--encoder", "titanet", "--model", str(tiny_nemo), "--out", str(out),
               "--batch-size", "3", "--rows-per-shard", "2", "--device", "cpu", "--no-progress"])
    assert rc == 0
    return root, out


def _segment_wave(root, row) -> np.ndarray:
    """The segment's 16 kHz waveform: its source spans in the file (metadata ``spans``), concatenated."""
    x = load_audio(root / row.source, 16000)
    return np.concatenate([x[round(s * 16000) : round(e * 16000)] for s, e in json.loads(row.spans)])


def test_export_equals_nemo_single_clip_path(exported, nemo_model, tmp_path):
    root, out = exported
    store = open_store(out)
    rows = store.read()
    assert rows.shape == (len(store.metadata), 192) and len(rows) == 6
    for i, row in enumerate(store.metadata.itertuples()):
        wave = _segment_wave(root, row)
        ref_segment = nemo_model.infer_segment(wave)[0].cpu().numpy()[0]
        assert rel_err(rows[i], ref_segment) < TOL, row.id
        # NeMo's file path: get_embedding reads the file itself (soundfile, float64)
        clip = tmp_path / f"{i}.wav"
        sf.write(str(clip), wave, 16000, subtype="FLOAT")
        ref_file = nemo_model.get_embedding(str(clip)).cpu().numpy()[0]
        assert rel_err(rows[i], ref_file) < TOL, row.id
    # the comparison is meaningful: different segments give clearly different embeddings
    dists = [np.linalg.norm(rows[i] - rows[j]) / np.linalg.norm(rows[j])
             for i in range(len(rows)) for j in range(len(rows)) if i != j]
    assert min(dists) > 1000 * TOL


def test_batched_embedding_of_mixed_lengths_equals_one_clip_at_a_time(tiny_nemo):
    enc = get_encoder("titanet").load(str(tiny_nemo), "cpu")
    assert enc.pad_batches and enc.probe_error < 1e-5
    waves = [speechlike(s, f0=f, seed=k) for k, (s, f) in enumerate([(4.0, 120), (7.93, 180), (5.31, 95), (8.0, 240)])]
    batched = enc.embed(waves)
    for k, w in enumerate(waves):
        assert rel_err(batched[k], enc.embed([w])[0]) < TOL
    # a clip's row does not depend on its batch-mates
    assert rel_err(enc.embed([waves[0], waves[3]])[0], enc.embed([waves[0], waves[1], waves[2]])[0]) < TOL


def test_store_is_readable_with_labels_and_export_settings(exported):
    root, out = exported
    store = open_store(out)
    meta = store.metadata
    assert store.dim == 192 and store.num_rows == len(meta)
    assert list(meta.columns[:4]) == ["id", "source", "offset", "duration"]
    assert set(meta.source) == {"audio/es_f.wav", "audio/en_m_8k.wav", "audio/long.flac"}
    es = meta[meta.source == "audio/es_f.wav"]
    assert set(es.lang) == {"es"} and set(es.gender) == {"female"} and set(es.speaker) == {"s1"}
    assert ((meta.duration >= 4.0) & (meta.duration <= 8.0)).all()
    # the excerpt [5.5, 14.0) of long.flac holds only its 7.2 s speech part (6.0-13.2 s)
    long = meta[meta.source == "audio/long.flac"]
    assert len(long) == 1 and long.offset.iloc[0] == pytest.approx(6.0, abs=0.03)
    info = store.info
    assert info["encoder"]["name"] == "titanet" and info["encoder"]["dim"] == 192
    assert info["encoder"]["sample_rate"] == 16000 and info["encoder"]["model"].endswith("tiny.nemo")
    assert info["segmentation"]["min_seconds"] == 4.0 and info["segmentation"]["max_seconds"] == 8.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == summary["segments"] == 6
    assert summary["files"] == {"total": 3, "embedded": 3, "skipped": 0}
    assert summary["audio_seconds"] == pytest.approx(float(meta.duration.sum()))
    assert summary["real_time_factor"] > 0


def test_rerunning_a_complete_export_changes_nothing(exported, tiny_nemo):
    root, out = exported
    before = open_store(out).read()
    rc = main(["--manifest", str(root / "manifest.jsonl"), "--model", str(tiny_nemo), "--out", str(out),
               "--batch-size", "3", "--rows-per-shard", "2", "--device", "cpu", "--no-progress"])
    assert rc == 0
    np.testing.assert_array_equal(open_store(out).read(), before)


def test_changed_settings_on_an_existing_store_are_refused(exported, tiny_nemo, capsys):
    root, out = exported
    rc = main(["--manifest", str(root / "manifest.jsonl"), "--model", str(tiny_nemo), "--out", str(out),
               "--max-seconds", "6", "--rows-per-shard", "2", "--device", "cpu", "--no-progress"])
    assert rc == 2
    assert "max_seconds" in capsys.readouterr().err


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderLoadError, match="no such .nemo file"):
        get_encoder("titanet").load(str(tmp_path / "absent.nemo"), "cpu")


def test_a_pretrained_name_without_network_fails_with_the_offline_fix(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.ngc.nvidia.com'")

    monkeypatch.setattr(EncDecSpeakerLabelModel, "from_pretrained", classmethod(offline))
    with pytest.raises(EncoderLoadError, match="needs the network") as err:
        get_encoder("titanet").load("titanet_large", "cpu")
    assert "--model /path/titanet_large.nemo" in str(err.value)
