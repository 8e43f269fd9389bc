"""Every analysis protects its output folder the same way (probe, split, universality,
consistency; steer: tests/test_steer_units.py):

* a folder (default or ``--out``) holding an output of the same analysis made with other
  output-changing parameters is refused, before any work, with a one-line JsaeError
  naming the parameter (old vs new) and the fix;
* ``overwrite=True`` (``--overwrite``) replaces it: the new ``analysis.json`` records the
  new value and no file of the old output remains;
* the same parameters again are a plain rerun;
* default folders are named by the non-default options, so runs of other options coexist,
  and the default names stay as they were with the default options.
"""
import json
import shutil
from pathlib import Path

import pytest

from jsae.errors import JsaeError
from jsae.outputs.consistency import run_consistency
from jsae.outputs.folders import ANALYSIS_FILE, OutputExistsError, short_hash
from jsae.outputs.probe import run_probe
from jsae.outputs.split import run_split
from jsae.outputs.steer import SteerOutputExistsError
from jsae.outputs.universality import run_universality


@pytest.fixture
def run(trained_run, tmp_path):
    """A copy of the trained run (default output folders are written into it)."""
    return shutil.copytree(trained_run, tmp_path / "run")


def _info(folder: Path) -> dict:
    return json.loads((Path(folder) / ANALYSIS_FILE).read_text())


def _plant_stale(folder: Path, name: str = "old_extra.png") -> Path:
    """A file the old output listed (as if an option wrote it) that the new one will not write."""
    stale = Path(folder) / name
    stale.write_bytes(b"old")
    info = _info(folder)
    info["files"] = sorted([*info["files"], name])
    (Path(folder) / ANALYSIS_FILE).write_text(json.dumps(info))
    return stale


