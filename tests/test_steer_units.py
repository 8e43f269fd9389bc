"""Steering units and the flip threshold (issue 4) and steer output folders (issue 5b).

* the flip threshold equals a brute-force sweep over a dense grid of a, recomputed with
  numpy from decoded steered codes (independent of the closed form steering uses);
* steering in raw units equals a hand computation (latent set to ∓a / ‖d_φ ⊙ s‖), and a
  row whose latent was 0 moves by exactly a in the raw space;
* steer outputs of different parameters coexist; the same parameters reuse the folder;
  an explicit --out of other parameters is refused without --overwrite.
"""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from jsae.analyses.steering import class_centroids, steer, steer_codes
from jsae.outputs.steer import SteerOutputExistsError, run_steer


def _delta(x, c_pos, c_neg):
    """Eq. 3 written out again (float64), not through jsae."""
    x = np.asarray(x, np.float64)
    cos = lambda c: (x @ c) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(c))
    return cos(np.asarray(c_pos, np.float64)) - cos(np.asarray(c_neg, np.float64))


def _raw_unit(m, phi):
    return float(np.linalg.norm(np.asarray(m.params.W_dec, np.float64)[phi] * np.asarray(m.normalizer.scale)))


def _brute_force(m, phi, train, test, a_grid, per_alpha):
    """First a of ``a_grid`` at which each class's mean δ_s has flipped (NaN: none), by
    decoding the steered codes of every grid value."""
    c_pos, c_neg = class_centroids(m.reconstruct(train.x).astype(np.float64), train.y)
    v = m.encode(test.x)
    out = {}
    for side, rows, sign in (("positive", test.y, -1.0), ("negative", ~test.y, 1.0)):
        codes = np.stack([steer_codes(v[rows], phi, sign * a * per_alpha) for a in a_grid])  # [G, B, L]
        mean = _delta(m.decode(codes), c_pos, c_neg).mean(-1)  # [G]
        hit = mean < 0 if sign < 0 else mean > 0
        out[side] = float(a_grid[np.argmax(hit)]) if hit.any() else float("nan")
    return out


@pytest.mark.parametrize("units", ["raw", "mean_active"])
def test_flip_threshold_equals_a_brute_force_sweep(sweep, splits, labelled_store, units):
    train, test = splits
    a_max = 3.0 if units == "raw" else 1.5
    res = steer(sweep, labelled_store, "lang", "es", "en", k=3, alpha=1.0, alpha_units=units,
                flip_threshold=True, a_max=a_max)
    flip = res.flip
    assert len(flip) == 2 * 4 and set(flip.side) == {"positive", "negative"}
    grid = np.linspace(0.0, a_max, 2001)
    step = grid[1] - grid[0]
    for name in ("k3_L8", "k3_L32"):
        m = sweep[name]
        phi = int(res.summary.set_index("name").loc[name, "latent"])
        per_alpha = (1 / _raw_unit(m, phi) if units == "raw"
                     else float(res.summary.set_index("name").loc[name, "mean_active"]))
        brute = _brute_force(m, phi, train, test, grid, per_alpha)
        for side, want in brute.items():
            row = flip[(flip.name == name) & (flip.side == side)].iloc[0]
            assert row.flipped and np.isfinite(want), (name, side)
            # the brute-force grid's first flipped point is the threshold rounded up to the grid
            assert want - step - 1e-6 <= row.threshold <= want + 1e-6, (name, side, row.threshold, want)
            # decoded just above the threshold the mean has flipped, just below it has not
            near = _brute_force(m, phi, train, test, np.array([row.threshold + 1e-4 * a_max]), per_alpha)
            assert near[side] == pytest.approx(row.threshold + 1e-4 * a_max)
            if row.threshold > 0:
                below = _brute_force(m, phi, train, test, np.array([row.threshold - 1e-4 * a_max]), per_alpha)
                assert np.isnan(below[side])
            assert row.threshold_latent == pytest.approx(row.threshold * per_alpha, rel=1e-6)
            assert row.threshold_raw_norm == pytest.approx(row.threshold_latent * _raw_unit(m, phi), rel=1e-5)
    # raw and mean_active thresholds are the same point in the raw space
    if units == "mean_active":
        raw = steer(sweep, labelled_store, "lang", "es", "en", k=3, alpha_units="raw", flip_threshold=True,
                    a_max=10.0).flip
        both = flip.merge(raw, on=["name", "side"], suffixes=("", "_raw"))
        np.testing.assert_allclose(both.threshold_raw_norm, both.threshold_raw_norm_raw, rtol=1e-4, atol=1e-6)


def test_flip_threshold_none_up_to_a_max_is_nan_and_flagged(sweep, splits, labelled_store):
    train, test = splits
    res = steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=32, alpha_units="raw",
                flip_threshold=True, a_max=0.05)
    m = sweep["k3_L32"]
    phi = int(res.summary.latent.iloc[0])
    brute = _brute_force(m, phi, train, test, np.linspace(0, 0.05, 201), 1 / _raw_unit(m, phi))
    for row in res.flip.itertuples():
        assert np.isnan(brute[row.side]) and not row.flipped and np.isnan(row.threshold)
    with pytest.raises(ValueError, match="flip_threshold needs mode='flip'"):
        steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=8, mode="ablate", flip_threshold=True)


