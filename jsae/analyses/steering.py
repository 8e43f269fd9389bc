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

* ``mean_active`` (default): multiples of the latent's mean activation on the train
  rows where it fires, so ``a = 1`` sets the latent to the value it typically takes when
  the feature is on — the natural "turn the feature on / off" of Eqs. 1–2, whatever the
  scale of the embeddings. (A latent that never fires on the train split has no mean
  activation: its rows are NaN, with a warning; use another unit.)
* ``raw``: ``alpha`` is the raw-space norm of the change the steered value makes, in
  the space of the embeddings you gave: the latent is set to ``∓alpha / ‖d_φ ⊙ s‖``
  latent units, which moves an embedding whose latent was 0 by exactly ``alpha``. The
  paper sets ``a_φ = 1`` without a unit and does not say it normalised, so this is its
  likeliest reading of ``a = 1`` (the paper's setting: ``alpha_units="raw"``). On
  unit-norm embeddings that is a move of about the embedding's own norm: every class
  flips, by brute force (see ``move_fraction``).
* ``normalized``: latent units, i.e. the norm of the change in the normalised space
  the SAE works in (``‖d_φ‖ = 1``): the literal ``v_φ = ∓1`` of this toolkit's SAE.
  ``absolute`` is accepted as an alias (its name before the units were made explicit).

Every summary row carries ``alpha`` (as given), ``alpha_units``, ``a`` (the value
used, in latent units), ``a_raw_norm`` (``|a| · ‖d_φ ⊙ s‖``),
``raw_per_latent_unit`` (``‖d_φ ⊙ s‖``) and ``mean_active``, so a value converts
between the units: ``a_normalized = a``, ``a_raw = a · ‖d_φ ⊙ s‖``,
``a_mean_active = a / mean_active``. How far steering moved the embeddings:
``move_fraction``, the mean over the steered rows of ``‖ε̃ − ε‖ / ‖x‖`` (``x`` the
input embedding), beside ``recon_change`` (``‖ε̃ − ε‖ / ‖ε‖``) and ``recon_cosine``
(``cos(ε, ε̃)``).

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
ablation, so a threshold of 0 means ablation alone already flips the mean. Each
threshold is given in every unit: ``threshold_normalized`` (latent units, also
``threshold_latent``), ``threshold_raw`` (``· ‖d_φ ⊙ s‖``, also
``threshold_raw_norm``) and ``threshold_mean_active`` (``/ mean_active``);
``threshold`` is the one in ``alpha_units``.

Decoding is linear, so ``ε̃ = ε + (ṽ_φ − v_φ) · (d_φ ⊙ s)`` in the raw space:
steering is vectorised over latents, values and rows without re-encoding
anything.

**Defaults.** :class:`SteerOptions` holds the default of every steering option, once:
:func:`steer`, :func:`jsae.outputs.steer.run_steer`,
:func:`jsae.outputs.steer.steer_folder_name` and the ``jsae steer`` command take theirs
from it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import BadValueError, NotFoundError, OutOfRangeError
from ..models import ModelBatch, SAEModel
from ..store import EmbeddingStore
from .defaults import ALPHA_UNITS, MODES, UNIT_ALIASES, SteerOptions
from .labelled import LabelledSplit, load_train_test
from .probing import fit_probe

__all__ = ["MODES", "ALPHA_UNITS", "UNIT_ALIASES", "UNIT_TEXT", "canonical_units", "steer_codes",
           "relative_similarity", "class_centroids", "steer_latents", "SteerOptions", "SteerResult", "steer",
           "flip_thresholds"]

UNIT_TEXT = {
    "raw": "raw-embedding norm of the change (the space of the embeddings given)",
    "mean_active": "multiples of the latent's mean activation where it fires (train split)",
    "normalized": "latent units = norm of the change in the normalised space (‖d_φ‖ = 1)",
}


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
        ``recon_cosine`` (mean cos(ε, ε̃)), ``recon_change`` (mean ‖ε̃ − ε‖ / ‖ε‖),
        ``move_fraction`` (mean ‖ε̃ − ε‖ / ‖x‖, ``x`` the input embedding: the move as a
        fraction of the embedding norm).
      delta_before: ``{name: [B]}`` δ_s(ε). delta_after: ``{name: [A, B]}`` δ_s(ε̃).
      y: ``[B]`` bool of the test rows. params: the analysis parameters.
      flip: with ``flip_threshold=True``, one row per (model, class): ``name, k,
        latent_size, latent, side`` (``positive``/``negative``), ``class``,
        ``mean_before``, ``flipped`` (False: none up to ``a_max``), ``threshold``
        (in ``alpha_units``; NaN when not flipped), ``threshold_raw``,
        ``threshold_mean_active``, ``threshold_normalized`` (the same threshold in
        every unit), ``threshold_latent`` (= ``threshold_normalized``),
        ``threshold_raw_norm`` (= ``threshold_raw``), ``mean_active``,
        ``raw_per_latent_unit``, ``alpha_units``, ``a_max``, ``resolution`` (the
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
        steering value (``alpha`` in ``alpha_units``, ``a`` in latent units, ``a_raw_norm``) and the
        move as a fraction of the embedding norm (``move_fraction``)."""
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
                             "a": [row.a] * 2, "a_raw_norm": [row.a_raw_norm] * 2,
                             "move_fraction": [row.move_fraction] * 2})


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
               raw_unit: float, mean_active: float, units: str, classes: tuple[str, str], a_max: float,
               n_grid: int, tol: float) -> list[dict[str, Any]]:
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
        latent_thr = thr * per_alpha  # latent units = normalized
        every = {"raw": latent_thr * raw_unit, "normalized": latent_thr,
                 "mean_active": latent_thr / mean_active if np.isfinite(mean_active) and mean_active > 0
                 else float("nan")}
        every[units] = thr  # the unit searched in: exactly the threshold found
        rows.append({**spec.to_dict(), "latent": phi, "side": side, "class": cls, "mean_before": mb,
                     "flipped": bool(np.isfinite(thr)), "threshold": thr,
                     **{f"threshold_{u}": every[u] for u in ALPHA_UNITS},
                     "threshold_latent": every["normalized"], "threshold_raw_norm": every["raw"],
                     "mean_active": mean_active, "raw_per_latent_unit": raw_unit, "alpha_units": units,
                     "a_max": a_max, "resolution": res})
    return rows


def steer(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str, negative: str | None = None, *,
          k: int | None = None, latent_size: int | None = None,
          latent: int | str | Mapping[str, int] = SteerOptions.latent,
          alpha: float | Sequence[float] = SteerOptions.alpha, alpha_units: str = SteerOptions.alpha_units,
          mode: str = SteerOptions.mode, train_split: str = SteerOptions.train_split,
          test_split: str = SteerOptions.test_split, train: LabelledSplit | None = None,
          test: LabelledSplit | None = None, flip_threshold: bool = SteerOptions.flip_threshold,
          a_max: float = SteerOptions.a_max, n_grid: int = SteerOptions.n_grid,
          tol: float = SteerOptions.tol) -> SteerResult:
    """Steer the ``label == positive`` latent of every model of ``models`` with this ``k`` / ``latent_size``.

    ``models``: a Sweep or any ModelBatch; ``k`` / ``latent_size`` narrow it
    (``None``: every value). ``latent``: ``"auto"`` (the probe latent: logistic
    regression on the train split, as :func:`jsae.analyses.probing.probe`), an index (for every
    selected model), or ``{model name: index}``. ``alpha``: one value or several (a
    sweep over ``a_φ``; ignored by ``mode="ablate"``, reported as 0), in
    ``alpha_units``: ``mean_active`` (default: multiples of the latent's mean
    activation where it fires), ``raw`` (raw-embedding norm of the change; the paper's
    likeliest unit) or ``normalized`` (``absolute``: its alias); see the module
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
        if units == "mean_active" and mode == "flip" and not fired.any():
            warnings.warn(f"steer {spec.name}: latent {phi} never fires on the {train_split} split, so it has no "
                          "mean activation and alpha_units='mean_active' gives NaN; use alpha_units='raw' or "
                          "'normalized'.", stacklevel=2)
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
        moved = np.linalg.norm(eps_t - eps, axis=-1)  # [A, B]
        change = moved / np.maximum(norm0, 1e-30)
        move = moved / np.maximum(np.linalg.norm(np.asarray(test.x, np.float64), axis=-1), 1e-30)  # ‖ε̃ − ε‖ / ‖x‖
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
                "move_fraction": float(move[ai].mean()),
            })
        if flip_threshold:
            flips += _flip_rows(spec, phi, _Line(eps[y], v_phi[y], draw, c_pos, c_neg),
                                _Line(eps[~y], v_phi[~y], draw, c_pos, c_neg),
                                (float(d0[y].mean()), float(d0[~y].mean())), per_alpha, raw_unit, mean_active, units,
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
                    negative: str | None = None, *, alpha_units: str = SteerOptions.alpha_units,
                    a_max: float = SteerOptions.a_max, n_grid: int = SteerOptions.n_grid,
                    tol: float = SteerOptions.tol, **kwargs: Any) -> pd.DataFrame:
    """Per model and class, the smallest steering value ``a ≤ a_max`` (in ``alpha_units``)
    that flips the class mean δ_s: :attr:`SteerResult.flip` of :func:`steer` (its
    other keywords: ``k``, ``latent_size``, ``latent``, splits)."""
    return steer(models, store, label, positive, negative, alpha=[a_max], alpha_units=alpha_units,
                 flip_threshold=True, a_max=a_max, n_grid=n_grid, tol=tol, **kwargs).flip
