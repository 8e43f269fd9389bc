"""Outputs are replaced whole, never written through a link, and full disks are one line.

* an analysis output folder is replaced as one unit: a rerun killed midway leaves the
  previous output complete (never the old ``analysis.json`` beside a new ``probe.csv``), its
  temporary folder is never read by the report and is cleaned by the next analysis;
* nothing is written or deleted through a symbolic link inside a run (``RUN/analysis``,
  ``RUN/analysis/<name>``) or through an ``--out`` link;
* a full disk or a read-only folder gives one line naming what was written and what is
  kept, the previous page/output survives, and the same command with space succeeds
  (real small tmpfs mounts: these tests need root and skip, saying why, without it);
* a killed ``jsae export`` is finished by the same command; an export never writes outside
  ``--out``, whatever model names it is handed;
* ``--out FILE`` says that --out must be a folder; a missing audio file is named in its
  cell and counted in one warning line; no JSON file holds NaN or Infinity.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jsae.store import write_store
from safety_helpers import jsae, snapshot, tiny_x

# ----------------------------------------------------------------------------- helpers and fixtures


def one_error_line(rc: int, err: list[str], *needles: str) -> str:
    """The single stderr line of a failed command, checked to hold every needle."""
    assert rc == 2, (rc, err)
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("jsae ") and ": error: " in line and "Traceback" not in line, line
    assert ".new-" not in line and ".tmp" not in line, line   # never a temporary name
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def write_tone(path: Path) -> None:
    t = np.arange(4000) / 8000.0
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((3000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """The audio root of the labelled store: seg0.wav and seg1.wav exist, seg2.wav and seg3.wav do not."""
    folder = tmp_path_factory.mktemp("atomic-audio")
    for i in (0, 1):
        write_tone(folder / f"seg{i}.wav")
    return folder


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, audio) -> Path:
    """A labelled store of the tiny run's dimension (lang es/en, train/test) whose rows name audio files."""
    x = tiny_x(200, seed=3)
    table = pd.DataFrame({"id": [f"r{i}" for i in range(200)], "lang": ["es", "en"] * 100,
                          "split": (["train"] * 2 + ["test"] * 2) * 50,
                          "speaker": [f"s{(i // 2) % 10}" for i in range(200)],
                          "source": [f"seg{i % 4}.wav" for i in range(200)], "offset": 0.0, "duration": 0.5})
    return write_store(tmp_path_factory.mktemp("atomic-store") / "store", x, table,
                       attrs={"inputs": {"audio_dir": str(audio)}}).path


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny trained run (analyses write into it)."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def probe_args(run: Path, store: Path, *extra) -> list:
    return ["probe", run, "--data", store, "--label", "lang", "--positive", "es", *extra]


