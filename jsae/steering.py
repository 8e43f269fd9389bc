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

Other modes: ``ablate`` sets ``ṽ_φ = 0`` for every row (zero-ablation). ``alpha``
is in the units of the latent's activation (``absolute``, the paper's choice: the
normalised space the SAE works in) or relative to the latent's mean activation
where it fires on the training split (``mean_active``); outputs say which.

Decoding is linear, so ``ε̃ = ε + (ṽ_φ − v_φ) · (d_φ ⊙ s)`` in the raw space
(``s``: normalisation scale): steering is vectorised over models, latents, values
and rows without re-encoding anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .labelled import LabelledSplit, batch_and_dir, load_train_test
from .models import ModelBatch, SAEModel
from .probing import fit_probe
from .results import analysis_dir, check_analysis_out, format_table, slug, write_analysis, write_json
from .store import EmbeddingStore
from .errors import BadValueError, NotFoundError, OutOfRangeError
from .plots import pyplot, save_figure

__all__ = ["MODES", "ALPHA_UNITS", "steer_codes", "relative_similarity", "class_centroids", "steer_latents",
           "SteerResult", "steer", "write_steer", "run_steer", "steer_table_text"]

MODES = ("flip", "ablate")
ALPHA_UNITS = ("absolute", "mean_active")


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
    (``values`` a scalar, ``[J]`` or ``[J, B]``), for the codes ``v = encode(x)``.
    Vectorised over latents and rows.
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
        alpha, alpha_units, a`` (the absolute value used), ``n_pos, n_neg``,
        ``pos_before, pos_after, neg_before, neg_after`` (mean δ_s per class),
        ``pos_flipped`` (share of positive rows with δ_s ≥ 0 before and < 0 after
        among those ≥ 0 before), ``neg_flipped``, ``pos_sign_flipped`` /
        ``neg_sign_flipped`` (the class mean changed sign), ``recon_cosine`` (mean
        cos(ε, ε̃)), ``recon_change`` (mean ‖ε̃ − ε‖ / ‖ε‖).
      delta_before: ``{name: [B]}`` δ_s(ε). delta_after: ``{name: [A, B]}`` δ_s(ε̃).
      y: ``[B]`` bool of the test rows. params: the analysis parameters.
    """

    summary: pd.DataFrame
    delta_before: dict[str, np.ndarray]
    delta_after: dict[str, np.ndarray]
    y: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def table(self, name: str | None = None, alpha: float | None = None) -> pd.DataFrame:
        """The paper's Tables III–IV: mean δ_s before/after steering per class."""
        s = self.summary
        name = name or s["name"].iloc[0]
        row = s[(s["name"] == name) & ((s["alpha"] == alpha) if alpha is not None else True)].iloc[0]
        p = self.params
        neg = p.get("negative") or f"not {p['positive']}"
        return pd.DataFrame({"samples": [f"{p['positive']}", f"{neg}"],
                             "n": [int(row.n_pos), int(row.n_neg)],
                             "before_steering": [row.pos_before, row.neg_before],
                             "after_steering": [row.pos_after, row.neg_after]})


def _target(mode: str, a: np.ndarray, y: np.ndarray, v_phi: np.ndarray) -> np.ndarray:
    """New value of ``v_φ`` per (alpha, row): ``[..., A, B]`` from ``a [..., A]``, ``y [B]``."""
    if mode == "flip":
        return np.where(y, -a[..., None], a[..., None])
    if mode == "ablate":
        return np.zeros(a.shape + y.shape, np.float32)
    raise BadValueError(f"mode={mode!r} is not one of {MODES}")


