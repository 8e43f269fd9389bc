"""The feature-atlas site (`jsae atlas`, :mod:`jsae.atlas`): files, audio, safety, browser, command.

A small store (48 rows, 8-d) with real audio: three 16 kHz WAV recordings under the store's
audio root, four rows whose ``clip`` column names an already cut Ogg/Opus file in the
store folder, a source outside the roots (an absolute path elsewhere and a ``../`` escape),
a missing file and an undecodable one; a categorical ``kind`` and ``speaker`` (two hostile
values: a ``<script>`` and an ``<img onerror>``), a numeric ``snr`` and a descriptor column
``acoustic.loudness_amean``. A hand-made run (model
files written with :func:`jsae.runs.modelfiles.write_model_files`) of two TopK models whose
encoders are the identity on the 8 dimensions, so the planted latents are known: latent 0
fires on the music rows, latent 1 on the audio test rows 40–47, latent 2 on the hostile rows,
latent 3 on high-``snr`` rows; the second model's extra latents never fire (dead pages). A
probe folder of the run names k2_L8 latent 0 (the "appears in" link).

Checks: (a) the files (index, per-model index, a page per latent, CSV, JSON) and real
Ogg/Opus clips of the segment's duration; (b) clips are cut once: a rebuild cuts and copies
nothing, a ``clip`` file is copied byte for byte; (c) audio outside the roots, missing or
undecodable gets no player but the reason; (d) Chromium opens the pages from file:// URLs
without console errors or CSP violations, every player loads its duration, sorting and the
search (box and ``?q=``) work, and the hostile metadata is shown as text and never runs;
(e) the command: a run, the one output rule (another ``--top`` refused naming --overwrite,
accepted with it), a missing store as one line with exit status 2.
"""
from __future__ import annotations

import errno
import json
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jsae.core.activation import TopK
from jsae.core.normalize import Normalizer
from jsae.core.spec import ModelSpec
from jsae.runs.modelfiles import write_model_files
from jsae.store import write_store

REPO = Path(__file__).resolve().parents[1]
M, N, SR = 8, 48, 16000
SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"
OUTSIDE = "outside the allowed roots"


# ----------------------------------------------------------------------------- fixtures


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * noise).astype(np.float32)


