"""Outputs that are safe to open, bound to what they were computed from, and never collide.

* **CSV in a spreadsheet.** Metadata text that starts with ``=``, ``+``, ``-``, ``@``, a tab
  or a carriage return (OWASP's CSV-injection list) is written to every CSV of a probe, a
  split, a consistency diagnostic and an atlas with a leading ``'`` (cells and column
  headers), so a spreadsheet shows it as text; numbers (``-0.5``, also as text) stay
  numbers; JSON keeps the raw values, ``read_csv`` gives them back and the report shows them
  raw.
* **Bound to a step and a store.** ``analysis.json`` records the models' step and the
  store's fingerprint; the report marks an analysis computed at an older step than the
  run's, and one whose store was re-imported (same path, other labels) since; a rerun into
  that folder is refused without ``overwrite``.
* **No collisions.** ``a/b`` and ``a_b`` positives write two folders (probe, split,
  consistency names too); two universality comparisons against runs both named ``run``
  write two folders; a 300-character label value gives names within the length cap and
  a probe that runs.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis_helpers import fresh_copy
from jsae.outputs.folders import (FORMULA_START, MAX_NAME, SOURCE_KEY, OutputExistsError, raw_cell, read_csv,
                                  safe_cell, safe_cells, store_fingerprint, write_csv)
from jsae.store import write_store

HYPERLINK = '=HYPERLINK("http://example.invalid","f")'
CMD = "+cmd|' /C calc'!A0"
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _models(run: Path, **select):
    from jsae.runs.load import load_run

    return load_run(run).select(**select)


def _hostile_store(path: Path, data) -> Path:
    """The labelled store with group labels a spreadsheet would run: gender f/m →
    ``=HYPERLINK(…)`` / ``+cmd|…``; speakers led by ``@``, a tab, a carriage return or ``-``."""
    t = data.table.copy()
    t["gender"] = t["gender"].map({"f": HYPERLINK, "m": CMD})
    lead = ["@", "\t", "\r", "-"]
    t["speaker"] = [lead[i % 4] + s for i, s in enumerate(t["speaker"])]
    return write_store(path, data.x, t).path


def _store(path: Path, data, **maps) -> Path:
    """The labelled store with some label values renamed (``lang={"es": "a/b"}``)."""
    t = data.table.copy()
    for col, m in maps.items():
        t[col] = t[col].map(lambda v: m.get(v, v))
    return write_store(path, data.x, t, overwrite=path.exists()).path


def _cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [c for row in csv.reader(f) for c in row]


def _unsafe(path: Path) -> list[str]:
    """The cells (headers included) of a CSV a spreadsheet would read as a formula."""
    return [c for c in _cells(path) if c[:1] in FORMULA_START and not NUMBER.match(c)]


# ----------------------------------------------------------------------------- the helper


@pytest.mark.parametrize("lead", list(FORMULA_START))
def test_every_formula_start_is_prefixed_and_read_back_raw(lead, tmp_path):
    raw = f"{lead}SUM(1,2)"
    df = pd.DataFrame({f"{lead}head": [raw, "plain", "-0.5", "'" + raw], "x": [-0.5, 1.0, 2.0, -3.0],
                       "n": [-1, 2, 3, 4], "cat": pd.Categorical([raw, "b", raw, "b"])})
    path = write_csv(df, tmp_path / "t.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [f"'{lead}head", "x", "n", "cat"]
    assert [r[0] for r in rows[1:]] == ["'" + raw, "plain", "-0.5", "''" + raw]
    assert [r[1] for r in rows[1:]] == ["-0.5", "1.0", "2.0", "-3.0"]       # numbers stay numbers
    assert [r[2] for r in rows[1:]] == ["-1", "2", "3", "4"]
    assert [r[3] for r in rows[1:]] == ["'" + raw, "b", "'" + raw, "b"]
    assert not _unsafe(path)
    back = read_csv(path)
    assert list(back.columns) == list(df.columns)
    assert back.iloc[:, 0].tolist() == [raw, "plain", "-0.5", "'" + raw]
    assert back["x"].tolist() == [-0.5, 1.0, 2.0, -3.0] and back["x"].dtype == float
    assert df.iloc[0, 0] == raw  # the frame written is not changed


def test_safe_cell_prefixes_only_text_that_is_no_number():
    for v in ("-0.5", "+3", "1e-3", "-.5", "12"):
        assert safe_cell(v) == v
    for v in ("-inf", "-x", "+", "=", "@", "\t", "\r", "-1-1", "=1+1"):
        assert safe_cell(v) == "'" + v and raw_cell(safe_cell(v)) == v
    for v in (-0.5, 3, None, float("nan"), "", "'", "it's"):
        assert safe_cell(v) is v or safe_cell(v) == v
    assert safe_cells(pd.DataFrame({"=a": [1]})).columns.tolist() == ["'=a"]


# ----------------------------------------------------------------------------- CSV of the analyses


def test_hostile_labels_are_text_in_every_csv_and_raw_in_json_and_the_report(tmp_path, trained_run,
                                                                               labelled_data):
    from jsae.atlas.site import build_site
    from jsae.outputs.consistency import run_consistency
    from jsae.outputs.probe import run_probe
    from jsae.outputs.split import run_split
    from jsae.report import build_report

    store = _hostile_store(tmp_path / "hostile", labelled_data)
    run = fresh_copy(trained_run, tmp_path / "run")
    models = _models(run, k=3)
    _, probe_dir = run_probe(models, store, "lang", "es", groups=("gender", "speaker"))
    _, split_dir = run_split(models, store, "lang", "es", "gender", 3)
    cons, cons_dir = run_consistency(store, "lang", "es", negative="en", group="gender", run_dir=run)
    atlas = build_site(_models(run, k=3, latent_size=8), store, tmp_path / "atlas", audio=False).out

    csvs = sorted([*probe_dir.glob("*.csv"), *split_dir.glob("*.csv"), *cons_dir.glob("*.csv"),
                   *atlas.rglob("*.csv")])
    assert {p.name for p in csvs} >= {"probe_family.csv", "probe_groups.csv", "split_nodes.csv", "consistency.csv",
                                      "by.csv", "latents.csv", "models.csv"}
    for path in csvs:
        assert not _unsafe(path), (path.name, _unsafe(path)[:5])
    # the hostile labels are there, as text
    for name, folder in (("probe_family.csv", probe_dir), ("probe_groups.csv", probe_dir),
                         ("split_nodes.csv", split_dir), ("by.csv", cons_dir), ("consistency.csv", cons_dir)):
        cells = _cells(folder / name)
        assert "'" + HYPERLINK in cells and "'" + CMD in cells, name
    speakers = set(_cells(cons_dir / "consistency.csv"))
    assert {c[:2] for c in speakers if c[:1] == "'"} >= {"'@", "'\t", "'\r", "'-"}
    # headers too (split_levels.csv: recall_<value>; consistency's by column holds values)
    assert "'" + CMD in _cells(split_dir / "split_nodes.csv")
    # numbers stay numbers: a negative chance consistency is a plain negative number
    back = pd.read_csv(cons_dir / "consistency.csv")
    assert back["chance"].dtype == float and np.allclose(back["chance"], cons.table["chance"])
    assert (back["chance"] < 0).any()
    # read back raw
    groups = read_csv(probe_dir / "probe_groups.csv", dtype={"column": str, "value": str})
    assert {HYPERLINK, CMD} <= set(groups["value"])
    # JSON keeps the raw values
    strings: list[str] = []

    def walk(o):
        if isinstance(o, dict):
            strings.extend(o)
            o = list(o.values())
        if isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, str):
            strings.append(o)

    for j in (probe_dir / "probe.json", split_dir / "split.json", cons_dir / "consistency.json"):
        walk(json.loads(j.read_text()))
    assert HYPERLINK in strings and CMD in strings
    assert not [s for s in strings if s[:1] == "'" and s[1:2] in FORMULA_START]
    # the report reads the CSVs back raw: no stray quote before a label
    html = build_report(run).read_text()
    assert "=HYPERLINK(" in html and "&#39;=HYPERLINK" not in html and "&#39;+cmd" not in html


# ----------------------------------------------------------------------------- bound to a step and a store


def test_an_analysis_records_its_step_and_store_and_an_older_step_is_marked(tmp_path, trained_run, labelled_store):
    from jsae.outputs.probe import run_probe
    from jsae.report import build_report

    run = fresh_copy(trained_run, tmp_path / "run")
    _, folder = run_probe(_models(run, k=3, latent_size=8), labelled_store, "lang", "es")
    info = json.loads((folder / "analysis.json").read_text())
    step = json.loads((run / "sweep.json").read_text())["step"]
    src = info[SOURCE_KEY]
    assert src["step"] == step and src["store"] == str(Path(labelled_store).absolute())
    assert src["store_fingerprint"] == store_fingerprint(labelled_store) is not None
    assert "out of date" not in build_report(run).read_text()

    sweep = json.loads((run / "sweep.json").read_text())  # the run trained on since
    sweep["step"] = step * 10
    (run / "sweep.json").write_text(json.dumps(sweep))
    html = build_report(run).read_text()
    assert f"computed at step {step}; the run is now at step {step * 10}: re-run it." in html
    assert "(out of date)" in html  # its link too


def test_a_reimported_store_is_marked_and_a_rerun_is_refused_without_overwrite(tmp_path, trained_run, labelled_data):
    from jsae.outputs.probe import run_probe
    from jsae.report import build_report

    store = _store(tmp_path / "store", labelled_data)
    run = fresh_copy(trained_run, tmp_path / "run")
    models = _models(run, k=3, latent_size=8)
    _, folder = run_probe(models, store, "lang", "es")
    assert "out of date" not in build_report(run).read_text()

    _store(tmp_path / "store", labelled_data, speaker={"spk001": "spk999"})  # re-imported: other labels
    html = build_report(run).read_text()
    assert f"the store {Path(store).absolute()} changed since this analysis: re-run it." in html
    with pytest.raises(OutputExistsError, match="changed since"):
        run_probe(models, store, "lang", "es")
    _, again = run_probe(models, store, "lang", "es", overwrite=True)
    assert again == folder
    assert "out of date" not in build_report(run).read_text()


# ----------------------------------------------------------------------------- names never collide


def test_sanitised_names_differ_from_the_names_they_look_like():
    from jsae.outputs.consistency import consistency_folder_name
    from jsae.outputs.probe import probe_folder_name
    from jsae.outputs.split import split_folder_name
    from jsae.outputs.steer import steer_folder_name

    for fn, extra in ((probe_folder_name, {}), (consistency_folder_name, {}),
                      (lambda lab, pos: split_folder_name(lab, pos, "gender", 3), {}),
                      (lambda lab, pos: steer_folder_name(lab, pos, k=3), {})):
        names = {fn("lang", v, **extra) for v in ("a/b", "a_b", "a b", "a_b_", "a?b")}
        assert len(names) == 5, names
    assert probe_folder_name("lang", "es") == "probe-lang-es"  # plain values keep plain names


def test_a_slash_b_and_a_underscore_b_positives_write_two_folders(tmp_path, trained_run, labelled_data):
    from jsae.outputs.probe import run_probe

    store = _store(tmp_path / "store", labelled_data, lang={"es": "a/b", "en": "a_b"})
    run = fresh_copy(trained_run, tmp_path / "run")
    models = _models(run, k=3, latent_size=8)
    _, one = run_probe(models, store, "lang", "a/b")
    _, two = run_probe(models, store, "lang", "a_b")
    assert one != two and one.parent == two.parent == run / "analysis"
    ids = [json.loads((f / "analysis.json").read_text())["identity"]["positive"] for f in (one, two)]
    assert ids == ["a/b", "a_b"]


def test_universality_against_two_runs_named_run_writes_two_folders(tmp_path, trained_run, trained_run_seed1):
    from jsae.outputs.universality import run_universality

    run = fresh_copy(trained_run, tmp_path / "run")
    b1 = fresh_copy(trained_run_seed1, tmp_path / "seedA" / "run")
    b2 = fresh_copy(trained_run_seed1, tmp_path / "seedB" / "run")
    models = _models(run, k=3, latent_size=8)
    _, one = run_universality(models, b1, method="decoder")
    _, two = run_universality(models, b2, method="decoder")
    assert one != two and one.name.startswith("universality-run-") and two.name.startswith("universality-run-")
    runs = [json.loads((f / "analysis.json").read_text())["identity"]["run_b"] for f in (one, two)]
    assert runs == [str(b1.absolute()), str(b2.absolute())]
    step_b = json.loads((one / "analysis.json").read_text())[SOURCE_KEY]["step_b"]
    assert step_b == json.loads((b1 / "sweep.json").read_text())["step"]


def test_a_300_character_label_value_works(tmp_path, trained_run, labelled_data):
    from jsae.outputs.consistency import consistency_folder_name
    from jsae.outputs.probe import run_probe
    from jsae.outputs.split import split_folder_name
    from jsae.outputs.steer import steer_folder_name
    from jsae.outputs.universality import universality_folder_name
    from jsae.report import build_report

    long = ("é/" * 150)[:300]
    assert len(long) == 300
    for name in (steer_folder_name("lang", long, "en", k=3, latent_size=8), split_folder_name("lang", long, "g", 3),
                 consistency_folder_name("lang", long), universality_folder_name(long, "/x/" + long)):
        assert len(name) <= MAX_NAME + 9, name
    store = _store(tmp_path / "store", labelled_data, lang={"es": long})
    run = fresh_copy(trained_run, tmp_path / "run")
    _, folder = run_probe(_models(run, k=3, latent_size=8), store, "lang", long)
    assert folder.is_dir() and len(folder.name) <= MAX_NAME + 9
    assert json.loads((folder / "analysis.json").read_text())["identity"]["positive"] == long
    assert long in build_report(run).read_text()
