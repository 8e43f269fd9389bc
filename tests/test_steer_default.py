"""The default steering unit, the move as a fraction of the embedding norm, the flip
threshold in every unit (issue: raw a = 1 moves unit-norm embeddings by > 100 % of their norm).

On a hand-built ModelBatch (planted ``es`` direction, a non-trivial normaliser so the three
units differ), everything is recomputed with numpy, independently of jsae's encode/decode:

* the default :func:`steer` is ``mean_active``: a = 1 sets the steered latent to ∓ its mean
  activation on the train rows where it fires (Eq. 1 for positives, Eq. 2 for negatives);
* ``move_fraction`` is the mean over the steered rows of ‖ε̃ − ε‖ / ‖x‖;
* the flip threshold is given in all three units, which convert into each other as the
  units define (raw = normalized · ‖d_φ ⊙ s‖, mean_active = normalized / mean activation),
  and every unit's search finds the same point;
* the ``jsae steer`` command's default is ``mean_active``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jsae.analyses.steering import SteerOptions, steer
from jsae.core.activation import TopK
from jsae.core.normalize import Normalizer
from jsae.core.sae import SAEParams
from jsae.core.spec import ModelSpec
from jsae.models import ModelBatch
from jsae.store import write_store

M, L, K = 6, 5, 2
SCALE, MEAN = 0.4, np.array([0.3, -0.2, 0.1, 0.0, 0.25, -0.1])


def _planted():
    """Train and test rows of ``lang`` es / en; es rows carry a shared direction ``u``."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((M, M)))
    u = q[:, 0]
    rows, xs = [], []
    for split in ("train", "test"):
        for i in range(160):
            es = i % 2 == 0
            x = MEAN + 0.35 * rng.standard_normal(M) + (1.2 + 0.3 * rng.random()) * u * es
            xs.append(x)
            rows.append({"split": split, "lang": "es" if es else "en", "id": f"{split}{i:03d}"})
    return np.asarray(xs, np.float32), pd.DataFrame(rows), u, q


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    x, table, u, q = _planted()
    store = write_store(tmp_path_factory.mktemp("steer-default") / "store", x, table).path
    rng = np.random.default_rng(8)
    W_enc = np.concatenate([u[:, None] / SCALE, rng.standard_normal((M, L - 1))], axis=1)  # [M, L]
    W_dec = np.concatenate([(u + 0.3 * q[:, 1])[None], rng.standard_normal((L - 1, M))])
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    params = SAEParams(W_enc=W_enc.astype(np.float32), b_enc=np.array([-0.8, 0, 0, 0, 0], np.float32),
                       W_dec=W_dec.astype(np.float32), b_pre=(0.05 * rng.standard_normal(M)).astype(np.float32))
    norm = Normalizer("center_scale", MEAN.astype(np.float64), np.full(M, SCALE))
    batch = ModelBatch([ModelSpec(L, TopK(K))], [params], norm)
    return batch, store, x, table


# ----------------------------------------------------------------------------- numpy, not jsae

def _np(p):
    return {k: np.asarray(getattr(p, k), np.float64) for k in ("W_enc", "b_enc", "W_dec", "b_pre")}


