"""The report's headline names, per probe, the best single latent under a precision floor
(never a latent below it without saying so) and the best feature family by union F1, and
the probe's analysis.json summary records the same two choices.

The planted table: the highest-F1 probe latent (k20_L200) has precision 0.72 and fires on
many negatives; a precise latent (k40_L400, precision 0.95) has lower recall; the best
union F1 is a third model's family (k20_L800)."""
import html
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from jsae.outputs.probe import PRECISION_FLOOR, best_family, best_model, probe_summary
from jsae.report.headline import headline, probe_headline

TABLE = pd.DataFrame({
    "name": ["k20_L200", "k40_L400", "k20_L800", "k10_L100", "k40_L800"],
    "k": [20, 40, 20, 10, 40], "latent_size": [200, 400, 800, 100, 800],
    "latent": [70, 5, 12, 3, 9],
    "precision": [0.72, 0.95, 0.91, 0.5, 0.93],
    "recall": [0.90, 0.40, 0.38, 0.2, 0.25],
    "f1": [0.80, 0.563, 0.536, 0.286, 0.394],
    "family": ["70", "5 6", "12 40 77", "3", "9"], "family_size": [1, 2, 3, 1, 1],
    "family_precision": [0.72, 0.94, 0.93, 0.5, 0.93], "family_recall": [0.90, 0.55, 0.77, 0.2, 0.25],
    "family_f1": [0.80, 0.694, 0.842, 0.286, 0.394]})
IMPRECISE = TABLE.assign(precision=[0.72, 0.85, 0.81, 0.5, 0.6])


def rows_by_setting(h: dict) -> dict[str, dict]:
    return {r["setting"]: r for r in h["table"].to_dict(orient="records")}


def test_the_floor_is_a_documented_constant():
    assert PRECISION_FLOOR == 0.9


def test_the_imprecise_high_f1_latent_is_not_named_best():
    h = probe_headline(TABLE)
    single = h["lines"][0]
    assert "k20_L200 latent 70" not in single and "0.72" not in single
    assert single == "best single latent with test precision ≥ 0.90: k40_L400 latent 5 — precision 0.95, recall 0.40"
    best = rows_by_setting(h)["best single latent (test precision ≥ 0.90)"]
    assert best["model"] == "k40_L400" and best["precision"] >= PRECISION_FLOOR
    assert "test precision ≥ 0.90" in best["chosen by"] and "recall" in best["chosen by"]
    # said why the highest F1 was not named
    assert any("k20_L200 latent 70" in n and "0.72" in n for n in h["notes"])


def test_the_family_line_names_the_best_union_f1_model():
    h = probe_headline(TABLE)
    family = [x for x in h["lines"] if x.startswith("best feature family")]
    assert family == ["best feature family (union of 3 latents, by test F1): k20_L800 — precision 0.93, recall 0.77, "
                      "F1 0.84"]
    row = rows_by_setting(h)["best feature family (union of 3 latents)"]
    assert row["model"] == "k20_L800" and row["latent"] == "12 40 77" and "F1" in row["chosen by"]


def test_the_paper_setting_line_is_kept():
    h = probe_headline(TABLE)
    assert "paper setting (K = 20, L = 200): k20_L200 latent 70 — precision 0.72, recall 0.90" in h["lines"]


def test_no_latent_reaching_the_floor_is_said_explicitly():
    h = probe_headline(IMPRECISE)
    assert h["lines"][0] == ("no single latent reaches precision 0.90; the most precise is k40_L400 latent 5 — "
                             "precision 0.85, recall 0.40")
    assert not any(x.startswith("best single latent") for x in h["lines"])
    assert "most precise single latent (none reaches precision 0.90)" in rows_by_setting(h)


