"""Nothing lost: a command that deletes or writes a folder refuses the working directory, a
folder holding its input, and any folder that is not what it made — and leaves every user
file in place (exit non-zero, one line on stderr)."""
import json
import os
import stat

import numpy as np
import pytest

from jsae.rundir import RunDirError, check_run_dir, is_jsae_run
from jsae.safety import UnsafeDeleteError, check_deletable, is_store_dir
from jsae.store import open_store, write_store
from safety_helpers import REPO, TINY_SWEEP, jsae, snapshot, tiny_store, tiny_x


@pytest.fixture
def user_dir(tmp_path):
    """A project folder with the user's files and an input .npy."""
    d = tmp_path / "project"
    (d / "notes").mkdir(parents=True)
    (d / "notes" / "todo.txt").write_text("buy milk\n")
    (d / "config.yaml").write_text("my: own config\n")
    (d / "metrics.json").write_text('{"mine": 1}\n')
    np.save(d / "emb.npy", tiny_x(20))
    return d


def assert_one_error_line(rc, err):
    assert rc != 0
    assert len(err) == 1, err
    assert err[0].startswith("jsae") and ": error: " in err[0] and "Traceback" not in err[0]


def test_store_import_out_dot_overwrite_keeps_the_working_directory(user_dir, monkeypatch, capsys):
    monkeypatch.chdir(user_dir)
    before = snapshot(user_dir)
    rc, err = jsae(capsys, "store", "import", "emb.npy", "--out", ".", "--overwrite")
    assert_one_error_line(rc, err)
    assert "working directory" in err[0] and "Nothing was deleted" in err[0]
    assert snapshot(user_dir) == before


def test_store_import_out_parent_of_the_input_keeps_the_input_and_its_siblings(user_dir, capsys):
    before = snapshot(user_dir)
    for out in (user_dir, user_dir.parent):  # the input's folder, and one above it
        rc, err = jsae(capsys, "store", "import", user_dir / "emb.npy", "--out", out, "--overwrite")
        assert_one_error_line(rc, err)
        assert "contains the input" in err[0]
        assert snapshot(user_dir) == before


def test_store_import_overwrite_of_a_folder_that_is_no_store(tmp_path, capsys):
    np.save(tmp_path / "emb.npy", tiny_x(20))
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    before = snapshot(other)
    for command in (["store", "import", tmp_path / "emb.npy"], ["store", "synth", "--rows", "50", "--dim", "4"]):
        rc, err = jsae(capsys, *command, "--out", other, "--overwrite")
        assert_one_error_line(rc, err)
        assert "is not an embedding store" in err[0] and "cat.jpg" in err[0]
        assert snapshot(other) == before


def test_a_store_named_store_json_of_another_format_is_no_store(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "store.json").write_text(json.dumps({"format": "something-else"}))
    assert not is_store_dir(fake)
    with pytest.raises(UnsafeDeleteError, match="not an embedding store"):
        write_store(fake, tiny_x(10), overwrite=True)
    assert (fake / "store.json").exists()


def test_overwrite_still_replaces_a_store(tmp_path, capsys):
    np.save(tmp_path / "a.npy", tiny_x(30, seed=1))
    np.save(tmp_path / "b.npy", tiny_x(12, seed=2))
    out = tmp_path / "store"
    assert jsae(capsys, "store", "import", tmp_path / "a.npy", "--out", out)[0] == 0
    rc, err = jsae(capsys, "store", "import", tmp_path / "b.npy", "--out", out)
    assert rc == 2 and len(err) == 1 and "already exists" in err[0]
    assert jsae(capsys, "store", "import", tmp_path / "b.npy", "--out", out, "--overwrite")[0] == 0
    assert open_store(out).num_rows == 12


def test_overwrite_refuses_a_symlink_to_a_store(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tiny_store(), target_is_directory=True)
    with pytest.raises(UnsafeDeleteError, match="symbolic link"):
        write_store(link, tiny_x(10), overwrite=True)
    assert open_store(tiny_store()).num_rows == 240


def test_the_guard_refuses_home_and_root(tmp_path):
    for path in (os.path.expanduser("~"), "/"):
        with pytest.raises(UnsafeDeleteError):
            check_deletable(path, what="an embedding store", is_ours=lambda p: True)


def test_store_folders_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store = write_store(tmp_path / "s", tiny_x(10)).path
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.stat().st_mode) == 0o755


# ----------------------------------------------------------------------------- embed / corpus

def test_embed_overwrite_refuses_the_working_directory_and_user_folders(user_dir, monkeypatch):
    from embed.export import ExportConfig, ExportError, run_export

    audio = user_dir / "audio"
    audio.mkdir()
    (audio / "a.wav").write_bytes(b"RIFF")
    before = snapshot(user_dir)
    monkeypatch.chdir(user_dir)
    for out in (".", user_dir / "notes", user_dir):
        with pytest.raises(ExportError, match="refusing to delete"):
            run_export(ExportConfig(out=out, audio_dir=audio, encoder="resemblyzer", overwrite=True))
        assert snapshot(user_dir) == before