def _check_protected(first, second, key: str, old, new, out: Path):
    """``first()`` writes ``out``; ``second(overwrite)`` with ``key`` = ``new`` is refused, then
    replaces it; ``second`` again is a rerun."""
    first()
    assert _info(out)["identity"][key] == old
    stale = _plant_stale(out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(OutputExistsError) as e:
        second(False)
    msg = str(e.value)
    assert isinstance(e.value, JsaeError) and isinstance(e.value, FileExistsError)
    assert "\n" not in msg and key in msg and "--overwrite" in msg and "--out" in msg
    assert repr(old) in msg and repr(new) in msg
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # refused before any work
    second(True)
    info = _info(out)
    assert info["identity"][key] == new
    assert not stale.exists()
    assert {p.name for p in out.iterdir()} <= set(info["files"]) | {ANALYSIS_FILE}
    second(False)  # the same options again: a rerun
    assert _info(out)["identity"][key] == new


def test_probe_of_other_C_is_refused_then_overwritten(sweep, labelled_store, tmp_path):
    out = tmp_path / "probe"
    go = lambda C, ow=False: run_probe(sweep, labelled_store, "lang", "es", out=out, C=C, overwrite=ow)
    _check_protected(lambda: go(1.0), lambda ow: go(0.001, ow), "C", 1.0, 0.001, out)
    df, _ = go(0.001)
    assert df.attrs["C"] == 0.001 and _info(out)["params"]["C"] == 0.001


def test_split_of_other_min_coverage_is_refused_then_overwritten(sweep, labelled_store, tmp_path):
    out = tmp_path / "split"
    go = lambda cov, ow=False: run_split(sweep, labelled_store, "lang", "es", "gender", 3, out=out,
                                         min_coverage=cov, overwrite=ow)
    _check_protected(lambda: go(0.2), lambda ow: go(0.1, ow), "min_coverage", 0.2, 0.1, out)
    assert _info(out)["params"]["min_coverage"] == 0.1


def test_consistency_of_other_C_is_refused_then_overwritten(labelled_store, tmp_path):
    out = tmp_path / "consistency"
    go = lambda C, ow=False: run_consistency(labelled_store, "lang", "es", negative="en", out=out, C=C,
                                             overwrite=ow)
    _check_protected(lambda: go(1.0), lambda ow: go(0.1, ow), "C", 1.0, 0.1, out)


def test_consistency_of_other_test_split_is_refused(labelled_store, tmp_path):
    out = tmp_path / "consistency"
    run_consistency(labelled_store, "lang", "es", negative="en", out=out)
    with pytest.raises(OutputExistsError, match="test_split: 'all' there, 'test' now"):
        run_consistency(labelled_store, "lang", "es", negative="en", out=out, test_split="test")


def test_universality_of_other_threshold_is_refused_then_overwritten(trained_run, trained_run_seed1,
                                                                      labelled_store, tmp_path):
    out = tmp_path / "universality"
    go = lambda thr, ow=False: run_universality(trained_run, trained_run_seed1, out=out, store=labelled_store,
                                                threshold=thr, overwrite=ow)
    _check_protected(lambda: go(0.9), lambda ow: go(0.5, ow), "threshold", 0.9, 0.5, out)
    assert _info(out)["params"]["threshold"] == 0.5


def test_other_store_or_models_are_refused(sweep, labelled_store, tmp_path):
    out = tmp_path / "probe"
    run_probe(sweep, labelled_store, "lang", "es", out=out)
    with pytest.raises(OutputExistsError, match="models"):
        run_probe(sweep.select(k=3), labelled_store, "lang", "es", out=out)
    other = shutil.copytree(labelled_store, tmp_path / "store2")
    with pytest.raises(OutputExistsError, match="store"):
        run_probe(sweep, other, "lang", "es", out=out)
    assert _info(out)["identity"]["store"] == str(Path(labelled_store).resolve()) or \
        Path(_info(out)["identity"]["store"]).resolve() == Path(labelled_store).resolve()


def test_the_same_store_named_relatively_or_absolutely_is_one_store(sweep, labelled_store, tmp_path, monkeypatch):
    """``jsae demo`` names its stores by absolute path, a command line usually relatively: the
    same analysis of the same store again is a rerun, not "other parameters"."""
    out = tmp_path / "probe"
    absolute = Path(labelled_store).absolute()
    run_probe(sweep, absolute, "lang", "es", out=out)
    monkeypatch.chdir(absolute.parent)
    run_probe(sweep, absolute.name, "lang", "es", out=out)          # a rerun: not refused
    assert _info(out)["identity"]["store"] == str(absolute)


def test_a_split_with_its_defaults_named_explicitly_is_the_same_split(sweep, labelled_store, tmp_path):
    """``jsae demo`` splits with the defaults over the whole grid; ``jsae split --k 3`` selects the
    k's models and names their latent sizes and root: the same split, a rerun, not a refusal."""
    out = tmp_path / "split"
    run_split(sweep, labelled_store, "lang", "es", "gender", 3, out=out)
    of_k = sweep.select(k=3)
    sizes = sorted(of_k.latent_sizes)
    run_split(of_k, labelled_store, "lang", "es", "gender", 3, out=out, latent_sizes=sizes,
              root_latent_size=sizes[0])
    identity = _info(out)["identity"]
    assert identity["latent_sizes"] == sizes and identity["root_latent_size"] == sizes[0]
    assert identity["models"] == list(of_k.names)
    with pytest.raises(OutputExistsError, match="root_latent_size"):   # another root is another split
        run_split(of_k, labelled_store, "lang", "es", "gender", 3, out=out, root_latent_size=sizes[-1])


def test_default_folders_keep_their_names_and_non_default_options_coexist(run, trained_run_seed1,
                                                                           labelled_store):
    _, p1 = run_probe(run, labelled_store, "lang", "es")
    _, p2 = run_probe(run, labelled_store, "lang", "es", C=0.001)
    _, p3 = run_probe(run, labelled_store, "lang", "es", negative="en", standardize=True, groups=("gender",))
    assert p1.name == "probe-lang-es"
    assert p2.name == "probe-lang-es-C0.001"
    assert p3.name == "probe-lang-es-vs-en-std-groups=gender"
    _, s1 = run_split(run, labelled_store, "lang", "es", "gender", 3)
    _, s2 = run_split(run, labelled_store, "lang", "es", "gender", 3, min_coverage=0.1)
    assert (s1.name, s2.name) == ("split-lang-es-gender-k3", "split-lang-es-gender-k3-cov0.1")
    _, c1 = run_consistency(labelled_store, "lang", "es", negative="en", group="gender", run_dir=run)
    _, c2 = run_consistency(labelled_store, "lang", "es", negative="en", group="gender", run_dir=run, C=0.1)
    assert c1.name == "consistency-lang-es-speaker-gender"
    assert c2.name == "consistency-lang-es-speaker-gender-C0.1"
    _, u1 = run_universality(run, trained_run_seed1, store=labelled_store)
    _, u2 = run_universality(run, trained_run_seed1, store=labelled_store, threshold=0.5)
    where = short_hash(str(Path(trained_run_seed1).resolve()))  # RUN_B's path: two runs of one name never collide
    assert u1.name == f"universality-{Path(trained_run_seed1).name}-{where}"
    assert u2.name == f"universality-{Path(trained_run_seed1).name}-{where}-thr0.5"
    for folder in (p1, p2, p3, s1, s2, c1, c2, u1, u2):
        assert folder.parent == Path(run) / "analysis" and (folder / ANALYSIS_FILE).is_file()
    assert _info(p1)["identity"]["C"] == 1.0 and _info(p2)["identity"]["C"] == 0.001
    # the same default options again reuse the folder
    assert run_probe(run, labelled_store, "lang", "es")[1] == p1


def test_long_default_names_are_hashed():
    from jsae.outputs.probe import probe_folder_name

    name = probe_folder_name("lang", "es", "en", groups=tuple(f"column_number_{i}" for i in range(10)), C=0.5)
    assert len(name) <= 100 and name.startswith("probe-lang-es")
    assert name != probe_folder_name("lang", "es", "en", groups=tuple(f"column_number_{i}" for i in range(11)))


def test_steer_error_is_the_shared_one():
    assert issubclass(SteerOutputExistsError, OutputExistsError)


def test_cli_refuses_then_overwrites(sweep, trained_run, labelled_store, tmp_path, capsys):
    from jsae.sweeps.cli import main

    out = tmp_path / "probe"
    common = ["probe", str(trained_run), "--data", str(labelled_store), "--label", "lang", "--positive", "es",
              "--out", str(out)]
    assert main(common) == 0
    capsys.readouterr()
    assert main([*common, "--C", "0.01"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "C: 1.0 there, 0.01 now" in err and "--overwrite" in err
    assert main([*common, "--C", "0.01", "--overwrite"]) == 0
    assert _info(out)["identity"]["C"] == 0.01
