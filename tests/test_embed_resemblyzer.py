"""The offline pretrained encoder (resemblyzer, GE2E): it tells synthetic voices apart.

Speech comes from espeak-ng voices generated at test time; CI installs the Debian
package ``espeak-ng``. A missing espeak-ng is a failure, not a skip.
"""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.embed  # the resemblyzer extra (torch): `pytest -m 'not embed'` leaves it out
pytest.importorskip("resemblyzer")
pytest.importorskip("soundfile")

from jsae.embed.audio import load_audio  # noqa: E402
from jsae.embed.cli import main  # noqa: E402
from jsae.embed.encoders import get_encoder  # noqa: E402
from jsae.store import open_store  # noqa: E402

VOICES = ["en+m3", "en+f3", "en-us+m7"]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden gate.",
    "Please hold the line, your call is important to us and a representative will be with you shortly.",
]


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed; these tests need it to synthesise speech "
                    "(Debian/Ubuntu: apt-get install -y espeak-ng).")
    return exe


@pytest.fixture(scope="module")
def encoder():
    return get_encoder("resemblyzer").load(None, "cpu")


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """Two sentences per voice, 22.05 kHz wav files from espeak-ng, plus a manifest."""
    exe = espeak()
    root = tmp_path_factory.mktemp("voices")
    entries = []
    for v, s in itertools.product(range(len(VOICES)), range(len(SENTENCES))):
        path = root / f"v{v}_s{s}.wav"
        subprocess.run([exe, "-v", VOICES[v], "-s", "150", "-w", str(path), SENTENCES[s]], check=True)
        entries.append({"audio_filepath": path.name, "speaker": VOICES[v], "sentence": s})
    (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return root


def test_batched_resemblyzer_equals_its_own_embed_utterance(encoder, voices):
    from resemblyzer import audio as ra

    waves = [load_audio(voices / f"v{v}_s0.wav", 16000)[: 16000 * (3 + v)] for v in range(len(VOICES))]
    batched = encoder.embed(waves)
    for i, w in enumerate(waves):
        reference = encoder._enc.embed_utterance(ra.normalize_volume(w, -30, increase_only=True))
        np.testing.assert_allclose(batched[i], reference, rtol=0, atol=1e-5)
        assert np.linalg.norm(batched[i]) == pytest.approx(1.0, abs=1e-5)


def test_same_voice_is_closer_than_different_voices_through_the_export(voices, tmp_path):
    out = tmp_path / "store"
    rc = main(["--manifest", str(voices / "manifest.jsonl"), "--encoder", "resemblyzer", "--out", str(out),
               "--min-seconds", "2", "--max-seconds", "8", "--batch-size", "4", "--rows-per-shard", "4",
               "--device", "cpu", "--no-progress"])
    assert rc == 0
    store = open_store(out)
    assert store.dim == 256 and store.info["encoder"]["name"] == "resemblyzer"
    meta, x = store.metadata, store.read()
    assert set(meta.speaker) == set(VOICES) and len(meta) >= len(VOICES) * len(SENTENCES)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = x @ x.T
    spk = meta.speaker.to_numpy()
    same = cos[(spk[:, None] == spk[None, :]) & ~np.eye(len(spk), dtype=bool)]
    diff = cos[spk[:, None] != spk[None, :]]
    # every same-voice pair (different sentences) is closer than every cross-voice pair
    assert same.min() > diff.max(), (same.min(), diff.max())
