"""Sweep configs (YAML + overrides, clear errors) and the `jsae` command line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jsae.config import ConfigError, config_from_dict, config_to_dict, load_config
from jsae.synthetic import make_dictionary_data
from jsae.sweeps.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_bundled_config_loads(name):
    cfg = load_config(ROOT / "configs" / name)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_paper_grid_is_84_models():
    cfg = load_config(ROOT / "configs" / "paper_grid.yaml")
    assert cfg.grid.k == (5, 10, 15, 20, 25, 30, 35)
    assert cfg.grid.latent_size == tuple(range(100, 1300, 100))
    assert len(cfg.grid.k) * len(cfg.grid.latent_size) == 84


def test_overrides_replace_lists_and_scalars():
    cfg = load_config(ROOT / "configs" / "default.yaml", ["grid.k=[5,10]", "train.steps=2000", "optim.lr=1e-3"])
    assert cfg.grid.k == (5, 10) and cfg.train.steps == 2000 and cfg.optim.lr == 1e-3


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"train.stepz.*did you mean 'steps'.*Valid keys here: batch_size, steps"):
        load_config(None, ["train.stepz=10"])


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"could not be converted.*optim.lr"):
        load_config(None, ["optim.lr=fast"])


def test_k_larger_than_latent_size_is_refused():
    with pytest.raises(ConfigError, match="k=300 is larger than latent_size=200"):
        load_config(None, ["grid.k=[5,300]", "grid.latent_size=[200,400]"])


@pytest.mark.parametrize("override,message", [
    ("grid.activation=gelu", "grid.activation='gelu' is not one of"),
    ("grid.k=[]", "grid.k is empty"),
    ("train.val_fraction=1.5", "val_fraction must be in"),
    ("sae.normalize=zscore", "sae.normalize='zscore'"),
])
def test_inconsistent_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_cli_sweep_writes_metrics_config_and_heatmaps(tmp_path, capsys):
    x = make_dictionary_data(2000, dim=16, n_atoms=32, active=2, seed=3).x
    np.save(tmp_path / "x.npy", x)
    pd.DataFrame({"speaker": [f"s{i % 7}" for i in range(2000)]}).to_csv(tmp_path / "meta.csv", index=False)
    assert main(["store", "import", str(tmp_path / "x.npy"), "--metadata", str(tmp_path / "meta.csv"),
                 "--out", str(tmp_path / "store")]) == 0
    run = tmp_path / "run"
    rc = main(["sweep", str(ROOT / "configs" / "default.yaml"), "--out", str(run), f"data.store={tmp_path / 'store'}",
               "grid.k=[2,4]", "grid.latent_size=[16,32]", "train.steps=60", "train.batch_size=128",
               "train.progress=false"])
    assert rc == 0
    records = json.loads((run / "metrics.json").read_text())
    assert {(r["k"], r["latent_size"]) for r in records} == {(2, 16), (4, 16), (2, 32), (4, 32)}
    for r in records:
        assert {"val_nmse", "fraction_variance_explained", "dead_fraction", "mean_l0", "steps"} <= r.keys()
        assert r["steps"] == 60 and 0 < r["val_nmse"] < 1.5
        assert abs(r["fraction_variance_explained"] + r["val_nmse"] - 1) < 1e-9
    assert load_config(run / "config.yaml").grid.k == (2, 4)
    for png in ("val_nmse.png", "dead_fraction.png", "loss_curves.png"):
        assert (run / png).stat().st_size > 1000
    assert "k4_L32" in capsys.readouterr().out


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["sweep", str(ROOT / "configs" / "default.yaml"), "--out", str(tmp_path / "r"),
                 "grid.k=[500]"]) == 2
    assert "k=500 is larger than latent_size=100" in capsys.readouterr().err
    assert main(["sweep", str(ROOT / "configs" / "default.yaml"), "--out", str(tmp_path / "r"),
                 f"data.store={tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resuming_with_a_different_config_is_refused(tmp_path):
    x = make_dictionary_data(800, dim=8, n_atoms=16, active=2, seed=3).x
    base = ["grid.k=[2]", "grid.latent_size=[8]", "train.steps=10", "train.batch_size=64", "train.progress=false"]
    from jsae.training.loop import train_sweep

    train_sweep(load_config(None, base), tmp_path, data=x)
    with pytest.raises(ConfigError, match=r"grid.latent_size: \[8\] → \[16\]"):
        train_sweep(load_config(None, [*base, "grid.latent_size=[16]"]), tmp_path, data=x)


def test_jsae_console_help_runs():
    out = subprocess.run([sys.executable, "-m", "jsae.sweeps", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sweep" in out.stdout and "store" in out.stdout
