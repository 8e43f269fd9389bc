"""Per-segment acoustic descriptors (jsae/embed/describe.py): openSMILE's eGeMAPS functionals and
silero-vad's speech probability, at embed time (``jsae embed``) and afterwards (``jsae describe``).

The tools are checked on signals whose answer is known: harmonic tones of a given F0 (its
semitones above 27.5 Hz, and H1-H2 from the harmonics' amplitude ratio), speech synthesised
by espeak-ng (a missing espeak-ng is a failure, not a skip) against music-like tones and
white noise. The stores are made by real ``jsae embed`` runs with the offline resemblyzer
encoder (its weights ship in its package) on generated recordings.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.embed  # the embed + describe extras: `pytest -m 'not embed'` leaves it out
pytest.importorskip("resemblyzer")
pytest.importorskip("soundfile")
# opensmile and silero_vad (the describe extra, installed by `make setup`) are not imported here:
# importing silero_vad sets torch to one thread for the whole process, which would change the
# embeddings later tests compute in this process; jsae.embed.describe loads both and restores it.

import jsae.embed.describe as describe  # noqa: E402
from jsae.embed.audio import load_audio  # noqa: E402
from jsae.embed.cli import main as embed_main  # noqa: E402
from jsae.embed.describe import (ACOUSTIC_COLUMNS, COLUMNS, EGEMAPS_NAMES, ERROR_COLUMN, VALUE_COLUMNS,  # noqa: E402
                            describe_waves, egemaps, vad)
from embed_support import REPO, write_recording  # noqa: E402
from jsae.store import StoreError, add_columns, open_store, write_store  # noqa: E402
from jsae.sweeps.cli import main as jsae  # noqa: E402

SR = 16000
SENTENCE = ("The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden gate. "
            "Please hold the line.")
F0_COLUMN = "acoustic.F0semitoneFrom27.5Hz_sma3nz_amean"


def semitones(f0: float) -> float:
    """openSMILE's F0semitoneFrom27.5Hz: 12 log2(F0 / 27.5 Hz)."""
    return 12.0 * np.log2(f0 / 27.5)


def harmonic_tone(f0: float, seconds: float = 3.0, sample_rate: int = SR, ratio: float = 0.6) -> np.ndarray:
    """Five harmonics of ``f0`` with amplitudes 1, ratio, ratio², … (peak 0.3)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = sum(ratio ** k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(5))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def music(seconds: float = 4.0, sample_rate: int = SR) -> np.ndarray:
    """Plucked notes (three harmonics each, exponential decay), a new note every 0.5 s, chords overlapping."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = np.zeros_like(t)
    for i, f in enumerate([261.63, 329.63, 392.0, 523.25, 440.0, 349.23, 293.66, 246.94]):
        start = 0.5 * i
        envelope = np.where(t >= start, np.exp(-3.0 * (t - start)), 0.0)
        x += sum(a * envelope * np.sin(2 * np.pi * f * (h + 1) * t) for h, a in enumerate((1.0, 0.5, 0.25)))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def espeak(text: str, path) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed; these tests need it to synthesise speech "
                    "(Debian/Ubuntu: apt-get install -y espeak-ng).")
    subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------------------- the column table

def table_rows(doc: str) -> list[tuple[str, str, str]]:
    """``(column, meaning, unit)`` of the reST simple table in ``doc``, cut at the ``====`` ruler's columns."""
    lines = doc.splitlines()
    rulers = [i for i, line in enumerate(lines) if line.startswith("===") and line.count(" ") == 2]
    assert len(rulers) == 3, "one table: ruler, header, ruler, rows, ruler"
    starts = [m.start() for m in re.finditer(r"=+", lines[rulers[0]])]
    rows = []
    for line in lines[rulers[1] + 1: rulers[2]]:
        if line.strip():
            name, meaning, unit = (line[a:b].strip() for a, b in zip(starts, starts[1:] + [None]))
            rows.append((name.strip("`"), meaning, unit))
    return rows


def test_the_module_table_documents_every_column_once_and_matches_opensmile():
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    assert tuple(smile.feature_names) == EGEMAPS_NAMES and len(EGEMAPS_NAMES) == 88
    rows = table_rows(describe.__doc__)
    assert [name for name, _, _ in rows] == list(COLUMNS)
    assert all(meaning and unit for _, meaning, unit in rows)
    units = {name: unit for name, _, unit in rows}
    assert units[F0_COLUMN] == "st" and units["acoustic.F1frequency_sma3nz_amean"] == "Hz"
    assert units["acoustic.MeanVoicedSegmentLengthSec"] == "s" and units["vad.speech_prob"] == "0-1"


