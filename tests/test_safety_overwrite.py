"""Nothing lost: a command that deletes or writes a folder refuses the working directory, a
folder holding its input, and any folder that is not what it made — and leaves every user
file in place (exit non-zero, one line on stderr)."""
import json
import os
import stat

import numpy as np
import pytest

from jsae.runs.check import RunDirError, check_run_dir, is_jsae_run
from jsae.safety import UnsafeDeleteError, check_deletable, is_store_dir
from jsae.store import open_store, write_store
from safety_helpers import REPO, TINY_SWEEP, jsae, snapshot, tiny_x


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


def test_overwrite_refuses_a_symlink_to_a_store(tmp_path, tiny_store):
    link = tmp_path / "link"
    link.symlink_to(tiny_store, target_is_directory=True)
    with pytest.raises(UnsafeDeleteError, match="symbolic link"):
        write_store(link, tiny_x(10), overwrite=True)
    assert open_store(tiny_store).num_rows == 240


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
    from jsae.embed.export import ExportConfig, ExportError, run_export

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
    from jsae.embed.export import ExportConfig, ExportError, run_export

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
    from jsae.embed.cli import main

    audio = user_dir.parent / "audio"
    audio.mkdir()
    (audio / "a.wav").write_bytes(b"RIFF")
    before = snapshot(user_dir)
    rc = main(["--audio-dir", str(audio), "--encoder", "resemblyzer", "--out", str(user_dir), "--overwrite", "-q"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and len(err) == 1 and err[0].startswith("jsae embed: error:"), err
    assert snapshot(user_dir) == before


def test_corpus_builder_never_deletes_a_user_audio_folder(tmp_path):
    from tools.demo_corpus import CorpusExistsError, build_corpus

    out = tmp_path / "music-collection"
    (out / "audio").mkdir(parents=True)
    (out / "audio" / "song.wav").write_bytes(b"RIFF my song")
    before = snapshot(out)
    for force in (False, True):
        with pytest.raises(CorpusExistsError, match="not empty and not a corpus"):
            build_corpus(out, scale="tiny", force=force, log=lambda s: None)
        assert snapshot(out) == before


# ----------------------------------------------------------------------------- jsae sweep --out

def sweep_args(out, store):
    return ["sweep", REPO / "configs" / "default.yaml", "--out", out, f"data.store={store}", *TINY_SWEEP]


def test_sweep_into_a_folder_of_user_files_is_refused(user_dir, capsys, tiny_store):
    before = snapshot(user_dir)
    rc, err = jsae(capsys, *sweep_args(user_dir, tiny_store))
    assert_one_error_line(rc, err)
    assert "neither empty nor a jsae run" in err[0] and "config.yaml" in err[0]
    assert snapshot(user_dir) == before


def test_sweep_out_dot_in_a_project_folder_is_refused(user_dir, monkeypatch, capsys, tiny_store):
    monkeypatch.chdir(user_dir)
    before = snapshot(user_dir)
    rc, err = jsae(capsys, *sweep_args(".", tiny_store))
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


def test_report_never_overwrites_a_file_that_is_no_report(tmp_path, capsys, tiny_run):
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    rc, err = jsae(capsys, "report", tiny_run, "--out", notes)
    assert_one_error_line(rc, err)
    assert "not a jsae report" in err[0] and notes.read_text() == "<html>my notes</html>"
    page = tmp_path / "report.html"
    assert jsae(capsys, "report", tiny_run, "--out", page)[0] == 0
    assert jsae(capsys, "report", tiny_run, "--out", page)[0] == 0   # its own page is replaced


def test_train_sweep_itself_refuses_a_folder_of_user_files(user_dir, tiny_store):
    """The library entry point checks the run directory before anything else: its clean-up
    of a failed first start deletes config.yaml, sweep.json and checkpoints/, which must
    never be the user's (here a diverging lr would have failed before the first checkpoint)."""
    from jsae.config import load_config
    from jsae.training.loop import train_sweep

    (user_dir / "checkpoints").mkdir()
    (user_dir / "checkpoints" / "README").write_text("my checkpoints\n")
    (user_dir / "sweep.json").write_text('{"mine": true}\n')
    before = snapshot(user_dir)
    cfg = load_config(REPO / "configs" / "default.yaml", [f"data.store={tiny_store}", *TINY_SWEEP, "optim.lr=1e30"])
    with pytest.raises(RunDirError, match="neither empty nor a jsae run") as info:
        train_sweep(cfg, user_dir)
    assert "\n" not in str(info.value) and str(user_dir) in str(info.value)
    assert snapshot(user_dir) == before and not (user_dir / ".lock").exists()


def test_train_sweep_on_a_folder_another_sweep_is_writing_names_that_sweep(tmp_path, tiny_store):
    """Mid-write (config.yaml written, no checkpoints/ yet) a run is not recognisable as one;
    while its writer holds the lock, the refusal names the writer instead, and the lock
    file is only read."""
    from jsae.config import load_config
    from jsae.runs.lock import RunLockedError, run_lock
    from jsae.training.loop import train_sweep

    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(REPO / "configs" / "default.yaml", [f"data.store={tiny_store}", *TINY_SWEEP])
    with run_lock(run):
        (run / "config.yaml").write_text((REPO / "configs" / "default.yaml").read_text())
        lock_before = (run / ".lock").read_bytes()
        with pytest.raises(RunLockedError, match=rf"another sweep \(pid {os.getpid()}\)"):
            train_sweep(cfg, run)
        assert (run / ".lock").read_bytes() == lock_before
    (run / "config.yaml").unlink()  # the other sweep failed before its first checkpoint
    train_sweep(cfg, run)
    assert is_jsae_run(run)


# ----------------------------------------------------------------------------- analyses --out

@pytest.fixture(scope="module")
def labelled_tiny(tmp_path_factory):
    """A labelled store of the tiny run's dimension: lang es/en, train/test, 10 speakers."""
    import pandas as pd

    x = tiny_x(200, seed=3)
    table = pd.DataFrame({"id": [f"r{i}" for i in range(200)], "lang": ["es", "en"] * 100,
                          "split": (["train"] * 2 + ["test"] * 2) * 50, "speaker": [f"s{(i // 2) % 10}" for i in
                                                                                   range(200)]})
    return write_store(tmp_path_factory.mktemp("labelled") / "store", x, table).path


def probe_args(run, store, out):
    return ["probe", run, "--data", store, "--label", "lang", "--positive", "es", "--out", out]


def consistency_args(store, out):
    return ["consistency", "--data", store, "--label", "lang", "--positive", "es", "--negative", "en",
            "--group", "speaker", "--out", out]


def test_analysis_out_into_a_folder_of_user_files_is_refused_before_the_work(user_dir, labelled_tiny,
                                                                             monkeypatch, capsys, tiny_run):
    import importlib

    probing = importlib.import_module("jsae.outputs.probe")   # run_probe calls the probe bound there
    consistency_module = importlib.import_module("jsae.outputs.consistency")

    def never(*args, **kwargs):
        raise AssertionError("the analysis ran before its --out was checked")

    monkeypatch.setattr(probing, "probe", never)
    monkeypatch.setattr(consistency_module, "consistency", never)
    before = snapshot(user_dir)
    for args, kind in ((probe_args(tiny_run, labelled_tiny, user_dir), "probe"),
                       (consistency_args(labelled_tiny, user_dir), "consistency")):
        rc, err = jsae(capsys, *args)
        assert_one_error_line(rc, err)
        assert f"--out {user_dir} is not empty and not an earlier `jsae {kind}` output" in err[0], err[0]
        assert "config.yaml" in err[0]  # names what it holds
        assert snapshot(user_dir) == before
    monkeypatch.chdir(user_dir)
    rc, err = jsae(capsys, *probe_args(tiny_run, labelled_tiny, "."))  # --out . in a project folder
    assert_one_error_line(rc, err)
    assert snapshot(user_dir) == before


def test_analysis_out_takes_a_new_or_empty_folder_or_its_own_earlier_output(tmp_path, labelled_tiny, capsys, tiny_run):
    out = tmp_path / "probe-out"
    assert jsae(capsys, *probe_args(tiny_run, labelled_tiny, out))[0] == 0
    info = json.loads((out / "analysis.json").read_text())
    assert info["analysis"] == "probe" and "probe.csv" in info["files"]
    (out / "probe.csv").write_text("stale\n")
    assert jsae(capsys, *probe_args(tiny_run, labelled_tiny, out))[0] == 0  # an earlier probe: replaced
    assert (out / "probe.csv").read_text() != "stale\n"
    (tmp_path / "empty").mkdir()
    assert jsae(capsys, *probe_args(tiny_run, labelled_tiny, tmp_path / "empty"))[0] == 0
    assert (tmp_path / "empty" / "analysis.json").is_file()

    # another analysis does not write into a probe's folder (its files would mix with the probe's)
    before = snapshot(out)
    rc, err = jsae(capsys, *consistency_args(labelled_tiny, out))
    assert_one_error_line(rc, err)
    assert "not an earlier `jsae consistency` output" in err[0] and snapshot(out) == before

    # a file the probe does not write, or a link in place of one of its files, makes it not a probe folder
    mine = tmp_path / "mine.csv"
    mine.write_text("my table\n")
    for planted in ("notes.txt", "probe.csv"):
        target = out / planted
        target.unlink(missing_ok=True)
        if planted == "probe.csv":
            target.symlink_to(mine)  # to.csv would write through it into mine.csv
        else:
            target.write_text("my notes\n")
        before = snapshot(out)
        rc, err = jsae(capsys, *probe_args(tiny_run, labelled_tiny, out))
        assert_one_error_line(rc, err)
        assert planted in err[0] and snapshot(out) == before and mine.read_text() == "my table\n"
        target.unlink()


def test_is_analysis_output_knows_each_analysis_files(tmp_path):
    from jsae.outputs.folders import ANALYSIS_OUTPUTS, check_analysis_out, is_analysis_output

    d = tmp_path / "steer"
    d.mkdir()
    (d / "analysis.json").write_text(json.dumps({"analysis": "steer", "files": ["steer.json", "custom.png"]}))
    for name in ("steer.json", "custom.png", "steer_table.csv", "delta_hist_k3_L8.png", "alpha_k3_L8.png",
                 ".steer.json.1234.0123abcd.tmp"):  # listed, a steer output, a killed atomic write
        (d / name).write_text("x")
    assert is_analysis_output(d, "steer") and not is_analysis_output(d, "probe")
    check_analysis_out(d, "steer")
    with pytest.raises(UnsafeDeleteError, match="not an earlier `jsae probe` output"):
        check_analysis_out(d, "probe")
    (d / "sub").mkdir()  # a folder is never an analysis output
    assert not is_analysis_output(d, "steer")
    assert set(ANALYSIS_OUTPUTS) == {"probe", "split", "steer", "universality", "consistency"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnsafeDeleteError, match="is a file"):
        check_analysis_out(tmp_path / "file", "probe")