def test_steering_in_raw_units_equals_a_hand_computation(sweep, splits, labelled_store):
    train, test = splits
    alphas = [0.5, 2.0]
    res = steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=8, alpha=alphas, alpha_units="raw")
    m = sweep.model(k=3, latent_size=8)
    phi = int(res.summary.latent.iloc[0])
    unit = _raw_unit(m, phi)  # ‖d_φ ⊙ s‖: the raw-space move of one latent unit
    c_pos, c_neg = class_centroids(m.reconstruct(train.x).astype(np.float64), train.y)
    v = m.encode(test.x)
    eps = m.decode(v).astype(np.float64)
    zero = v[:, phi] == 0
    assert zero.any() and (~zero).any()
    for i, alpha in enumerate(alphas):
        row = res.summary.iloc[i]
        assert row.alpha_units == "raw" and row.alpha == alpha
        assert row.a == pytest.approx(alpha / unit, rel=1e-6)
        assert row.a_raw_norm == pytest.approx(alpha, rel=1e-6)
        assert row.raw_per_latent_unit == pytest.approx(unit, rel=1e-6)
        eps_t = m.decode(steer_codes(v, phi, np.where(test.y, -alpha / unit, alpha / unit))).astype(np.float64)
        np.testing.assert_allclose(res.delta_after["k3_L8"][i], _delta(eps_t, c_pos, c_neg), atol=2e-5)
        # a row whose latent was 0 moves by exactly alpha in the raw space
        np.testing.assert_allclose(np.linalg.norm(eps_t[zero] - eps[zero], axis=-1), alpha, rtol=1e-4)
    # `absolute` is the old name of `normalized`: latent units, reported under the new name
    old = steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=8, alpha=1.0, alpha_units="absolute")
    new = steer(sweep, labelled_store, "lang", "es", "en", k=3, latent_size=8, alpha=1.0, alpha_units="normalized")
    assert old.summary.alpha_units.iloc[0] == "normalized" and old.summary.a.iloc[0] == 1.0
    assert old.summary.a_raw_norm.iloc[0] == pytest.approx(unit, rel=1e-6)
    np.testing.assert_array_equal(old.delta_after["k3_L8"], new.delta_after["k3_L8"])


@pytest.fixture
def run(trained_run, tmp_path):
    """A copy of the read-only shared run, to write analyses into."""
    return shutil.copytree(trained_run, tmp_path / "run")


def _params(folder):
    return json.loads((folder / "analysis.json").read_text())["params"]


def test_steer_outputs_with_different_parameters_coexist(run, labelled_store):
    common = dict(k=3, latent_size=8)
    _, a1 = run_steer(run, labelled_store, "lang", "es", "en", alpha=[1.0], **common)
    _, a2 = run_steer(run, labelled_store, "lang", "es", "en", alpha=[2.0], **common)
    _, ra = run_steer(run, labelled_store, "lang", "es", "en", alpha=[1.0], alpha_units="raw", **common)
    _, l0 = run_steer(run, labelled_store, "lang", "es", "en", alpha=[1.0], latent=0, **common)
    _, ft = run_steer(run, labelled_store, "lang", "es", "en", k=3, alpha=[1.0], flip_threshold=True, a_max=5.0)
    folders = [a1, a2, ra, l0, ft]
    assert ft.name == "steer-lang-es-vs-en-k3-flip-a1-mean_active-thr5"
    assert len({f.name for f in folders}) == 5 and all(f.parent == run / "analysis" for f in folders)
    assert a1.name == "steer-lang-es-vs-en-k3-L8-flip-a1-mean_active"
    assert ra.name == "steer-lang-es-vs-en-k3-L8-flip-a1-raw"
    assert (_params(a1)["alpha"], _params(a2)["alpha"]) == ([1.0], [2.0])
    assert _params(a1)["alpha_units"] == "mean_active" and _params(ra)["alpha_units"] == "raw"
    assert _params(l0)["latent"] == 0
    assert pd.read_csv(a1 / "steer_summary.csv").alpha.tolist() == [1.0]  # not overwritten by the others
    assert {"steer_flip_threshold.csv", "flip_threshold_positive.png", "flip_threshold_negative.png"} <= set(
        json.loads((ft / "analysis.json").read_text())["files"])
    # the same parameters again: the same folder, rewritten
    _, again = run_steer(run, labelled_store, "lang", "es", "en", alpha=[1.0], **common)
    assert again == a1


def test_explicit_out_of_other_parameters_is_refused_without_overwrite(run, labelled_store, tmp_path, capsys):
    from jsae.sweeps.cli import main

    out = tmp_path / "mine"
    common = dict(k=3, latent_size=8, out=out)
    run_steer(run, labelled_store, "lang", "es", "en", alpha=[1.0, 2.0], **common)
    assert (out / "alpha_k3_L8.png").exists()
    before = (out / "steer_summary.csv").read_bytes()
    with pytest.raises(SteerOutputExistsError, match=r"alpha: \[1.0, 2.0\] there, \[3.0\] now.*--overwrite"):
        run_steer(run, labelled_store, "lang", "es", "en", alpha=[3.0], **common)
    assert (out / "steer_summary.csv").read_bytes() == before
    run_steer(run, labelled_store, "lang", "es", "en", alpha=[1.0, 2.0], **common)  # same parameters: fine
    args = ["steer", str(run), "--data", str(labelled_store), "--label", "lang", "--positive", "es", "--negative",
            "en", "--k", "3", "--latent-size", "8", "--alpha", "3", "--out", str(out)]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "steer_summary.csv").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "alpha in mean_active" in printed and "1 latent unit = ‖d_φ⊙s‖ = " in printed
    assert "move_fraction" in printed
    assert _params(out)["alpha"] == [3.0]
    assert not (out / "alpha_k3_L8.png").exists()  # the old output's file the new one does not write is gone