def test_import_embed_loads_no_tool():
    heavy = "('torch', 'opensmile', 'silero_vad', 'audinterface', 'nemo')"
    code = f"import sys, embed, jsae.embed.describe, jsae.embed.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ----------------------------------------------------------------------------- the tools

def test_describing_leaves_torchs_thread_count_as_it_was():
    """silero_vad's import sets torch to one thread for the whole process; describing must not
    (the speaker encoder's sums would change order, and resumed exports would differ in the
    last bits from uninterrupted ones)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        describe.describe_waves([np.sin(np.linspace(0, 900, 16000)).astype(np.float32)], 16000)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_egemaps_f0_of_harmonic_tones_in_semitones_from_27_5_hz():
    for f0, rate in ((110.0, SR), (220.0, SR), (220.0, 8000)):        # 8 kHz input: resampled to 16 kHz
        d = egemaps(harmonic_tone(f0, sample_rate=rate), rate)
        assert list(d) == list(ACOUSTIC_COLUMNS)
        assert abs(d[F0_COLUMN] - semitones(f0)) < 1.0, (f0, rate, d[F0_COLUMN])
        assert d["acoustic.F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2"] < 0.5       # a steady pitch
        # H1-H2: the 2nd harmonic is 0.6 x the first, 20 log10(1 / 0.6) = 4.4 dB
        assert d["acoustic.logRelF0-H1-H2_sma3nz_amean"] == pytest.approx(4.44, abs=0.5)
        assert d["acoustic.MeanVoicedSegmentLengthSec"] > 2.0                    # voiced throughout
    low, high = egemaps(harmonic_tone(110.0), SR), egemaps(harmonic_tone(220.0), SR)
    assert high[F0_COLUMN] - low[F0_COLUMN] == pytest.approx(12.0, abs=0.5)      # an octave


def test_vad_speech_probability_is_high_on_speech_and_low_on_music_and_noise(tmp_path):
    espeak(SENTENCE, tmp_path / "speech.wav")
    import soundfile as sf

    speech, rate = sf.read(str(tmp_path / "speech.wav"), dtype="float32")
    assert rate != SR                                                 # espeak-ng writes 22.05 kHz
    said = vad(speech, rate)
    assert list(said) == ["vad.speech_prob", "vad.speech_fraction"]
    assert said["vad.speech_prob"] > 0.5 and said["vad.speech_fraction"] > 0.5, said
    noise = (0.1 * np.random.default_rng(0).standard_normal(4 * SR)).astype(np.float32)
    for name, x in (("music", music()), ("white noise", noise)):
        d = vad(x, SR)
        assert d["vad.speech_prob"] < 0.5 and d["vad.speech_fraction"] < 0.5, (name, d)


def test_describe_waves_gives_one_row_per_segment_and_failures_stay_in_their_row():
    waves = [harmonic_tone(150.0, 3.0), np.zeros(100, np.float32), np.full(SR, np.nan, np.float32),
             harmonic_tone(200.0, 4.5), harmonic_tone(120.0, 2.0, sample_rate=8000)]
    frame = describe_waves(waves, SR, batch_size=4)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(waves)
    assert all(frame[c].dtype == np.float32 for c in VALUE_COLUMNS)
    good = [0, 3]
    assert (frame.loc[good, ERROR_COLUMN] == "").all() and np.isfinite(frame.loc[good, list(VALUE_COLUMNS)]).all().all()
    assert frame.loc[1, list(VALUE_COLUMNS)].isna().all() and "too short" in frame.loc[1, ERROR_COLUMN]
    assert frame.loc[2, list(VALUE_COLUMNS)].isna().all() and "NaN or Inf" in frame.loc[2, ERROR_COLUMN]
    # batches of similar length give what one segment at a time gives
    single = describe_waves(waves, SR, batch_size=1)
    pd.testing.assert_frame_equal(frame[list(ACOUSTIC_COLUMNS)], single[list(ACOUSTIC_COLUMNS)])
    np.testing.assert_allclose(frame[["vad.speech_prob", "vad.speech_fraction"]].to_numpy(),
                               single[["vad.speech_prob", "vad.speech_fraction"]].to_numpy(), atol=1e-5)
    assert abs(frame.loc[0, F0_COLUMN] - semitones(150.0)) < 1.0


# ----------------------------------------------------------------------------- stores

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Synthesised speech (22.05 kHz), a 9 s tone recording (flac: two segments) and one at
    8 kHz of two tones apart (one segment of two spans)."""
    root = tmp_path_factory.mktemp("describe-corpus")
    espeak(SENTENCE, root / "speech.wav")
    write_recording(root / "tones.flac", [("silence", 0.3), ("speech", 9.0, 150.0), ("silence", 0.5)], seed=2)
    write_recording(root / "tones8k.wav", [("silence", 0.5), ("speech", 2.5, 120.0), ("silence", 0.6),
                                           ("speech", 3.0, 180.0), ("silence", 0.4)], sample_rate=8000, seed=1)
    return root


