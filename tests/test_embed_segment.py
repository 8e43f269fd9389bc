"""Segmentation and input reading: non-silent 4–8 s pieces, any rate, manifests, broken files.

The per-stretch tests use ``mode="contiguous"`` (each stretch cut on its own); joined
segments (the default) are tested in ``test_embed_joined.py``."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.embed  # soundfile/librosa (the embed extra): `pytest -m 'not embed'` leaves it out
sf = pytest.importorskip("soundfile")

from jsae.embed.audio import AudioReadError, audio_info, load_audio  # noqa: E402
from jsae.embed.plan import make_plan, read_manifest, scan_audio_dir  # noqa: E402
from jsae.embed.segment import Segment, SegmentConfig, find_segments, split_stretch  # noqa: E402
from embed_support import recording, write_recording  # noqa: E402

# the detector works on 25 ms frames every 10 ms: an edge can be off by half a frame
EDGE = 0.03

LAYOUT = [
    ("silence", 1.0), ("speech", 6.0, 120.0),                 # one 6 s segment
    ("silence", 1.2), ("speech", 2.5, 180.0),                 # too short: no segment
    ("silence", 0.8), ("speech", 8.0, 150.0), ("silence", 0.15),  # a 0.15 s pause does not split ...
    ("speech", 9.0, 210.0),                                   # ... so this is one 17.15 s stretch -> 3 pieces
    ("silence", 1.0),
]


def _within(seg_start: float, seg_end: float, spans: list[tuple[float, float]]) -> bool:
    return any(s - EDGE <= seg_start and seg_end <= e + EDGE for s, e in spans)


def test_split_stretch_cuts_long_stretches_into_pieces_between_min_and_max():
    assert split_stretch(0, 3990, 4000, 8000) == []                                   # too short
    assert split_stretch(1000, 7000, 4000, 8000) == [Segment(1000, 6000)]              # fits
    pieces = split_stretch(0, 17150, 4000, 8000)                                       # 3 equal pieces
    assert [p.duration_ms for p in pieces] == [5710, 5710, 5730]
    assert pieces[0].offset_ms == 0 and pieces[-1].end_ms == 17150
    assert all(a.end_ms == b.offset_ms for a, b in zip(pieces, pieces[1:]))            # contiguous
    # 6-8 s and 17 s: equal thirds (5.67 s) would be too short -> two 8 s pieces, rest dropped
    assert split_stretch(0, 17000, 6000, 8000) == [Segment(0, 8000), Segment(8000, 8000)]


CONTIGUOUS = SegmentConfig(mode="contiguous")


@pytest.mark.parametrize("min_s,max_s", [(4.0, 8.0), (2.0, 3.0), (6.0, 8.0)])
def test_every_segment_lies_in_one_nonsilent_part_and_respects_min_max(min_s, max_s):
    x, spans = recording(LAYOUT)
    stretches = [(1.0, 7.0), (8.2, 10.7), (11.5, 28.65)]   # speech parts, the pause merged
    assert spans[2][1] == pytest.approx(19.5) and spans[3][0] == pytest.approx(19.65)
    cfg = SegmentConfig(min_seconds=min_s, max_seconds=max_s, mode="contiguous")
    segments, longest = find_segments(x, 16000, cfg)
    assert segments, "speech stretches must give segments"
    assert longest == pytest.approx(17.15, abs=2 * EDGE)
    for seg in segments:
        start, end = seg.offset_ms / 1000, seg.end_ms / 1000
        assert min_s <= end - start <= max_s
        assert _within(start, end, stretches), f"segment {start}-{end} s is not inside one non-silent part"
    # no segment from the 2.5 s part unless it is long enough
    in_short = [s for s in segments if _within(s.offset_ms / 1000, s.end_ms / 1000, [stretches[1]])]
    assert bool(in_short) == (min_s <= 2.5)


def test_long_stretches_are_covered_by_contiguous_pieces():
    x, _ = recording(LAYOUT)
    segments, _ = find_segments(x, 16000, CONTIGUOUS)
    assert len(segments) == 1 + 3
    first, *rest = segments
    assert first.offset_ms / 1000 == pytest.approx(1.0, abs=EDGE)
    assert first.duration_ms / 1000 == pytest.approx(6.0, abs=2 * EDGE)
    assert rest[0].offset_ms / 1000 == pytest.approx(11.5, abs=EDGE)
    assert rest[-1].end_ms / 1000 == pytest.approx(28.65, abs=EDGE)
    assert all(a.end_ms == b.offset_ms for a, b in zip(rest, rest[1:]))
    # exactly the segments this recording gave before joined segmentation existed
    assert [(s.offset_ms, s.duration_ms) for s in segments] == [(990, 6030), (11490, 5720), (17210, 5720),
                                                                (22930, 5740)]
    assert all(s.parts == ((s.offset_ms, s.end_ms),) for s in segments)


def test_quiet_noise_below_the_floor_gives_no_segment():
    x, _ = recording([("silence", 10.0)])
    assert find_segments(x, 16000, SegmentConfig()) == ([], 0.0)
    assert find_segments(x, 16000, CONTIGUOUS) == ([], 0.0)


def test_8khz_stereo_is_read_as_16khz_mono_and_segmented_alike(tmp_path):
    spans = write_recording(tmp_path / "tel.wav", LAYOUT, sample_rate=8000, channels=2)
    info = audio_info(tmp_path / "tel.wav")
    assert (info.sample_rate, info.channels) == (8000, 2)
    x = load_audio(tmp_path / "tel.wav", 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert x.shape[0] == 2 * info.frames                       # resampled to the encoder rate
    segments, _ = find_segments(x, 16000, SegmentConfig())
    reference, _ = find_segments(recording(LAYOUT)[0], 16000, SegmentConfig())
    assert len(segments) == len(reference) == 4
    for a, b in zip(segments, reference):
        assert abs(a.offset_ms - b.offset_ms) <= 20 and abs(a.end_ms - b.end_ms) <= 20
    assert spans[0] == (1.0, 7.0)


def test_unusable_files_raise_with_the_reason(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    sf.write(str(tmp_path / "noframes.wav"), np.zeros((0,), np.float32), 16000)
    write_recording(tmp_path / "ok.wav", [("speech", 1.0, 100.0)])
    cases = {
        "empty.wav": "empty file",
        "corrupt.wav": "unreadable or corrupt",
        "noframes.wav": "no audio samples",
        "missing.wav": "not found",
    }
    for name, reason in cases.items():
        with pytest.raises(AudioReadError, match=reason):
            load_audio(tmp_path / name, 16000)
    with pytest.raises(AudioReadError, match="past the end"):
        load_audio(tmp_path / "ok.wav", 16000, offset=5.0)


def test_manifest_excerpts_labels_and_ids(tmp_path):
    write_recording(tmp_path / "calls" / "a.wav", LAYOUT, seed=1)
    write_recording(tmp_path / "calls" / "b.flac", [("speech", 5.0, 130.0)], sample_rate=8000, seed=2)
    (tmp_path / "calls" / "short.wav").parent.mkdir(exist_ok=True)
    write_recording(tmp_path / "calls" / "short.wav", [("speech", 2.0, 130.0)])
    entries = [
        {"audio_filepath": "calls/a.wav", "offset": 11.0, "duration": 18.0, "lang": "es", "gender": "f",
         "music": False},
        {"audio_filepath": str(tmp_path / "calls" / "b.flac"), "lang": "en", "gender": "m", "music": True,
         "speaker": 7},
        {"audio_filepath": "calls/short.wav", "lang": "en", "gender": "m", "music": False, "speaker": "x"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    recs = read_manifest(manifest)
    assert [r.source for r in recs] == ["calls/a.wav", "calls/b.flac", "calls/short.wav"]
    plan = make_plan(recs, 16000, SegmentConfig())
    table = plan.metadata()
    assert list(table.columns[:4]) == ["id", "source", "offset", "duration"]
    assert {"lang", "gender", "music", "speaker"} <= set(table.columns)
    a = table[table.source == "calls/a.wav"]
    # the excerpt starts at 11 s: offsets are absolute in the file, inside the 11.5-28.65 s stretch
    assert len(a) == 3 and a.offset.min() == pytest.approx(11.5, abs=EDGE)
    assert (a.offset + a.duration).max() <= 28.65 + EDGE
    assert list(a["id"]) == [f"calls/a.wav:{round(o * 1000)}" for o in a.offset]
    # one stretch: every segment is one source span, [offset, offset + duration) in the file
    assert [json.loads(sp) for sp in a.spans] == [[[o, round(o + d, 3)]] for o, d in zip(a.offset, a.duration)]
    assert set(a.lang) == {"es"} and set(table[table.source == "calls/b.flac"].lang) == {"en"}
    assert table["id"].is_unique
    assert table.speaker.map(type).eq(str).all() or table.speaker.isna().any()   # mixed int/str -> str
    # the 2 s clip is under --min-seconds: one short segment by default (--min-keep 2), skipped with --min-keep 4
    assert plan.skipped == []
    assert list(table["short"]) == [False] * (len(table) - 1) + [True]
    assert table.source.iloc[-1] == "calls/short.wav" and table.duration.iloc[-1] == pytest.approx(2.0, abs=2 * EDGE)
    strict = make_plan(recs, 16000, SegmentConfig(min_keep=4.0))
    assert strict.skipped == [{"source": "calls/short.wav", "reason": strict.skipped[0]["reason"]}]
    assert "too short" in strict.skipped[0]["reason"] and not strict.metadata()["short"].any()


def test_audio_dir_scan_is_recursive_and_sorted(tmp_path):
    for name in ["z.wav", "sub/b.flac", "a.ogg", ".hidden.wav", "notes.txt"]:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith((".wav", ".flac", ".ogg")):
            write_recording(p, [("speech", 0.5, 100.0)])
        else:
            p.write_text("x")
    assert [r.source for r in scan_audio_dir(tmp_path)] == ["a.ogg", "sub/b.flac", "z.wav"]


def test_bad_segmentation_settings_are_refused_with_the_option_name():
    with pytest.raises(ValueError, match="--max-seconds"):
        SegmentConfig(min_seconds=8, max_seconds=4)
    with pytest.raises(ValueError, match="--floor-db"):
        SegmentConfig(floor_db=3)
    with pytest.raises(ValueError, match="--segment-mode"):
        SegmentConfig(mode="sox")
    with pytest.raises(ValueError, match="--max-gap"):
        SegmentConfig(max_gap=-1.0)
    with pytest.raises(ValueError, match="--max-gap applies to --segment-mode joined"):
        SegmentConfig(mode="contiguous", max_gap=1.0)
    with pytest.raises(ValueError, match="--min-keep must be > 0 and at most --min-seconds"):
        SegmentConfig(min_keep=6.0)


@pytest.mark.parametrize("suffix,fmt", [(".mp3", "MP3"), (".ogg", "OGG"), (".flac", "FLAC")])
def test_compressed_formats_are_read_and_resampled(tmp_path, suffix, fmt):
    x, _ = recording([("speech", 2.0, 140.0)], sample_rate=22050)
    path = tmp_path / f"clip{suffix}"
    sf.write(str(path), x, 22050, format=fmt)
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and abs(y.shape[0] - 32000) <= 1200     # mp3 adds encoder padding
    assert 0.05 < np.abs(y).max() < 1.0
