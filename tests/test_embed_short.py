"""Short recordings and manifest entries (``--min-keep``) and the imbalance warning.

The planted case is a user's 8 kHz telephone manifest: clips of a few prompts joined by
0.1–0.25 s pauses, 2.5–8 s long, one label value's clips systematically shorter. With the
strict rule (a recording whose non-silent audio is under ``--min-seconds`` yields nothing)
that value loses a large share of its clips; with ``--min-keep`` (default 2 s) such a
clip becomes one segment flagged ``short``. The imbalance warning compares every label
value's kept fraction with the overall one (:data:`jsae.embed.plan.IMBALANCE_POINTS`).

Audio is generated (:func:`embed_support.recording`); the export tests use a stand-in
encoder, no torch.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.embed  # soundfile/librosa (the embed extra): `pytest -m 'not embed'` leaves it out
sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

from jsae.embed.audio import resample  # noqa: E402
from jsae.embed.encoders import ENCODERS, Encoder  # noqa: E402
from jsae.embed.export import ExportError, _check_settings  # noqa: E402
from jsae.embed.plan import IMBALANCE_POINTS, imbalance_warnings, label_accounting, make_plan, read_manifest  # noqa: E402
from jsae.embed.segment import Segment, SegmentConfig, segment_recording  # noqa: E402
from embed_support import recording  # noqa: E402

SR = 16000           # the encoder rate; the clips are written at 8 kHz and resampled
TEL = 8000
STRICT = SegmentConfig(min_keep=4.0)


# ----------------------------------------------------------------------------- the planted manifest

def prompts(rng: np.random.Generator, target: float, f0: float) -> list[tuple]:
    """Prompts of 0.6–1.5 s joined by pauses of 0.1–0.25 s, about ``target`` seconds in all,
    with 0.1–0.3 s of silence before and after (parts for :func:`embed_support.recording`)."""
    parts: list[tuple] = [("silence", round(float(rng.uniform(0.1, 0.3)), 2))]
    left = target
    while True:
        if left <= 1.5:
            parts.append(("speech", round(max(left, 0.6), 2), f0 * float(rng.uniform(0.9, 1.1))))
            break
        p = float(rng.uniform(0.6, min(1.5, left - 0.6 - 0.1)))
        pause = float(rng.uniform(0.1, 0.25))
        parts += [("speech", round(p, 2), f0 * float(rng.uniform(0.9, 1.1))), ("silence", round(pause, 2))]
        left -= p + pause
    parts.append(("silence", round(float(rng.uniform(0.1, 0.3)), 2)))
    return parts


def planted_manifest(root, n: int = 20, seed: int = 0):
    """``n`` clips of ``lang=en`` (2.3–5 s of prompts, separate files) and ``n`` of ``lang=es``
    (3.6–7.6 s, excerpts of two long files: manifest ``offset``/``duration``), 8 kHz."""
    rng = np.random.default_rng(seed)
    entries = []
    (root / "en").mkdir(parents=True)
    for i in range(n):
        x, _ = recording(prompts(rng, float(rng.uniform(2.3, 5.0)), 120.0), TEL, seed=i)
        sf.write(str(root / "en" / f"clip{i:02d}.wav"), x, TEL)
        entries.append({"audio_filepath": f"en/clip{i:02d}.wav", "lang": "en", "speaker": f"en{i % 3}"})
    for f in range(2):
        pieces, pos = [], 0.0
        for i in range(n // 2):
            x, _ = recording(prompts(rng, float(rng.uniform(3.6, 7.6)), 210.0), TEL, seed=100 + 10 * f + i)
            pieces.append(x)
            entries.append({"audio_filepath": f"es/call{f}.wav", "offset": round(pos, 3),
                            "duration": round(x.shape[0] / TEL, 3), "lang": "es", "speaker": f"es{f}"})
            pos += x.shape[0] / TEL
        (root / "es").mkdir(exist_ok=True)
        sf.write(str(root / "es" / f"call{f}.wav"), np.concatenate(pieces), TEL)
    manifest = root / "m.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return manifest


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    manifest = planted_manifest(root)
    recs = read_manifest(manifest)
    return manifest, recs, make_plan(recs, SR, SegmentConfig()), make_plan(recs, SR, STRICT)


def _clips_kept(plan) -> float:
    t = plan.totals()
    return t["files_kept"] / t["files"]


def test_short_clips_are_kept_as_one_short_segment_each(planted):
    _, recs, plan, strict = planted
    tot = plan.totals()
    assert tot["files"] == 40
    # the strict rule (today's) loses a large share of the short-clip value's clips ...
    assert strict.labels["lang"]["en"]["files_kept"] <= 0.7 * 20
    assert strict.labels["lang"]["en"]["kept_fraction"] < strict.labels["lang"]["es"]["kept_fraction"] - 0.15
    # ... the default keeps nearly every clip and every second of non-silent audio, evenly
    assert _clips_kept(plan) >= 0.98, plan.skipped
    assert tot["kept_fraction"] >= 0.95
    fractions = [v["kept_fraction"] for v in plan.labels["lang"].values()]
    assert max(fractions) - min(fractions) <= 0.05, plan.labels["lang"]
    assert imbalance_warnings(plan.labels) == []
    # a clip whose non-silent audio is under --min-seconds is exactly one short segment, all its audio
    meta = plan.metadata()
    assert "short" in meta.columns and meta["short"].dtype == bool
    assert list(meta.columns[:6]) == ["id", "source", "offset", "duration", "spans", "short"]
    accounts = plan.recordings
    n_short = 0
    for rec, acc in zip(recs, accounts):
        rows = plan.table[(plan.table.source == rec.source) & (plan.table._rec_offset_ms == round(rec.offset * 1000))]
        if acc["nonsilent_seconds"] < 4.0:
            n_short += 1
            assert len(rows) == 1 and bool(rows["short"].iloc[0]), rec
            assert rows.duration.iloc[0] == pytest.approx(acc["nonsilent_seconds"])
            assert 2.0 <= rows.duration.iloc[0] < 4.0
            assert acc["short_segments"] == 1 and acc["dropped_seconds"] == 0
        else:
            assert len(rows) >= 1 and not rows["short"].any(), rec
            assert ((rows.duration >= 4.0) & (rows.duration <= 8.0)).all()
    assert n_short >= 8 and int(meta["short"].sum()) == n_short == tot["short_segments"]
    # the short ones are mostly the short-clip value's
    assert plan.labels["lang"]["en"]["short_segments"] > plan.labels["lang"]["es"]["short_segments"]


def test_min_keep_equal_to_min_seconds_is_the_strict_rule(planted):
    _, recs, plan, strict = planted
    meta, old = plan.metadata(), strict.metadata()
    assert not old["short"].any()
    # the strict plan is the default plan without its short rows, row for row
    normal = meta[~meta["short"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(normal, old)
    for a, b in zip(plan.recordings, strict.recordings):
        if a["short_segments"]:
            assert b["segments"] == 0 and b["kept_seconds"] == 0 and b["dropped_seconds"] == a["nonsilent_seconds"]
        else:
            assert a == b
    skipped = {s["source"] for s in strict.skipped}
    assert all("too short" in s["reason"] and "--min-seconds 4 s" in s["reason"] for s in strict.skipped)
    assert len(skipped) >= 1 and len(strict.skipped) == sum(a["short_segments"] for a in plan.recordings)
    # the new warning sees what the ratio rule (0.5 x the best value) did not
    warnings = imbalance_warnings(strict.labels)
    (lang,) = [w for w in warnings if w.startswith("label 'lang':")]
    assert lang.startswith("label 'lang': lang=en kept") and "lang=es" not in lang.split(" — ")[0]
    assert f"{100 * strict.totals()['kept_fraction']:.0f} % kept overall" in lang
    (speaker,) = [w for w in warnings if w.startswith("label 'speaker':")]      # the en speakers, not es
    assert "speaker=en" in speaker and "speaker=es" not in speaker.split(" — ")[0]


def test_a_long_call_still_gives_only_4_to_8_s_segments_and_no_short_one():
    rng = np.random.default_rng(5)
    parts: list[tuple] = []
    while sum(p[1] for p in parts) < 60.0:
        parts += prompts(rng, float(rng.uniform(2.0, 6.0)), 150.0)
        parts.append(("silence", round(float(rng.uniform(0.4, 1.2)), 2)))     # turns: the detector splits here
    x, _ = recording(parts, TEL, seed=9)
    x = resample(x, TEL, SR)
    result = segment_recording(x, SR, SegmentConfig())
    assert result.nonsilent_ms > 45000 and len(result.stretches) > 5
    assert result.segments and all(4000 <= s.duration_ms <= 8000 and not s.short for s in result.segments)
    assert result.kept_ms == result.nonsilent_ms
    # a leftover piece at the end of a long stretch is dropped, not promoted (6-8 s: 11.5 s -> 8 s + 3.5 s)
    y, _ = recording([("silence", 0.5), ("speech", 11.5, 140.0), ("silence", 0.5)], SR)
    cut = segment_recording(y, SR, SegmentConfig(min_seconds=6.0, max_seconds=8.0))
    assert [s.duration_ms for s in cut.segments] == [8000] and not cut.segments[0].short
    # --max-gap: a short run of a long recording is dropped, not promoted
    z, _ = recording([("silence", 0.5), ("speech", 10.0, 140.0), ("silence", 3.0), ("speech", 3.0, 160.0),
                      ("silence", 0.5)], SR)
    runs = segment_recording(z, SR, SegmentConfig(max_gap=1.0))
    assert len(runs.segments) == 2 and not any(s.short for s in runs.segments)
    assert runs.nonsilent_ms - runs.kept_ms == pytest.approx(3000, abs=60)


def test_a_short_recording_joins_all_its_stretches_into_one_short_segment():
    x, utterances = recording([("silence", 0.3), ("speech", 1.2, 130.0), ("silence", 0.6), ("speech", 1.5, 150.0),
                               ("silence", 0.4)], SR)
    result = segment_recording(x, SR, SegmentConfig())
    (seg,) = result.segments
    assert seg.short and len(result.stretches) == 2 and seg.parts == tuple(result.stretches)
    assert seg.duration_ms == result.nonsilent_ms and 2600 <= seg.duration_ms <= 2800
    assert Segment.from_spans(result.stretches, short=True) == seg
    # under --min-keep: nothing; --min-keep 4: nothing (the strict rule)
    assert segment_recording(x, SR, SegmentConfig(min_keep=3.0)).segments == []
    assert segment_recording(x, SR, STRICT).segments == []
    # contiguous mode keeps its rule: each stretch on its own
    assert segment_recording(x, SR, SegmentConfig(mode="contiguous")).segments == []
    # --max-gap: one run only when no silence is longer than the gap
    assert len(segment_recording(x, SR, SegmentConfig(max_gap=1.0)).segments) == 1
    assert segment_recording(x, SR, SegmentConfig(max_gap=0.3)).segments == []


def test_min_keep_is_validated_with_the_value_and_the_fix():
    assert SegmentConfig().min_keep == 2.0 and SegmentConfig().to_dict()["min_keep"] == 2.0
    assert SegmentConfig(min_seconds=1.5, max_seconds=3.0).min_keep == 1.5     # capped at --min-seconds
    for bad in (0.0, -1.0, 4.5, float("nan")):
        with pytest.raises(ValueError, match="--min-keep") as err:
            SegmentConfig(min_keep=bad)
        assert "\n" not in str(err.value) and "--min-seconds" in str(err.value)
    with pytest.raises(ValueError, match=r"--min-keep must be .* got 4\.5"):
        SegmentConfig(min_keep=4.5)


# ----------------------------------------------------------------------------- accounting and warning

def _accounts(pairs):
    return [{"nonsilent_seconds": float(n), "kept_seconds": float(k), "dropped_seconds": float(n - k),
             "segments": int(k // 4), "short_segments": 0} for n, k in pairs]


def test_imbalance_warning_fires_more_than_10_points_below_the_overall_fraction():
    assert IMBALANCE_POINTS == 10
    # best 95 %, overall 90 %, one value 75 %: 0.79 x the best (the old 0.5 ratio was silent)
    labels = [{"spk": "a"}] * 3 + [{"spk": "b"}]
    acc = label_accounting(labels, _accounts([(100, 95)] * 3 + [(100, 75)]))
    assert acc["spk"]["a"]["kept_fraction"] == pytest.approx(0.95)
    (warning,) = imbalance_warnings(acc)
    assert warning.startswith("label 'spk': spk=b kept 75 %") and "90 %" in warning and "spk=a" not in warning
    # all values within 10 points of the overall: quiet
    acc = label_accounting(labels, _accounts([(100, 95)] * 3 + [(100, 86)]))
    assert imbalance_warnings(acc) == []
    assert len(imbalance_warnings(acc, points=5)) == 1


def test_empty_label_values_are_missing_not_a_class():
    labels = [{"lang": "en"}, {"lang": "es"}, {"lang": ""}, {"lang": "  "}, {"lang": float("nan")}, {"lang": None},
              {"lang": "es"}]
    accounts = _accounts([(10, 10), (10, 10), (10, 0), (10, 0), (10, 0), (10, 0), (10, 9)])
    acc = label_accounting(labels, accounts)
    assert set(acc["lang"]) == {"en", "es"}
    assert acc["lang"]["es"]["files"] == 2 and acc["lang"]["en"]["files"] == 1
    assert imbalance_warnings(acc) == []            # the empty values kept nothing, and are not a class
    # a column whose only other value is empty has one class: not accounted
    assert label_accounting([{"x": "a"}, {"x": ""}], _accounts([(10, 10), (10, 0)])) == {}


# ----------------------------------------------------------------------------- export and resume

class _StandIn(Encoder):
    """A deterministic stand-in encoder (no torch): the clip length and a few statistics."""

    name = "stand-in-short"

    def load(self, model=None, device="cpu"):
        self.dim, self.sample_rate, self.model = 4, SR, "none"
        return self

    def embed(self, waves):
        return np.stack([[w.shape[0] / SR, float(np.mean(w)), float(np.std(w)), float(np.abs(np.diff(w)).sum())]
                         for w in waves]).astype(np.float32)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setitem(ENCODERS, _StandIn.name, _StandIn)
    return _StandIn


def test_jsae_embed_stores_short_segments_and_refuses_a_resume_with_another_min_keep(planted, tmp_path, stand_in,
                                                                                      capsys):
    from jsae.embed.cli import main
    from jsae.store import open_store

    manifest, _, plan, _ = planted
    out = tmp_path / "store"
    common = ["--manifest", str(manifest), "--encoder", stand_in.name, "--rows-per-shard", "16", "--no-progress"]
    assert main(common + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "segmentation (joined): kept" in printed and "short" in printed and "WARNING" not in printed
    store = open_store(out)
    meta, x = store.metadata, store.read()
    assert meta["short"].dtype == bool and int(meta["short"].sum()) == int(plan.metadata()["short"].sum())
    np.testing.assert_allclose(x[:, 0], meta.duration.to_numpy(), atol=1e-6)    # the encoder got the whole clip
    assert (meta.loc[meta["short"], "duration"] < 4.0).all() and (meta.loc[~meta["short"], "duration"] >= 4.0).all()
    assert store.info["segmentation"]["min_keep"] == 2.0
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["segmentation_accounting"]
    assert acc["imbalance_points"] == IMBALANCE_POINTS and acc["warnings"] == []
    assert acc["totals"]["files_kept"] >= 0.98 * acc["totals"]["files"] and acc["totals"]["kept_fraction"] >= 0.95
    # resuming with another --min-keep is refused, naming it
    assert main(common + ["--out", str(out), "--min-keep", "3"]) == 2
    err = capsys.readouterr().err
    assert "segmentation.min_keep: store has 2.0, this command gives 3.0" in err and err.count("\n") == 1
    # --min-keep 4: the strict rule, and the warning names the short-clip value
    out4 = tmp_path / "strict"
    assert main(common + ["--out", str(out4), "--min-keep", "4"]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: label 'lang': lang=en kept" in printed
    assert len(open_store(out4).metadata) == int((~meta["short"]).sum())
    # a bad value: one line naming the option
    assert main(common + ["--out", str(tmp_path / "bad"), "--min-keep", "5"]) == 2
    err = capsys.readouterr().err
    assert "--min-keep" in err and err.count("\n") == 1


def test_a_plan_made_before_min_keep_resumes_with_the_strict_rule_only(tmp_path):
    wanted = lambda seg: {"inputs": {"audio_dir": "/x"}, "segmentation": seg.to_dict()}  # noqa: E731
    old = {"inputs": {"audio_dir": "/x"},
           "segmentation": {k: v for k, v in SegmentConfig().to_dict().items() if k != "min_keep"}}
    _check_settings(tmp_path, old, wanted(STRICT))
    with pytest.raises(ExportError, match="segmentation.min_keep: store has 4.0, this command gives 2.0"):
        _check_settings(tmp_path, old, wanted(SegmentConfig()))
