"""`jsae.analyses.consistency`: is a label one direction for every speaker (so one latent can carry it)?"""
import numpy as np
import pandas as pd
import pytest

from jsae.analyses.consistency import consistency, group_shifts, loo_cosines, permuted_shifts, shared_fraction
from jsae.store import StoreError, write_store

DIM = 32


def planted_store(path, shift_of, *, groups=12, rows=40, seed=0, extra_rows=None, orthogonal_to=None,
                  centre_scale=1.0):
    """Each group (speaker) has its own centre (unit normal); its positive rows add ``shift_of(g, gender)``.

    Rows: ``rows`` per group, half positive (lang = es), a little noise; gender alternates
    between groups. ``extra_rows``: rows without a speaker (e.g. music), appended.
    ``orthogonal_to``: a unit vector the centres are made orthogonal to (no speaker offsets
    along it, so a single threshold on it separates the classes for every speaker).
    """
    rng = np.random.default_rng(seed)
    xs, tab = [], []
    for g in range(groups):
        gender = "female" if g % 2 else "male"
        centre = centre_scale * rng.standard_normal(DIM)
        if orthogonal_to is not None:
            centre -= (centre @ orthogonal_to) * orthogonal_to
        y = np.arange(rows) < rows // 2
        x = centre + 0.1 * rng.standard_normal((rows, DIM))
        x[y] += shift_of(g, gender)
        xs.append(x)
        tab += [{"lang": "es" if v else "en", "speaker": f"spk{g:02d}", "gender": gender,
                 "split": "train" if g % 3 else "test"} for v in y]
    if extra_rows:
        xs.append(3.0 * rng.standard_normal((extra_rows, DIM)))
        tab += [{"lang": "en", "speaker": None, "gender": None, "split": "train"}] * extra_rows
    return write_store(path, np.concatenate(xs).astype(np.float32), pd.DataFrame(tab)).path


def unit(v):
    return v / np.linalg.norm(v)


def test_shifts_and_leave_one_out_cosines_match_a_float64_loop():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 7))
    y = rng.random(300) < 0.4
    groups = rng.integers(0, 9, 300).astype(str)
    names, shifts, n_pos, n_neg = group_shifts(x, y, groups, min_rows=2)
    for name, s, p, n in zip(names, shifts, n_pos, n_neg):
        m = groups == name
        ref = sum(x[i] for i in np.flatnonzero(m & y)) / (m & y).sum() - \
            sum(x[i] for i in np.flatnonzero(m & ~y)) / (m & ~y).sum()
        np.testing.assert_allclose(s, ref, rtol=1e-12, atol=1e-12)
        assert (p, n) == ((m & y).sum(), (m & ~y).sum())
    c = loo_cosines(shifts)
    for g in range(len(shifts)):
        rest = sum(shifts[h] for h in range(len(shifts)) if h != g)
        assert c[g] == pytest.approx(shifts[g] @ rest / np.linalg.norm(shifts[g]) / np.linalg.norm(rest), abs=1e-12)
    assert shared_fraction(shifts) == pytest.approx(
        np.linalg.norm(shifts.mean(0)) / np.mean([np.linalg.norm(s) for s in shifts]), rel=1e-12)


def test_groups_without_enough_rows_of_both_classes_are_left_out():
    x = np.arange(12, dtype=float).reshape(6, 2)
    y = np.array([1, 1, 0, 0, 1, 0], bool)
    names, shifts, _, _ = group_shifts(x, y, np.array(["a", "a", "a", "a", "b", "b"]), min_rows=2)
    assert list(names) == ["a"] and shifts.shape == (1, 2)


def test_shuffling_labels_within_groups_leaves_only_noise():
    rng = np.random.default_rng(0)
    d = unit(rng.standard_normal(DIM))
    x = rng.standard_normal((2000, DIM))
    y = rng.random(2000) < 0.5
    x[y] += 5.0 * d
    groups = rng.integers(0, 20, 2000)
    assert loo_cosines(group_shifts(x, y, groups)[1]).mean() > 0.95
    assert abs(loo_cosines(permuted_shifts(x, y, groups, rng)).mean()) < 0.2