def info(folder: Path) -> dict:
    return json.loads((folder / "analysis.json").read_text())


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary entries (folders being replaced, atomic-write temporaries) in ``parent``."""
    return sorted(p.name for p in parent.rglob(".*") if p.name.endswith(".tmp") or ".new-" in p.name
                  or ".old-" in p.name)


def run_killed(tmp_path: Path, patch: str, argv: list) -> int:
    """Run ``jsae ARGV`` in a child process after ``patch`` (Python that arranges a SIGKILL
    of the child midway); returns its exit status (-9 when killed)."""
    script = textwrap.dedent(patch) + textwrap.dedent(f"""
        from jsae.sweeps.cli import main
        sys.exit(main({[str(a) for a in argv]!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", "import os, signal, sys\n" + script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode


# ----------------------------------------------------------------------------- small disks (tmpfs)


@pytest.fixture
def small_disk(tmpfs):
    """A 2 MiB tmpfs: a disk that fills up."""
    return tmpfs("disk", "size=2m")


@pytest.fixture
def read_only_disk(tmpfs):
    """An empty read-only tmpfs."""
    return tmpfs("ro", "ro,size=1m")


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file (returned: delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


# ----------------------------------------------------------------------------- 1. one unit


KILL_AT_THIRD_HEATMAP = """
    import jsae.outputs.probe as probe_module
    real, calls = probe_module.plot_heatmap, []
    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # probe.csv, the family and group tables and probe.json are written by now
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    probe_module.plot_heatmap = dying
"""


def test_a_probe_rerun_killed_midway_leaves_the_previous_output_whole(run, labelled, capsys, tmp_path):
    from jsae.outputs.folders import read_analyses

    out = run / "analysis" / "probe-mine"
    assert jsae(capsys, *probe_args(run, labelled, "--out", out))[0] == 0
    before = snapshot(out)
    # a leftover of another killed write, complete with its analysis.json: never read as an analysis
    ghost = run / "analysis" / ".probe-ghost.new-999999999-deadbeef"
    shutil.copytree(out, ghost)

    rc = run_killed(tmp_path, KILL_AT_THIRD_HEATMAP, probe_args(run, labelled, "--out", out, "--C", "0.001",
                                                                "--overwrite"))
    assert rc == -9
    assert snapshot(out) == before                      # the C=1 probe, whole: no C=0.001 probe.csv beside it
    assert info(out)["identity"]["C"] == 1.0
    assert [f.name for f, _ in read_analyses(run)] == ["probe-mine"]   # temporary folders are never read

    rc, err = jsae(capsys, *probe_args(run, labelled, "--out", out, "--C", "0.001", "--overwrite"))
    assert rc == 0, err
    assert info(out)["identity"]["C"] == 0.001 and json.loads((out / "probe.json").read_text())["params"]["C"] == 0.001
    assert leftovers(run / "analysis") == []            # the killed run's folder and the ghost are cleaned


def test_a_folder_set_aside_by_a_killed_swap_is_put_back(tmp_path):
    from jsae.safety import replace_folder

    parent = tmp_path / "analysis"
    aside = parent / ".probe-x.old-999999999-deadbeef"  # killed between the two renames: no probe-x
    aside.mkdir(parents=True)
    (aside / "analysis.json").write_text("{}")
    (parent / ".probe-x.new-999999999-deadbeef").mkdir()
    with replace_folder(parent / "other") as tmp:
        (tmp / "a.txt").write_text("new")
    assert sorted(p.name for p in parent.iterdir()) == ["other", "probe-x"]
    assert (parent / "probe-x" / "analysis.json").read_text() == "{}"
    with pytest.raises(RuntimeError):
        with replace_folder(parent / "other") as tmp:
            (tmp / "a.txt").write_text("newer")
            raise RuntimeError("failed midway")
    assert (parent / "other" / "a.txt").read_text() == "new"
    assert sorted(p.name for p in parent.iterdir()) == ["other", "probe-x"]


def test_an_atlas_rebuild_that_fails_at_its_last_file_leaves_the_previous_atlas_whole(run, labelled, capsys,
                                                                                     tmp_path, monkeypatch):
    import jsae.atlas.site as site

    out = tmp_path / "atlas"
    argv = ["atlas", run, "--data", labelled, "--no-audio", "--out", out]
    assert jsae(capsys, *argv)[0] == 0
    before = snapshot(out)

    def disk_full(*args, **kwargs):  # every page is written by now; analysis.json would be the last file
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "analysis.json"))

    monkeypatch.setattr(site, "write_analysis", disk_full)
    rc, err = jsae(capsys, *argv, "--top", "3", "--overwrite")
    assert snapshot(out) == before and leftovers(tmp_path) == []   # no new page beside the old analysis.json
    one_error_line(rc, err, "no space left on device", f"the atlas {out}", "unchanged")
    monkeypatch.undo()
    assert jsae(capsys, *argv, "--top", "3", "--overwrite")[0] == 0
    assert json.loads((out / "atlas.json").read_text())["params"]["n_top"] == 3 and info(out)["identity"]["n_top"] == 3


# ----------------------------------------------------------------------------- 2. links


def test_an_analysis_folder_that_is_a_link_is_refused_and_its_target_untouched(run, labelled, capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "probe.csv").write_text("my table\n")
    (mine / "analysis.json").write_text('{"analysis": "probe", "mine": true}\n')
    before = snapshot(mine)
    (run / "analysis").mkdir()
    link = run / "analysis" / "probe-lang-es"
    link.symlink_to(mine)
    rc, err = jsae(capsys, *probe_args(run, labelled))
    one_error_line(rc, err, str(link), str(mine.resolve()), "symbolic link")
    assert snapshot(mine) == before and link.is_symlink()


def test_a_run_analysis_folder_that_is_a_link_is_refused(run, labelled, capsys, tmp_path):
    mine = tmp_path / "elsewhere"
    mine.mkdir()
    (run / "analysis").symlink_to(mine)
    rc, err = jsae(capsys, *probe_args(run, labelled))
    one_error_line(rc, err, str(run / "analysis"), str(mine.resolve()), "--out")
    rc, err = jsae(capsys, "report", run)
    one_error_line(rc, err, str(run / "analysis"), "--out")
    assert list(mine.iterdir()) == []


def test_an_out_that_is_a_link_is_refused(run, labelled, capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    link = tmp_path / "out-link"
    link.symlink_to(empty)
    rc, err = jsae(capsys, *probe_args(run, labelled, "--out", link))
    one_error_line(rc, err, str(link), "symbolic link")
    assert list(empty.iterdir()) == [] and link.is_symlink()


# ----------------------------------------------------------------------------- 3. full and read-only disks


def test_probe_onto_a_full_disk_is_one_line_and_keeps_the_previous_output(run, labelled, capsys, small_disk):
    out = small_disk / "probe"
    assert jsae(capsys, *probe_args(run, labelled, "--out", out))[0] == 0
    before = snapshot(out)
    filler = fill(small_disk)
    rc, err = jsae(capsys, *probe_args(run, labelled, "--out", out, "--C", "0.001", "--overwrite"))
    one_error_line(rc, err, "no space left on device", f"the `jsae probe` output {out}", "unchanged")
    assert snapshot(out) == before and leftovers(small_disk) == []
    filler.unlink()
    rc, err = jsae(capsys, *probe_args(run, labelled, "--out", out, "--C", "0.001", "--overwrite"))
    assert rc == 0, err
    assert info(out)["identity"]["C"] == 0.001


def test_report_onto_a_full_disk_is_one_line_and_keeps_the_previous_page(run, capsys, small_disk):
    page = small_disk / "report.html"
    assert jsae(capsys, "report", run, "--out", page)[0] == 0
    before = page.read_bytes()
    filler = fill(small_disk)
    rc, err = jsae(capsys, "report", run, "--out", page)
    one_error_line(rc, err, "no space left on device", f"the report {page}", "previous page is unchanged")
    assert page.read_bytes() == before and leftovers(small_disk) == []
    filler.unlink()
    assert jsae(capsys, "report", run, "--out", page)[0] == 0


def test_report_probe_and_export_into_a_read_only_folder_are_one_line(run, labelled, capsys, read_only_disk,
                                                                      export_run):
    rc, err = jsae(capsys, "report", run, "--out", read_only_disk / "report.html")
    one_error_line(rc, err, "read-only file system", f"the report {read_only_disk / 'report.html'}")
    rc, err = jsae(capsys, *probe_args(run, labelled, "--out", read_only_disk / "probe"))
    one_error_line(rc, err, "read-only file system", f"the `jsae probe` output {read_only_disk / 'probe'}")
    rc, err = jsae(capsys, "export", export_run, "--format", "saelens", "--out", read_only_disk / "ex1")
    one_error_line(rc, err, "read-only file system", f"the export {read_only_disk / 'ex1'}")
    assert list(read_only_disk.iterdir()) == []


# ----------------------------------------------------------------------------- 4. export


@pytest.fixture
def export_run(tmp_path) -> Path:
    """A run with model files of two TopK models (numpy only: no training)."""
    from jsae.core.normalize import Normalizer
    from jsae.runs.modelfiles import write_model_files

    rng = np.random.default_rng(0)
    m, L = 8, 16

    def params():
        w = rng.normal(size=(L, m))
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        return {"W_enc": rng.normal(size=(m, L)).astype(np.float32), "b_enc": np.zeros(L, np.float32),
                "W_dec": w.astype(np.float32), "b_pre": np.zeros(m, np.float32)}

    specs = [{"k": k, "latent_size": L, "activation": "topk", "l1_coef": 0.0, "name": f"k{k}_L{L}"} for k in (2, 3)]
    run_dir = tmp_path / "export-run"
    write_model_files(run_dir, [(s, params()) for s in specs], normalizer=Normalizer("none", np.zeros(m), np.ones(m)),
                      step=10, total_steps=10, complete=True, run={"version": "0.1.0"})
    return run_dir


KILL_AT_THIRD_MARKER = """
    import jsae.export as export_module
    real, calls = export_module._write_marker, []
    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the export's marker and the first model are written; the second model's folder exists
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    export_module._write_marker = dying
"""


def test_a_killed_export_is_finished_by_the_same_command(export_run, capsys, tmp_path):
    out = tmp_path / "exports" / "ex1"
    argv = ["export", export_run, "--format", "saelens", "--out", out]
    assert jsae(capsys, *argv)[0] == 0
    before = snapshot(out)
    assert run_killed(tmp_path, KILL_AT_THIRD_MARKER, argv) == -9
    assert snapshot(out) == before                      # the previous export, whole
    rc, err = jsae(capsys, *argv)
    assert rc == 0, err
    assert snapshot(out) == before and leftovers(out.parent) == []
    assert sorted(p.name for p in out.iterdir()) == [".jsae-export", "README.md", "k2_L16", "k3_L16"]


def test_an_export_interrupted_before_a_model_marker_is_replaced(export_run, capsys, tmp_path):
    """What an interrupted export of an earlier version left: a model folder without its marker."""
    out = tmp_path / "ex1"
    argv = ["export", export_run, "--format", "saelens", "--out", out]
    assert jsae(capsys, *argv)[0] == 0
    shutil.rmtree(out / "k3_L16")
    (out / "k3_L16").mkdir()
    (out / "k3_L16" / ".cfg.json.123.0123abcd.tmp").write_text("{")
    rc, err = jsae(capsys, *argv)
    assert rc == 0, err
    assert (out / "k3_L16" / "cfg.json").is_file() and (out / "k3_L16" / ".jsae-export").is_file()


@pytest.mark.parametrize("bad", ["../ESCM", "..", ".hidden", "a/b", ""])
def test_an_export_never_writes_outside_out_whatever_the_model_names(export_run, capsys, tmp_path, monkeypatch, bad):
    import jsae.export as export_module
    import jsae.runs.modelfiles as modelfiles

    real = modelfiles.read_models

    def tampered(run_dir, names=None):  # a models/index.json that lists BAD (the files of k2_L16 under that name)
        index, files = real(run_dir, None)
        return index, [dataclasses.replace(files[0], name=bad)]

    monkeypatch.setattr(export_module, "read_models", tampered)
    monkeypatch.setattr(modelfiles, "read_models", tampered)
    exports = tmp_path / "exports"
    exports.mkdir()
    rc, err = jsae(capsys, "export", export_run, "--format", "saelens", "--out", exports / "ex1")
    one_error_line(rc, err, repr(bad), "plain name")
    assert list(exports.iterdir()) == [] and not (tmp_path / "ESCM").exists()
    with pytest.raises(Exception, match="plain name"):
        export_module.export_models(export_run, ["k2_L16"], "saelens", exports / "ex2")
    assert list(exports.iterdir()) == []


# ----------------------------------------------------------------------------- 5. --out FILE


def test_out_naming_a_file_says_out_must_be_a_folder(run, labelled, capsys, tmp_path, export_run):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for argv in (probe_args(run, labelled, "--out", notes), probe_args(run, labelled, "--out", notes, "--overwrite"),
                 ["consistency", "--data", labelled, "--label", "lang", "--positive", "es", "--out", notes],
                 ["atlas", run, "--data", labelled, "--no-audio", "--out", notes],
                 ["export", export_run, "--format", "saelens", "--out", notes]):
        rc, err = jsae(capsys, *argv)
        line = one_error_line(rc, err, str(notes), "must be a folder", f"--out {tmp_path / 'notes-out'}")
        assert "--overwrite" not in line
    assert notes.read_text() == "mine\n"
    rc, err = jsae(capsys, "report", run, "--out", tmp_path)   # the report's --out is a file: the converse
    one_error_line(rc, err, "is a folder", f"--out {tmp_path / 'report.html'}")
    (run / "analysis").mkdir()
    (run / "analysis" / "probe-lang-es").write_text("mine\n")  # a file where the default folder goes
    rc, err = jsae(capsys, *probe_args(run, labelled))
    one_error_line(rc, err, str(run / "analysis" / "probe-lang-es"), "is a file", "--out")
    assert (run / "analysis" / "probe-lang-es").read_text() == "mine\n"


# ----------------------------------------------------------------------------- 6. missing audio


def test_a_missing_audio_file_is_named_in_its_cell_and_counted_once(run, labelled, audio, capsys):
    assert jsae(capsys, *probe_args(run, labelled))[0] == 0
    capsys.readouterr()
    from jsae.sweeps.cli import main

    assert main(["report", str(run), "--top", "8"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    page = (run / "analysis" / "report.html").read_text()
    assert "<audio controls" in page                       # seg0.wav and seg1.wav play
    assert "audio not found: seg2.wav" in page or "audio not found: seg3.wav" in page
    assert len(err) == 1 and err[0].startswith("jsae report: warning: "), err
    assert "shown without audio" in err[0] and str(audio.resolve()) in err[0] and "--audio-root" in err[0]
    n = page.count("audio not found: seg")
    assert err[0].split("warning: ")[1].startswith(f"{n} segment(s)")


def test_an_atlas_names_a_missing_audio_file_and_counts_them_once(run, labelled, tmp_path):
    from jsae.atlas.site import build_site

    with pytest.warns(UserWarning, match=r"segment\(s\) shown without audio") as caught:
        summary = build_site(run, labelled, tmp_path / "atlas", progress=False, workers=1, n_top=4, per_band=0)
    assert len([w for w in caught if "without audio" in str(w.message)]) == 1
    pages = "".join(p.read_text() for p in (tmp_path / "atlas").rglob("latent-*.html"))
    assert "audio not available: file not found: seg2.wav" in pages or \
        "audio not available: file not found: seg3.wav" in pages
    assert str(caught[0].message).startswith(f"{summary.clips['reasons']['file not found']} segment(s)")


# ----------------------------------------------------------------------------- 7. strict JSON


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_writers_never_write_nan_or_infinity(tmp_path, run, labelled, capsys):
    from jsae.outputs.folders import atomic_write_json, write_json

    for writer in (atomic_write_json, write_json):
        path = writer(tmp_path / f"{writer.__name__}.json", {"a": math.nan, "b": [math.inf, -math.inf],
                                                              "c": np.float32("nan"), "d": 1.5})
        assert _strict(path.read_text()) == {"a": None, "b": [None, None], "c": None, "d": 1.5}
    assert jsae(capsys, *probe_args(run, labelled, "--C", "1e-9"))[0] == 0  # a regression that learns nothing
    for f in (run / "analysis").rglob("*.json"):
        _strict(f.read_text())