def embed_args(audio, out, *extra):
    return ["--audio-dir", str(audio), "--encoder", "resemblyzer", "--out", str(out), "--rows-per-shard", "2",
            "--batch-size", "4", "--device", "cpu", "--no-progress", "-q", *extra]


@pytest.fixture(scope="module")
def described(corpus, tmp_path_factory):
    """A store made by ``jsae embed`` with its descriptors (the default)."""
    out = tmp_path_factory.mktemp("described") / "store"
    assert embed_main(embed_args(corpus, out)) == 0
    return out


@pytest.fixture(scope="module")
def plain(corpus, tmp_path_factory):
    """The same export with ``--no-describe``."""
    out = tmp_path_factory.mktemp("plain") / "store"
    assert embed_main(embed_args(corpus, out, "--no-describe")) == 0
    return out


def segment_wave(root, row) -> np.ndarray:
    """A segment's 16 kHz audio as the encoder saw it: its spans in the file, concatenated."""
    x = load_audio(root / row["source"], SR)
    return np.concatenate([x[round(a * SR): round(a * SR) + round((b - a) * SR)] for a, b in json.loads(row["spans"])])


def test_jsae_embed_describes_every_row_on_the_joined_audio_of_its_spans(described, corpus):
    store = open_store(described)
    meta = store.metadata
    assert list(meta.columns[-len(COLUMNS):]) == list(COLUMNS) and len(meta) == 4
    assert (meta[ERROR_COLUMN] == "").all() and np.isfinite(meta[list(VALUE_COLUMNS)].to_numpy()).all()
    assert store.info["describe"]["producer"] == "jsae embed" and store.info["describe"]["failed"] == 0
    assert set(store.info["describe"]["versions"]) == {"opensmile", "silero-vad"}
    summary = json.loads((described / "summary.json").read_text())
    assert summary["describe"]["described"] == 4 and summary["describe"]["failed"] == []
    # the segments are what was described: recomputed from the files, span by span
    joined = meta[meta.spans.map(lambda s: len(json.loads(s)) >= 2)]
    assert len(joined) >= 2                                      # speech.wav and tones8k.wav: two spans each
    rows = meta.to_dict("records")
    again = describe_waves([segment_wave(corpus, r) for r in rows], SR)
    np.testing.assert_allclose(meta[list(VALUE_COLUMNS)].to_numpy(), again[list(VALUE_COLUMNS)].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    # ... and not just the first span of a joined segment (the 8 kHz one: 120 Hz, then 180 Hz)
    r = joined[joined.source == "tones8k.wav"].iloc[0]
    a, b = json.loads(r["spans"])[0]
    first = describe_waves([load_audio(corpus / r["source"], SR, offset=a, duration=b - a)], SR).iloc[0]
    assert abs(first[F0_COLUMN] - semitones(120.0)) < 1.0
    assert r[F0_COLUMN] > first[F0_COLUMN] + 2.0                 # the 180 Hz part raises the mean pitch
    speech = meta[meta.source == "speech.wav"].iloc[0]
    assert speech["vad.speech_prob"] > 0.5 and speech["vad.speech_fraction"] > 0.5


def copy_store(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_jsae_describe_adds_the_same_columns_to_a_store_and_refuses_to_clobber_them(plain, described, tmp_path,
                                                                                    capsys):
    out = copy_store(plain, tmp_path / "store")
    before = open_store(out)
    meta0, x0 = before.metadata, before.read()
    assert not set(COLUMNS) & set(meta0.columns)
    assert jsae(["describe", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "4 of 4 segments described" in printed and "0 failed" in printed
    after = open_store(out)
    meta = after.metadata
    assert list(meta.columns) == list(meta0.columns) + list(COLUMNS)
    pd.testing.assert_frame_equal(meta[list(meta0.columns)], meta0)     # rows and their order unchanged
    np.testing.assert_array_equal(after.read(), x0)
    assert after.info["columns"] == list(meta.columns) and after.info["describe"]["producer"] == "jsae describe"
    # the same columns as jsae embed computes (same audio; the speech detector batches differently)
    ref = open_store(described).metadata
    np.testing.assert_allclose(meta[list(VALUE_COLUMNS)].to_numpy(), ref[list(VALUE_COLUMNS)].to_numpy(),
                               rtol=1e-4, atol=1e-6)
    assert (meta[ERROR_COLUMN] == "").all()
    # again without --overwrite: refused, one line, nothing changed
    table = (out / "metadata.parquet").read_bytes()
    assert jsae(["describe", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("jsae describe: error: ") and "already has the descriptor columns" in line
    assert "--overwrite" in line and (out / "metadata.parquet").read_bytes() == table
    assert jsae(["describe", str(out), "--no-progress", "--overwrite", "-q"]) == 0
    assert list(open_store(out).metadata.columns) == list(meta.columns)
    assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []


def test_missing_and_corrupt_audio_rows_get_nan_and_the_reason_the_rest_are_described(corpus, tmp_path, capsys):
    audio = shutil.copytree(corpus, tmp_path / "audio")
    out = tmp_path / "store"
    assert embed_main(embed_args(audio, out, "--no-describe")) == 0
    (audio / "tones.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)        # corrupt
    (audio / "tones8k.wav").unlink()                                           # missing
    capsys.readouterr()
    assert jsae(["describe", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 of 4 segments described" in printed and "3 failed" in printed
    meta = open_store(out).metadata
    bad = meta[meta.source != "speech.wav"]
    assert len(bad) == 3 and bad[list(VALUE_COLUMNS)].isna().all().all()
    for _, r in bad.iterrows():
        assert r["id"] in printed and r["source"] in r[ERROR_COLUMN]
    assert bad[bad.source == "tones.flac"][ERROR_COLUMN].str.contains("corrupt").all()
    assert bad[bad.source == "tones8k.wav"][ERROR_COLUMN].str.contains("not found").all()
    good = meta[meta.source == "speech.wav"].iloc[0]
    assert good[ERROR_COLUMN] == "" and np.isfinite(good[list(VALUE_COLUMNS)].to_numpy(dtype=float)).all()
    # no audio at all: refused, nothing written
    (audio / "speech.wav").unlink()
    table = (out / "metadata.parquet").read_bytes()
    assert jsae(["describe", str(out), "--no-progress", "--overwrite"]) == 2
    line = one_error_line(capsys)
    assert "no segment" in line and "could be described" in line and "speech.wav" in line
    assert (out / "metadata.parquet").read_bytes() == table


def test_jsae_describe_without_audio_folders_is_one_line_naming_audio_root(tmp_path, capsys):
    meta = pd.DataFrame({"id": ["a:0", "b:0"], "source": ["a.wav", "b.wav"], "offset": [0.0, 0.0],
                         "duration": [2.0, 2.0]})
    store = write_store(tmp_path / "store", np.ones((2, 3), np.float32), meta).path
    assert jsae(["describe", str(store)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("jsae describe: error: ") and "--audio-root" in line
    assert jsae(["describe", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in one_error_line(capsys)
    # with --audio-root: offset/duration rows (no spans) are read from there
    sr = 16000
    import soundfile as sf

    (tmp_path / "audio").mkdir()
    sf.write(str(tmp_path / "audio" / "a.wav"), harmonic_tone(220.0, 3.0), sr)
    assert jsae(["describe", str(store), "--audio-root", str(tmp_path / "audio"), "--no-progress", "-q"]) == 0
    described_meta = open_store(store).metadata
    a, b = described_meta.iloc[0], described_meta.iloc[1]
    assert a[ERROR_COLUMN] == "" and abs(a[F0_COLUMN] - semitones(220.0)) < 1.0
    assert "b.wav not found" in b[ERROR_COLUMN] and np.isnan(b[F0_COLUMN])


def test_an_interrupted_export_resumes_with_descriptors_for_every_row(corpus, described, tmp_path, capsys):
    out = tmp_path / "store"
    assert embed_main(embed_args(corpus, out, "--num-shards", "2", "--shard-index", "0")) == 0
    progress = out / "progress"
    assert (progress / "shard-00000.done").exists() and (progress / "shard-00000.describe.parquet").exists()
    assert not (progress / "shard-00001.done").exists()
    # a shard marked done without its descriptors (a run killed in between, an older export) is redone
    (progress / "shard-00000.describe.parquet").unlink()
    assert embed_main(embed_args(corpus, out, "--num-shards", "2", "--shard-index", "0")) == 0
    assert (progress / "shard-00000.describe.parquet").exists()
    # resuming with another descriptor setting is refused, naming it
    capsys.readouterr()
    assert embed_main(embed_args(corpus, out, "--num-shards", "2", "--shard-index", "1", "--no-describe")) == 2
    line = one_error_line(capsys)
    assert "describe: store has True, this command gives False" in line and "--describe" in line
    assert embed_main(embed_args(corpus, out, "--num-shards", "2", "--shard-index", "1")) == 0   # merges
    meta, ref = open_store(out).metadata, open_store(described).metadata
    pd.testing.assert_frame_equal(meta.drop(columns=list(VALUE_COLUMNS)), ref.drop(columns=list(VALUE_COLUMNS)))
    np.testing.assert_allclose(meta[list(VALUE_COLUMNS)].to_numpy(), ref[list(VALUE_COLUMNS)].to_numpy(),
                               rtol=1e-5, atol=1e-6)


def test_missing_tools_are_one_line_naming_the_extra(monkeypatch, described, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "opensmile", None)         # `import opensmile` raises ImportError
    monkeypatch.setattr(describe, "_TOOLS", [])
    audio = tmp_path / "audio"
    write_recording(audio / "a.wav", [("speech", 5.0, 150.0)])
    assert embed_main(embed_args(audio, tmp_path / "store")) == 2
    line = one_error_line(capsys)
    assert line.startswith("jsae embed: error: ") and "pip install -e '.[describe]'" in line and "--no-describe" in line
    assert embed_main(embed_args(audio, tmp_path / "store", "--no-describe")) == 0   # without descriptors: fine
    out = copy_store(described, tmp_path / "copy")
    assert jsae(["describe", str(out), "--overwrite", "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("jsae describe: error: ") and "pip install -e '.[describe]'" in line


# ----------------------------------------------------------------------------- jsae.store.add_columns

def test_add_columns_checks_rows_and_order_and_never_clobbers_silently(tmp_path):
    meta = pd.DataFrame({"id": ["r0", "r1", "r2"], "lang": ["en", "es", "en"]})
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_store(tmp_path / "s", x, meta).path
    table = (path / "metadata.parquet").read_bytes()
    cases = [
        (pd.DataFrame({"id": ["r0", "r1"], "f": [1.0, 2.0]}), "has 3"),
        (pd.DataFrame({"id": ["r0", "r2", "r1"], "f": [1.0, 2.0, 3.0]}), "row 1 of the new columns has id 'r2'"),
        (pd.DataFrame({"f": [1.0, 2.0, 3.0]}), "'id' column"),
        (pd.DataFrame({"id": ["r0", "r1", "r2"], "lang": ["x", "y", "z"]}), "already has the column(s) lang"),
    ]
    for frame, message in cases:
        with pytest.raises(StoreError, match=re.escape(message)):
            add_columns(path, frame)
        assert (path / "metadata.parquet").read_bytes() == table
    info = add_columns(path, pd.DataFrame({"id": ["r0", "r1", "r2"], "f": [1.0, 2.0, 3.0]}), attrs={"made": "test"})
    store = open_store(path)
    assert list(store.metadata.columns) == ["id", "lang", "f"] == info["columns"] == store.info["columns"]
    assert store.info["made"] == "test" and list(store.metadata.f) == [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(store.read(), x)
    add_columns(store, pd.DataFrame({"id": ["r0", "r1", "r2"], "lang": ["x", "y", "z"]}), overwrite=True)
    assert list(open_store(path).metadata.columns) == ["id", "lang", "f"]
    assert list(open_store(path).metadata.lang) == ["x", "y", "z"]
    assert [p.name for p in path.iterdir() if ".tmp" in p.name] == []