def _segment_seconds(row: pd.Series) -> float:
    """What the encoder heard: the joined spans, else the duration."""
    spans = row["spans"]
    if isinstance(spans, str) and spans:
        return float(sum(b - a for a, b in json.loads(spans)))
    return float(row["duration"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("atlas-corpus")
    audio, elsewhere = root / "audio", root / "elsewhere"
    audio.mkdir()
    elsewhere.mkdir()
    for i in range(3):
        sf.write(audio / f"tone{i}.wav", _tone(8.0, 220 + 110 * i, i), SR)
    sf.write(elsewhere / "outside.wav", _tone(4.0, 500, 9), SR)
    (audio / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(64))

    rng = np.random.default_rng(0)
    rows = []
    for r in range(N):
        off = 0.25 * (r % 12)
        spans = None if r % 5 == 0 else json.dumps([[off, off + 1.0], [off + 1.5, off + 2.0]])
        rows.append({"id": f"seg-{r:02d}", "source": f"tone{r % 3}.wav", "offset": off, "duration": 1.5,
                     "spans": spans, "clip": "", "kind": "music" if r % 2 == 0 else "speech",
                     "speaker": ["ann", "bob", "cy"][r % 3], "snr": float(rng.normal(0, 1))})
    table = pd.DataFrame(rows)
    table.loc[3, "speaker"] = SCRIPT
    table.loc[4, "speaker"] = IMG
    for r in range(40, 44):
        table.loc[r, "clip"] = f"clips/c{r}.opus"
    table.loc[44, "source"] = str(elsewhere / "outside.wav")   # an absolute path outside the roots
    table.loc[45, "source"] = "../elsewhere/outside.wav"       # a relative escape
    table.loc[46, "source"] = "missing.wav"
    table.loc[47, "source"] = "bad.wav"
    high_snr = np.arange(N) % 4 == 1
    table.loc[high_snr, "snr"] += 3.0
    # a descriptor column (jsae describe): left out of the examples tables but for its own latent's page
    table["acoustic.loudness_amean"] = rng.normal(0, 1, N) + 3.0 * (np.arange(N) % 4 == 2)

    x = 0.1 * rng.standard_normal((N, M))
    x[table["kind"].to_numpy() == "music", 0] += 2.0     # latent 0: kind = music
    x[40:48, 1] += 3.0                                    # latent 1: the audio test rows
    x[[3, 4], 2] += 3.0                                   # latent 2: the hostile rows on top
    x[10:16, 2] += 1.0
    x[high_snr, 3] += 1.5                                 # latent 3: high snr
    for r in range(N):
        x[r, 4 + r % 4] += 1.0                            # latents 4-7: a quarter of the rows each
    store = write_store(root / "store", x.astype(np.float32), table, attrs={"audio_roots": [str(audio)]}).path
    (store / "clips").mkdir()
    for r in range(40, 44):
        sf.write(store / "clips" / f"c{r}.opus", _tone(1.2, 330, r), SR, format="OGG", subtype="OPUS")
    return SimpleNamespace(root=root, audio=audio, store=store, table=table)


def _params(L: int, rng) -> dict[str, np.ndarray]:
    w = np.zeros((L, M), np.float32)
    w[:M] = np.eye(M)
    extra = rng.standard_normal((L - M, M))
    w[M:] = extra / np.linalg.norm(extra, axis=1, keepdims=True)
    b = np.full(L, -0.5, np.float32)
    b[M:] = -50.0                                         # never fire: dead latents
    return {"W_enc": w.T.copy(), "b_enc": b, "W_dec": w, "b_pre": np.zeros(M, np.float32)}


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    """A finished run of two hand-made models (k2_L8, k3_L16), and a probe folder naming k2_L8 latent 0."""
    run = tmp_path_factory.mktemp("atlas-run") / "run"
    run.mkdir()
    shutil.copyfile(REPO / "configs" / "default.yaml", run / "config.yaml")
    rng = np.random.default_rng(1)
    specs = [ModelSpec(8, TopK(2)), ModelSpec(16, TopK(3))]
    norm = Normalizer("none", np.zeros(M), np.ones(M))
    write_model_files(run, [(s.to_dict(), _params(s.latent_size, rng)) for s in specs], normalizer=norm, step=1,
                      total_steps=1, complete=True)
    (run / "sweep.json").write_text(json.dumps({"step": 1, "total_steps": 1, "complete": True, "dim": M,
                                                "models": [s.to_dict() for s in specs],
                                                "data": {"source": str(corpus.store)}}))
    probe = run / "analysis" / "probe-kind-music"
    probe.mkdir(parents=True)
    (probe / "analysis.json").write_text(json.dumps({
        "analysis": "probe", "params": {}, "summary": {}, "files": [], "tables": {},
        "features": [{"k": 2, "latent_size": 8, "latent": 0, "why": "best F1 for kind = music <b>!</b>"},
                     {"k": 9, "latent_size": 99, "latent": 0, "why": "a model the run does not have"}]}))
    return run


@pytest.fixture(scope="module")
def built(corpus, run, tmp_path_factory) -> SimpleNamespace:
    """The atlas built twice into one folder (the second build reuses every clip)."""
    from jsae.atlas.site import build_site

    out = tmp_path_factory.mktemp("atlas-out") / "atlas"
    t0 = time.perf_counter()
    first = build_site(run, corpus.store, out, progress=False)
    t1 = time.perf_counter()
    snapshot = {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()}
    second = build_site(run, corpus.store, out, progress=False)
    print(f"first build {t1 - t0:.1f} s, second {time.perf_counter() - t1:.1f} s")
    return SimpleNamespace(out=out, first=first, second=second, snapshot=snapshot)


def _clip_of(out: Path, row: int) -> dict | None:
    index = json.loads((out / "audio" / "clips.json").read_text())["clips"]
    found = [v for k, v in index.items() if k.startswith(f"{row}-")]
    return found[0] if found else None


# ----------------------------------------------------------------------------- (a) files


def test_every_page_and_table_is_written(built, run):
    out = built.out
    assert built.first.index == out / "index.html" and built.first.index.is_file()
    for model, L in (("k2_L8", 8), ("k3_L16", 16)):
        assert (out / model / "index.html").is_file()
        assert sorted(p.name for p in (out / model).glob("latent-*.html")) == sorted(
            f"latent-{j}.html" for j in range(L))
        lat = pd.read_csv(out / model / "latents.csv")
        assert list(lat["latent"]) == list(range(L)) and "description" in lat
    assert built.first.pages == 8 + 16 + 2 + 1 and built.first.latents == 24
    info = json.loads((out / "atlas.json").read_text())
    assert [m["name"] for m in info["models"]] == ["k2_L8", "k3_L16"]
    assert {m["name"]: m["dead"] for m in info["models"]} == {"k2_L8": 0, "k3_L16": 8}
    listed = set(info["files"])
    assert {"index.html", "atlas.css", "atlas.js", "k2_L8/latent-0.html", "k3_L16/latents.csv"} <= listed
    assert all((out / f).is_file() for f in listed)
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["analysis"] == "atlas" and analysis["summary"]["pages"] == 27
    # the run's report finds it like any analysis folder when it lies in RUN/analysis (the command's default)
    from jsae.outputs.folders import read_analyses

    assert any(a.get("analysis") == "probe" for _, a in read_analyses(run))


def test_the_planted_latents_are_described_from_their_statistics(built):
    lat = pd.read_csv(built.out / "k2_L8" / "latents.csv")
    assert "kind = music: P 1.00, R 1.00" in lat.loc[0, "description"]
    assert lat.loc[3, "correlate_column"] == "snr" and lat.loc[3, "correlate_d"] > 1
    page = (built.out / "k2_L8" / "latent-0.html").read_text()
    assert "kind = music: P 1.00, R 1.00" in page
    assert "24 of the 24 firing rows" in page and "recall 1.00" in page   # the evidence, stated
    assert 'href="../k3_L16/latent-0.html"' in page and "1.000" in page   # the same direction in the other model
    assert lat.loc[6, "correlate_column"] == "acoustic.loudness_amean"
    assert "<th>acoustic.loudness_amean</th>" not in page and "<th>snr</th>" in page   # descriptors left out ...
    loud = (built.out / "k2_L8" / "latent-6.html").read_text()
    assert '<th title="this latent\'s correlate">acoustic.loudness_amean</th>' in loud  # ... but its correlate's
    dead = (built.out / "k3_L16" / "latent-9.html").read_text()
    assert "dead: never fires" in dead and "<audio" not in dead and len(dead) < len(page) / 4


def test_clips_are_real_ogg_opus_of_the_segments_duration(built, corpus):
    index = json.loads((built.out / "audio" / "clips.json").read_text())["clips"]
    cut = {int(k.split("-")[0]): v for k, v in index.items() if v["mode"] == "cut"}
    assert len(cut) >= 20, sorted(cut)
    assert any(isinstance(corpus.table.loc[r, "spans"], str) for r in cut)     # joined spans
    assert any(not isinstance(corpus.table.loc[r, "spans"], str) for r in cut)  # offset + duration
    for row, rec in cut.items():
        info = sf.info(str(built.out / "audio" / rec["file"]))
        assert (info.format, info.subtype) == ("OGG", "OPUS"), rec["file"]
        assert rec["file"].endswith(".opus")
        assert abs(info.duration - _segment_seconds(corpus.table.loc[row])) < 0.05, (row, info.duration)
        kbits = (built.out / "audio" / rec["file"]).stat().st_size * 8 / info.duration / 1000
        assert kbits < 40, (rec["file"], kbits)                               # small compressed files


# ----------------------------------------------------------------------------- (b) cut once


def test_a_rebuild_cuts_nothing_and_clip_files_are_copied_byte_for_byte(built, corpus):
    first, second = built.first.clips, built.second.clips
    assert first["cut"] >= 20 and first["copied"] == 4 and first["reused"] == 0
    assert second["cut"] == 0 and second["copied"] == 0
    assert second["reused"] == first["cut"] + first["copied"]
    assert {p.name: p.stat().st_mtime_ns for p in (built.out / "audio").iterdir() if p.suffix == ".opus"} == \
        {k: v for k, v in built.snapshot.items() if k.endswith(".opus")}      # not even rewritten
    for r in range(40, 44):
        rec = _clip_of(built.out, r)
        assert rec["mode"] == "copy"
        assert (built.out / "audio" / rec["file"]).read_bytes() == (corpus.store / "clips" / f"c{r}.opus").read_bytes()
    # the summary the command prints
    assert "0 cut, 0 copied" in built.second.lines()[1]


# ----------------------------------------------------------------------------- (c) allowed roots


def test_audio_outside_the_roots_missing_or_broken_gets_a_reason_not_a_player(built):
    for row in (44, 45, 46, 47):
        assert _clip_of(built.out, row) is None
    reasons = built.first.clips["reasons"]
    assert reasons[OUTSIDE] == 2 and reasons["file not found"] == 1 and reasons["cannot be decoded"] == 1
    assert not any("outside" in p.name for p in (built.out / "audio").iterdir())
    page = (built.out / "k2_L8" / "latent-1.html").read_text()        # rows 40-47 are its only examples
    assert page.count(f"audio not available: {OUTSIDE}") == 2
    assert page.count("audio not available: file not found") == 1
    assert page.count("audio not available: cannot be decoded") == 1
    assert page.count("<audio ") == 4                                 # the four copied clips


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.bad: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = [a for a, _ in attrs]
        if tag == "style" or (tag == "script" and "src" not in names):
            self.bad.append(f"<{tag}> inline")
        self.bad += [f"<{tag} {a}=…>" for a in names if a == "style" or a.startswith("on")]
        src = dict(attrs).get("src") or dict(attrs).get("href") or ""
        if src.startswith(("http:", "https:", "//", "javascript:")):
            self.bad.append(f"<{tag}> remote {src}")


def test_no_inline_script_style_or_handler_and_the_csp_is_set(built):
    from jsae.atlas.site import CSP

    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    for page in [built.out / "index.html", *sorted(built.out.glob("*/*.html"))]:
        text = page.read_text()
        assert 'http-equiv="Content-Security-Policy"' in text, page
        parser = _Tags()
        parser.feed(text)
        assert parser.bad == [], (page, parser.bad)
    hostile = (built.out / "k2_L8" / "latent-2.html").read_text()
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in hostile
    assert "&lt;img src=x onerror=" in hostile and SCRIPT not in hostile and IMG not in hostile


# ----------------------------------------------------------------------------- (d) Chromium


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from test_analysis_browser import Chromium, chromium_binary

    b = Chromium(chromium_binary(), tmp_path_factory.mktemp("atlas-chromium"))
    b.call("Page.addScriptToEvaluateOnNewDocument", session=True,
           source="window.__csp = []; document.addEventListener('securitypolicyviolation', "
                  "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    yield b
    b.close()


def _poll(browser, expression: str, until, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = browser.evaluate(expression)
        if until(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _open(browser, url: str) -> dict:
    state = browser.open(url)
    assert state["errors"] == [], "\n".join(state["errors"])
    assert browser.evaluate("window.__csp") == [], "CSP violations"
    return state


def test_the_pages_open_without_errors_and_every_player_loads(browser, built):
    _open(browser, (built.out / "index.html").as_uri())
    assert browser.evaluate("document.querySelectorAll('tbody tr').length") == 2
    assert browser.evaluate("document.querySelector('a[href=\"k2_L8/index.html\"]') !== null")
    for page in ("k2_L8/latent-1.html", "k2_L8/latent-2.html", "k3_L16/latent-0.html"):
        _open(browser, (built.out / page).as_uri())
        n = browser.evaluate("document.querySelectorAll('audio').length")
        assert n >= 4, page
        got = _poll(browser, "Array.from(document.querySelectorAll('audio'), a => [a.dataset.duration || null, "
                             "a.dataset.error || null])", lambda v: all(d or e for d, e in v))
        assert all(e is None and d is not None and float(d) > 0.5 for d, e in got), (page, got)
        texts = browser.evaluate("Array.from(document.querySelectorAll('.dur'), s => s.textContent)")
        assert all(t.endswith(" s") for t in texts), texts
        assert browser.evaluate("window.__csp") == [] and browser.console_errors() == []


def test_hostile_metadata_is_shown_as_text_and_never_runs(browser, built):
    _open(browser, (built.out / "k2_L8" / "latent-2.html").as_uri())
    assert browser.evaluate("document.title") == "jsae atlas: k2_L8 latent 2"
    body = browser.evaluate("document.body.innerText")
    assert SCRIPT in body and IMG in body
    assert browser.evaluate("document.querySelectorAll('main img, main script').length") == 0


def _column(browser, i: int) -> list:
    return browser.evaluate(f"Array.from(document.querySelectorAll('#latents tbody tr'), "
                            f"r => r.cells[{i}].getAttribute('data-v'))")


def _click(browser, i: int) -> None:
    assert browser.evaluate(f"(() => {{ document.querySelectorAll('#latents thead th')[{i}].click(); "
                            "return true; })()")


def test_clicking_a_header_sorts_the_latents(browser, built):
    _open(browser, (built.out / "k3_L16" / "index.html").as_uri())
    rates = pd.read_csv(built.out / "k3_L16" / "latents.csv")["firing_rate"]
    _click(browser, 1)
    up = [float(v) for v in _column(browser, 1)]
    assert up == sorted(up) and up[0] == pytest.approx(rates.min(), abs=1e-5)
    _click(browser, 1)
    down = [float(v) for v in _column(browser, 1)]
    assert down == sorted(down, reverse=True) and down[0] == pytest.approx(rates.max(), abs=1e-5)
    first = int(browser.evaluate("document.querySelector('#latents tbody tr').cells[0].textContent"))
    assert rates[first] == pytest.approx(rates.max())
    _click(browser, 9)   # text: the descriptions
    texts = browser.evaluate("Array.from(document.querySelectorAll('#latents tbody tr'), "
                             "r => r.cells[9].textContent.trim().toLowerCase())")
    assert texts == sorted(texts)


def test_the_search_box_and_q_filter_the_latents(browser, built):
    lat = pd.read_csv(built.out / "k3_L16" / "latents.csv")
    visible = "document.querySelectorAll('#latents tbody tr:not([hidden])').length"
    _open(browser, (built.out / "k3_L16" / "index.html").as_uri() + "?q=dead")
    assert browser.evaluate("document.getElementById('search').value") == "dead"
    assert browser.evaluate(visible) == int((lat["status"] == "dead").sum()) == 8
    assert browser.evaluate("document.getElementById('count').textContent") == "8 of 16 latents"
    want = int(lat["description"].str.contains("music").sum())
    assert want >= 1
    browser.evaluate("(() => { const s = document.getElementById('search'); s.value = 'music'; "
                     "s.dispatchEvent(new Event('input')); return true; })()")
    assert browser.evaluate(visible) == want
    assert browser.evaluate("document.getElementById('count').textContent") == f"{want} of 16 latents"


# ----------------------------------------------------------------------------- links


def test_a_latent_named_by_an_analysis_links_to_its_folder(built, run):
    page = built.out / "k2_L8" / "latent-0.html"
    text = page.read_text()
    assert "best F1 for kind = music &lt;b&gt;!&lt;/b&gt;" in text
    href = text.split('<section id="appears">', 1)[1].split('href="', 1)[1].split('"', 1)[0]
    assert (page.parent / href).resolve() == (run / "analysis" / "probe-kind-music").resolve()
    assert '<section id="appears">' not in (built.out / "k2_L8" / "latent-1.html").read_text()


# ----------------------------------------------------------------------------- (e) the command


def _jsae(capsys, *argv):
    from jsae.sweeps.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, [line for line in cap.err.splitlines() if line.strip()]


def test_the_command_builds_refuses_other_parameters_and_overwrites(capsys, corpus, run, built, tmp_path):
    out = tmp_path / "atlas"
    shutil.copytree(built.out, out)              # an earlier atlas of the same parameters: a plain rerun
    rc, stdout, err = _jsae(capsys, "atlas", run, "--data", corpus.store, "--out", out)
    assert rc == 0, err
    assert f"index: {out / 'index.html'}" in stdout and "0 cut, 0 copied" in stdout and "4 unavailable" in stdout
    rc, _, err = _jsae(capsys, "atlas", run, "--data", corpus.store, "--out", out, "--top", "3")
    assert rc == 2 and len(err) == 1 and err[0].startswith("jsae atlas: error: ") and "--overwrite" in err[0], err
    assert "n_top: 10 there, 3 now" in err[0]
    rc, stdout, err = _jsae(capsys, "atlas", run, "--data", corpus.store, "--out", out, "--top", "3", "--per-band",
                            "1", "--overwrite", "--model", "k2_L8")
    assert rc == 0, err
    info = json.loads((out / "atlas.json").read_text())
    assert info["params"]["n_top"] == 3 and [m["name"] for m in info["models"]] == ["k2_L8"]
    assert not (out / "k3_L16").exists()                                       # the old model's pages are gone
    kept = {rec["file"] for rec in json.loads((out / "audio" / "clips.json").read_text())["clips"].values()}
    assert kept == {p.name for p in (out / "audio").glob("*.opus")}           # unused clips pruned


def test_the_default_folder_is_in_the_run_and_no_audio_writes_no_clip(capsys, corpus, run):
    rc, stdout, err = _jsae(capsys, "atlas", run, "--data", corpus.store, "--no-audio", "--k", "2")
    assert rc == 0, err
    out = run / "analysis" / "atlas-store"
    assert f"index: {out / 'index.html'}" in stdout and "audio: off" in stdout
    assert not (out / "audio").exists() and "<audio" not in (out / "k2_L8" / "latent-1.html").read_text()
    from jsae.outputs.folders import read_analyses

    assert [a["analysis"] for _, a in read_analyses(run)] == ["atlas", "probe"]


def test_bad_input_is_one_line_and_exit_2(capsys, corpus, run, tmp_path):
    rc, _, err = _jsae(capsys, "atlas", run, "--data", tmp_path / "missing", "--out", tmp_path / "a")
    assert rc == 2 and len(err) == 1 and err[0].startswith("jsae atlas: error: ") and "missing" in err[0], err
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    rc, _, err = _jsae(capsys, "atlas", run, "--data", corpus.store, "--out", notes)
    assert rc == 2 and len(err) == 1 and "not empty" in err[0], err
    assert sorted(p.name for p in notes.iterdir()) == ["mine.txt"]
    rc, _, err = _jsae(capsys, "atlas", run, "--data", corpus.store, "--out", corpus.store / "atlas")
    assert rc == 2 and len(err) == 1 and "store" in err[0], err
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- pieces


def test_segment_audio_cuts_the_pieces_the_report_plays(tmp_path):
    """:func:`jsae.report.audio.segment_audio` (the atlas's reader) gives the samples of the
    report's WAV player: the joined spans, or offset + duration."""
    import base64
    import io
    import wave

    from jsae.report.audio import AudioReadError, audio_src, segment_audio

    sr = 8000
    pcm = np.random.default_rng(3).integers(-20000, 20000, 3 * sr).astype("<i2")
    with wave.open(str(tmp_path / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    for offset, duration, spans in ((0.25, 0.625, json.dumps([[0.25, 0.5], [1.0, 1.125], [2.5, 2.75]])),
                                    (0.5, 0.25, None)):
        samples, rate = segment_audio(tmp_path / "a.wav", offset, duration, spans)
        src = audio_src(tmp_path / "a.wav", offset, duration, spans=spans)
        with wave.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), "rb") as w:
            want = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert rate == sr and samples.dtype == np.float32 and samples.shape == (len(want), 1)
        np.testing.assert_array_equal(np.rint(samples[:, 0] * 32768).astype(np.int64), want.astype(np.int64))
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(AudioReadError):
        segment_audio(tmp_path / "bad.wav", 0.0, 1.0)


def test_an_interrupted_first_build_is_resumed_and_its_clips_reused(corpus, run, tmp_path):
    from jsae.atlas.site import build_site, is_atlas_output

    out = tmp_path / "atlas"
    (out / "audio").mkdir(parents=True)
    (out / "audio" / "clips.json").write_text(json.dumps({"format": "jsae-atlas-clips", "version": 1, "clips": {}}))
    (out / ".build-999999999-deadbeef").mkdir()       # a killed build's temporary folder (no such process)
    assert is_atlas_output(out)
    summary = build_site(run, corpus.store, out, audio=False, progress=False)
    assert summary.index.is_file() and not (out / ".build-999999999-deadbeef").exists()


# ----------------------------------------------------------------------------- a clip that cannot be written


def _disk_full(*args, **kwargs):
    """Stands in for the function writing a clip (``encode_opus(samples, sr, dest)`` or
    ``_copy(src, dest)``) on a full disk."""
    raise OSError(errno.ENOSPC, "No space left on device", str(args[2] if len(args) > 2 else args[1]))


def _storage_line(message: str, out: Path) -> None:
    """The one-line StorageError of a clip that could not be written."""
    assert "\n" not in message and ".tmp" not in message, message
    assert message.startswith(f"no space left on device while writing the audio clips of the atlas {out / 'audio'}")
    assert "the previous atlas is unchanged" in message and "run the same command again" in message, message


@pytest.mark.parametrize("writer", ["encode_opus", "_copy"])
def test_a_clip_that_cannot_be_written_stops_the_build_as_one_storage_line_not_undecodable(corpus, run, tmp_path,
                                                                                            monkeypatch, writer):
    """A full disk while writing a cut (``encode_opus``) or copied (``_copy``) clip is the
    disk's problem: one StorageError line naming the audio folder and how to finish, never
    "cannot be decoded" / "file not found" on the row; with space the same build finishes."""
    import jsae.atlas.clips as clips
    from jsae.atlas.site import build_site
    from jsae.errors import StorageError

    out = tmp_path / "atlas"
    monkeypatch.setattr(clips, writer, _disk_full)
    with pytest.raises(StorageError) as info:
        build_site(run, corpus.store, out, progress=False, workers=1)
    _storage_line(str(info.value), out)
    assert not (out / "index.html").exists()                      # no atlas whose players were blamed on the audio
    monkeypatch.undo()
    summary = build_site(run, corpus.store, out, progress=False, workers=1)
    assert summary.clips["reasons"]["cannot be decoded"] == 1     # bad.wav only
    if writer == "encode_opus":   # the copies written before the full disk were recorded and are reused
        assert summary.clips["copied"] == 0 and summary.clips["reused"] == 4, summary.clips


def test_the_command_exits_2_with_one_line_when_a_clip_cannot_be_written(capsys, corpus, run, tmp_path,
                                                                          monkeypatch):
    import jsae.atlas.clips as clips

    out = tmp_path / "atlas"
    monkeypatch.setattr(clips, "POOL_MIN", 10 ** 9)               # cut in this process, where the stand-in is
    monkeypatch.setattr(clips, "encode_opus", _disk_full)
    rc, _, err = _jsae(capsys, "atlas", run, "--data", corpus.store, "--out", out)
    assert rc == 2 and len(err) == 1 and err[0].startswith("jsae atlas: error: "), err
    _storage_line(err[0][len("jsae atlas: error: "):], out)


def test_a_real_full_disk_while_cutting_is_one_storage_line(corpus, run, tmp_path, tmpfs):
    """A real full disk (a small tmpfs; needs root, else skipped), clips cut in the process
    pool: one StorageError line naming the audio clips; with space the same build finishes."""
    from jsae.atlas.site import build_site
    from jsae.errors import StorageError

    disk = tmpfs("disk", "size=1m")
    out = disk / "atlas"
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as f:                    # fill the disk to the last byte ...
        try:
            while f.write(bytes(1 << 12)):
                pass
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
        f.truncate(max(f.tell() - (1 << 16), 0))                   # ... but room for the index and a few clips
    with pytest.raises(StorageError) as info:
        build_site(run, corpus.store, out, progress=False)
    _storage_line(str(info.value), out)
    ballast.unlink()
    summary = build_site(run, corpus.store, out, progress=False)
    assert summary.index.is_file() and summary.clips["reasons"]["cannot be decoded"] == 1


def test_a_corrupt_audio_file_is_still_undecodable_and_the_others_are_cut(corpus, tmp_path):
    """Audio that cannot be decoded is reported in its row and the other clips are cut (no error)."""
    from jsae.atlas.clips import REASONS, make_clips, read_index
    from jsae.store import open_store

    store = open_store(corpus.store)
    assert corpus.table.loc[47, "source"] == "bad.wav"
    report = make_clips(store, [0, 1, 47], tmp_path, workers=1, progress=False)
    bad = report.clips[47]
    assert bad.status == "unavailable" and bad.reason == REASONS["undecodable"] == "cannot be decoded" and not bad.file
    assert [report.clips[r].status for r in (0, 1)] == ["cut", "cut"]
    assert report.counts()["reasons"] == {"cannot be decoded": 1}
    assert sorted(read_index(tmp_path / "audio")) == sorted(report.clips[r].key for r in (0, 1))