def steer(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str, negative: str | None = None, *,
          k: int | None = None, latent_size: int | None = None,
          latent: int | str | Mapping[str, int] = "auto", alpha: float | Sequence[float] = 1.0,
          alpha_units: str = "absolute", mode: str = "flip", train_split: str = "train",
          test_split: str = "test", train: LabelledSplit | None = None,
          test: LabelledSplit | None = None) -> SteerResult:
    """Steer the ``label == positive`` latent of every model of ``models`` with this ``k`` / ``latent_size``.

    ``models``: a Sweep or any ModelBatch; ``k`` / ``latent_size`` narrow it
    (``None``: every value). ``latent``: ``"auto"`` (the probe latent: logistic
    regression on the train split, as :func:`jsae.probing.probe`), an index (for every
    selected model), or ``{model name: index}``. ``alpha``: one value or several (a
    sweep over ``a_φ``; ignored by ``mode="ablate"``, reported as 0). Returns a
    :class:`SteerResult`.
    """
    models.warn_if_unfinished("steering")
    if mode not in MODES:
        raise BadValueError(f"mode={mode!r} is not one of {MODES}")
    if alpha_units not in ALPHA_UNITS:
        raise BadValueError(f"alpha_units={alpha_units!r} is not one of {ALPHA_UNITS}")
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
    rows, before, after = [], {}, {}
    y = test.y
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
        a = alphas * (mean_active if alpha_units == "mean_active" else 1.0)  # [A]
        target = _target(mode, a.astype(np.float32), y, v_phi)  # [A, B]
        draw = model.raw_decoder()[phi]  # [M]: raw-space effect of one unit of v_φ
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
                "alpha_units": alpha_units, "a": float(a[ai]), "mean_active": mean_active,
                "n_pos": int(y.sum()), "n_neg": int((~y).sum()),
                "pos_before": float(pb.mean()), "pos_after": float(pa.mean()),
                "neg_before": float(nb.mean()), "neg_after": float(na.mean()),
                "pos_flipped": float(np.mean(pa[pb >= 0] < 0)) if np.any(pb >= 0) else float("nan"),
                "neg_flipped": float(np.mean(na[nb < 0] >= 0)) if np.any(nb < 0) else float("nan"),
                "pos_sign_flipped": bool(np.sign(pb.mean()) != np.sign(pa.mean())),
                "neg_sign_flipped": bool(np.sign(nb.mean()) != np.sign(na.mean())),
                "recon_cosine": float(cosr[ai].mean()), "recon_change": float(change[ai].mean()),
            })
    params = {"label": label, "positive": str(positive), "negative": negative, "k": k, "latent_size": latent_size,
              "latent": latent if not isinstance(latent, Mapping) else dict(latent), "alpha": alphas.tolist(),
              "alpha_units": alpha_units, "mode": mode, "train_split": train_split, "test_split": test_split,
              "store": str(store.path), "n_train": len(train), "n_test": len(test),
              "centroids": "mean SAE reconstruction (raw space) of each class on the train split"}
    return SteerResult(pd.DataFrame(rows), before, after, test.y.copy(), params)


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
    ax.set_title(f"{name}, latent {row.latent}: {row['mode']}, a={row.a:.3g} ({row.alpha_units})", fontsize=10)
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
    ax.set_xlabel(f"a_φ ({s.alpha_units.iloc[0]})")
    ax.set_ylabel(r"mean $\delta_s$")
    ax.set_title(f"{name}, latent {s.latent.iloc[0]}: steering strength", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_steer(res: SteerResult, out_dir: str | Path, *, max_histograms: int = 4) -> list[Path]:
    """``steer_summary.csv``, ``steer_table.csv`` (Tables III–IV of the first model,
    first alpha), ``steer.json``, δ_s histograms, an alpha plot (several alphas) and
    heatmaps of the mean δ_s after steering (several models)."""
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
    files.append(write_json(out / "steer.json", {"params": res.params, "summary": s, "table": table,
                                                 "table_model": names[0]}))
    for name in names[:max_histograms]:
        files.append(_plot_hist(res, name, out / f"delta_hist_{name}.png"))
        if s[s["name"] == name]["alpha"].nunique() > 1:
            files.append(_plot_alpha(res, name, out / f"alpha_{name}.png"))
    if len(names) > 1:
        recs = s[s["alpha"] == first_alpha].to_dict(orient="records")
        p = res.params
        for key in ("pos_after", "neg_after"):
            cls = p["positive"] if key == "pos_after" else (p.get("negative") or "others")
            files.append(plot_heatmap(recs, key, out / f"{key}.png", cmap="coolwarm",
                                      title=f"mean δ_s of {cls} rows after steering (a={first_alpha:g})"))
    r0 = s.iloc[0]
    features = [{"k": int(r.k), "latent_size": int(r.latent_size), "latent": int(r.latent),
                 "why": f"steered {res.params['label']}={res.params['positive']} latent: δ_s {r.pos_before:.3f} → "
                        f"{r.pos_after:.3f} ({res.params['positive']}), {r.neg_before:.3f} → {r.neg_after:.3f}"}
                for r in s.drop_duplicates("name").head(3).itertuples()]
    summary = {"model": r0["name"], "latent": int(r0.latent), "a": float(r0.a), "alpha_units": r0.alpha_units,
               "table": table}
    files.append(write_analysis(out, "steer", res.params, summary, files, features,
                                tables={"mean δ_s before/after steering": "steer_table.csv",
                                        "summary": "steer_summary.csv"}))
    return files


def run_steer(run_dir: "str | Path | ModelBatch", store: str | Path, label: str, positive: str, negative: str | None = None, *,
              out: str | Path | None = None, **kwargs: Any) -> tuple[SteerResult, Path]:
    """Load a sweep (or take a ModelBatch), :func:`steer` it, write the outputs."""
    if out is not None:
        check_analysis_out(out, "steer")  # before the work: --out must be new, empty or an earlier steer
    models, run_dir = batch_and_dir(run_dir)
    res = steer(models, store, label, positive, negative, **kwargs)
    k, L, lat = kwargs.get("k"), kwargs.get("latent_size"), kwargs.get("latent", "auto")
    name = slug("steer", label, positive, f"k{k}" if k else None, f"L{L}" if L else None,
                f"latent{lat}" if isinstance(lat, int) else None, kwargs.get("mode", "flip"))
    out_dir = analysis_dir(run_dir, name, out, kind="steer")
    write_steer(res, out_dir)
    return res, out_dir


def steer_table_text(res: SteerResult) -> str:
    """The short printed table of a steering run."""
    return format_table(res.summary, ["name", "latent", "alpha", "a", "pos_before", "pos_after", "neg_before",
                                      "neg_after", "recon_cosine"])