def test_ties_go_to_higher_f1_then_the_smaller_model():
    tied = TABLE.assign(recall=[0.9, 0.4, 0.4, 0.2, 0.4], f1=[0.8, 0.56, 0.56, 0.29, 0.5])
    assert best_model(tied)["name"] == "k40_L400"                # k40_L400 and k20_L800 tie: L 400 < 800
    assert best_model(tied.assign(f1=[0.8, 0.55, 0.56, 0.29, 0.5]))["name"] == "k20_L800"
    assert best_family(TABLE)["name"] == "k20_L800"


def test_the_summary_records_the_same_two_choices():
    s = probe_summary(TABLE)
    assert (s["best_model"], s["best_latent"], s["best_reaches_floor"]) == ("k40_L400", 5, True)
    assert s["precision_floor"] == PRECISION_FLOOR and "precision ≥ 0.90" in s["best_by"]
    assert (s["best_family_model"], s["best_family"], s["best_family_size"]) == ("k20_L800", "12 40 77", 3)
    assert s["best_family_f1"] == pytest.approx(0.842)
    assert s["paper_model"] == "k20_L200"
    low = probe_summary(IMPRECISE)
    assert low["best_model"] == "k40_L400" and low["best_reaches_floor"] is False
    assert "none reaches precision 0.90" in low["best_by"]
    # the summary alone (no probe.csv) gives the same headline
    assert probe_headline(None, s)["lines"][:2] == probe_headline(TABLE)["lines"][:2]
    assert probe_headline(None, low)["lines"][0] == probe_headline(IMPRECISE)["lines"][0]


def planted_probe(run: Path, name: str, df: pd.DataFrame) -> Path:
    folder = run / "analysis" / name
    folder.mkdir(parents=True)
    df.to_csv(folder / "probe.csv", index=False)
    (folder / "analysis.json").write_text(json.dumps({
        "analysis": "probe", "params": {"label": "lang", "positive": "es"}, "summary": probe_summary(df),
        "features": [], "files": ["probe.csv"], "tables": {"probe": "probe.csv"}}))
    return folder


def test_headline_reads_the_probe_folders(tmp_path):
    a = planted_probe(tmp_path, "probe-lang-es", TABLE)
    b = planted_probe(tmp_path, "probe-lang-fr", IMPRECISE)
    out = headline([(a, json.loads((a / "analysis.json").read_text())),
                    (b, json.loads((b / "analysis.json").read_text()))])
    assert [h["what"] for h in out] == ["lang = es (probe-lang-es)", "lang = es (probe-lang-fr)"]
    assert out[0]["lines"][0].startswith("best single latent with test precision ≥ 0.90: k40_L400 latent 5")
    assert out[1]["lines"][0].startswith("no single latent reaches precision 0.90; the most precise is k40_L400")
    # restricted to some models: chosen again among them
    some = headline([(a, json.loads((a / "analysis.json").read_text()))], {"k20_L200", "k20_L800"})
    assert some[0]["lines"][0] == ("best single latent with test precision ≥ 0.90: k20_L800 latent 12 — "
                                   "precision 0.91, recall 0.38")


def test_the_report_page_shows_both_choices(tmp_path, trained_run):
    from jsae.report import build_report

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("analysis"))
    planted_probe(run, "probe-fake", TABLE)
    planted_probe(run, "probe-low", IMPRECISE)
    page = html.unescape(build_report(run).read_text(encoding="utf-8"))
    section = re.search(r'<h2 id="headline">Headline</h2>(.*?)<nav>', page, re.S).group(1)
    lines = re.findall(r"<li>([^<]*)</li>", section)
    assert "best single latent with test precision ≥ 0.90: k40_L400 latent 5 — precision 0.95, recall 0.40" in lines
    assert ("best feature family (union of 3 latents, by test F1): k20_L800 — precision 0.93, recall 0.77, F1 0.84"
            in lines)
    assert ("no single latent reaches precision 0.90; the most precise is k40_L400 latent 5 — precision 0.85, "
            "recall 0.40") in lines
    assert not any(x.startswith("best single latent") and "k20_L200" in x for x in lines)
