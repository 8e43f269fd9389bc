"""The analysis commands of `jsae` write their JSON/CSV/PNG outputs; `jsae report` one HTML page."""
import json
import re

import pandas as pd
import pytest

from jsae.sweeps.cli import main


@pytest.fixture(scope="module")
def run(analysed_run):
    """Every analysis command has run once on it, then `jsae report`; the tests read what they wrote."""
    return analysed_run


@pytest.fixture(scope="module")
def outputs(run):
    return run / "analysis"


def read(folder):
    info = json.loads((folder / "analysis.json").read_text())
    for f in info["files"]:
        assert (folder / f).exists(), f
    return info


def test_probe_writes_csv_json_and_heatmaps(outputs, capsys):
    folder = outputs / "probe-lang-es"
    info = read(folder)
    assert info["analysis"] == "probe" and info["params"]["label"] == "lang"
    df = pd.read_csv(folder / "probe.csv")
    assert {"latent", "precision", "recall", "f1", "support"} <= set(df.columns) and len(df) == 8
    assert len(json.loads((folder / "probe.json").read_text())["models"]) == 8
    assert {"precision.png", "recall.png"} <= set(info["files"])


def test_split_writes_tables_and_the_flow_figure(outputs):
    folder = outputs / "split-lang-es-gender-k3"
    info = read(folder)
    assert "split_flow.png" in info["files"] and info["summary"]["split_at"]
    levels = pd.read_csv(folder / "split_levels.csv")
    assert levels.latent_size.tolist() == [8, 16, 32, 64]


def test_steer_writes_the_table_and_histograms(outputs):
    folder = outputs / "steer-lang-es-vs-en-k3-L8-flip-a1-mean_active"
    info = read(folder)
    table = pd.read_csv(folder / "steer_table.csv").set_index("samples")
    assert table.loc["es", "after_steering"] < 0 < table.loc["en", "after_steering"]
    assert any(f.startswith("delta_hist_") for f in info["files"])
    assert info["params"]["alpha_units"] == "mean_active"


def test_universality_writes_scores_and_figures(outputs):
    (folder,) = outputs.glob("universality-run-seed1-*")  # named by RUN_B's name and a hash of its path
    info = read(folder)
    assert info["summary"]["score"] > info["summary"]["control_score"]
    assert {"universality_hist.png", "mean_max.png", "universality.csv"} <= set(info["files"])


def test_consistency_writes_tables_and_its_figure_into_the_run(outputs):
    folder = outputs / "consistency-lang-es-speaker-gender"
    info = read(folder)
    assert info["analysis"] == "consistency" and info["params"]["by"] == "gender"
    assert {"consistency.csv", "by.csv", "consistency.png"} <= set(info["files"])
    groups = pd.read_csv(folder / "consistency.csv")
    assert {"group", "by", "consistency", "chance", "accuracy"} <= set(groups.columns)
    # the planted `es` direction is the same for every speaker
    assert info["summary"]["mean_consistency"] > 0.8 > abs(info["summary"]["chance_consistency"])


def test_report_is_one_html_page_with_embedded_figures_and_audio(outputs):
    page = (outputs / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', page)
    assert len(images) >= 8  # training heatmaps + every analysis figure
    assert "Top-activating segments" in page and "call_0" in page
    assert re.search(r'<audio controls [^>]*src="data:audio/wav;base64,', page)
    assert 'src="/' not in page and "file://" not in page  # nothing outside the page


def test_cli_errors_name_the_problem(run, capsys, labelled_store):
    rc = main(["steer", str(run), "--data", str(labelled_store), "--label", "lang", "--positive", "es",
               "--k", "7", "--latent-size", "8"])
    assert rc == 2 and "no model with k=7" in capsys.readouterr().err
    rc = main(["probe", str(run), "--data", str(labelled_store), "--label", "language", "--positive", "es"])
    assert rc == 2 and "no label column 'language'" in capsys.readouterr().err


def test_split_needs_one_k_and_names_the_fix(run, capsys, labelled_store):
    rc = main(["split", str(run), "--data", str(labelled_store), "--label", "lang", "--positive", "es",
               "--group", "gender"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("jsae split: error:"), err
    assert "k = 3, 4" in err[0] and "--k K" in err[0]


def test_export_writes_every_selected_model(run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(run), "--k", "3", "--latent-size", "8", "16", "--format", "saelens",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["k3_L16", "k3_L8"]
    assert "exported 2 model(s)" in capsys.readouterr().out
    rc = main(["export", str(run), "--model", "k9_L8", "--format", "saelens", "--out", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "k9_L8" in err[0] and "k3_L8" in err[0], err
