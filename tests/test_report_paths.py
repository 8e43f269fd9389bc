"""`jsae report` from any working directory: analyses run on a relative RUN record their
files relative to the analysis folder (never to the working directory), so a report built
with a relative RUN from yet another working directory shows every figure, in a real
headless Chromium. Older analysis.json files with working-directory paths still resolve,
a listed figure that is missing is named on the page, and the headline names the best
model, what it was chosen by, the paper setting (K = 20, L = 200) and the family union."""
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from test_analysis_browser import Chromium, chromium_binary

from jsae.outputs.probe import BEST_BY



def jsae_in(cwd: Path, *argv) -> None:
    """``jsae ARGV`` run in-process with ``cwd`` as the working directory."""
    from jsae.sweeps.cli import main

    old = Path.cwd()
    os.chdir(cwd)
    try:
        assert main([str(a) for a in argv]) == 0, argv
    finally:
        os.chdir(old)


def listed_figures(run: Path) -> int:
    return sum(sum(str(f).endswith(".png") for f in json.loads(p.read_text())["files"])
               for p in (run / "analysis").glob("*/analysis.json"))


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory, trained_run, labelled_store):
    """``tmp/b/run`` (a copy of the trained run) analysed by probe, split and steer from ``tmp/a``
    as ``../b/run`` with the store as ``../data/store``; the report built from ``tmp/c/d``
    as ``../../b/run``. Returns (root, run)."""
    root = tmp_path_factory.mktemp("relative")
    for d in ("a", "b", "c/d", "data"):
        (root / d).mkdir(parents=True)
    run = root / "b" / "run"
    shutil.copytree(trained_run, run)
    shutil.copytree(labelled_store, root / "data" / "store")
    common = ["--data", "../data/store", "--label", "lang", "--positive", "es"]
    jsae_in(root / "a", "probe", "../b/run", *common)
    jsae_in(root / "a", "split", "../b/run", *common, "--group", "gender", "--k", "3")
    jsae_in(root / "a", "steer", "../b/run", *common, "--negative", "en", "--k", "3", "--latent-size", "8")
    jsae_in(root / "c" / "d", "report", "../../b/run")
    return root, run


def test_analyses_record_files_relative_to_their_folder_and_the_store_absolute(relative_run):
    root, run = relative_run
    folders = sorted(p.parent for p in (run / "analysis").glob("*/analysis.json"))
    assert [f.name.split("-")[0] for f in folders] == ["probe", "split", "steer"]
    for folder in folders:
        info = json.loads((folder / "analysis.json").read_text())
        assert info["files"] and all("/" not in f and (folder / f).is_file() for f in info["files"]), info["files"]
        assert all((folder / t).is_file() for t in info["tables"].values())
        assert info["params"]["store"] == str(root / "data" / "store")
    assert json.loads((run / "sweep.json").read_text())["data"]["source"].startswith("/")


