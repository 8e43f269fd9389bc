"""The report plays a segment as the encoder heard it: its source spans, concatenated."""
import base64
import io
import json
import wave

import numpy as np

from jsae.report import audio_src


def _wav(path, samples, sr=8000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(samples.astype("<i2").tobytes())


def _decoded(src):
    assert src.startswith("data:audio/wav;base64,")
    with wave.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


def test_a_joined_segment_plays_its_spans_concatenated(tmp_path):
    sr = 8000
    samples = np.random.default_rng(0).integers(-20000, 20000, 3 * sr)
    _wav(tmp_path / "call.wav", samples, sr)
    spans = [[0.25, 0.5], [1.0, 1.125], [2.5, 2.75]]
    got, rate = _decoded(audio_src(tmp_path / "call.wav", 0.25, 0.625, spans=json.dumps(spans)))
    want = np.concatenate([samples[int(a * sr):int(b * sr)] for a, b in spans])
    assert rate == sr
    np.testing.assert_array_equal(got, want)


def test_without_spans_the_offset_and_duration_are_played(tmp_path):
    sr = 8000
    samples = np.random.default_rng(1).integers(-20000, 20000, 2 * sr)
    _wav(tmp_path / "a.wav", samples, sr)
    got, _ = _decoded(audio_src(tmp_path / "a.wav", 0.5, 0.25))
    np.testing.assert_array_equal(got, samples[4000:6000])
    capped, _ = _decoded(audio_src(tmp_path / "a.wav", 0.0, None, max_seconds=0.5,
                                   spans=[[0.0, 0.375], [1.0, 1.5]]))
    np.testing.assert_array_equal(capped, np.concatenate([samples[:3000], samples[8000:9000]]))