def test_embed_refuses_to_plan_into_a_folder_of_user_files(user_dir):
    from embed.export import ExportConfig, ExportError, run_export

    (user_dir / "progress").mkdir()            # a planning export used to rmtree OUT/progress
    (user_dir / "progress" / "thesis.tex").write_text("chapter 1\n")
    before = snapshot(user_dir)
    audio = user_dir.parent / "audio"
    audio.mkdir()
    (audio / "a.wav").write_bytes(b"RIFF")
    with pytest.raises(ExportError, match="not empty and not an embedding store"):
        run_export(ExportConfig(out=user_dir, audio_dir=audio, encoder="resemblyzer"))
    assert snapshot(user_dir) == before


def test_embed_cli_overwrite_of_a_user_folder_is_one_line(user_dir, capsys):
    from embed.cli import main

    audio = user_dir.parent / "audio"
    audio.mkdir()
    (audio / "a.wav").write_bytes(b"RIFF")
    before = snapshot(user_dir)
    rc = main(["--audio-dir", str(audio), "--encoder", "resemblyzer", "--out", str(user_dir), "--overwrite", "-q"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and len(err) == 1 and err[0].startswith("jsae embed: error:"), err
    assert snapshot(user_dir) == before


def test_corpus_builder_never_deletes_a_user_audio_folder(tmp_path):
    from embed.corpus import CorpusExistsError, build_corpus

    out = tmp_path / "music-collection"
    (out / "audio").mkdir(parents=True)
    (out / "audio" / "song.wav").write_bytes(b"RIFF my song")
    before = snapshot(out)
    for force in (False, True):
        with pytest.raises(CorpusExistsError, match="not empty and not a corpus"):
            build_corpus(out, scale="tiny", force=force, log=lambda s: None)
        assert snapshot(out) == before


# ----------------------------------------------------------------------------- jsae sweep --out

def sweep_args(out):
    return ["sweep", REPO / "configs" / "default.yaml", "--out", out, f"data.store={tiny_store()}", *TINY_SWEEP]


def test_sweep_into_a_folder_of_user_files_is_refused(user_dir, capsys):
    before = snapshot(user_dir)
    rc, err = jsae(capsys, *sweep_args(user_dir))
    assert_one_error_line(rc, err)
    assert "neither empty nor a jsae run" in err[0] and "config.yaml" in err[0]
    assert snapshot(user_dir) == before


def test_sweep_out_dot_in_a_project_folder_is_refused(user_dir, monkeypatch, capsys):
    monkeypatch.chdir(user_dir)
    before = snapshot(user_dir)
    rc, err = jsae(capsys, *sweep_args("."))
    assert_one_error_line(rc, err)
    assert snapshot(user_dir) == before and not (user_dir / "checkpoints").exists()


def test_check_run_dir_accepts_new_empty_and_jsae_runs(tmp_path):
    check_run_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "sweep.json").write_text(json.dumps({"config": {}, "models": [], "normalizer": {}, "step": 0}))
    assert is_jsae_run(run)
    check_run_dir(run)
    # an interrupted first start: a jsae config.yaml next to checkpoints/, no sweep.json yet
    early = tmp_path / "early"
    (early / "checkpoints").mkdir(parents=True)
    (early / "config.yaml").write_text((REPO / "configs" / "default.yaml").read_text())
    check_run_dir(early)
    # a user's sweep.json / config.yaml that jsae did not write
    theirs = tmp_path / "theirs"
    (theirs / "checkpoints").mkdir(parents=True)
    (theirs / "sweep.json").write_text('{"mine": true}')
    (theirs / "config.yaml").write_text("not: [a, jsae, config]\n")
    assert not is_jsae_run(theirs)
    with pytest.raises(RunDirError, match="neither empty nor a jsae run"):
        check_run_dir(theirs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        check_run_dir(tmp_path / "file")


def test_a_folder_holding_only_a_stale_run_lock_counts_as_empty(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text("123\n")
    check_run_dir(tmp_path / "run")


def test_report_never_overwrites_a_file_that_is_no_report(tmp_path, capsys):
    from safety_helpers import tiny_run

    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    rc, err = jsae(capsys, "report", tiny_run(), "--out", notes)
    assert_one_error_line(rc, err)
    assert "not a jsae report" in err[0] and notes.read_text() == "<html>my notes</html>"
    page = tmp_path / "report.html"
    assert jsae(capsys, "report", tiny_run(), "--out", page)[0] == 0
    assert jsae(capsys, "report", tiny_run(), "--out", page)[0] == 0   # its own page is replaced
