"""Feature steering, paper Sections III-D and V-C (Eqs. 1–3).

An SAE encodes ``e ∈ R^M`` to ``v ∈ R^L`` and decodes ``ε = decode(v)``. With the
latent ``φ`` of the positive class and a steering value ``a_φ > 0`` (paper: 1):

* Eq. 1, positive test rows (deactivate): ``ṽ_ℓ = v_ℓ`` for ``ℓ ≠ φ``, ``ṽ_φ = −a_φ``;
* Eq. 2, negative test rows (activate): ``ṽ_ℓ = v_ℓ`` for ``ℓ ≠ φ``, ``ṽ_φ = +a_φ``;
* ``ε̃ = decode(ṽ)``;
* Eq. 3: ``δ_s(x) = cos(x, ĉ_pos) − cos(x, ĉ_neg)`` for ``x ∈ {ε, ε̃}``, where
  ``ĉ_pos``, ``ĉ_neg`` are the centroids of the SAE-reconstructed embeddings of each
  class in the labelled *training* split (raw space, as :meth:`SAEModel.reconstruct`
  returns them). ``δ_s > 0``: closer to the positive class.

Other modes: ``ablate`` sets ``ṽ_φ = 0`` for every row (zero-ablation).

**Units of a** (``alpha_units``; every output says which, and the conversion). One
unit of the latent moves the raw embedding by ``d_φ ⊙ s`` (``d_φ``: the unit decoder
direction, ``s``: the normalisation scale), a raw-space norm of ``‖d_φ ⊙ s‖``; with
the default ``center_scale`` normalisation that is ``s`` ≈ RMS norm of the centred
rows / √M, so one latent unit is small next to an embedding.

* ``raw`` (default): ``alpha`` is the raw-space norm of the change the steered value
  makes, in the space of the embeddings you gave: the latent is set to
  ``∓alpha / ‖d_φ ⊙ s‖`` latent units, which moves an embedding whose latent was 0
  by exactly ``alpha``. The paper does not say it normalised, so this is its
  likeliest reading of ``a = 1``.
* ``mean_active``: multiples of the latent's mean activation on the train rows where
  it fires.
* ``normalized``: latent units, i.e. the norm of the change in the normalised space
  the SAE works in (``‖d_φ‖ = 1``). ``absolute`` is accepted as an alias (its name
  before the units were made explicit).

Every summary row carries ``alpha`` (as given), ``alpha_units``, ``a`` (the value
used, in latent units), ``a_raw_norm`` (``|a| · ‖d_φ ⊙ s‖``) and
``raw_per_latent_unit`` (``‖d_φ ⊙ s‖``).

**Flip threshold** (``flip_threshold=True``): per model and class, the smallest
``a ∈ [0, a_max]`` (in ``alpha_units``) at which the class mean δ_s is on the other
side of 0 after steering (positive rows pushed to ``−a``: mean δ_s < 0; negative rows
pushed to ``+a``: mean δ_s > 0), or NaN with ``flipped = False`` (none up to
``a_max``). Along the steering line ``ε̃(t) = b + t · (d_φ ⊙ s)`` with
``b = ε − v_φ (d_φ ⊙ s)``, each row's δ_s is a closed-form smooth function of the
latent value ``t`` (dot products of ``b``, ``d_φ ⊙ s`` and the centroids), so the
class mean is evaluated exactly (float64) on a grid of ``n_grid`` points over
``[0, a_max]``; the first grid point where it has flipped brackets the threshold with
the point before, and bisection narrows that bracket to ``tol · a_max``; the reported
value is the bracket's upper end (a value that does flip). The mean is not assumed
monotonic in ``a``: this is the first crossing the grid sees (a flip and flip-back
within one grid step, ``a_max / (n_grid − 1)``, would be missed). ``a = 0`` is zero
ablation, so a threshold of 0 means ablation alone already flips the mean.

Decoding is linear, so ``ε̃ = ε + (ṽ_φ − v_φ) · (d_φ ⊙ s)`` in the raw space:
steering is vectorised over latents, values and rows without re-encoding
anything.

**Output folders.** :func:`run_steer` names its folder by every parameter that
changes the output (:func:`steer_folder_name`) and stores them in
``analysis.json``; a folder holding a steer output of other parameters (an explicit
``--out``, or another store / run) is refused unless ``force=True`` (``--force``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .labelled import LabelledSplit, as_store, batch_and_dir, load_train_test
from .models import ModelBatch, SAEModel
from .probing import fit_probe
from .results import (ANALYSIS_FILE, analysis_dir, check_analysis_out, format_table, slug, to_jsonable,
                      write_analysis, write_json)
from .store import EmbeddingStore
from .errors import BadValueError, JsaeError, NotFoundError, OutOfRangeError
from .plots import pyplot, save_figure

__all__ = ["MODES", "ALPHA_UNITS", "UNIT_ALIASES", "UNIT_TEXT", "canonical_units", "steer_codes",
           "relative_similarity", "class_centroids", "steer_latents", "SteerResult", "steer", "flip_thresholds",
           "write_steer", "run_steer", "steer_folder_name", "SteerOutputExistsError", "steer_table_text",
           "flip_table_text", "units_caption"]

MODES = ("flip", "ablate")
ALPHA_UNITS = ("raw", "mean_active", "normalized")
#: older names of a unit, accepted and reported under the new name
UNIT_ALIASES = {"absolute": "normalized"}
UNIT_TEXT = {
    "raw": "raw-embedding norm of the change (the space of the embeddings given)",
    "mean_active": "multiples of the latent's mean activation where it fires (train split)",
    "normalized": "latent units = norm of the change in the normalised space (‖d_φ‖ = 1)",
}
#: defaults of the flip-threshold search
A_MAX, N_GRID, TOL = 50.0, 1024, 1e-6


class SteerOutputExistsError(JsaeError, FileExistsError):
    """The output folder holds a steering output of other parameters (pass ``force=True`` / ``--force``)."""


def canonical_units(alpha_units: str) -> str:
    """``alpha_units`` by its current name (``absolute`` → ``normalized``); refuses unknown ones."""
    units = UNIT_ALIASES.get(alpha_units, alpha_units)
    if units not in ALPHA_UNITS:
        raise BadValueError(f"alpha_units={alpha_units!r} is not one of {ALPHA_UNITS} "
                            f"(or {', '.join(UNIT_ALIASES)}, an alias of normalized)")
    return units


def steer_codes(v: np.ndarray, latent: int, value: float | np.ndarray) -> np.ndarray:
    """``ṽ``: a copy of ``v [..., L]`` with ``ṽ[..., latent] = value`` (Eqs. 1–2).

    ``value`` is a scalar or broadcasts against ``v[..., latent]`` (e.g. ``−a`` for
    positive rows and ``+a`` for negative ones).
    """
    out = np.array(v, copy=True)
    out[..., latent] = value
    return out


def relative_similarity(x: np.ndarray, c_pos: np.ndarray, c_neg: np.ndarray) -> np.ndarray:
    """Eq. 3: ``δ_s(x) = cos(x, c_pos) − cos(x, c_neg)`` over the last axis (broadcasting)."""
    def cos(a, b):
        num = np.sum(a * b, axis=-1)
        return num / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
    return cos(x, c_pos) - cos(x, c_neg)


def class_centroids(recon: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ĉ_pos, ĉ_neg)``: means of ``recon [..., B, M]`` over the positive / negative rows."""
    y = np.asarray(y, bool)
    return recon[..., y, :].mean(axis=-2), recon[..., ~y, :].mean(axis=-2)