def test_a_shared_direction_is_consistent_and_separable_for_unseen_speakers(tmp_path):
    d = unit(np.random.default_rng(7).standard_normal(DIM))
    res = consistency(planted_store(tmp_path / "s", lambda g, gender: 4.0 * d, orthogonal_to=d), "lang", "es",
                      negative="en")
    s = res.summary
    assert s["groups"] == 12 and s["rows"] == 480
    assert s["mean_consistency"] > 0.99 and s["shared_fraction"] > 0.99
    assert abs(s["chance_consistency"]) < 0.3
    assert s["unseen_group_precision"] > 0.95 and s["unseen_group_recall"] > 0.95
    assert set(res.table.columns) >= {"group", "n_positive", "n_negative", "shift_norm", "consistency", "chance"}


def test_speaker_specific_shifts_are_not_one_direction(tmp_path):
    rng = np.random.default_rng(8)
    own = {g: 4.0 * unit(rng.standard_normal(DIM)) for g in range(12)}
    res = consistency(planted_store(tmp_path / "s", lambda g, gender: own[g]), "lang", "es", negative="en")
    shared = consistency(planted_store(tmp_path / "t", lambda g, gender: own[0]), "lang", "es", negative="en")
    assert res.summary["mean_consistency"] < 0.45
    assert res.summary["shared_fraction"] < 0.5
    assert res.summary["unseen_group_accuracy"] < shared.summary["unseen_group_accuracy"] - 0.2


def test_one_direction_with_large_speaker_offsets_along_it_is_not_separable(tmp_path):
    """Consistency alone is not enough: when speakers sit far apart along the shared
    direction, no single threshold on it works for unseen speakers."""
    d = unit(np.random.default_rng(7).standard_normal(DIM))
    res = consistency(planted_store(tmp_path / "s", lambda g, gender: 1.0 * d, centre_scale=3.0), "lang", "es",
                      negative="en")
    assert res.summary["mean_consistency"] > 0.95
    assert res.summary["unseen_group_accuracy"] < 0.8


def test_by_finds_one_direction_per_gender(tmp_path):
    rng = np.random.default_rng(9)
    q, _ = np.linalg.qr(rng.standard_normal((DIM, 2)))
    d_f, d_m = q[:, 0], 0.3 * q[:, 0] + np.sqrt(1 - 0.09) * q[:, 1]   # cos(d_f, d_m) = 0.3
    path = planted_store(tmp_path / "s", lambda g, gender: 4.0 * (d_f if gender == "female" else d_m), groups=16)
    res = consistency(path, "lang", "es", negative="en", group="gender")
    by = res.by_table.set_index("by")
    assert list(by.index) == ["female", "male"] and list(by["groups"]) == [8, 8]
    assert (by["mean_consistency"] > 0.99).all()
    assert res.summary["by_mean_shift_cosines"]["female~male"] == pytest.approx(0.3, abs=0.02)
    assert res.summary["mean_consistency"] < by["mean_consistency"].min() - 0.1
    assert set(res.table["by"]) == {"female", "male"}


def test_rows_without_a_group_take_no_part(tmp_path):
    d = unit(np.random.default_rng(7).standard_normal(DIM))
    a = consistency(planted_store(tmp_path / "a", lambda g, gender: d), "lang", "es", negative="en")
    b = consistency(planted_store(tmp_path / "b", lambda g, gender: d, extra_rows=50), "lang", "es", negative="en")
    assert a.summary["rows"] == b.summary["rows"] == 480
    np.testing.assert_allclose(a.table["consistency"], b.table["consistency"], rtol=1e-6)


def test_bad_grouping_is_refused_with_what_is_there(tmp_path):
    path = planted_store(tmp_path / "s", lambda g, gender: np.ones(DIM))
    with pytest.raises(StoreError, match="no metadata column 'accent'.*speaker"):
        consistency(path, "lang", "es", speaker="accent")
    with pytest.raises(StoreError, match="only 0 'gender' group.*lang"):
        consistency(path, "lang", "es", speaker="gender", test_split="test", min_rows=1000)


