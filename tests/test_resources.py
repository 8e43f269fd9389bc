"""jsae.resources: bundled configs and demo data found by name, and the paper grid defined once."""
from pathlib import Path

import pytest

from jsae.config import GridConfig, load_config
from jsae.errors import MissingPathError
from jsae.resources import (CONFIG_NAMES, ENV_VAR, STORE_NAMES, bundled_store, config_names, config_path, demo_data_dir,
                            resource_roots)
from jsae.sweeps.cli import main
from jsae.sweeps.demo import paper_grid_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_every_bundled_config_is_found_by_name_in_the_checkout():
    assert set(CONFIG_NAMES) == {p.stem for p in (ROOT / "configs").glob("*.yaml")} == set(config_names())
    for name in CONFIG_NAMES:
        assert config_path(name) == ROOT / "configs" / f"{name}.yaml"
        assert config_path(f"{name}.yaml") == ROOT / "configs" / f"{name}.yaml"
    assert demo_data_dir() == ROOT / "data" / "demo"
    assert resource_roots()[-1] == ROOT


def test_an_existing_file_wins_over_a_bundled_name(tmp_path, monkeypatch):
    own = tmp_path / "demo.yaml"
    own.write_text("name: mine\n")
    assert config_path(own) == own
    monkeypatch.chdir(tmp_path)
    assert config_path("demo.yaml") == Path("demo.yaml")     # the file in the working directory
    assert config_path("demo") == ROOT / "configs" / "demo.yaml"


def test_unknown_names_and_missing_paths_are_one_line_errors_naming_the_bundled_configs(tmp_path, capsys):
    with pytest.raises(MissingPathError, match=r"nope is neither a file nor a bundled config.*paper_grid"):
        config_path("nope")
    with pytest.raises(MissingPathError, match="neither a file"):
        config_path(tmp_path / "missing.yaml")
    with pytest.raises(MissingPathError, match="is a folder"):
        config_path(tmp_path)
    with pytest.raises(MissingPathError, match="does not exist"):
        demo_data_dir(tmp_path / "nowhere")
    assert main(["sweep", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "paper_grid" in err
    assert not (tmp_path / "r").exists()


def test_jsae_data_comes_before_the_package_and_the_checkout(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text("name: mine\n")
    (tmp_path / "data" / "demo" / "sae_train").mkdir(parents=True)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resource_roots()[0] == tmp_path
    assert config_path("demo") == tmp_path / "configs" / "demo.yaml"
    assert config_path("paper_grid") == ROOT / "configs" / "paper_grid.yaml"   # not there: the next root
    assert demo_data_dir() == tmp_path / "data" / "demo"
    assert demo_data_dir(ROOT / "data" / "demo") == ROOT / "data" / "demo"      # an explicit path first
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(MissingPathError, match=f"{ENV_VAR}=.*missing is not a folder"):
        config_path("demo")


def test_the_paper_grid_is_defined_once():
    """configs/paper_grid.yaml is the definition; the GridConfig defaults and `jsae demo --full-grid` agree."""
    paper = load_config(config_path("paper_grid")).grid
    assert len(paper.k) * len(paper.latent_size) == 84
    defaults = GridConfig()
    assert tuple(defaults.k) == paper.k and tuple(defaults.latent_size) == paper.latent_size
    assert defaults.activation == paper.activation
    full = load_config(config_path("demo"), paper_grid_overrides()).grid
    assert (full.k, full.latent_size) == (paper.k, paper.latent_size)


def test_a_bundled_store_is_found_from_any_folder_and_a_folder_here_wins(tmp_path, monkeypatch):
    """data.store rules: an existing folder under the working directory wins; a relative path that
    is missing here but names a shipped store is the bundled copy; anything else is read as given."""
    monkeypatch.chdir(tmp_path)
    assert set(STORE_NAMES) == {"data/synthetic", "data/demo/sae_train", "data/demo/language", "data/demo/music"}
    for name in STORE_NAMES:
        assert bundled_store(name) == ROOT / name
        assert (ROOT / name / "store.json").is_file()
    assert bundled_store("./data//synthetic") == ROOT / "data" / "synthetic"   # spelled another way
    for other in ("missing_store", "data/synthetc", "synthetic", "data/demo", "configs/default.yaml",
                  str(tmp_path / "data" / "synthetic")):                        # a typo, a folder, absolute
        assert bundled_store(other) is None, other
    (tmp_path / "data" / "synthetic").mkdir(parents=True)                      # one here: it wins
    assert bundled_store("data/synthetic") is None
    assert bundled_store("data/demo/music") == ROOT / "data" / "demo" / "music"


def test_jsae_data_comes_first_for_stores_too(tmp_path, monkeypatch):
    own = tmp_path / "mine"
    (own / "data" / "synthetic").mkdir(parents=True)
    (own / "data" / "synthetic" / "store.json").write_text("{}")
    (own / "data" / "demo" / "music").mkdir(parents=True)                      # no store.json: not a store
    monkeypatch.setenv(ENV_VAR, str(own))
    monkeypatch.chdir(tmp_path)
    assert bundled_store("data/synthetic") == own / "data" / "synthetic"
    assert bundled_store("data/demo/music") == ROOT / "data" / "demo" / "music"


def test_jsae_sweep_reads_the_bundled_store_only_when_none_is_here(tmp_path, monkeypatch, capsys):
    """`jsae sweep default` from a folder without data/synthetic names the bundled store in one line;
    a typo stays the one-line "does not exist" error; a data/synthetic here is the one opened.
    (Each sweep is stopped before training: by a non-empty --out, or by the store.)"""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["sweep", "default", "--out", "."]) == 2                  # refused: a folder with other files
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == (f"data.store: data/synthetic is not in {tmp_path}; using the bundled "
                                       f"store {ROOT / 'data' / 'synthetic'}")
    assert out.err.count("\n") == 1 and (tmp_path / "notes.txt").read_text() == "mine"

    assert main(["sweep", "default", "--out", "r", "data.store=data/synthetc"]) == 2
    out = capsys.readouterr()
    assert out.err == "jsae sweep: error: embedding store data/synthetc does not exist.\n"
    assert "data.store:" not in out.out and not (tmp_path / "r").exists()

    (tmp_path / "data" / "synthetic").mkdir(parents=True)                  # here, and not a store
    assert main(["sweep", "default", "--out", "r"]) == 2
    out = capsys.readouterr()
    assert "data.store:" not in out.out and str(ROOT) not in out.err
    assert out.err.startswith("jsae sweep: error: ") and "data/synthetic" in out.err and out.err.count("\n") == 1
