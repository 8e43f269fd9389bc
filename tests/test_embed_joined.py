"""Joined segmentation (the default): silences removed, the non-silent audio of a recording
cut into 4–8 s segments made of several source spans; kept/dropped accounting per
recording and per label value, and the warning when a label value loses far more.

The recordings are generated: "utterances" are :func:`stand_ins.speechlike` tone
bursts (harmonics, syllable-rate envelope, a little noise), pauses are noise 75 dB down.
No test here needs torch: the export tests use a stand-in encoder.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.embed  # soundfile/librosa (the embed extra): `pytest -m 'not embed'` leaves it out
sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

from jsae.embed.audio import load_audio  # noqa: E402
from jsae.embed.encoders import ENCODERS, Encoder  # noqa: E402
from jsae.embed.export import ExportConfig, ExportError, _check_settings, _shard_waves, run_export  # noqa: E402
from jsae.embed.plan import (IMBALANCE_POINTS, imbalance_warnings, label_accounting, make_plan,  # noqa: E402
                        read_manifest)
from jsae.embed.segment import (Segment, SegmentConfig, cut_run, find_segments, join_stretches,  # noqa: E402
                           segment_recording)
from embed_support import recording, write_recording  # noqa: E402

SR = 16000
EDGE = 0.03          # the detector's 25 ms frames every 10 ms: an edge can be off by half a frame
CONTIGUOUS = SegmentConfig(mode="contiguous")


def conversation(seed: int = 0, n: int = 30, lead: float = 0.5) -> list[tuple]:
    """``n`` utterances of 1–3 s separated by pauses of 0.3–1 s (seeded), as for ``recording``."""
    rng = np.random.default_rng(seed)
    parts: list[tuple] = [("silence", lead)]
    for _ in range(n):
        parts.append(("speech", round(float(rng.uniform(1.0, 3.0)), 2), float(rng.uniform(100, 240))))
        parts.append(("silence", round(float(rng.uniform(0.3, 1.0)), 2)))
    return parts


def _overlap(a: float, b: float, spans) -> float:
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in spans)


def _pauses(utterances, min_pause: float = 0.35) -> list[tuple[float, float]]:
    """True silences between utterances long enough that the detector must see them."""
    return [(e0, s1) for (_, e0), (s1, _) in zip(utterances, utterances[1:]) if s1 - e0 >= min_pause]


# ----------------------------------------------------------------------------- cutting

def test_cut_run_maps_pieces_of_the_joined_audio_back_to_source_spans():
    run = [(1000, 3000), (3500, 5500), (6000, 9000), (9400, 10400)]      # 2 + 2 + 3 + 1 = 8 s
    assert cut_run(run, 4000, 8000) == [Segment(1000, 8000, tuple(run))]
    # 12 s joined -> two 6 s pieces; the cut falls inside the third stretch
    run = run + [(12000, 16000)]                                          # + 4 s = 12 s
    first, second = cut_run(run, 4000, 8000)
    assert first.parts == ((1000, 3000), (3500, 5500), (6000, 8000)) and first.duration_ms == 6000
    assert second.parts == ((8000, 9000), (9400, 10400), (12000, 16000)) and second.duration_ms == 6000
    assert (first.offset_ms, first.end_ms, second.offset_ms, second.end_ms) == (1000, 8000, 8000, 16000)
    # a cut exactly at a stretch boundary starts the next piece at the next stretch
    a, b = cut_run([(0, 5000), (7000, 12000)], 4000, 8000)
    assert (a.parts, b.parts) == (((0, 5000),), ((7000, 12000),)) and a == Segment(0, 5000)
    assert cut_run([(0, 1500), (2000, 3000)], 4000, 8000) == []           # 2.5 s in all: too short


def test_join_stretches_starts_a_new_run_after_a_gap_longer_than_max_gap():
    stretches = [(0, 2000), (2500, 4000), (7000, 9000), (9400, 9900)]
    assert join_stretches(stretches) == [stretches]
    assert join_stretches(stretches, 500) == [stretches[:2], stretches[2:]]
    assert join_stretches(stretches, 3000) == [stretches]
    assert join_stretches(stretches, 0) == [[s] for s in stretches]
    assert join_stretches([]) == []


# ----------------------------------------------------------------------------- recordings

def test_conversational_speech_is_kept_in_joined_segments_with_correct_source_spans():
    x, utterances = recording(conversation(seed=0), seed=7)
    speech = sum(e - s for s, e in utterances)
    result = segment_recording(x, SR, SegmentConfig())
    segments = result.segments
    assert segments and all(4000 <= s.duration_ms <= 8000 for s in segments)
    spans = [(a / 1000, b / 1000) for seg in segments for a, b in seg.parts]
    # >= 90 % of the non-silent audio (true utterance time, and what the detector found) is in segments
    kept_speech = sum(_overlap(a, b, utterances) for a, b in spans)
    assert kept_speech >= 0.9 * speech, (kept_speech, speech)
    assert result.kept_ms >= 0.9 * result.nonsilent_ms
    # ... and nothing else: a span never covers a pause, beyond the detector's edge
    pauses = _pauses(utterances)
    for a, b in spans:
        assert _overlap(a, b, pauses) <= 2 * EDGE, (a, b)
    # spans are in time order, disjoint, and a segment's duration is the sum of its spans
    flat = [p for seg in segments for p in seg.parts]
    assert all(e > s for s, e in flat) and all(e0 <= s1 for (_, e0), (s1, _) in zip(flat, flat[1:]))
    for seg in segments:
        assert seg.duration_ms == sum(e - s for s, e in seg.parts) and seg.offset_ms == seg.parts[0][0]
        assert seg.end_ms == seg.parts[-1][1]
    assert sum(len(seg.parts) > 1 for seg in segments) >= len(segments) - 1     # joined across pauses
    # every span edge is an utterance edge, except where one segment ends and the next begins (a cut)
    cuts = {segments[i].end_ms for i in range(len(segments) - 1)
            if segments[i].end_ms == segments[i + 1].offset_ms}
    edges = [t for u in utterances for t in u]
    for ms in [t for p in flat for t in p]:
        if ms not in cuts:
            assert min(abs(ms / 1000 - t) for t in edges) <= EDGE, ms


def test_contiguous_mode_keeps_what_it_kept_before_on_conversational_speech():
    x, utterances = recording(conversation(seed=0), seed=7)
    segments, longest = find_segments(x, SR, CONTIGUOUS)
    # only the one stretch that is >= 4 s by itself: two utterances with a pause the detector bridged
    assert [(s.offset_ms, s.duration_ms) for s in segments] == [(7950, 5910)] and longest == pytest.approx(5.91)
    joined = segment_recording(x, SR, SegmentConfig())
    assert sum(s.duration_ms for s in segments) < 0.15 * joined.kept_ms


def test_max_gap_does_not_join_across_a_long_silence():
    parts = conversation(seed=1, n=6) + [("silence", 3.0)] + conversation(seed=2, n=6, lead=0.0)
    x, utterances = recording(parts, seed=3)
    hold = max(((e0, s1) for (_, e0), (s1, _) in zip(utterances, utterances[1:])), key=lambda g: g[1] - g[0])
    assert hold[1] - hold[0] > 3.0
    everything, _ = find_segments(x, SR, SegmentConfig())
    assert any(seg.offset_ms / 1000 < hold[0] and seg.end_ms / 1000 > hold[1] for seg in everything)  # across
    segments, _ = find_segments(x, SR, SegmentConfig(max_gap=1.5))
    assert segments
    for seg in segments:                                                         # never across it
        assert seg.end_ms / 1000 <= hold[0] + EDGE or seg.offset_ms / 1000 >= hold[1] - EDGE


# ----------------------------------------------------------------------------- plan, accounting, export

def _corpus(root):
    """Two labelled conversational calls and two labelled long-stretch lectures, one short clip."""
    write_recording(root / "a" / "call1.wav", conversation(seed=10, n=12), seed=1)
    write_recording(root / "a" / "call2.wav", conversation(seed=11, n=10), sample_rate=8000, seed=2)
    write_recording(root / "a" / "lecture1.wav", [("silence", 0.5), ("speech", 14.0, 120.0), ("silence", 0.5)],
                    seed=3)
    write_recording(root / "a" / "lecture2.wav", [("silence", 0.4), ("speech", 9.0, 150.0), ("silence", 0.6),
                                                  ("speech", 7.5, 170.0), ("silence", 0.5)], seed=4)
    write_recording(root / "a" / "short.wav", [("silence", 0.2), ("speech", 1.2, 130.0), ("silence", 0.3)],
                    seed=5)
    entries = [
        {"audio_filepath": "a/call1.wav", "kind": "call", "speaker": "s1"},
        {"audio_filepath": "a/call2.wav", "kind": "call", "speaker": "s2", "offset": 1.0},
        {"audio_filepath": "a/lecture1.wav", "kind": "lecture", "speaker": "s3"},
        {"audio_filepath": "a/lecture2.wav", "kind": "lecture", "speaker": "s3"},
        {"audio_filepath": "a/short.wav", "kind": "call", "speaker": "s1"},
    ]
    manifest = root / "m.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return manifest


def test_plan_metadata_spans_and_the_audio_the_encoder_receives(tmp_path):
    manifest = _corpus(tmp_path)
    plan = make_plan(read_manifest(manifest), SR, SegmentConfig())
    meta = plan.metadata()
    assert list(meta.columns[:5]) == ["id", "source", "offset", "duration", "spans"]
    assert meta["id"].is_unique and {"kind", "speaker"} <= set(meta.columns)
    assert ((meta.duration >= 4.0) & (meta.duration <= 8.0)).all()
    calls = meta[meta.source == "a/call2.wav"]
    assert len(calls) >= 2
    for row in meta.itertuples():
        spans = json.loads(row.spans)
        assert row.offset == spans[0][0] and row.duration == pytest.approx(sum(e - s for s, e in spans))
        assert row.id == f"{row.source}:{round(row.offset * 1000)}"
    # the manifest offset (1 s) is included: spans are absolute in the file
    assert json.loads(calls.spans.iloc[0])[0][0] >= 1.0
    assert any(len(json.loads(sp)) > 1 for sp in calls.spans)
    # the encoder receives the concatenation of the spans, read from the file (the excerpt) itself
    waves = _shard_waves(plan.table, SR)
    excerpt = {"a/call2.wav": 1.0}
    for row, wave in zip(meta.itertuples(), waves):
        start = excerpt.get(row.source, 0.0)
        x = load_audio(tmp_path / row.source, SR, offset=start)
        expected = np.concatenate([x[round((s - start) * SR):round((e - start) * SR)]
                                   for s, e in json.loads(row.spans)])
        np.testing.assert_array_equal(wave, expected)
        assert wave.shape[0] == round(row.duration * SR)


def test_kept_and_dropped_seconds_per_recording_and_per_label_value(tmp_path):
    manifest = _corpus(tmp_path)
    recs = read_manifest(manifest)
    joined = make_plan(recs, SR, SegmentConfig())
    contiguous = make_plan(recs, SR, CONTIGUOUS)
    for plan in (joined, contiguous):
        by_source = {r["source"]: r for r in plan.recordings}
        assert list(by_source) == [r.source for r in recs]
        for source, r in by_source.items():
            rows = plan.table[plan.table.source == source]
            assert r["segments"] == len(rows)
            assert r["kept_seconds"] == pytest.approx(float(rows.duration.sum()))
            assert r["dropped_seconds"] == pytest.approx(r["nonsilent_seconds"] - r["kept_seconds"])
        assert by_source["a/short.wav"]["segments"] == 0
        assert by_source["a/short.wav"]["nonsilent_seconds"] == pytest.approx(1.2, abs=2 * EDGE)
        tot = plan.totals()
        assert tot["segments"] == plan.num_rows and tot["kept_seconds"] == pytest.approx(plan.audio_seconds)
        # contiguous mode drops both conversational calls whole (no utterance is 4 s long by itself)
        assert (tot["files"], tot["files_kept"], tot["files_skipped"]) == ((5, 4, 1) if plan is joined else (5, 2, 3))
        kinds = plan.labels["kind"]
        assert set(kinds) == {"call", "lecture"} and set(plan.labels["speaker"]) == {"s1", "s2", "s3"}
        assert kinds["call"]["files"] == 3 and kinds["lecture"]["files"] == 2
        for key in ("nonsilent_seconds", "kept_seconds", "dropped_seconds", "segments"):
            assert kinds["call"][key] + kinds["lecture"][key] == pytest.approx(tot[key])
        # lectures are long stretches: both modes keep nearly all of them
        assert kinds["lecture"]["kept_fraction"] > 0.95
    # calls: the joined default keeps >= 90 % of their non-silent audio, contiguous little of it
    assert joined.labels["kind"]["call"]["kept_fraction"] >= 0.9
    assert contiguous.labels["kind"]["call"]["kept_fraction"] < 0.3
    assert imbalance_warnings(joined.labels) == []
    warnings = imbalance_warnings(contiguous.labels)
    assert any(w.startswith("label 'kind': kind=call kept") for w in warnings), warnings
    assert not any("kind=lecture" in w.split(" — ")[0] for w in warnings)        # the best value is not flagged


def test_label_accounting_keeps_class_like_columns_only():
    accounts = [{"nonsilent_seconds": 10.0, "kept_seconds": k, "dropped_seconds": 10.0 - k, "segments": int(k // 4)}
                for k in (10.0, 8.0, 2.0, 0.0)]
    labels = [{"lang": "en", "snr": 1.5, "music": False, "id": "x", "one": "a"},
              {"lang": "en", "snr": 2.5, "music": True, "id": "y", "one": "a"},
              {"lang": "es", "snr": 3.5, "music": False, "one": "a"},
              {"lang": "es", "snr": 4.5, "music": True, "one": "a", "nested": [1]}]
    acc = label_accounting(labels, accounts)
    assert set(acc) == {"lang", "music", "manifest_id"}       # floats, nested values, one value: left out
    assert acc["lang"]["en"]["kept_fraction"] == pytest.approx(0.9)
    assert acc["lang"]["es"]["kept_fraction"] == pytest.approx(0.1)
    assert acc["music"]["true"]["files"] == 2 and acc["manifest_id"]["x"]["files"] == 1
    warnings = imbalance_warnings({"lang": acc["lang"]})
    assert len(warnings) == 1 and "lang=es kept 10 %" in warnings[0]
    assert f"more than {IMBALANCE_POINTS:g} points below the 50 % kept overall" in warnings[0]
    assert imbalance_warnings({"lang": acc["lang"]}, points=45) == []


class _StandIn(Encoder):
    """A deterministic stand-in encoder (no torch): a few statistics of the clip; remembers its clips."""

    name = "stand-in"
    seen: list[np.ndarray] = []

    def load(self, model=None, device="cpu"):
        self.dim, self.sample_rate, self.model = 4, SR, "none"
        return self

    def embed(self, waves):
        type(self).seen.extend(np.array(w) for w in waves)
        return np.stack([[w.shape[0] / SR, float(np.mean(w)), float(np.std(w)), float(np.abs(np.diff(w)).sum())]
                         for w in waves]).astype(np.float32)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setitem(ENCODERS, _StandIn.name, _StandIn)
    monkeypatch.setattr(_StandIn, "seen", [])
    return _StandIn


def test_export_summary_screen_and_refused_resume_with_other_segmentation(tmp_path, stand_in, capsys):
    from jsae.embed.cli import main
    from jsae.store import open_store

    manifest = _corpus(tmp_path)
    out = tmp_path / "store"
    common = ["--manifest", str(manifest), "--encoder", stand_in.name, "--out", str(out), "--rows-per-shard", "3",
              "--no-progress"]
    assert main(common + ["--segment-mode", "contiguous"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["segmentation_accounting"]
    assert acc["mode"] == "contiguous" and summary["segmentation"]["mode"] == "contiguous"
    assert acc["totals"]["segments"] == summary["rows"] and acc["imbalance_points"] == IMBALANCE_POINTS
    assert [r["source"] for r in acc["recordings"]] == ["a/call1.wav", "a/call2.wav", "a/lecture1.wav",
                                                          "a/lecture2.wav", "a/short.wav"]
    assert acc["labels"]["kind"]["call"]["kept_fraction"] < 0.3 and acc["warnings"]
    assert "segmentation (contiguous): kept" in printed and "WARNING: label 'kind': kind=call kept" in printed
    assert "kept %" in printed and "lecture" in printed          # the per-label table
    # resuming with the default (joined) settings is refused, naming the setting
    assert main(common) == 2
    assert "segmentation.mode: store has 'contiguous', this command gives 'joined'" in capsys.readouterr().err
    # the joined export: the store holds the spans, the rows are the stand-in of the concatenated audio
    stand_in.seen.clear()
    out2 = tmp_path / "joined"
    assert main([*common[:-4], str(out2), *common[-3:]]) == 0
    printed = capsys.readouterr().out
    assert "segmentation (joined): kept" in printed and "WARNING" not in printed
    store = open_store(out2)
    meta, x = store.metadata, store.read()
    assert "spans" in meta.columns and store.info["segmentation"]["mode"] == "joined"
    assert store.info["segmentation"]["max_gap"] is None
    np.testing.assert_allclose(x[:, 0], meta.duration.to_numpy(), atol=1e-6)    # clip length = sum of spans
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["segmentation_accounting"]["warnings"] == []
    assert summary["audio_seconds"] == pytest.approx(float(meta.duration.sum()))
    assert summary["segmentation_accounting"]["labels"]["kind"]["call"]["kept_fraction"] >= 0.9
    assert len(stand_in.seen) == len(meta)
    # --max-gap is part of the settings, too
    assert main([*common[:-4], str(out2), *common[-3:], "--max-gap", "2"]) == 2
    assert "segmentation.max_gap: store has None, this command gives 2.0" in capsys.readouterr().err


def test_a_plan_made_before_joined_segments_resumes_in_contiguous_mode_only(tmp_path):
    wanted = lambda seg: {"inputs": {"audio_dir": "/x"}, "segmentation": seg.to_dict()}  # noqa: E731
    old = {"inputs": {"audio_dir": "/x"},      # plan.json settings of a version-1 plan: no mode, no max_gap
           "segmentation": {k: v for k, v in CONTIGUOUS.to_dict().items() if k not in ("mode", "max_gap")}}
    _check_settings(tmp_path, old, wanted(CONTIGUOUS))
    with pytest.raises(ExportError, match="segmentation.mode: store has 'contiguous'"):
        _check_settings(tmp_path, old, wanted(SegmentConfig()))
    # and its plan table (no _spans_ms column) is cut as before
    import pandas as pd

    x, _ = recording([("silence", 0.5), ("speech", 5.0, 140.0)])
    sf.write(str(tmp_path / "r.wav"), x, SR)
    rows = pd.DataFrame([{"id": "r.wav:500", "_path": str(tmp_path / "r.wav"), "_rec_offset_ms": 0,
                          "_rec_duration_ms": -1, "_seg_offset_ms": 500, "_duration_ms": 4500,
                          "_file_bytes": (tmp_path / "r.wav").stat().st_size}])
    (wave,) = _shard_waves(rows, SR)
    np.testing.assert_array_equal(wave, load_audio(tmp_path / "r.wav", SR)[8000:8000 + 72000])


def test_export_config_keeps_working_with_a_given_encoder(tmp_path, stand_in):
    manifest = _corpus(tmp_path)
    cfg = ExportConfig(out=tmp_path / "s", manifest=manifest, encoder=stand_in.name,
                       segment=SegmentConfig(max_gap=0.8), progress=False)
    result = run_export(cfg, stand_in().load())
    assert result["status"] == "complete"
    acc = result["summary"]["segmentation_accounting"]
    assert acc["totals"]["kept_seconds"] <= acc["totals"]["nonsilent_seconds"]
    assert result["summary"]["segmentation"]["max_gap"] == 0.8