# ----------------------------------------------------------------------------- refusals

def one_class_per_speaker(path, groups=12, rows=10):
    """Every speaker speaks one language (even speakers en, odd es): no shift within a speaker."""
    rng = np.random.default_rng(0)
    tab = [{"lang": "es" if g % 2 else "en", "speaker": f"spk{g:02d}", "gender": "female" if g % 4 < 2 else "male"}
           for g in range(groups) for _ in range(rows)]
    return write_store(path, rng.standard_normal((len(tab), DIM)).astype(np.float32), pd.DataFrame(tab)).path


def test_min_rows_zero_never_keeps_a_group_without_both_classes():
    x = np.arange(12, dtype=float).reshape(6, 2)
    y = np.array([1, 1, 0, 0, 1, 1], bool)
    names, shifts, _, _ = group_shifts(x, y, np.array(["a", "a", "a", "a", "b", "b"]), min_rows=0)
    assert list(names) == ["a"] and np.isfinite(shifts).all()


def test_min_rows_zero_on_groups_with_both_classes_is_min_rows_one(tmp_path):
    path = planted_store(tmp_path / "s", lambda g, gender: np.ones(DIM))
    a = consistency(path, "lang", "es", negative="en", min_rows=0)
    b = consistency(path, "lang", "es", negative="en", min_rows=1)
    assert a.summary["groups"] == 12 and all(np.isfinite(v) for v in a.summary.values() if isinstance(v, float))
    assert a.summary == b.summary


def test_one_class_per_speaker_is_refused_in_one_readable_line_and_nothing_is_written(tmp_path, capsys):
    from safety_helpers import jsae

    store = one_class_per_speaker(tmp_path / "s")
    out = tmp_path / "out"
    rc, err = jsae(capsys, "consistency", "--data", store, "--label", "lang", "--positive", "es",
                   "--min-rows", "0", "--out", out)
    assert rc == 2 and len(err) == 1, err
    line = err[0]
    assert line.startswith("jsae consistency: error: ") and "nan" not in line.lower().replace("(nan)", "")
    assert "0 of 12 groups have rows of both classes" in line and "min_rows=0" in line
    assert "lowering --min-rows cannot help" in line and "grouping column" in line
    # the per-group table is summarised, not flattened: five groups with their counts, then the rest counted
    assert "(es/not es)" in line and "spk01 10/0" in line and "and 7 more" in line
    assert line.count("spk") == 5 and "; spk" not in line and "speaker;" not in line   # no flattened rows
    assert not out.exists()


def test_by_pairs_are_named_and_too_high_min_rows_names_the_value_that_works(tmp_path):
    from jsae.errors import JsaeError, one_line

    path = planted_store(tmp_path / "s", lambda g, gender: np.ones(DIM), groups=12, rows=40)   # 20 + 20 each
    with pytest.raises(JsaeError) as info:
        consistency(path, "lang", "es", negative="en", group="gender", min_rows=21)
    text = str(info.value)
    assert "\n" not in text and one_line(text) == text
    assert "only 0 'speaker' group(s) have at least 21 rows" in text and "lang='en'" in text
    assert "12 of 12 groups have rows of both classes" in text
    assert "spk00 (male) 20/20" in text and "and 7 more" in text
    assert "lower --min-rows (min_rows) to 20 or less" in text


def test_non_finite_scores_are_refused_not_printed(tmp_path, monkeypatch):
    import importlib

    mod = importlib.import_module("jsae.analyses.consistency")   # jsae.analyses.consistency is also a function

    path = planted_store(tmp_path / "s", lambda g, gender: np.ones(DIM))
    monkeypatch.setattr(mod, "shared_fraction", lambda shifts: float("nan"))
    with pytest.raises(StoreError, match="not finite.*shared_fraction|shared_fraction.*not finite"):
        consistency(path, "lang", "es", negative="en")
