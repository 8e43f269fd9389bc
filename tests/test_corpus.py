"""The demo-corpus builder (tools.demo_corpus): a tiny corpus, built twice, checked end to end.

Needs the Debian packages of ``tools.demo_corpus.APT_PACKAGES`` (``make test`` installs them).
"""
from __future__ import annotations

import hashlib
import json
import wave
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from jsae.embed.segment import SegmentConfig
from tools.demo_corpus import APT_PACKAGES, SCALES, CorpusExistsError, MissingToolsError, build_corpus, ensure_tools
from tools.demo_corpus import tools as corpus_tools
from tools.demo_corpus.channel import (
    SAMPLE_RATE,
    compress_pauses,
    count_segments,
    median_f0,
    mulaw_decode,
    mulaw_encode,
    telephone,
)
from tools.demo_corpus.text import clean_fortune, load_sentences, split_sentences

MANIFESTS = ("sae_train", "language", "music")
FIELDS = ("audio_filepath", "duration", "recording", "dataset", "split", "kind", "lang", "gender", "voice",
          "speaker", "family", "engine", "text_source", "music_source", "track", "segments")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    build_corpus(out, scale="tiny", seed=0, log=lambda s: None)
    return out


def _rows(out: Path, name: str) -> list[dict]:
    with open(out / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read(path: Path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        return x, w.getframerate(), w.getnchannels()


def _details(out: Path) -> dict[str, dict]:
    with open(out / "recordings.jsonl", encoding="utf-8") as f:
        return {d["recording"]: d for d in map(json.loads, f)}


# ----------------------------------------------------------------------------- manifests and labels

def test_manifests_exist_parse_and_have_labels(corpus):
    for name in MANIFESTS:
        rows = _rows(corpus, name)
        assert rows, f"{name}.jsonl is empty"
        for r in rows:
            assert set(FIELDS) <= set(r), sorted(set(FIELDS) - set(r))
            assert r["dataset"] == name
            assert r["split"] in ("train", "test")
            assert r["kind"] in ("voice", "music")
            assert not Path(r["audio_filepath"]).is_absolute()
            assert (corpus / r["audio_filepath"]).is_file()
            assert r["segments"] >= 1
            if r["kind"] == "voice":
                assert r["lang"] in ("en", "es") and r["gender"] in ("female", "male")
                assert r["voice"] and r["speaker"] and r["engine"] in ("espeak-ng", "flite", "festival")
                assert r["text_source"] in ("fortunes", "fortunes-es")
            else:
                assert r["lang"] is None and r["track"] and r["music_source"] == "singularity-music"
    for f in ("corpus.json", "DATA_CARD.md", "recordings.jsonl"):
        assert (corpus / f).is_file()


def test_manifests_are_read_by_the_embed_step(corpus):
    from jsae.embed.plan import read_manifest

    for name in MANIFESTS:
        recs = read_manifest(corpus / f"{name}.jsonl")
        assert all(r.path.is_file() for r in recs)
        assert {"lang", "kind", "split", "gender"} <= set(recs[0].labels)


def test_language_set_labels_and_test_balance(corpus):
    rows = _rows(corpus, "language")
    cfg = SCALES["tiny"]
    seg = defaultdict(int)
    for r in rows:
        assert r["kind"] == "voice" and r["engine"] == "espeak-ng"
        seg[(r["split"], r["lang"], r["gender"])] += r["segments"]
    for split in ("train", "test"):
        for lang in ("en", "es"):
            for gender in ("female", "male"):
                assert seg[(split, lang, gender)] > 0, (split, lang, gender)
    en = seg[("test", "en", "female")] + seg[("test", "en", "male")]
    es = seg[("test", "es", "female")] + seg[("test", "es", "male")]
    assert en == es == cfg.language_test
    assert sum(v for k, v in seg.items() if k[0] == "train") == 2 * cfg.language_train


def test_music_set_labels(corpus):
    rows = _rows(corpus, "music")
    cfg = SCALES["tiny"]
    seg = defaultdict(int)
    for r in rows:
        seg[(r["split"], r["kind"])] += r["segments"]
    assert seg[("train", "music")] == cfg.music_train["music"]
    assert seg[("test", "music")] == cfg.music_test["music"]
    assert seg[("train", "voice")] == cfg.music_train["en"] + cfg.music_train["es"]
    assert seg[("test", "voice")] == cfg.music_test["en"] + cfg.music_test["es"]
    train_tracks = {r["track"] for r in rows if r["kind"] == "music" and r["split"] == "train"}
    test_tracks = {r["track"] for r in rows if r["kind"] == "music" and r["split"] == "test"}
    assert not train_tracks & test_tracks


def test_sae_train_is_mostly_english():
    for name in ("small", "full"):
        s = SCALES[name].sae
        assert s["en"] / (s["en"] + s["es"]) >= 0.85, name


def test_voice_counts_per_sae_speaker_follow_the_scale():
    """``voices_sae`` / ``voices_sae_es``: English and Spanish voices per sae_train espeak-ng speaker."""
    import dataclasses

    from tools.demo_corpus.build import plan_classes

    def sae_voices(scale):
        _, record = plan_classes(scale, 0)
        counts = defaultdict(lambda: defaultdict(int))
        for v in record["voices"]["sae_train"]:
            if v["engine"] == "espeak-ng":
                counts[v["speaker"]][v["lang"]] += 1
        return counts

    base = SCALES["tiny"]
    more = dataclasses.replace(base, voices_sae=(2, 3), voices_sae_es=(4, 1))
    for scale, (en, es) in ((base, ((1, 1), (1, 1))), (more, ((2, 3), (4, 1)))):
        counts = sae_voices(scale)
        assert counts
        info = plan_classes(scale, 0)[1]["speaker_info"]
        for speaker, c in counts.items():
            gi = ("female", "male").index(info[speaker]["gender"])
            assert (c["en"], c["es"]) == (en[gi], es[gi]), speaker


def test_voices_disjoint_between_sets(corpus):
    fam = defaultdict(set)
    for name in MANIFESTS:
        for r in _rows(corpus, name):
            if r["kind"] == "voice":
                key = name if name == "sae_train" else f"{name}/{r['split']}"
                fam[key].add(r["family"])
                fam[key + ":voices"].add(r["voice"])
    sae = fam["sae_train"]
    for key in ("language/train", "language/test", "music/train", "music/test"):
        assert fam[key], key
        assert not fam[key] & sae, f"{key} shares speakers with sae_train"
        assert not fam[key + ":voices"] & fam["sae_train:voices"]
    assert not fam["language/train"] & fam["language/test"]
    assert not fam["music/train"] & fam["music/test"]
    rec = json.loads((corpus / "corpus.json").read_text())
    assert not any(rec["family_overlaps"].values())


# ----------------------------------------------------------------------------- audio

def test_audio_is_8khz_mono_and_durations_match(corpus):
    for name in MANIFESTS:
        for r in _rows(corpus, name):
            x, sr, ch = _read(corpus / r["audio_filepath"])
            assert sr == SAMPLE_RATE and ch == 1
            assert abs(x.size / sr - r["duration"]) < 1e-6
            assert np.abs(x).max() > 0.05


def test_audio_is_band_limited(corpus):
    for name in MANIFESTS:
        for r in _rows(corpus, name)[:4]:
            x, sr, _ = _read(corpus / r["audio_filepath"])
            p = np.abs(np.fft.rfft(x)) ** 2
            f = np.fft.rfftfreq(x.size, 1.0 / sr)
            total = p.sum()
            assert p[f > 3500].sum() / total < 0.01, r["recording"]
            assert p[f < 200].sum() / total < 0.01, r["recording"]


def test_silences_between_utterances(corpus):
    details = _details(corpus)
    n_checked = 0
    for name in ("sae_train", "language"):
        for r in _rows(corpus, name):
            x, sr, _ = _read(corpus / r["audio_filepath"])
            turns = details[r["recording"]]["turns"]
            assert len(turns) == r["n_turns"] >= 1
            speech = np.concatenate([x[int(a * sr):int(b * sr)] for a, b in turns])
            for (a0, b0), (a1, b1) in zip(turns, turns[1:]):
                assert a1 - b0 >= 0.35, "gap between turns shorter than the segmenter's 0.3 s"
                gap = x[int((b0 + 0.05) * sr):int((a1 - 0.05) * sr)]
                ratio_db = 10 * np.log10(np.mean(gap ** 2) / np.mean(speech ** 2))
                assert ratio_db < -30, (r["recording"], ratio_db)
                n_checked += 1
    assert n_checked >= 5


def test_segment_counts_match_the_embed_segmenter(corpus):
    pytest.importorskip("librosa")
    from jsae.embed.audio import load_audio
    from jsae.embed.segment import SegmentConfig, find_segments

    for name in MANIFESTS:
        for r in _rows(corpus, name):
            x = load_audio(corpus / r["audio_filepath"], 16000)
            segs, _ = find_segments(x, 16000, SegmentConfig())
            assert len(segs) == r["segments"], r["recording"]
            assert all(4000 <= s.duration_ms <= 8000 for s in segs)


def test_gender_labels_agree_with_pitch(corpus):
    rec = json.loads((corpus / "corpus.json").read_text())
    f0 = rec["f0_check"]
    assert f0["female"]["median_hz"] > 150 > f0["male"]["median_hz"]


# ----------------------------------------------------------------------------- determinism and re-runs

def _digest(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_same_corpus(corpus, tmp_path):
    again = tmp_path / "again"
    build_corpus(again, scale="tiny", seed=0, log=lambda s: None)
    assert _digest(again) == _digest(corpus)


def test_other_seed_other_corpus(corpus, tmp_path):
    other = tmp_path / "other"
    build_corpus(other, scale="tiny", seed=1, log=lambda s: None)
    assert (other / "language.jsonl").read_text() != (corpus / "language.jsonl").read_text()


def test_rerun_is_a_no_op_and_refuses_other_settings(corpus):
    before = _digest(corpus)
    logs = []
    build_corpus(corpus, scale="tiny", seed=0, log=logs.append)
    assert "already built" in logs[0]
    assert _digest(corpus) == before
    with pytest.raises(CorpusExistsError, match="--force"):
        build_corpus(corpus, scale="tiny", seed=3, log=lambda s: None)


def test_cli_check_tools(capsys):
    from tools.demo_corpus.__main__ import main

    assert main(["--check-tools"]) == 0
    assert "installed" in capsys.readouterr().out


# ----------------------------------------------------------------------------- tools, text, channel

def test_ensure_tools_names_missing_packages(monkeypatch):
    ensure_tools()  # everything is installed here
    real = corpus_tools.shutil.which
    monkeypatch.setattr(corpus_tools.shutil, "which", lambda name: None if name in ("flite", "sox") else real(name))
    with pytest.raises(MissingToolsError) as err:
        ensure_tools()
    msg = str(err.value)
    assert "flite" in err.value.packages and "sox" in err.value.packages
    assert "apt-get install -y" in msg and "flite" in msg
    assert set(APT_PACKAGES) >= set(err.value.packages)


def test_fortune_cleaning_and_sentences():
    raw = ("A cloud does not know why it moves... this is the place to go now.  But the\n"
           "sky knows the reasons -- and the patterns.\n\t\t-- Messiah's Handbook\n")
    text = clean_fortune(raw)
    assert "Handbook" not in text and "--" not in text and "..." not in text
    assert split_sentences(text) == ["A cloud does not know why it moves, this is the place to go now.",
                                     "But the sky knows the reasons, and the patterns."]
    assert split_sentences("Mr. Smith came. He left! Did he? ¿Sí? Yes.") == [
        "Mr. Smith came.", "He left!", "Did he?", "¿Sí?", "Yes."]
    en, es = load_sentences("en"), load_sentences("es")
    assert len(en) > 5000 and len(es) > 5000
    assert all(3 <= len(s.text.split()) <= 40 for s in en[:500] + es[:500])
    assert all(s.source.startswith("fortunes-es:") for s in es[:50])


def test_mulaw_and_telephone_channel():
    rng = np.random.default_rng(0)
    x = np.sin(2 * np.pi * 1000 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32) * 0.3
    y = mulaw_decode(mulaw_encode(x))
    assert np.max(np.abs(y - x)) < 0.3 * 0.04
    assert mulaw_encode(np.array([0.0, 1.0, -1.0])).tolist() == [0, 127, -127]
    noise = rng.standard_normal(4 * SAMPLE_RATE).astype(np.float32) * 0.1
    t = telephone(noise, rng, noise_dbfs=-65)
    p = np.abs(np.fft.rfft(t)) ** 2
    f = np.fft.rfftfreq(t.size, 1.0 / SAMPLE_RATE)
    assert p[(f > 500) & (f < 3000)].mean() > 300 * p[f > 3800].mean()
    assert p[(f > 500) & (f < 3000)].mean() > 300 * p[f < 100].mean()


def test_pauses_are_shortened_and_segments_counted():
    rng = np.random.default_rng(0)
    sr = SAMPLE_RATE
    tone = lambda s: (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(s * sr)) / sr)).astype(np.float32)
    quiet = lambda s: np.zeros(int(s * sr), np.float32)
    utt = np.concatenate([quiet(0.5), tone(2.5), quiet(0.6), tone(2.5), quiet(0.4)])
    out = compress_pauses(utt, rng)
    assert 5.0 < out.size / sr < 5.3          # edges trimmed, the 0.6 s pause now ≤ 0.16 s
    assert count_segments(utt) == 1            # two 2.5 s stretches, joined: one 5 s segment
    assert count_segments(utt, config=SegmentConfig(mode="contiguous")) == 0   # each under 4 s
    assert count_segments(np.concatenate([quiet(1), out, quiet(1)])) == 1
    assert abs(median_f0(tone(1.0)) - 220) < 5