def test_report_from_a_relative_run_in_another_directory_shows_every_figure(relative_run, tmp_path):
    root, run = relative_run
    page = run / "analysis" / "report.html"
    text = page.read_text(encoding="utf-8")
    assert "not shown:" not in text and "unavailable" not in text
    assert "Top-activating segments" in text          # the store, recorded absolute, was found
    expected = listed_figures(run) + len(list(run.glob("*.png")))
    assert listed_figures(run) >= 4 + 1 + 2            # probe heatmaps, split flow, steer histograms
    browser = Chromium(chromium_binary(), tmp_path)
    try:
        state = browser.open(page.as_uri())
    finally:
        browser.close()
    assert state["errors"] == [], "\n".join(state["errors"])
    broken = [i["alt"] for i in state["images"] if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert len(state["images"]) == expected, [i["alt"] for i in state["images"]]


def make_old_style(run: Path, prefix: str, store: str) -> None:
    """Rewrite every analysis.json as the earlier code wrote it for `jsae … RUN` with RUN =
    ``prefix`` relative to the working directory: files as ``prefix/analysis/NAME/FILE``
    and the store path as given (relative)."""
    for p in (run / "analysis").glob("*/analysis.json"):
        info = json.loads(p.read_text())
        info["files"] = [f"{prefix}/analysis/{p.parent.name}/{f}" for f in info["files"]]
        info["params"]["store"] = store
        p.write_text(json.dumps(info))


def test_old_working_directory_paths_still_resolve_after_the_run_moved(relative_run, tmp_path):
    """analysis.json files written with paths relative to the working directory (``b/run/…``
    from ``tmp``), then the whole tree moved: the report, from elsewhere, still finds every
    figure (the part after the analysis folder's name) and the store (relative to the
    working directory the analysis ran in, inferred from those paths)."""
    root, _ = relative_run
    moved = tmp_path / "moved"
    shutil.copytree(root / "b", moved / "b")
    shutil.copytree(root / "data", moved / "data")
    run = moved / "b" / "run"
    (run / "analysis" / "report.html").unlink()
    make_old_style(run, "b/run", "data/store")
    out = tmp_path / "r.html"
    jsae_in(tmp_path, "report", "moved/b/run", "--out", out)
    text = out.read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') == listed_figures(run) + len(list(run.glob("*.png")))
    assert "not shown:" not in text and "unavailable" not in text and "Top-activating segments" in text


def test_a_listed_figure_that_is_missing_is_named_not_dropped_silently(relative_run, tmp_path):
    root, _ = relative_run
    run = tmp_path / "run"
    shutil.copytree(root / "b" / "run", run)
    (run / "analysis" / "probe-lang-es" / "recall.png").unlink()
    out = tmp_path / "r.html"
    jsae_in(tmp_path, "report", "run", "--out", out)
    text = out.read_text(encoding="utf-8")
    note = re.search(r'<p class="note">not shown: ([^<]*)</p>', text)
    assert note and "recall.png" in note.group(1) and "probe-lang-es" in note.group(1)
    assert text.count('src="data:image/png;base64,') == listed_figures(run) - 1 + len(list(run.glob("*.png")))


# ----------------------------------------------------------------------------- headline

def headline(text: str) -> str:
    m = re.search(r'<h2 id="headline">Headline</h2>(.*?)<nav>', text, re.S)
    assert m, "no headline section"
    return m.group(1)


def rows_of(section: str) -> list[list[str]]:
    return [re.findall(r"<td>(?:<span[^>]*>)?([^<]*)", tr) for tr in re.findall(r"<tr><td>.*?</tr>", section)]


def test_headline_names_the_best_model_and_what_it_was_chosen_by(relative_run):
    _, run = relative_run
    text = (run / "analysis" / "report.html").read_text(encoding="utf-8")
    section = headline(text)
    summary = json.loads((run / "analysis" / "probe-lang-es" / "analysis.json").read_text())["summary"]
    best = rows_of(section)[0]
    setting = ("best single latent (test precision ≥ 0.90)" if summary["best_reaches_floor"]
               else "most precise single latent (none reaches precision 0.90)")
    assert best[:4] == [setting, summary["best_by"], summary["best_model"], str(summary["best_latent"])]
    assert "no K = 20, L = 200 model" in section    # this run's grid is k ∈ {3, 4}, L ≤ 64
    assert text.index('id="headline"') < text.index('id="training"')


def fake_probe(run: Path, summary: dict, csv: pd.DataFrame) -> None:
    folder = run / "analysis" / "probe-fake"
    folder.mkdir(parents=True)
    csv.to_csv(folder / "probe.csv", index=False)
    (folder / "analysis.json").write_text(json.dumps({
        "analysis": "probe", "params": {"label": "lang", "positive": "es"}, "summary": summary, "features": [],
        "files": ["probe.csv"], "tables": {"probe": "probe.csv"}}))


@pytest.fixture
def bare_run(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("analysis"))
    return run


CSV = pd.DataFrame({"name": ["k3_L8", "k20_L200"], "k": [3, 20], "latent_size": [8, 200], "latent": [1, 17],
                    "precision": [0.5, 0.91], "recall": [0.4, 0.62], "f1": [0.44, 0.737]})
BEST = {"best_model": "k3_L8", "best_latent": 1, "best_precision": 0.5, "best_recall": 0.4, "best_f1": 0.44}


def test_headline_shows_the_paper_setting_and_the_family_union_from_the_summary(bare_run, tmp_path):
    fake_probe(bare_run, {**BEST, "best_by": "train F1 of the probe latent", "paper_model": "k20_L200",
                          "paper_precision": 0.9, "paper_recall": 0.6, "family_union_precision": 0.8,
                          "family_union_recall": 0.95, "family_size": 3, "family": "1 4 6"}, CSV)
    jsae_in(tmp_path, "report", "run")
    rows = rows_of(headline((bare_run / "analysis" / "report.html").read_text(encoding="utf-8")))
    assert [r[:4] for r in rows] == [              # the best single latent: from probe.csv, under the floor
        ["best single latent (test precision ≥ 0.90)", BEST_BY, "k20_L200", "17"],
        ["feature family union (3 latents)", "the best model&#39;s family", "k3_L8", "1 4 6"],
        ["paper setting (K = 20, L = 200)", "fixed (the paper&#39;s)", "k20_L200", ""]]
    assert rows[2][-3:] == ["0.900", "0.600", "0.720"]             # F1 from precision and recall
    assert rows[1][-3:] == ["0.800", "0.950", "0.869"]


def test_headline_computes_the_paper_setting_from_probe_csv_when_the_summary_lacks_it(bare_run, tmp_path):
    fake_probe(bare_run, BEST, CSV)
    jsae_in(tmp_path, "report", "run")
    section = headline((bare_run / "analysis" / "report.html").read_text(encoding="utf-8"))
    rows = rows_of(section)
    assert len(rows) == 2 and "family" not in section
    assert rows[0] == ["best single latent (test precision ≥ 0.90)", BEST_BY, "k20_L200", "17", "0.910", "0.620",
                       "0.737"]
    assert rows[1] == ["paper setting (K = 20, L = 200)", "fixed (the paper&#39;s)", "k20_L200", "17", "0.910",
                       "0.620", "0.737"]