def _encode(p, x):
    """TopK SAE encoder in float64: ReLU of the k largest pre-activations."""
    pre = ((np.asarray(x, np.float64) - MEAN) / SCALE - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
    keep = np.argsort(-pre, axis=-1)[:, :K]
    v = np.zeros_like(pre)
    np.put_along_axis(v, keep, np.take_along_axis(pre, keep, -1), -1)
    return np.maximum(v, 0.0)


def _decode(p, v):
    return (v @ p["W_dec"] + p["b_pre"]) * SCALE + MEAN


def _delta(e, c_pos, c_neg):
    cos = lambda c: (e @ c) / (np.linalg.norm(e, axis=-1) * np.linalg.norm(c))
    return cos(c_pos) - cos(c_neg)


def _split(x, table, split):
    sel = (table.split == split).to_numpy()
    return x[sel].astype(np.float64), (table.lang[sel] == "es").to_numpy()


def _by_hand(batch, x, table, phi):
    p = _np(batch.params[0])
    x_tr, y_tr = _split(x, table, "train")
    x_te, y_te = _split(x, table, "test")
    v_tr, v_te = _encode(p, x_tr), _encode(p, x_te)
    fired = v_tr[:, phi] > 0
    rec_tr = _decode(p, v_tr)
    c_pos, c_neg = rec_tr[y_tr].mean(0), rec_tr[~y_tr].mean(0)
    raw_unit = float(np.linalg.norm(p["W_dec"][phi] * SCALE))
    return dict(p=p, x_te=x_te, y_te=y_te, v_te=v_te, fired=fired, mean_active=float(v_tr[fired, phi].mean()),
                c_pos=c_pos, c_neg=c_neg, raw_unit=raw_unit)


# ----------------------------------------------------------------------------- tests

def test_default_steering_sets_the_latent_to_its_mean_activation(planted):
    batch, store, x, table = planted
    assert SteerOptions.alpha_units == "mean_active"
    res = steer(batch, store, "lang", "es", "en")
    row = res.summary.iloc[0]
    phi = int(row.latent)
    h = _by_hand(batch, x, table, phi)
    assert h["fired"].any() and (~h["fired"]).any()
    assert row.alpha_units == "mean_active" and res.params["alpha_units"] == "mean_active" and row.alpha == 1.0
    assert row.mean_active == pytest.approx(h["mean_active"], rel=1e-5)
    assert row.a == pytest.approx(h["mean_active"], rel=1e-5)  # a = 1 × mean activation, in latent units
    # Eq. 1 (positives: −mean activation) and Eq. 2 (negatives: +mean activation), decoded by hand
    vt = h["v_te"].copy()
    vt[:, phi] = np.where(h["y_te"], -h["mean_active"], h["mean_active"])
    eps, eps_t = _decode(h["p"], h["v_te"]), _decode(h["p"], vt)
    np.testing.assert_allclose(res.delta_before["k2_L5"], _delta(eps, h["c_pos"], h["c_neg"]), atol=2e-5)
    np.testing.assert_allclose(res.delta_after["k2_L5"][0], _delta(eps_t, h["c_pos"], h["c_neg"]), atol=2e-5)
    # the steered latent, read back from the steered reconstruction: the mean activation, signed
    r = h["p"]["W_dec"][phi] * SCALE
    back = h["v_te"][:, phi] + (eps_t - eps) @ r / (r @ r)
    np.testing.assert_allclose(back, np.where(h["y_te"], -1, 1) * h["mean_active"], rtol=1e-9)
    # the raw unit would have set it to ∓1 / ‖d_φ ⊙ s‖ instead (a different point)
    assert abs(1 / h["raw_unit"] - h["mean_active"]) > 0.05 * h["mean_active"]


@pytest.mark.parametrize("units", [None, "raw", "normalized"])
def test_move_fraction_is_the_mean_move_over_the_input_norm(planted, units):
    batch, store, x, table = planted
    kw = {} if units is None else {"alpha_units": units}
    alphas = [0.5, 1.0, 3.0]
    res = steer(batch, store, "lang", "es", "en", alpha=alphas, **kw)
    phi = int(res.summary.latent.iloc[0])
    h = _by_hand(batch, x, table, phi)
    per_alpha = {None: h["mean_active"], "raw": 1 / h["raw_unit"], "normalized": 1.0}[units]
    eps = _decode(h["p"], h["v_te"])
    for i, alpha in enumerate(alphas):
        row = res.summary.iloc[i]
        vt = h["v_te"].copy()
        vt[:, phi] = np.where(h["y_te"], -1, 1) * alpha * per_alpha
        eps_t = _decode(h["p"], vt)
        moved = np.linalg.norm(eps_t - eps, axis=-1)
        want = np.mean(moved / np.linalg.norm(h["x_te"], axis=-1))
        assert row.move_fraction == pytest.approx(want, rel=1e-4)
        # not the change relative to the reconstruction (recon_change), which differs here
        assert row.recon_change == pytest.approx(np.mean(moved / np.linalg.norm(eps, axis=-1)), rel=1e-4)
        assert abs(row.move_fraction - row.recon_change) > 1e-3
    assert np.all(np.diff(res.summary.move_fraction) > 0)
    # every table carries it: Table III-IV, the printed table, steer.json
    assert "move_fraction" in res.table().columns


def test_the_outputs_carry_move_fraction_and_every_threshold_unit(planted, tmp_path):
    import json

    from jsae.outputs.steer import flip_table_text, steer_table_text, write_steer

    batch, store, _, _ = planted
    res = steer(batch, store, "lang", "es", "en", flip_threshold=True, a_max=20.0)
    text = steer_table_text(res)
    assert "move_fraction" in text and f"{res.summary.move_fraction.iloc[0]:.3f}" in text
    flip_text = flip_table_text(res)
    for col in ("threshold_raw", "threshold_mean_active", "threshold_normalized"):
        assert col in flip_text
    write_steer(res, tmp_path)
    js = json.loads((tmp_path / "steer.json").read_text())
    assert js["summary"][0]["move_fraction"] == pytest.approx(res.summary.move_fraction.iloc[0])
    assert {"threshold_raw", "threshold_mean_active", "threshold_normalized"} <= set(js["flip_threshold"][0])
    csv = pd.read_csv(tmp_path / "steer_flip_threshold.csv")
    assert {"threshold", "threshold_latent", "threshold_raw_norm", "threshold_raw", "threshold_mean_active",
            "threshold_normalized"} <= set(csv.columns)
    assert "move_fraction" in pd.read_csv(tmp_path / "steer_summary.csv").columns
    assert "move_fraction" in pd.read_csv(tmp_path / "steer_table.csv").columns


def test_flip_threshold_in_every_unit_converts_as_the_units_define(planted):
    batch, store, x, table = planted
    runs = {u: steer(batch, store, "lang", "es", "en", alpha_units=u, flip_threshold=True, a_max=a_max).flip
            for u, a_max in (("mean_active", 20.0), ("raw", 20.0), ("normalized", 60.0))}
    default = steer(batch, store, "lang", "es", "en", flip_threshold=True, a_max=20.0).flip
    pd.testing.assert_frame_equal(default, runs["mean_active"])
    phi = int(default.latent.iloc[0])
    h = _by_hand(batch, x, table, phi)
    for units, flip in runs.items():
        assert len(flip) == 2 and flip.flipped.all(), (units, flip)
        for row in flip.itertuples():
            n = row.threshold_normalized
            assert row.threshold_raw == pytest.approx(n * h["raw_unit"], rel=1e-6)
            assert row.threshold_mean_active == pytest.approx(n / h["mean_active"], rel=1e-5)
            assert row.threshold == getattr(row, f"threshold_{units}")  # the chosen unit
            assert row.threshold_latent == row.threshold_normalized  # older names still there
            assert row.threshold_raw_norm == row.threshold_raw
            # the normalized threshold really is where the class mean flips (numpy, decoded)
            side = row.side == "positive"
            rows = h["y_te"] == side
            sign = -1.0 if side else 1.0

            def mean_at(t):
                vt = h["v_te"][rows].copy()
                vt[:, phi] = sign * t
                return _delta(_decode(h["p"], vt), h["c_pos"], h["c_neg"]).mean()

            flipped = (lambda m: m < 0) if side else (lambda m: m > 0)
            assert flipped(mean_at(n * (1 + 1e-3))), (units, row.side)
            if n > 0:
                assert not flipped(mean_at(n * (1 - 1e-3))), (units, row.side)
    # every unit's search finds the same point
    for units in ("raw", "normalized"):
        both = runs["mean_active"].merge(runs[units], on="side", suffixes=("", "_o"))
        for col in ("threshold_raw", "threshold_mean_active", "threshold_normalized"):
            np.testing.assert_allclose(both[col], both[f"{col}_o"], rtol=1e-4)


def test_the_cli_default_is_mean_active():
    from jsae.sweeps.cli import build_parser

    args = build_parser().parse_args(["steer", "RUN", "--data", "STORE", "--label", "lang", "--positive", "es"])
    assert args.alpha_units == "mean_active" == SteerOptions.alpha_units
    from jsae.outputs.steer import steer_folder_name

    assert (steer_folder_name("lang", "es", "en", k=20, latent_size=200)
            == "steer-lang-es-vs-en-k20-L200-flip-a1-mean_active")


def test_a_latent_that_never_fires_has_no_mean_activation_and_says_so(planted):
    batch, store, _, _ = planted
    p = batch.params[0]
    b_enc = np.array(p.b_enc, np.float32)
    b_enc[4] = -1e3  # latent 4 never fires
    dead = batch.with_params([p.replace(b_enc=b_enc)])
    with pytest.warns(UserWarning, match="latent 4 never fires on the train split"):
        res = steer(dead, store, "lang", "es", "en", latent=4)
    assert np.isnan(res.summary.a.iloc[0]) and np.isnan(res.summary.mean_active.iloc[0])
    ok = steer(dead, store, "lang", "es", "en", latent=4, alpha_units="normalized")  # other units still work
    assert ok.summary.a.iloc[0] == 1.0 and np.isfinite(ok.summary.move_fraction.iloc[0])
