"""Feature-atlas statistics (:mod:`jsae.analyses.atlas`) against plain references.

Every check compares the vectorised code with an independent computation written out here
(float64 numpy loops, pandas groupby, scipy.stats) on fresh random data:

* activation summary, quantiles and histograms (``np.histogram``), top and band examples;
* enrichment (pandas groupby), missing values never a class;
* Cohen's d, Welch's test (``scipy.stats.ttest_ind(equal_var=False)``), Spearman
  (``scipy.stats.spearmanr``), BH q-values (``scipy.stats.false_discovery_control`` and a loop);
* decoder neighbours (brute-force cosines), matches (universality's ``best_cosine_match``);
* a planted latent (fires exactly on ``kind = music``, activation falling with
  ``vad.speech_prob``) is described by both, with the right sign and size; dead latents are
  described as dead without NaN trouble; the top-level ``latent_atlas`` on a written store.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jsae.analyses.atlas import (AtlasOptions, activation_histograms, activation_quantiles, average_ranks,
                                 band_examples, best_correlate, best_label, bh_qvalues, categorical_columns,
                                 decoder_neighbours, enrichment, firing_summary, latent_atlas, metadata_design,
                                 model_atlas, numeric_columns, numeric_effects, sorted_activations, top_examples)
from jsae.analyses.universality import best_cosine_match
from jsae.core.activation import TopK
from jsae.core.normalize import Normalizer
from jsae.core.sae import SAEParams
from jsae.core.spec import ModelSpec
from jsae.errors import BadValueError
from jsae.models import ModelBatch
from jsae.store import write_store

MINUS = "\u2212"


def sparse_codes(rng, n, L, k):
    """TopK-like codes: ``k`` random latents per row with positive random activations."""
    v = np.zeros((n, L), np.float32)
    for b in range(n):
        v[b, rng.choice(L, k, replace=False)] = rng.gamma(2.0, 1.0, k) + 0.01
    return v


def random_table(rng, n):
    kind = rng.choice(["speech", "music", "noise"], n).astype(object)
    lang = rng.choice(["en", "es", "de"], n).astype(object)
    lang[rng.random(n) < 0.1] = None
    lang[rng.random(n) < 0.05] = ""
    lang[rng.random(n) < 0.05] = np.nan
    lang[rng.random(n) < 0.03] = "  "
    x1 = rng.standard_normal(n)
    x1[rng.random(n) < 0.1] = np.nan
    x2 = rng.standard_normal(n)
    x2[rng.random(n) < 0.1] = np.inf
    return pd.DataFrame({
        "id": [f"r{i}" for i in range(n)], "split": rng.choice(["train", "test"], n),
        "offset": rng.random(n), "duration": rng.random(n) + 4, "kind": kind, "lang": lang,
        "voiced": rng.random(n) < 0.4, "band": pd.Categorical(rng.choice(["lo", "hi"], n)),
        "vad.speech_prob": rng.random(n), "acoustic.F0semitoneFrom27.5Hz_sma3nz_amean": x1,
        "acoustic.loudness_sma3_amean": x2, "count": rng.integers(0, 5, n)})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    n, L = 300, 24
    v = sparse_codes(rng, n, L, 4)
    v[:, 7] = 0.0  # dead
    return v, random_table(rng, n)


# ----------------------------------------------------------------------------- activations


def test_summary_quantiles_and_histograms_equal_plain_numpy(data):
    v, _ = data
    v = v.copy()
    v[:5, 2] = 0.0
    v[5:9, 2] = 1.5  # ties: every firing value equal
    v[:, 2][9:] = 0.0
    v[:, 3] = 0.0
    v[17, 3] = 0.25  # one firing row
    summ = firing_summary(v)
    order, svals = sorted_activations(v)
    qs = (0.1, 0.25, 0.5, 0.9, 0.99)
    quant = activation_quantiles(svals, summ["n_fires"], qs)
    counts, edges = activation_histograms(v, summ["max_activation"], 20)
    assert counts.shape == (v.shape[1], 20) and edges.shape == (v.shape[1], 21)
    for j in range(v.shape[1]):
        col = v[:, j].astype(np.float64)
        fire = col[col > 0]
        assert summ["n_fires"][j] == len(fire)
        assert summ["firing_rate"][j] == pytest.approx(len(fire) / len(col))
        if len(fire) == 0:
            assert np.isnan(summ["mean_activation"][j]) and summ["max_activation"][j] == 0
            assert np.isnan(quant[j]).all() and counts[j].sum() == 0
            continue
        assert summ["mean_activation"][j] == pytest.approx(fire.mean(), rel=1e-12)
        assert summ["max_activation"][j] == fire.max()
        np.testing.assert_allclose(quant[j], np.quantile(fire, qs), rtol=1e-12)
        ref_counts, ref_edges = np.histogram(fire, bins=20, range=(0.0, fire.max()))
        np.testing.assert_array_equal(counts[j], ref_counts)
        np.testing.assert_array_equal(edges[j], ref_edges)


def test_histogram_counts_on_values_at_bin_edges():
    """Values placed exactly on (and next to) the edges land where np.histogram puts them."""
    rng = np.random.default_rng(2)
    L, n_bins = 6, 20
    mx = rng.uniform(0.5, 7.0, L)
    edges = np.linspace(np.zeros(L), mx, n_bins + 1, axis=1)
    vals = np.concatenate([edges[:, 1:], np.nextafter(edges[:, 1:], 0), rng.uniform(0, 1, (L, 30)) * mx[:, None]],
                          axis=1).T
    counts, _ = activation_histograms(vals, vals.max(axis=0), n_bins)
    for j in range(L):
        ref, _ = np.histogram(vals[:, j][vals[:, j] > 0], bins=n_bins, range=(0, vals[:, j].max()))
        np.testing.assert_array_equal(counts[j], ref)


def test_top_and_band_examples_follow_their_definitions(data):
    v, _ = data
    v64 = v.astype(np.float64)
    summ = firing_summary(v)
    order, svals = sorted_activations(v)
    n_top, per_band = 5, 3
    bands = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
    t_rows, t_acts = top_examples(order, svals, summ["n_fires"], n_top)
    b_rows, b_acts = band_examples(order, svals, summ["n_fires"], bands, per_band, skip=n_top, seed=4)
    again, _ = band_examples(order, svals, summ["n_fires"], bands, per_band, skip=n_top, seed=4)
    other, _ = band_examples(order, svals, summ["n_fires"], bands, per_band, skip=n_top, seed=5)
    np.testing.assert_array_equal(b_rows, again)
    assert not np.array_equal(b_rows, other)
    for j in range(v.shape[1]):
        firing = [(-v64[b, j], b) for b in range(len(v)) if v64[b, j] > 0]
        ranked = [b for _, b in sorted(firing)]  # largest first, ties: lower row
        want = ranked[:n_top]
        assert t_rows[j, :len(want)].tolist() == want and (t_rows[j, len(want):] == -1).all()
        np.testing.assert_array_equal(t_acts[j, :len(want)], v64[want, j])
        n = len(ranked)
        asc_rank = {b: n - 1 - i for i, b in enumerate(ranked)}
        for bi, (lo, hi) in enumerate(bands):
            in_band = [b for b in ranked[n_top:] if lo * n <= asc_rank[b] < hi * n]
            got = [b for b in b_rows[j, bi] if b >= 0]
            assert len(got) == min(per_band, len(in_band))
            assert set(got) <= set(in_band) and len(set(got)) == len(got)
            assert got == sorted(got, key=lambda b: (-v64[b, j], b))  # by activation, largest first
            np.testing.assert_array_equal(b_acts[j, bi, :len(got)], v64[got, j])


def test_top_examples_break_ties_by_the_lower_row():
    rng = np.random.default_rng(5)
    v = rng.integers(0, 4, (500, 6)).astype(np.float32)  # many equal activations
    summ = firing_summary(v)
    order, svals = sorted_activations(v)
    rows, acts = top_examples(order, svals, summ["n_fires"], 40)
    for j in range(v.shape[1]):
        want = sorted((b for b in range(len(v)) if v[b, j] > 0), key=lambda b: (-v[b, j], b))[:40]
        assert rows[j].tolist() == want


# ----------------------------------------------------------------------------- enrichment


def test_columns_are_detected_by_type_and_excluded_by_name(data):
    _, table = data
    assert categorical_columns(table) == ["kind", "lang", "voiced", "band"]
    assert numeric_columns(table) == ["vad.speech_prob", "acoustic.F0semitoneFrom27.5Hz_sma3nz_amean",
                                      "acoustic.loudness_sma3_amean", "count"]
    assert "offset" in numeric_columns(table, exclude=("id",))
    assert categorical_columns(table, max_values=2) == ["voiced", "band"]


def test_enrichment_equals_a_pandas_groupby_and_missing_values_are_no_class(data):
    v, table = data
    cat = categorical_columns(table)
    design = metadata_design(table, cat, [])
    got = enrichment(v > 0, design).frame()
    assert not ({"", "  ", "nan", "None", "<NA>"} & set(got["value"]))
    assert sorted(got.loc[got.column == "lang", "value"].unique()) == ["de", "en", "es"]
    rows = []
    for c in cat:
        s = table[c].astype(object)
        known = s.notna() & (s.astype(str).str.strip() != "")
        for j in range(v.shape[1]):
            df = pd.DataFrame({"value": s[known].astype(str), "fires": v[known.to_numpy(), j] > 0})
            n_fires = int(df["fires"].sum())
            g = df.groupby("value")["fires"].agg(["size", "sum"])
            for value, r in g.iterrows():
                hits = int(r["sum"])
                prec = hits / n_fires if n_fires else np.nan
                rec = hits / r["size"]
                rows.append({"latent": j, "column": c, "value": value, "n_value": int(r["size"]),
                             "n_known": len(df), "n_fires": n_fires, "hits": hits, "precision": prec,
                             "recall": rec, "lift": prec / (r["size"] / len(df)),
                             "f1": (2 * prec * rec / (prec + rec) if hits else (0.0 if n_fires else np.nan))})
    ref = pd.DataFrame(rows)
    key = ["latent", "column", "value"]
    merged = ref.merge(got, on=key, suffixes=("_ref", ""), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all() and len(got) == len(ref)
    for c in ("n_value", "n_known", "n_fires", "hits"):
        np.testing.assert_array_equal(merged[c], merged[f"{c}_ref"])
    for c in ("precision", "recall", "lift", "f1"):
        np.testing.assert_allclose(merged[c], merged[f"{c}_ref"], rtol=1e-12, equal_nan=True)
    # the dead latent: no precision, no crash
    dead = got[got.latent == 7]
    assert (dead.hits == 0).all() and dead.precision.isna().all() and (dead.recall == 0).all()


# ----------------------------------------------------------------------------- numeric correlates


def test_bh_qvalues_equal_scipy_and_a_plain_loop():
    rng = np.random.default_rng(3)
    p = rng.random(200) ** 3
    p[rng.random(200) < 0.1] = np.nan
    q = bh_qvalues(p.reshape(20, 10)).ravel()
    ok = np.isfinite(p)
    assert np.isnan(q[~ok]).all()
    np.testing.assert_allclose(q[ok], stats.false_discovery_control(p[ok], method="bh"), rtol=1e-12)
    pv = p[ok]
    m = len(pv)
    ref = [min(1.0, min(pv[k] * m / (sum(pv <= pv[k])) for k in range(m) if pv[k] >= pv[i])) for i in range(m)]
    np.testing.assert_allclose(q[ok], ref, rtol=1e-12)


def test_average_ranks_equal_scipy_rankdata():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 6, (50, 7)).astype(float)
    a[:, 0] = 0.0
    np.testing.assert_array_equal(average_ranks(a), stats.rankdata(a, axis=0))


def test_cohens_d_welch_and_spearman_equal_scipy_per_latent(data):
    v, table = data
    num = numeric_columns(table)
    design = metadata_design(table, [], num)
    eff = numeric_effects(v, design)
    got = eff.frame()
    ref_p, ref_rho_p = [], []
    for j in range(v.shape[1]):
        for c in num:
            x = pd.to_numeric(table[c]).to_numpy(np.float64)
            keep = np.isfinite(x)
            fire = v[keep, j] > 0
            xf, xr = x[keep][fire], x[keep][~fire]
            row = got[(got.latent == j) & (got.column == c)].iloc[0]
            assert row.n == keep.sum() and row.n_fires == len(xf)
            if len(xf) < 2:
                assert np.isnan(row.d) and np.isnan(row.p)
                ref_p.append(np.nan)
            else:
                sp = np.sqrt(((len(xf) - 1) * xf.var(ddof=1) + (len(xr) - 1) * xr.var(ddof=1))
                             / (len(xf) + len(xr) - 2))
                assert row.d == pytest.approx((xf.mean() - xr.mean()) / sp, rel=1e-9, abs=1e-12)
                assert row.mean_fire == pytest.approx(xf.mean(), rel=1e-9)
                assert row.mean_rest == pytest.approx(xr.mean(), rel=1e-9)
                w = stats.ttest_ind(xf, xr, equal_var=False)
                assert row.t == pytest.approx(w.statistic, rel=1e-8)
                assert row.df == pytest.approx(w.df, rel=1e-8)
                assert row.p == pytest.approx(w.pvalue, rel=1e-7, abs=1e-15)
                ref_p.append(w.pvalue)
            vj = v[keep, j].astype(np.float64)
            if np.ptp(vj) == 0:
                assert np.isnan(row.rho)
                ref_rho_p.append(np.nan)
            else:
                s = stats.spearmanr(vj, x[keep])
                assert row.rho == pytest.approx(s.statistic, rel=1e-9, abs=1e-12)
                assert row.rho_p == pytest.approx(s.pvalue, rel=1e-7, abs=1e-15)
                ref_rho_p.append(s.pvalue)
    for col, ref in (("q", ref_p), ("rho_q", ref_rho_p)):
        ref = np.asarray(ref)
        ok = np.isfinite(ref)
        want = np.full(len(ref), np.nan)
        want[ok] = stats.false_discovery_control(ref[ok])
        np.testing.assert_allclose(got[col], want, rtol=1e-7, equal_nan=True)


# ----------------------------------------------------------------------------- decoder geometry


def test_decoder_neighbours_equal_a_brute_force_cosine_argsort():
    rng = np.random.default_rng(6)
    L, M, n = 30, 9, 4
    d = rng.standard_normal((L, M))
    d[5] = d[4] * 2.0  # an exact duplicate direction
    alive = rng.random(L) < 0.8
    idx, cos = decoder_neighbours(d, n, alive)
    for i in range(L):
        sims = [(-float(d[i] @ d[j] / np.linalg.norm(d[i]) / np.linalg.norm(d[j])), j) for j in range(L)
                if j != i and alive[j]]
        want = sorted(sims)[:n]
        assert idx[i].tolist() == [j for _, j in want]
        np.testing.assert_allclose(cos[i], [-s for s, _ in want], rtol=1e-12)
    assert idx[4, 0] == 5 if alive[5] else True
    all_idx, _ = decoder_neighbours(d, L + 3)
    assert (all_idx[:, L - 1:] == -1).all() and (all_idx[:, :L - 1] >= 0).all()


# ----------------------------------------------------------------------------- descriptions


def planted(rng, n=400, L=12):
    """Latent 3 fires exactly on ``kind = music``; its activation falls as ``vad.speech_prob`` rises."""
    kind = rng.choice(["speech", "music", "noise"], n, p=[0.6, 0.2, 0.2])
    music = kind == "music"
    speech_prob = np.where(music, rng.uniform(0.0, 0.4, n), rng.uniform(0.3, 1.0, n))
    gender = rng.choice(["f", "m"], n).astype(object)
    gender[rng.random(n) < 0.2] = None
    table = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "kind": kind, "gender": gender,
                          "vad.speech_prob": speech_prob, "pitch": rng.standard_normal(n)})
    v = sparse_codes(rng, n, L, 3)
    v[:, 3] = np.where(music, 2.0 - 3.0 * speech_prob + 0.05 * rng.random(n), 0.0)
    v[:, 9] = 0.0  # dead
    v[:, 10] = np.where(np.arange(n) < 0.9 * n, v[:, 10] + 0.5, 0.0)  # dense: 90 %
    v[:, 11] = 0.0
    v[0, 11] = 1.0  # rare
    return v.astype(np.float32), table


def test_a_planted_latent_is_described_by_its_label_and_its_correlate():
    rng = np.random.default_rng(8)
    v, table = planted(rng)
    design = metadata_design(table, categorical_columns(table), numeric_columns(table))
    atlas = model_atlas(v, design, AtlasOptions(), directions=rng.standard_normal((v.shape[1], 5)))
    row = atlas.latents.iloc[3]
    music = (table.kind == "music").to_numpy()
    x = table["vad.speech_prob"].to_numpy()
    xf, xr = x[music], x[~music]
    sp = np.sqrt(((len(xf) - 1) * xf.var(ddof=1) + (len(xr) - 1) * xr.var(ddof=1)) / (len(x) - 2))
    d = (xf.mean() - xr.mean()) / sp
    assert d < -1.0
    assert row.description == f"kind = music: P 1.00, R 1.00; vad.speech_prob {MINUS}{abs(d):.1f} sd"
    assert row.label_column == "kind" and row.label_value == "music" and row.label_hits == music.sum()
    assert row.correlate_column == "vad.speech_prob" and row.correlate_d == pytest.approx(d, rel=1e-9)
    assert row.correlate_rho < 0  # the activation falls with the speech probability
    assert row.correlate_q < 0.05
    statuses = atlas.latents.set_index("latent")["status"]
    assert statuses[9] == "dead" and atlas.latents.description[9] == "dead: never fires"
    assert statuses[10] == "dense" and atlas.latents.description[10].startswith("dense: fires on 90 % of rows")
    assert statuses[11] == "rare" and atlas.latents.description[11] == "rare: fires on 0.25 % of rows"
    # deterministic
    again = model_atlas(v, design, AtlasOptions(), directions=rng.standard_normal((v.shape[1], 5)))
    assert again.latents.description.tolist() == atlas.latents.description.tolist()


def test_label_criterion_needs_support_precision_and_gain():
    """A value held by 90 % of rows needs precision ≥ 0.95 (half way from 0.9 to 1)."""
    n = 200
    common = np.arange(n) < 180  # 90 % "a"
    table = pd.DataFrame({"c": np.where(common, "a", "b")})
    v = np.zeros((n, 3))
    v[:, 0] = common  # P 1.00 on "a"
    v[:, 1] = common | (np.arange(n) >= 190)  # P 180/190 = 0.947 on "a": below the gain
    v[:3, 2] = 1.0  # 3 hits only
    enr = enrichment(v > 0, metadata_design(table, ["c"], []))
    got = best_label(enr, min_hits=5, min_precision=0.5, min_gain=0.5)
    assert got.tolist() == [0, -1, -1]
    assert best_label(enr, min_hits=3, min_precision=0.5, min_gain=0.5)[2] == 0
    # F1 before lift: x (P 1.00, R 0.83, F1 0.91, lift 1.67) beats y (P 0.80, R 1.00, F1 0.89, lift 2.0)
    fires = np.arange(n) < 100
    table = pd.DataFrame({"x": np.where(np.arange(n) < 120, "x", "-"), "y": np.where(np.arange(n) < 80, "y", "-")})
    design = metadata_design(table, ["x", "y"], [])
    enr = enrichment(fires[:, None], design)
    j = best_label(enr)[0]
    assert (design.values[j], design.categorical[design.value_column[j]]) == ("x", "x")
    assert enr.lift[0, design.values.index("y")] > enr.lift[0, j]


def test_correlate_and_label_choices_equal_a_plain_loop_over_their_rules():
    rng = np.random.default_rng(14)
    n, L, K = 150, 20, 30
    v = sparse_codes(rng, n, L, 3)
    table = pd.DataFrame({f"x{c}": rng.standard_normal(n) for c in range(K)})
    table["x0"] += 2.0 * (v[:, 0] > 0)  # one real correlate
    table["c"] = rng.choice(list("abcd"), n)
    table["c2"] = np.where(v[:, 1] > 0, "on", rng.choice(["on", "off"], n, p=[0.1, 0.9]))
    design = metadata_design(table, ["c", "c2"], [f"x{c}" for c in range(K)])
    eff = numeric_effects(v, design)
    enr = enrichment(v > 0, design)
    opts = dict(alpha=0.05, min_abs_d=0.5, min_hits=5)
    got = best_correlate(eff, **opts)
    n_noise = 0
    for j in range(L):
        ok = [(-abs(eff.d[j, c]), eff.p[j, c], c) for c in range(K)
              if eff.q[j, c] < 0.05 and abs(eff.d[j, c]) >= 0.5 and eff.n_fires[j, c] >= 5]
        n_noise += sum(eff.p[j, c] < 0.05 and abs(eff.d[j, c]) >= 0.5 and eff.q[j, c] >= 0.05 for c in range(K))
        assert got[j] == (min(ok)[2] if ok else -1)
    assert got[0] == 0 and n_noise > 0  # the planted correlate is found; nominal p < 0.05 alone is not enough
    lab = best_label(enr, min_hits=5, min_precision=0.5, min_gain=0.5)
    for j in range(L):
        ok = []
        for i in range(len(design.values)):
            base = enr.n_value[i] / enr.n_known[i]
            p = enr.precision[j, i]
            if enr.hits[j, i] >= 5 and p >= 0.5 and (p - base) / (1 - base) >= 0.5:
                ok.append((-enr.f1[j, i], -enr.lift[j, i], i))
        assert lab[j] == (min(ok)[2] if ok else -1)
    assert design.values[lab[1]] == "on"


def test_dead_latents_raise_no_warning_and_are_described_as_dead():
    rng = np.random.default_rng(10)
    v = np.zeros((50, 5))
    v[rng.random(50) < 0.5, 1] = 1.0 + rng.random()
    table = pd.DataFrame({"kind": rng.choice(["a", "b"], 50), "x": rng.standard_normal(50)})
    design = metadata_design(table, ["kind"], ["x"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atlas = model_atlas(v, design, AtlasOptions(), directions=rng.standard_normal((5, 4)))
    lat = atlas.latents
    assert lat.loc[lat.latent != 1, "description"].eq("dead: never fires").all()
    assert (atlas.hist_counts[[0, 2, 3, 4]] == 0).all()
    assert set(atlas.examples.latent) == {1}
    assert set(atlas.neighbours.neighbour) <= {1}  # dead latents are no neighbours


def test_options_are_checked():
    with pytest.raises(BadValueError):
        AtlasOptions(quantiles=(0.5, 1.0))
    with pytest.raises(BadValueError):
        AtlasOptions(bands=((0.5, 0.25),))
    with pytest.raises(BadValueError):
        AtlasOptions(n_bins=0)


# ----------------------------------------------------------------------------- top level


M = 8


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """Rows of 8-d embeddings: music rows carry ``e0`` scaled by ``(1.5 − speech_prob)``."""
    rng = np.random.default_rng(12)
    n = 240
    kind = rng.choice(["speech", "music"], n, p=[0.7, 0.3])
    music = kind == "music"
    speech_prob = np.where(music, rng.uniform(0.0, 0.5, n), rng.uniform(0.5, 1.0, n))
    x = 0.3 * rng.standard_normal((n, M))
    x[:, 0] = np.where(music, 3.0 * (1.5 - speech_prob), 0.0) + 0.05 * rng.standard_normal(n)
    table = pd.DataFrame({"id": [f"r{i:03d}" for i in range(n)], "kind": kind, "vad.speech_prob": speech_prob,
                          "split": rng.choice(["train", "test"], n), "offset": rng.random(n),
                          "duration": 4 + rng.random(n)})
    store = write_store(tmp_path_factory.mktemp("atlas") / "store", x.astype(np.float32), table)
    return store, x.astype(np.float32), table


def sae_with(directions: np.ndarray, planted_at: int, bias: float) -> SAEParams:
    L = len(directions) + 1
    W = np.insert(directions, planted_at, np.eye(M)[0], axis=0)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    b = np.zeros(L)
    b[planted_at] = bias
    return SAEParams(W_enc=W.T.astype(np.float32), b_enc=b.astype(np.float32), W_dec=W.astype(np.float32),
                     b_pre=np.zeros(M, np.float32))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(13)
    other = np.concatenate([np.zeros((7, 1)), rng.standard_normal((7, M - 1))], axis=1)
    a = sae_with(other[:5], 3, -1.0)  # L = 6, the music latent at 3
    b = sae_with(other[[4, 0, 6, 5, 1, 2, 3]], 5, -1.0)  # L = 8, the music latent at 5
    norm = Normalizer("none", np.zeros(M), np.ones(M))
    return ModelBatch([ModelSpec(6, TopK(2)), ModelSpec(8, TopK(3))], [a, b], norm)


def test_latent_atlas_on_a_store_encodes_once_and_assembles_every_table(batch, planted_store):
    store, x, table = planted_store
    res = latent_atlas(batch, store, n_top=4, per_band=2)
    assert res.names == ["k2_L6", "k3_L8"]
    assert res.categorical == ["kind"] and res.numeric == ["vad.speech_prob"]
    music = (table.kind == "music").to_numpy()
    codes = batch.encode(x)
    for name, v, planted_at in zip(res.names, codes, (3, 5)):
        atlas = res[name]
        assert ((v[:, planted_at] > 0) == music).all()  # the construction works
        assert len(atlas.latents) == v.shape[1] and atlas.hist_counts.shape == (v.shape[1], 20)
        design = metadata_design(table, res.categorical, res.numeric)
        alone = model_atlas(v, design, AtlasOptions(n_top=4, per_band=2))
        pd.testing.assert_frame_equal(atlas.enrichment, alone.enrichment)
        pd.testing.assert_frame_equal(atlas.correlations, alone.correlations)
        desc = atlas.latents.description[planted_at]
        assert desc.startswith("kind = music: P 1.00, R 1.00; vad.speech_prob " + MINUS) and desc.endswith(" sd")
        top = atlas.examples[(atlas.examples.latent == planted_at) & (atlas.examples.group == "top")]
        assert top.row.tolist() == list(np.argsort(-v[:, planted_at], kind="stable")[:4])
    # matches: universality's best cosine among the other model's firing latents
    a, b = res["k2_L6"], res["k3_L8"]
    alive_b = b.latents.n_fires.to_numpy() > 0
    keep = np.flatnonzero(alive_b)
    idx, cos = best_cosine_match(batch.raw_directions()[0], batch.raw_directions()[1][keep])
    np.testing.assert_array_equal(a.matches.match, keep[idx])
    np.testing.assert_allclose(a.matches.cosine, cos)
    assert a.latents.match_latent[3] == 5 and a.latents.match_cosine[3] == pytest.approx(1.0)
    assert a.matches.mutual[3] and b.matches.mutual[5]
    assert a.latents.match_model[3] == "k3_L8"
    assert set(res.frame("latents").model) == {"k2_L6", "k3_L8"}


def test_latent_atlas_on_chosen_rows_names_store_rows(batch, planted_store):
    store, x, table = planted_store
    rows = np.arange(1, 240, 2)
    res = latent_atlas(batch, store, rows=rows, n_top=3)
    ex = res["k2_L6"].examples
    assert set(ex.row) <= set(rows.tolist())
    arr = latent_atlas(batch, x[rows], table.iloc[rows], n_top=3)
    assert res.params["n_rows"] == 120
    pd.testing.assert_frame_equal(res["k2_L6"].enrichment, arr["k2_L6"].enrichment)
    np.testing.assert_array_equal(rows[arr["k2_L6"].examples.row.to_numpy()], ex.row.to_numpy())
