"""The probe's all-latent logistic regression (not a ceiling) and its per-group recall table,
on planted data with hand-built SAEs whose latents are known.

* **The regression is not a bound.** A model whose latent 0 fires on exactly the positive
  rows with a tiny activation, and whose other latents never fire: that latent alone is
  perfect on the test split, while an L2 logistic regression on all latents with a small
  ``C`` cannot give it the weight it needs and predicts the majority class. The probe reports
  both numbers (``logreg_test_accuracy``, ``latent_test_accuracy``, each equal to an
  independent numpy / scikit-learn computation), states ``C`` and the scaling in the summary,
  params, printed note and heatmap title, and no file, title or printed table calls the
  regression a "ceiling".
* **Every group value, not the dominant one.** Music rows come from six tracks; latent 0
  fires on (nearly) every row of tracks t1–t5, latent 1 on every row of t6 only. The
  ``probe_groups.csv`` table (one row per model × latent × column × value) shows recall
  ≈ 1 for each of t1–t5 and 0 for t6 for latent 0, the reverse for latent 1, a negative
  firing rate of 0, and equals a pandas computation from the encoded test rows; the
  dominant-value column ``family_track`` is still there; the report shows it as a
  latents × values matrix for the best model, cut (and saying so) when larger than asked.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from jsae.analyses.labelled import load_labelled
from jsae.analyses import probing
from jsae.analyses.probing import probe
from jsae.core.activation import TopK
from jsae.core.normalize import Normalizer
from jsae.core.sae import SAEParams
from jsae.core.spec import ModelSpec
from jsae.models import ModelBatch
from jsae.outputs import probe as probe_out
from jsae.outputs.folders import ANALYSIS_OUTPUTS
from jsae.store import write_store

M = 16
TRACKS = ["t1", "t2", "t3", "t4", "t5", "t6"]


def planted():
    """360 rows per split, 30 % music (18 rows of each of six tracks), the rest voice (three
    speakers). Music rows of t1–t5 carry ``3 ± 0.5`` along ``u_music``; t6 rows carry ``3 u_t6``
    instead; voice rows ``3 u_voice``; every row has small noise in 13 other directions."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((M, M)))
    u = {"music": q[:, 0], "t6": q[:, 1], "voice": q[:, 2]}
    rows = []
    for split in ("train", "test"):
        for i in range(360):
            music = i % 10 < 3
            rows.append({"split": split, "kind": "music" if music else "voice",
                         "track": TRACKS[(i // 10) % 6] if music else f"spk{i % 3}"})
    table = pd.DataFrame(rows)
    table["id"] = [f"r{i:04d}" for i in range(len(table))]
    x = 0.3 * rng.standard_normal((len(table), M - 3)) @ q[:, 3:].T
    track = table.track.to_numpy()
    music = (table.kind == "music").to_numpy()
    t6 = track == "t6"
    x[music & ~t6] += (3.0 + 0.5 * rng.standard_normal(((music & ~t6).sum(), 1))) * u["music"]
    x[t6] += 3.0 * u["t6"]
    x[~music] += 3.0 * u["voice"]
    return x.astype(np.float32), table, u


def sae(enc: list[np.ndarray], bias: list[float], L: int) -> SAEParams:
    """Latents with the given encoder rows and biases, then dead latents (bias −10) up to ``L``."""
    W_enc = np.zeros((M, L))
    W_enc[:, :len(enc)] = np.stack(enc, axis=1)
    W_dec = W_enc.T / np.maximum(np.linalg.norm(W_enc.T, axis=1, keepdims=True), 1e-9)
    b_enc = np.concatenate([bias, np.full(L - len(enc), -10.0)])
    return SAEParams(W_enc=W_enc.astype(np.float32), b_enc=b_enc.astype(np.float32),
                     W_dec=W_dec.astype(np.float32), b_pre=np.zeros(M, np.float32))


NORM = Normalizer("none", np.zeros(M), np.ones(M))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    x, table, u = planted()
    return write_store(tmp_path_factory.mktemp("groups") / "store", x, table).path, table, u


@pytest.fixture(scope="module")
def tiny_latent(data):
    """k4_L4: latent 0 = 0.02 (u_music + u_t6) − 0.01, on every music row (activation ≈ 0.05)
    and on no voice row; latents 1–3 never fire."""
    u = data[2]
    return ModelBatch([ModelSpec(4, TopK(4))], [sae([0.02 * (u["music"] + u["t6"])], [-0.01], 4)], NORM)


@pytest.fixture(scope="module")
def tracks(data):
    """k8_L8: latent 0 on the t1–t5 rows (u_music), latent 1 on the t6 rows (u_t6), latent 2
    on voice rows (u_voice); latents 3–7 never fire."""
    u = data[2]
    return ModelBatch([ModelSpec(8, TopK(8))], [sae([u["music"], u["t6"], u["voice"]], [-1.5] * 3, 8)], NORM)


def test_a_perfect_latent_beats_the_regularised_all_latent_regression_and_nothing_says_ceiling(
        tiny_latent, data, tmp_path, monkeypatch):
    store = data[0]
    C = 1e-3
    df = probe(tiny_latent, store, "kind", "music", C=C, groups=["track"])
    row = df.iloc[0]
    # independent numbers: the latent alone, and scikit-learn's regression on all latents
    train = load_labelled(store, "kind", "music", split="train")
    test = load_labelled(store, "kind", "music", split="test")
    v_tr, v_te = tiny_latent.models()[0].encode(train.x), tiny_latent.models()[0].encode(test.x)
    lr = LogisticRegression(C=C, max_iter=2000, random_state=0).fit(v_tr.astype(np.float64), train.y)
    assert int(np.argmax(lr.coef_[0])) == 0 == row.latent
    latent_acc = float(np.mean((v_te[:, 0] > 0) == test.y))
    logreg_acc = float(lr.score(v_te.astype(np.float64), test.y))
    assert latent_acc == 1.0 and logreg_acc < 0.9  # the planted case: the regression is worse
    assert row.latent_test_accuracy == pytest.approx(latent_acc)
    assert row.logreg_test_accuracy == pytest.approx(logreg_acc)
    assert row.accuracy == row.latent_test_accuracy  # the older name of the same number
    cols = list(df.columns)
    assert cols.index("latent_test_accuracy") == cols.index("logreg_test_accuracy") + 1

    titles = []
    real = probe_out.plot_heatmap

    def spy(records, key, path, *, title, cmap):
        titles.append(title)
        return real(records, key, path, title=title, cmap=cmap)

    monkeypatch.setattr(probe_out, "plot_heatmap", spy)
    files = probe_out.write_probe(df, tmp_path)
    info = json.loads((tmp_path / "analysis.json").read_text())
    s, p = info["summary"], info["params"]
    assert p["C"] == C and p["standardize"] is False
    assert s["logreg_C"] == C and s["logreg_standardize"] is False
    assert s["best_logreg_test_accuracy"] == pytest.approx(logreg_acc)
    assert s["best_latent_test_accuracy"] == pytest.approx(latent_acc)
    assert "C = 0.001" in s["logreg"] and "raw latents" in s["logreg"]
    logreg_title = [t for t in titles if "all-latent logreg test accuracy" in t]
    assert len(logreg_title) == 1 and "C = 0.001" in logreg_title[0] and "raw latents" in logreg_title[0]
    note = probe_out.logreg_note(df)
    assert "C = 0.001" in note and "latent_test_accuracy" in note and "not an upper bound" in note
    printed = "\n".join([probe_out.probe_table(df), probe_out.family_table(df), note, *titles])
    assert "latent_test_accuracy" in probe_out.probe_table(df)
    texts = [f.read_text() for f in files if f.suffix in (".csv", ".json")]
    for text in [printed, *texts]:
        assert "ceiling" not in text.lower()
    on_csv = pd.read_csv(tmp_path / "probe.csv").iloc[0]
    assert on_csv.latent_test_accuracy == pytest.approx(latent_acc)
    assert on_csv.logreg_test_accuracy == pytest.approx(logreg_acc)


def test_the_cli_notes_the_regression_without_calling_it_a_ceiling(tiny_latent, data, tmp_path, monkeypatch,
                                                                    capsys):
    from jsae.sweeps import analysis_cli

    monkeypatch.setattr(analysis_cli.cli, "load_models", lambda run, args: tiny_latent)
    from jsae.sweeps.cli import main

    assert main(["probe", "unused", "--data", str(data[0]), "--label", "kind", "--positive", "music",
                 "--C", "0.001", "--group", "track", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "ceiling" not in out.lower()
    assert "C = 0.001" in out and "latent_test_accuracy" in out
    assert "track=t6" in out  # the group-recall matrix of the best model


# ----------------------------------------------------------------------------- recall within every group value


@pytest.fixture(scope="module")
def tracked(tracks, data):
    return probe(tracks, data[0], "kind", "music", groups=["track"])


def expected_recall(batch: ModelBatch, store, latent: int) -> pd.Series:
    """``{track: share of that track's positive test rows where latent fires}``, with pandas."""
    test = load_labelled(store, "kind", "music", split="test")
    fires = batch.models()[0].encode(test.x)[:, latent] > 0
    frame = pd.DataFrame({"track": test.table.track.astype(str).to_numpy(), "fires": fires, "y": test.y})
    return frame[frame.y].groupby("track").fires.mean()


def test_recall_within_every_group_value_of_a_broad_and_a_narrow_latent(tracked, tracks, data):
    row = tracked.iloc[0]
    assert sorted(map(int, row.family.split())) == [0, 1]
    assert row.family_track.split(", ")[0] in TRACKS[:5]  # the dominant-value column stays
    g = probing.group_recall_frame(tracked)
    assert list(g.columns[:11]) == ["name", "k", "latent_size", "activation", "l1_coef", "latent", "role",
                                    "member", "column", "value", "n_pos"]
    assert {"hits", "recall", "n_neg", "neg_fires", "neg_fire_rate"} <= set(g.columns)
    assert set(g.column) == {"kind", "track"}  # the label column first (overall recall), then the groups
    assert g.column.iloc[0] == "kind"
    tr = g[g.column == "track"]
    assert len(tr) == 2 * 6  # two latents × six tracks: no voice speaker (not a positive row)
    broad = tr[tr.latent == 0].set_index("value")
    narrow = tr[tr.latent == 1].set_index("value")
    assert (broad.loc[TRACKS[:5], "recall"] >= 0.95).all() and broad.loc["t6", "recall"] == 0
    assert (narrow.loc[TRACKS[:5], "recall"] == 0).all() and narrow.loc["t6", "recall"] == 1.0
    assert (broad.n_pos == 18).all() and (tr.neg_fire_rate == 0).all() and (tr.n_neg == 252).all()
    for latent, got in ((0, broad), (1, narrow)):
        want = expected_recall(tracks, data[0], latent)
        pd.testing.assert_series_equal(got.recall.sort_index(), want.sort_index(), check_names=False)
    # roles: the probe latent first, then the other family members; member = rank in the family
    roles = g.drop_duplicates("latent").set_index("latent")
    assert roles.loc[int(row.latent), "role"] == "probe" and (roles.role == "probe").sum() == 1
    assert g.latent.iloc[0] == int(row.latent)
    assert {int(roles.loc[0, "member"]), int(roles.loc[1, "member"])} == {0, 1}
    overall = g[g.column == "kind"].set_index("latent")
    assert overall.loc[int(row.latent), "recall"] == pytest.approx(row.recall)
    assert (overall.value == "music").all()


def test_probe_groups_csv_is_written_listed_and_shown_as_a_matrix(tracked, tmp_path):
    run = tmp_path / "run"
    folder = run / "analysis" / "probe-kind-music"
    probe_out.write_probe(tracked, folder)
    assert "probe_groups.csv" in ANALYSIS_OUTPUTS["probe"]
    info = json.loads((folder / "analysis.json").read_text())
    assert info["tables"]["group recall"] == "probe_groups.csv" and "probe_groups.csv" in info["files"]
    csv = pd.read_csv(folder / "probe_groups.csv", dtype={"value": str})
    pd.testing.assert_frame_equal(csv, probing.group_recall_frame(tracked), check_dtype=False)
    assert "group_recall" not in info["params"] and "group_recall" not in json.loads(
        (folder / "probe.json").read_text())["params"]
    # the report: a latents × values matrix of the best model
    (run / "sweep.json").write_text(json.dumps({"models": [{"name": "k8_L8", "k": 8, "latent_size": 8}],
                                                "dim": M, "step": 1}))
    from jsae.report import build_report

    page = build_report(run, max_features=0).read_text().replace("<wbr>", "")
    section = page.split("<h3>group recall", 1)[1].split("<h3>", 1)[0]
    assert "k8_L8" in section.split("</h3>", 1)[0]
    head = re.findall(r"<th>(.*?)</th>", section)
    assert head[:2] == ["latent", "role"] and head[-1] == "neg_fire_rate"
    assert [h.split(" ")[0] for h in head[2:-1]] == ["kind=music", *(f"track={t}" for t in TRACKS)]
    body = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr><td>.*?</tr>", section)]
    assert len(body) == 2
    by_latent = {int(r[0]): r for r in body}
    assert by_latent[1][2 + 1:2 + 7] == ["0.000"] * 5 + ["1.000"]
    assert all(float(v) >= 0.95 for v in by_latent[0][3:8]) and by_latent[0][8] == "0.000"
    assert "ceiling" not in page.lower()


def test_the_matrix_is_cut_and_says_so(tracked):
    g = probing.group_recall_frame(tracked)
    full, note = probe_out.group_matrix(g, "k8_L8")
    assert full.shape == (2, 2 + 7 + 1) and note == ""
    small, note = probe_out.group_matrix(g, "k8_L8", max_latents=1, max_values=3)
    assert small.shape == (1, 2 + 3 + 1)
    assert "1 of 2 latents" in note and "3 of 7 values" in note and "probe_groups.csv" in note
    # the values kept are those with the most positive test rows: kind=music (108) first
    assert small.columns[2].startswith("kind=music")