def steer_latents(model: SAEModel, x: np.ndarray, latents: Sequence[int] | np.ndarray,
                  values: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Steer any latents of one model: ``[J, B, M]`` raw reconstructions.

    Row ``j`` is ``decode(ṽ)`` with ``ṽ = v`` except ``ṽ[latents[j]] = values[j]``
    (``values`` a scalar, ``[J]`` or ``[J, B]``, in latent units), for the codes
    ``v = encode(x)``. Vectorised over latents and rows.
    """
    latents = np.asarray(latents, int)
    v = model.encode(x)  # [B, L]
    eps = model.decode(v)  # [B, M]
    vals = np.asarray(values, np.float32)
    vals = np.broadcast_to(vals[:, None] if vals.ndim == 1 else vals, (len(latents), len(v)))
    draw = model.raw_decoder()[latents]  # [J, M]
    change = vals - v[:, latents].T  # [J, B]
    return eps[None] + change[..., None] * draw[:, None, :]


@dataclass
class SteerResult:
    """Steering of one or more models.

    Attributes:
      summary: one row per (model, alpha): ``name, k, latent_size, latent, mode,
        alpha`` (as given), ``alpha_units``, ``a`` (the value used, latent units),
        ``a_raw_norm`` (``|a| · ‖d_φ ⊙ s‖``: the raw-space norm of the change for a
        row whose latent was 0), ``raw_per_latent_unit`` (``‖d_φ ⊙ s‖``),
        ``mean_active``, ``n_pos, n_neg``, ``pos_before, pos_after, neg_before,
        neg_after`` (mean δ_s per class), ``pos_flipped`` (share of positive rows with
        δ_s ≥ 0 before and < 0 after among those ≥ 0 before), ``neg_flipped``,
        ``pos_sign_flipped`` / ``neg_sign_flipped`` (the class mean changed sign),
        ``recon_cosine`` (mean cos(ε, ε̃)), ``recon_change`` (mean ‖ε̃ − ε‖ / ‖ε‖).
      delta_before: ``{name: [B]}`` δ_s(ε). delta_after: ``{name: [A, B]}`` δ_s(ε̃).
      y: ``[B]`` bool of the test rows. params: the analysis parameters.
      flip: with ``flip_threshold=True``, one row per (model, class): ``name, k,
        latent_size, latent, side`` (``positive``/``negative``), ``class``,
        ``mean_before``, ``flipped`` (False: none up to ``a_max``), ``threshold``
        (in ``alpha_units``; NaN when not flipped), ``threshold_latent``,
        ``threshold_raw_norm``, ``alpha_units``, ``a_max``, ``resolution`` (the
        bracket's width, in ``alpha_units``); otherwise None.
    """

    summary: pd.DataFrame
    delta_before: dict[str, np.ndarray]
    delta_after: dict[str, np.ndarray]
    y: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    flip: pd.DataFrame | None = None

    def table(self, name: str | None = None, alpha: float | None = None) -> pd.DataFrame:
        """The paper's Tables III–IV: mean δ_s before/after steering per class, with the
        steering value (``alpha`` in ``alpha_units``, ``a`` in latent units, ``a_raw_norm``)."""
        s = self.summary
        name = name or s["name"].iloc[0]
        row = s[(s["name"] == name) & ((s["alpha"] == alpha) if alpha is not None else True)].iloc[0]
        p = self.params
        neg = p.get("negative") or f"not {p['positive']}"
        return pd.DataFrame({"samples": [f"{p['positive']}", f"{neg}"],
                             "n": [int(row.n_pos), int(row.n_neg)],
                             "before_steering": [row.pos_before, row.neg_before],
                             "after_steering": [row.pos_after, row.neg_after],
                             "alpha": [row.alpha] * 2, "alpha_units": [row.alpha_units] * 2,
                             "a": [row.a] * 2, "a_raw_norm": [row.a_raw_norm] * 2})


def _target(mode: str, a: np.ndarray, y: np.ndarray, v_phi: np.ndarray) -> np.ndarray:
    """New value of ``v_φ`` per (alpha, row): ``[..., A, B]`` from ``a [..., A]``, ``y [B]``."""
    if mode == "flip":
        return np.where(y, -a[..., None], a[..., None])
    if mode == "ablate":
        return np.zeros(a.shape + y.shape, np.float32)
    raise BadValueError(f"mode={mode!r} is not one of {MODES}")


class _Line:
    """Mean δ_s of a set of rows along the steering line, in closed form (float64).

    ``ε̃(t) = b + t r`` with ``b = ε − v_φ r``, ``r = d_φ ⊙ s`` and ``t`` the new latent
    value; ``δ_s(ε̃(t)) = (b·ĉ₊ + t r·ĉ₊) / (‖ε̃(t)‖ ‖ĉ₊‖) − (b·ĉ₋ + t r·ĉ₋) / (‖ε̃(t)‖ ‖ĉ₋‖)``.
    """

    def __init__(self, eps: np.ndarray, v_phi: np.ndarray, r: np.ndarray, c_pos: np.ndarray, c_neg: np.ndarray):
        eps, r = np.asarray(eps, np.float64), np.asarray(r, np.float64)
        c_pos, c_neg = np.asarray(c_pos, np.float64), np.asarray(c_neg, np.float64)
        b = eps - np.asarray(v_phi, np.float64)[:, None] * r  # [B, M]
        self.bp, self.bn = b @ c_pos, b @ c_neg
        self.rp, self.rn = float(r @ c_pos), float(r @ c_neg)
        self.bb, self.br, self.rr = np.sum(b * b, -1), b @ r, float(r @ r)
        self.np_, self.nn = max(float(np.linalg.norm(c_pos)), 1e-300), max(float(np.linalg.norm(c_neg)), 1e-300)

    def mean_delta(self, t: np.ndarray) -> np.ndarray:
        """Mean δ_s over the rows at latent values ``t [G]`` → ``[G]``."""
        t = np.asarray(t, np.float64)[:, None]
        norm = np.sqrt(np.maximum(self.bb + 2 * t * self.br + t * t * self.rr, 0.0))
        return ((self.bp + t * self.rp) / np.maximum(norm * self.np_, 1e-30)
                - (self.bn + t * self.rn) / np.maximum(norm * self.nn, 1e-30)).mean(-1)


def _first_flip(flipped_at, a_max: float, n_grid: int, tol: float) -> tuple[float, float]:
    """``(threshold, resolution)``: the smallest ``a ∈ [0, a_max]`` with ``flipped_at(a)``
    (first grid crossing, then bisection; see the module docstring), or ``(nan, step)``."""
    grid = np.linspace(0.0, a_max, max(int(n_grid), 2))
    ok = flipped_at(grid)
    if not ok.any():
        return float("nan"), float(grid[1] - grid[0])
    j = int(np.argmax(ok))
    if j == 0:
        return 0.0, 0.0
    lo, hi = float(grid[j - 1]), float(grid[j])
    while hi - lo > tol * a_max:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if flipped_at(np.array([mid]))[0]:
            hi = mid
        else:
            lo = mid
    return hi, hi - lo


def _flip_rows(spec, phi: int, line_pos: _Line, line_neg: _Line, before: tuple[float, float], per_alpha: float,
               raw_unit: float, units: str, classes: tuple[str, str], a_max: float, n_grid: int,
               tol: float) -> list[dict[str, Any]]:
    """The flip-threshold rows of one model (positive class, then negative)."""
    rows = []
    for side, line, sign, cls, mb in (("positive", line_pos, -1.0, classes[0], before[0]),
                                      ("negative", line_neg, 1.0, classes[1], before[1])):
        if not np.isfinite(per_alpha):
            thr, res = float("nan"), float("nan")
        else:
            def flipped_at(a, line=line, sign=sign):
                m = line.mean_delta(sign * per_alpha * np.asarray(a, np.float64))
                return m < 0 if sign < 0 else m > 0
            thr, res = _first_flip(flipped_at, a_max, n_grid, tol)
        rows.append({**spec.to_dict(), "latent": phi, "side": side, "class": cls, "mean_before": mb,
                     "flipped": bool(np.isfinite(thr)), "threshold": thr, "threshold_latent": thr * per_alpha,
                     "threshold_raw_norm": thr * per_alpha * raw_unit, "alpha_units": units, "a_max": a_max,
                     "resolution": res})
    return rows


def steer(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str, negative: str | None = None, *,
          k: int | None = None, latent_size: int | None = None,
          latent: int | str | Mapping[str, int] = "auto", alpha: float | Sequence[float] = 1.0,
          alpha_units: str = "raw", mode: str = "flip", train_split: str = "train",
          test_split: str = "test", train: LabelledSplit | None = None,
          test: LabelledSplit | None = None, flip_threshold: bool = False, a_max: float = A_MAX,
          n_grid: int = N_GRID, tol: float = TOL) -> SteerResult:
    """Steer the ``label == positive`` latent of every model of ``models`` with this ``k`` / ``latent_size``.

    ``models``: a Sweep or any ModelBatch; ``k`` / ``latent_size`` narrow it
    (``None``: every value). ``latent``: ``"auto"`` (the probe latent: logistic
    regression on the train split, as :func:`jsae.probing.probe`), an index (for every
    selected model), or ``{model name: index}``. ``alpha``: one value or several (a
    sweep over ``a_φ``; ignored by ``mode="ablate"``, reported as 0), in
    ``alpha_units``: ``raw`` (default: raw-embedding norm of the change),
    ``mean_active`` or ``normalized`` (``absolute``: its alias); see the module
    docstring. ``flip_threshold``: also find, per model and class, the smallest
    ``a ≤ a_max`` (in ``alpha_units``) that flips the class mean δ_s (``n_grid`` grid
    points, then bisection to ``tol · a_max``): :attr:`SteerResult.flip`.
    Returns a :class:`SteerResult`.
    """
    models.warn_if_unfinished("steering")
    if mode not in MODES:
        raise BadValueError(f"mode={mode!r} is not one of {MODES}")
    units = canonical_units(alpha_units)
    if flip_threshold:
        if mode != "flip":
            raise BadValueError("flip_threshold needs mode='flip' (Eqs. 1–2: −a for positives, +a for negatives); "
                                "ablation has no steering value")
        if not (np.isfinite(a_max) and a_max > 0):
            raise BadValueError(f"a_max={a_max!r}: give a positive number (in alpha_units={units})")
        if int(n_grid) < 2 or not (0 < tol < 1):
            raise BadValueError(f"n_grid={n_grid!r}, tol={tol!r}: need n_grid ≥ 2 and 0 < tol < 1")
    # Ablation sets the latent to 0 whatever alpha says: one value, a = 0.
    alphas = np.zeros(1) if mode == "ablate" else np.atleast_1d(np.asarray(alpha, np.float64))
    store, train, test = load_train_test(models, store, label, positive, negative=negative, train_split=train_split,
                                         test_split=test_split, train=train, test=test)
    chosen = models.select(k=k, latent_size=latent_size) if k is not None or latent_size is not None else models
    if isinstance(latent, str) and latent != "auto":
        raise BadValueError(f"latent={latent!r}: give 'auto', an index or {{model name: index}}")
    if isinstance(latent, Mapping):
        missing = [n for n in chosen.names if n not in latent]
        if missing:
            raise NotFoundError(f"latent: no index given for the models {missing}; give {{model name: index}} "
                                "for every selected model, or one index for all.")
    rows, before, after, flips = [], {}, {}, []
    y = test.y
    neg_name = negative or f"not {positive}"
    for model, v_tr, v_te, rec_tr, eps in zip(chosen, chosen.encode(train.x), chosen.encode(test.x),
                                              chosen.reconstruct(train.x), chosen.reconstruct(test.x)):
        spec = model.spec
        c_pos, c_neg = class_centroids(rec_tr, train.y)  # [M] each, raw space
        if isinstance(latent, str):
            phi = fit_probe(v_tr, train.y)[0]
        else:
            phi = int(latent[spec.name]) if isinstance(latent, Mapping) else int(latent)
        if not 0 <= phi < spec.latent_size:
            raise OutOfRangeError(f"latent {phi} out of range for {spec.name} (latent size {spec.latent_size}: "
                                  f"0..{spec.latent_size - 1})")
        v_phi = v_te[:, phi]  # [B]
        act_tr = v_tr[:, phi]
        fired = act_tr > 0
        mean_active = float(act_tr[fired].mean()) if fired.any() else float("nan")
        draw = model.raw_decoder()[phi]  # [M]: raw-space effect of one unit of v_φ
        raw_unit = float(np.linalg.norm(draw.astype(np.float64)))  # ‖d_φ ⊙ s‖
        per_alpha = {"raw": 1.0 / max(raw_unit, 1e-30), "mean_active": mean_active, "normalized": 1.0}[units]
        a = alphas * per_alpha  # [A], latent units
        target = _target(mode, a.astype(np.float32), y, v_phi)  # [A, B]
        eps_t = eps[None] + (target - v_phi[None])[..., None] * draw  # [A, B, M]
        d0 = relative_similarity(eps, c_pos, c_neg)  # [B]
        d1 = relative_similarity(eps_t, c_pos, c_neg)  # [A, B]
        norm0 = np.linalg.norm(eps, axis=-1)  # [B]
        cosr = np.sum(eps_t * eps, -1) / np.maximum(np.linalg.norm(eps_t, axis=-1) * norm0, 1e-30)
        change = np.linalg.norm(eps_t - eps, axis=-1) / np.maximum(norm0, 1e-30)
        before[spec.name] = d0
        after[spec.name] = d1
        for ai, al in enumerate(alphas):
            pb, pa = d0[y], d1[ai, y]
            nb, na = d0[~y], d1[ai, ~y]
            rows.append({
                **spec.to_dict(), "latent": phi, "mode": mode, "alpha": float(al),
                "alpha_units": units, "a": float(a[ai]), "a_raw_norm": abs(float(a[ai])) * raw_unit,
                "raw_per_latent_unit": raw_unit, "mean_active": mean_active,
                "n_pos": int(y.sum()), "n_neg": int((~y).sum()),
                "pos_before": float(pb.mean()), "pos_after": float(pa.mean()),
                "neg_before": float(nb.mean()), "neg_after": float(na.mean()),
                "pos_flipped": float(np.mean(pa[pb >= 0] < 0)) if np.any(pb >= 0) else float("nan"),
                "neg_flipped": float(np.mean(na[nb < 0] >= 0)) if np.any(nb < 0) else float("nan"),
                "pos_sign_flipped": bool(np.sign(pb.mean()) != np.sign(pa.mean())),
                "neg_sign_flipped": bool(np.sign(nb.mean()) != np.sign(na.mean())),
                "recon_cosine": float(cosr[ai].mean()), "recon_change": float(change[ai].mean()),
            })
        if flip_threshold:
            flips += _flip_rows(spec, phi, _Line(eps[y], v_phi[y], draw, c_pos, c_neg),
                                _Line(eps[~y], v_phi[~y], draw, c_pos, c_neg),
                                (float(d0[y].mean()), float(d0[~y].mean())), per_alpha, raw_unit, units,
                                (str(positive), str(neg_name)), float(a_max), int(n_grid), float(tol))
    params = {"label": label, "positive": str(positive), "negative": negative, "k": k, "latent_size": latent_size,
              "latent": latent if not isinstance(latent, Mapping) else dict(latent), "alpha": alphas.tolist(),
              "alpha_units": units, "alpha_units_meaning": UNIT_TEXT[units], "mode": mode,
              "train_split": train_split, "test_split": test_split, "models": list(chosen.names),
              "run_dir": None if models.run_dir is None else str(models.run_dir),
              "flip_threshold": bool(flip_threshold),
              **({"a_max": float(a_max), "n_grid": int(n_grid), "tol": float(tol)} if flip_threshold else {}),
              "store": str(store.path), "n_train": len(train), "n_test": len(test),
              "centroids": "mean SAE reconstruction (raw space) of each class on the train split"}
    return SteerResult(pd.DataFrame(rows), before, after, test.y.copy(), params,
                       pd.DataFrame(flips) if flip_threshold else None)


def flip_thresholds(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str,
                    negative: str | None = None, *, alpha_units: str = "raw", a_max: float = A_MAX,
                    n_grid: int = N_GRID, tol: float = TOL, **kwargs: Any) -> pd.DataFrame:
    """Per model and class, the smallest steering value ``a ≤ a_max`` (in ``alpha_units``)
    that flips the class mean δ_s: :attr:`SteerResult.flip` of :func:`steer` (its
    other keywords: ``k``, ``latent_size``, ``latent``, splits)."""
    return steer(models, store, label, positive, negative, alpha=[a_max], alpha_units=alpha_units,
                 flip_threshold=True, a_max=a_max, n_grid=n_grid, tol=tol, **kwargs).flip


# ----------------------------------------------------------------------------- text and files

def _conversion(s: pd.DataFrame) -> str:
    """``1 latent unit = ‖d_φ⊙s‖ = 0.067 raw`` (one value, or the range over the rows)."""
    r = s["raw_per_latent_unit"].to_numpy(np.float64) if "raw_per_latent_unit" in s else np.array([])
    r = r[np.isfinite(r)]
    if not r.size:
        return "1 latent unit = ‖d_φ⊙s‖ raw"
    if np.allclose(r, r[0], rtol=1e-4):
        return f"1 latent unit = ‖d_φ⊙s‖ = {r[0]:.4g} raw"
    return f"1 latent unit = ‖d_φ⊙s‖ = {r.min():.4g}–{r.max():.4g} raw (per model: raw_per_latent_unit)"


def units_caption(res: SteerResult) -> str:
    """One line: what ``alpha`` is measured in and how it converts (for every printed table)."""
    units = res.params.get("alpha_units", "raw")
    if res.params.get("mode") == "ablate":
        return f"ablation: the latent set to 0 (a = 0); {_conversion(res.summary)}"
    return (f"alpha in {units}: {UNIT_TEXT[units]}; a = the value used, in latent units (= normalised-space "
            f"norm); a_raw_norm = |a| · ‖d_φ⊙s‖; {_conversion(res.summary)}")


def _plot_hist(res: SteerResult, name: str, path: Path, alpha_index: int = 0) -> Path:
    """Overlaid histograms of δ_s before/after steering per class (Figs. 5–6)."""
    plt = pyplot()

    p = res.params
    d0, d1, y = res.delta_before[name], res.delta_after[name][alpha_index], res.y
    row = res.summary[res.summary["name"] == name].iloc[alpha_index]
    lo, hi = float(min(d0.min(), d1.min())), float(max(d0.max(), d1.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
    neg = p.get("negative") or f"not {p['positive']}"
    fig, ax = plt.subplots(figsize=(7, 4))
    for sel, cls, color in ((y, p["positive"], "tab:red"), (~y, neg, "tab:blue")):
        ax.hist(d0[sel], bins=bins, color=color, alpha=0.35, label=f"{cls}, before (mean {d0[sel].mean():.3f})")
        ax.hist(d1[sel], bins=bins, color=color, histtype="step", lw=2, hatch="//",
                label=f"{cls}, after (mean {d1[sel].mean():.3f})")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(r"$\delta_s$ = cos(x, $\hat c_{%s}$) − cos(x, $\hat c_{%s}$)" % (p["positive"], neg))
    ax.set_ylabel("test rows")
    ax.set_title(f"{name}, latent {row.latent}: {row['mode']}, alpha={row.alpha:.3g} {row.alpha_units} "
                 f"(a={row.a:.3g} latent units, {row.a_raw_norm:.3g} raw)", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_alpha(res: SteerResult, name: str, path: Path) -> Path:
    plt = pyplot()

    s = res.summary[res.summary["name"] == name].sort_values("alpha")
    p = res.params
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(s.alpha, s.pos_after, "o-", color="tab:red", label=f"{p['positive']} after")
    ax.plot(s.alpha, s.neg_after, "o-", color="tab:blue", label=f"{p.get('negative') or 'others'} after")
    ax.axhline(s.pos_before.iloc[0], color="tab:red", ls=":", label=f"{p['positive']} before")
    ax.axhline(s.neg_before.iloc[0], color="tab:blue", ls=":", label="before")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel(f"a_φ ({s.alpha_units.iloc[0]}; 1 latent unit = {s.raw_per_latent_unit.iloc[0]:.3g} raw)")
    ax.set_ylabel(r"mean $\delta_s$")
    ax.set_title(f"{name}, latent {s.latent.iloc[0]}: steering strength", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _flip_files(res: SteerResult, out: Path) -> tuple[list[Path], dict[str, str]]:
    """``steer_flip_threshold.csv`` and one K × L heatmap of the threshold per class."""
    from .plots import plot_heatmap

    f, p = res.flip, res.params
    path = out / "steer_flip_threshold.csv"
    f.to_csv(path, index=False)
    files = [path]
    units = p["alpha_units"]
    for side in ("positive", "negative"):
        recs = f[f["side"] == side].to_dict(orient="records")
        if len(recs) < 2:  # a K × L map of one model says nothing the CSV does not
            continue
        cls = recs[0]["class"]
        push = "−a" if side == "positive" else "+a"
        files.append(plot_heatmap(
            recs, "threshold", out / f"flip_threshold_{side}.png", fmt=".3g", cmap="viridis_r",
            title=f"smallest a ({units}) flipping the mean δ_s of {cls} rows (latent set to {push}); "
                  f"blank: none up to a_max = {p['a_max']:g}"))
    title = (f"flip threshold: smallest a in [0, {p['a_max']:g}] ({units}) that flips the class mean δ_s "
             f"(threshold_raw_norm: raw-embedding norm; NaN, flipped = False: none up to a_max)")
    return files, {title: path.name}


def write_steer(res: SteerResult, out_dir: str | Path, *, max_histograms: int = 4) -> list[Path]:
    """``steer_summary.csv``, ``steer_table.csv`` (Tables III–IV of the first model,
    first alpha), ``steer.json``, δ_s histograms, an alpha plot (several alphas),
    heatmaps of the mean δ_s after steering (several models) and, with a flip
    threshold, ``steer_flip_threshold.csv`` and (several models) ``flip_threshold_{positive,negative}.png``:
    K × L heatmaps of the threshold per class."""
    from .plots import plot_heatmap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = res.summary
    files = [out / "steer_summary.csv"]
    s.to_csv(files[0], index=False)
    names = list(dict.fromkeys(s["name"]))
    first_alpha = float(s["alpha"].iloc[0])
    table = res.table(names[0], first_alpha)
    table.to_csv(out / "steer_table.csv", index=False)
    files.append(out / "steer_table.csv")
    caption = units_caption(res)
    files.append(write_json(out / "steer.json", {"params": res.params, "units": caption, "summary": s,
                                                 "table": table, "table_model": names[0],
                                                 "flip_threshold": res.flip}))
    for name in names[:max_histograms]:
        files.append(_plot_hist(res, name, out / f"delta_hist_{name}.png"))
        if s[s["name"] == name]["alpha"].nunique() > 1:
            files.append(_plot_alpha(res, name, out / f"alpha_{name}.png"))
    p = res.params
    units = p.get("alpha_units", "raw")
    if len(names) > 1:
        recs = s[s["alpha"] == first_alpha].to_dict(orient="records")
        for key in ("pos_after", "neg_after"):
            cls = p["positive"] if key == "pos_after" else (p.get("negative") or "others")
            files.append(plot_heatmap(recs, key, out / f"{key}.png", cmap="coolwarm",
                                      title=f"mean δ_s of {cls} rows after steering (alpha={first_alpha:g} {units})"))
    r0 = s.iloc[0]
    value = "a = 0 (ablation)" if p.get("mode") == "ablate" else f"alpha = {first_alpha:g} {units}, a = {r0.a:.4g}"
    tables = {f"mean δ_s before/after steering, {r0['name']}, {value} ({caption})": "steer_table.csv",
              f"summary ({caption})": "steer_summary.csv"}
    if res.flip is not None:
        flip_files, flip_tables = _flip_files(res, out)
        files += flip_files
        tables.update(flip_tables)
    features = [{"k": int(r.k), "latent_size": int(r.latent_size), "latent": int(r.latent),
                 "why": f"steered {p['label']}={p['positive']} latent: δ_s {r.pos_before:.3f} → "
                        f"{r.pos_after:.3f} ({p['positive']}), {r.neg_before:.3f} → {r.neg_after:.3f}"}
                for r in s.drop_duplicates("name").head(3).itertuples()]
    summary = {"model": r0["name"], "latent": int(r0.latent), "alpha": float(r0.alpha), "alpha_units": r0.alpha_units,
               "a": float(r0.a), "a_raw_norm": float(r0.a_raw_norm), "units": caption, "table": table}
    if res.flip is not None:
        f0 = res.flip[res.flip["name"] == r0["name"]]
        summary.update({f"flip_threshold_{row.side}": row.threshold for row in f0.itertuples()})
    files.append(write_analysis(out, "steer", res.params, summary, files, features, tables=tables))
    return files


# ----------------------------------------------------------------------------- run folders

#: the parameters a steering output depends on: its folder is named by them (most) and
#: refused for others (all) unless forced
_IDENTITY = ("label", "positive", "negative", "k", "latent_size", "latent", "alpha", "alpha_units", "mode",
             "train_split", "test_split", "models", "run_dir", "store", "flip_threshold", "a_max", "n_grid", "tol")


def _num(x: float) -> str:
    return f"{float(x):g}"


def _short_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(to_jsonable(obj), sort_keys=True).encode()).hexdigest()[:8]


def steer_folder_name(label: str, positive: str, negative: str | None = None, *, k: Any = None,
                      latent_size: Any = None, latent: int | str | Mapping[str, int] = "auto",
                      alpha: float | Sequence[float] = 1.0, alpha_units: str = "raw", mode: str = "flip",
                      flip_threshold: bool = False, a_max: float = A_MAX, n_grid: int = N_GRID, tol: float = TOL,
                      train_split: str = "train", test_split: str = "test", **_: Any) -> str:
    """The default folder name of a steering run, from every parameter that changes its
    output, e.g. ``steer-lang-es-vs-en-k20-L200-flip-a1-raw-thr50``: label, positive,
    ``vs-NEGATIVE``, ``kK``, ``LL``, ``latentI`` (or ``latents-HASH`` of a mapping), the
    mode, the alphas (``a1``, ``a0.5_1_2``; more than four: ``a0.5..8n10-HASH``) and
    their units (flip mode), ``thrA_MAX`` (flip threshold; ``-HASH`` of a non-default
    grid/tolerance), and non-default splits."""
    units = canonical_units(alpha_units)
    if isinstance(latent, Mapping):
        lat = f"latents-{_short_hash(dict(latent))}"
    elif isinstance(latent, str):
        lat = None if latent == "auto" else f"latent{latent}"
    else:
        lat = f"latent{int(latent)}"
    parts: list[Any] = ["steer", label, positive, f"vs-{negative}" if negative is not None else None,
                        f"k{k}" if k is not None else None, f"L{latent_size}" if latent_size is not None else None,
                        lat, mode]
    if mode != "ablate":
        al = np.atleast_1d(np.asarray(alpha, np.float64))
        parts.append("a" + "_".join(map(_num, al)) if len(al) <= 4 else
                     f"a{_num(al[0])}..{_num(al[-1])}n{len(al)}-{_short_hash(al.tolist())}")
        parts.append(units)
    if flip_threshold:
        extra = (int(n_grid), float(tol)) != (N_GRID, TOL)
        parts.append(f"thr{_num(a_max)}" + (f"-{_short_hash([int(n_grid), float(tol)])}" if extra else ""))
    if train_split != "train":
        parts.append(f"train={train_split}")
    if test_split != "test":
        parts.append(f"test={test_split}")
    return slug(*parts)


def _same(key: str, old: Any, new: Any) -> bool:
    if key in ("store", "run_dir") and old is not None and new is not None:
        try:
            return Path(old).resolve() == Path(new).resolve()
        except (OSError, RuntimeError):
            return str(old) == str(new)
    return old == new


def _check_params(folder: Path, params: dict[str, Any], force: bool) -> list[str]:
    """Refuse (:class:`SteerOutputExistsError`) a folder holding a steering output of other
    parameters unless ``force``; returns the files it lists (to drop stale ones)."""
    marker = folder / ANALYSIS_FILE
    if not marker.is_file():
        return []
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or info.get("analysis") != "steer":
        return []  # check_analysis_out decides about folders that are not steering outputs
    old = info.get("params") if isinstance(info.get("params"), dict) else {}
    new = json.loads(json.dumps(to_jsonable({k: params.get(k) for k in _IDENTITY})))
    old_sub = {k: UNIT_ALIASES.get(old.get(k), old.get(k)) if k == "alpha_units" else old.get(k) for k in _IDENTITY}
    diff = [k for k in _IDENTITY if not _same(k, old_sub[k], new[k])]
    if diff and not force:
        shown = "; ".join(f"{k}: {old_sub[k]!r} there, {new[k]!r} now" for k in diff[:4])
        raise SteerOutputExistsError(
            f"{folder} holds a `jsae steer` output of other parameters ({shown}{'; …' if len(diff) > 4 else ''}); "
            "choose another --out, or pass --force (force=True) to replace it.")
    return [f for f in info.get("files") or [] if isinstance(f, str)] if diff else []


def run_steer(run_dir: "str | Path | ModelBatch", store: str | Path, label: str, positive: str, negative: str | None = None, *,
              out: str | Path | None = None, force: bool = False, **kwargs: Any) -> tuple[SteerResult, Path]:
    """Load a sweep (or take a ModelBatch), :func:`steer` it, write the outputs.

    The default folder is ``RUN_DIR/analysis/<steer_folder_name(...)>``: runs of other
    parameters (alphas, units, latent, mode, flip threshold, …) write next to each other.
    A folder that holds a steering output of other parameters (all of them are stored in
    ``analysis.json``: an explicit ``out``, another store or run) is refused before any
    work unless ``force=True``; forced, the files of the old output that the new one does
    not write are removed.
    """
    if out is not None:
        check_analysis_out(out, "steer")  # before the work: --out must be new, empty or an earlier steer
    models, run_dir = batch_and_dir(run_dir)
    mode = kwargs.get("mode", "flip")
    kw = {"k": kwargs.get("k"), "latent_size": kwargs.get("latent_size"), "latent": kwargs.get("latent", "auto"),
          "alpha": kwargs.get("alpha", 1.0), "alpha_units": canonical_units(kwargs.get("alpha_units", "raw")),
          "mode": mode, "flip_threshold": bool(kwargs.get("flip_threshold", False)),
          "a_max": kwargs.get("a_max", A_MAX), "n_grid": kwargs.get("n_grid", N_GRID), "tol": kwargs.get("tol", TOL),
          "train_split": kwargs.get("train_split", "train"), "test_split": kwargs.get("test_split", "test")}
    name = steer_folder_name(label, positive, negative, **kw)
    folder = Path(out) if out is not None else (None if run_dir is None else Path(run_dir) / "analysis" / name)
    stale: list[str] = []
    if folder is not None:
        chosen = (models.select(k=kw["k"], latent_size=kw["latent_size"])
                  if kw["k"] is not None or kw["latent_size"] is not None else models)
        store = as_store(store)  # opened once, for the check and for steer
        planned = {**kw, "label": label, "positive": str(positive), "negative": negative,
                   "alpha": [0.0] if mode == "ablate" else np.atleast_1d(np.asarray(kw["alpha"], np.float64)).tolist(),
                   "latent": dict(kw["latent"]) if isinstance(kw["latent"], Mapping) else kw["latent"],
                   "models": list(chosen.names), "run_dir": None if models.run_dir is None else str(models.run_dir),
                   "store": str(store.path)}
        if not planned["flip_threshold"]:
            planned.update(a_max=None, n_grid=None, tol=None)
        stale = _check_params(folder, planned, force)
    res = steer(models, store, label, positive, negative, **kwargs)
    out_dir = analysis_dir(run_dir, name, out, kind="steer")
    files = write_steer(res, out_dir)
    written = {Path(f).name for f in files}
    for f in stale:  # forced over an output of other parameters: drop its files we did not rewrite
        path = out_dir / f
        if "/" not in f and f not in written and path.is_file() and not path.is_symlink():
            path.unlink()
    return res, out_dir


def steer_table_text(res: SteerResult) -> str:
    """The short printed table of a steering run, under a line giving the unit of alpha and its conversion."""
    return units_caption(res) + "\n" + format_table(
        res.summary, ["name", "latent", "alpha", "a", "a_raw_norm", "pos_before", "pos_after", "neg_before",
                      "neg_after", "recon_cosine"])


def flip_table_text(res: SteerResult) -> str:
    """The printed flip-threshold table (empty without one)."""
    if res.flip is None:
        return ""
    p = res.params
    head = (f"flip threshold: smallest a in [0, {p['a_max']:g}] {p['alpha_units']} that flips the class mean δ_s "
            f"(nan: none up to a_max; threshold_raw_norm in raw-embedding norm; {_conversion(res.summary)})")
    return head + "\n" + format_table(res.flip, ["name", "latent", "class", "mean_before", "flipped", "threshold",
                                                 "threshold_raw_norm"], floatfmt="{:.4g}")
