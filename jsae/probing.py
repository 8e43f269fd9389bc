"""Feature identification (probing), paper Sections III-C and V-A.

For every model of a sweep, with a labelled store (``split`` = train/test, a label
column and its positive value):

1. encode the train split: ``V_train [B, L]``;
2. fit a logistic regression ``p(y=1|v) = σ(wᵀv + b)`` on the latents
   (scikit-learn, L2, ``C``) and take ``φ = argmax_ℓ w_ℓ``, the latent with the
   largest weight toward the positive class;
3. use that latent alone on the test split: ``ŷ = [v_φ > 0]`` and report its
   precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)``, F1 and the support
   (number of positive test rows).

Also reported: the best single latent on the train split by direct search (the F1
of ``[v_ℓ > 0]`` for every ℓ at once, from ``TP_ℓ = Σ_b [v_bℓ > 0] y_b``) and its
test scores, and the test accuracy of the full-latent logistic regression (a
ceiling for any one latent).

Encoding is batched over the models (:meth:`ModelBatch.encode`), the single-latent
scores over all latents at once; the regression is one fit per model.

>>> df = probe(sweep, store, "lang", "es")            # every model of a sweep
>>> df = probe(sweep.select(k=20), store, "lang", "es")  # or any ModelBatch
>>> df.loc[(df.k == 20) & (df.latent_size == 200), ["latent", "precision", "recall"]]
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .labelled import LabelledSplit, batch_and_dir, load_train_test
from .models import ModelBatch
from .results import analysis_dir, check_analysis_out, format_table, slug, write_analysis, write_json
from .store import EmbeddingStore

__all__ = ["single_latent_counts", "scores_from_counts", "fit_probe", "probe", "write_probe", "run_probe",
           "probe_table", "PROBE_COLUMNS"]

#: the columns :func:`write_probe` prints
PROBE_COLUMNS = ("name", "latent", "precision", "recall", "f1", "support", "train_best_latent", "train_best_f1",
                 "logreg_test_accuracy")


def single_latent_counts(active: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(TP, FP, FN)`` of every latent used alone as a predictor.

    Args:
      active: ``[..., B, L]`` bool, ``v > 0`` (any leading axes, e.g. models).
      y: ``[B]`` bool targets.
    Returns:
      three ``[..., L]`` int arrays: ``TP_ℓ = Σ_b a_bℓ y_b``, ``FP_ℓ = Σ_b a_bℓ − TP_ℓ``,
      ``FN_ℓ = Σ_b y_b − TP_ℓ``.
    """
    a = np.asarray(active, np.float32)
    yf = np.asarray(y, np.float32)
    tp = np.rint(np.einsum("...bl,b->...l", a, yf)).astype(np.int64)
    fired = np.rint(a.sum(axis=-2)).astype(np.int64)
    return tp, fired - tp, int(np.asarray(y, bool).sum()) - tp


def scores_from_counts(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, F1)``; 0 where undefined (as scikit-learn's ``zero_division=0``)."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return precision, recall, f1


def fit_probe(codes: np.ndarray, y: np.ndarray, *, C: float = 1.0, max_iter: int = 2000,
              standardize: bool = False, seed: int = 0):
    """Logistic regression on latents ``codes [B, L]``; returns ``(φ, w_φ, model)``.

    ``standardize``: fit on latents scaled to unit variance (weights then compare
    latents of different activation scales); the paper fits on the raw latents.
    The returned model predicts from raw latents either way.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    model = make_pipeline(StandardScaler(), clf) if standardize else clf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on separable data
        model.fit(np.asarray(codes, np.float64), np.asarray(y, bool))
    w = clf.coef_[0]  # toward classes_[1] == True
    phi = int(np.argmax(w))
    return phi, float(w[phi]), model


def probe(models: ModelBatch, store: EmbeddingStore | str, label: str, positive: str, *, negative: str | None = None,
          train_split: str = "train", test_split: str = "test", C: float = 1.0, standardize: bool = False,
          max_iter: int = 2000, train: LabelledSplit | None = None,
          test: LabelledSplit | None = None) -> pd.DataFrame:
    """Probe every model of ``models`` (a Sweep or any ModelBatch) for the feature ``label == positive``.

    Returns one row per model (batch order) with ``name, k, latent_size, activation,
    l1_coef``; the logistic-regression latent ``latent`` and its weight; its test
    ``precision, recall, f1, support`` (positive test rows), ``tp, fp, fn``,
    ``accuracy`` and ``activation_rate`` (fraction of test rows where it fires) and
    its train ``train_f1``; the direct-search best latent on train
    ``train_best_latent, train_best_f1`` and its test ``train_best_test_precision,
    train_best_test_recall, train_best_test_f1``; ``logreg_test_accuracy`` (all
    latents). ``df.attrs`` holds the parameters and the row counts.
    """
    models.warn_if_unfinished("probe")
    store, train, test = load_train_test(models, store, label, positive, negative=negative, train_split=train_split,
                                         test_split=test_split, train=train, test=test)
    rows: list[dict[str, Any]] = []
    for spec, v_tr, v_te in zip(models.specs, models.encode(train.x), models.encode(test.x)):
        a_tr, a_te = v_tr > 0, v_te > 0  # [Btr, L], [Bte, L]
        # Direct search over every latent at once.
        tr_p, tr_r, tr_f1 = scores_from_counts(*single_latent_counts(a_tr, train.y))
        te_p, te_r, te_f1 = scores_from_counts(*single_latent_counts(a_te, test.y))
        best = int(np.argmax(tr_f1))
        phi, weight, fit = fit_probe(v_tr, train.y, C=C, max_iter=max_iter, standardize=standardize)
        pred = a_te[:, phi]  # [Bte]
        tp, fp, fn = int((pred & test.y).sum()), int((pred & ~test.y).sum()), int((~pred & test.y).sum())
        rows.append({
            **spec.to_dict(),
            "latent": phi, "weight": weight,
            "precision": float(te_p[phi]), "recall": float(te_r[phi]), "f1": float(te_f1[phi]),
            "support": int(test.y.sum()), "n_test": len(test), "tp": tp, "fp": fp, "fn": fn,
            "accuracy": float(np.mean(pred == test.y)), "activation_rate": float(pred.mean()),
            "train_f1": float(tr_f1[phi]),
            "train_best_latent": best, "train_best_f1": float(tr_f1[best]),
            "train_best_test_precision": float(te_p[best]), "train_best_test_recall": float(te_r[best]),
            "train_best_test_f1": float(te_f1[best]),
            "logreg_test_accuracy": float(fit.score(np.asarray(v_te, np.float64), test.y)),
        })
    df = pd.DataFrame(rows)
    df.attrs.update({"label": label, "positive": str(positive), "negative": negative, "store": str(store.path),
                     "train_split": train_split, "test_split": test_split, "n_train": len(train),
                     "n_train_positive": int(train.y.sum()), "n_test": len(test),
                     "n_test_positive": int(test.y.sum()), "C": C, "standardize": standardize})
    return df


def write_probe(df: pd.DataFrame, out_dir: str | Path, *, top_features: int = 3) -> list[Path]:
    """``probe.csv``, ``probe.json`` (via ``analysis.json``) and heatmaps of precision,
    recall, F1 and the logistic-regression ceiling over K × latent size."""
    from .plots import plot_heatmap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = df.attrs
    what = f"{a.get('label')}={a.get('positive')}"
    files = [out / "probe.csv"]
    df.to_csv(files[0], index=False)
    records = df.to_dict(orient="records")
    files.append(write_json(out / "probe.json", {"params": dict(a), "models": records}))
    for key, title, cmap in (("precision", "precision", "viridis"), ("recall", "recall", "viridis"),
                             ("f1", "F1", "viridis"), ("logreg_test_accuracy", "all-latent logistic regression "
                                                                               "accuracy (ceiling)", "cividis")):
        files.append(plot_heatmap(records, key, out / f"{key}.png",
                                  title=f"{what}: top latent {title} (test)" if key != "logreg_test_accuracy"
                                  else f"{what}: {title}", cmap=cmap))
    best = df.sort_values(["f1", "precision"], ascending=False).head(top_features)
    features = [{"k": int(r.k), "latent_size": int(r.latent_size), "latent": int(r.latent),
                 "why": f"{what}: probe latent, test precision {r.precision:.3f}, recall {r.recall:.3f}"}
                for r in best.itertuples()]
    b = df.loc[df["f1"].idxmax()]
    summary = {"best_model": b["name"], "best_latent": int(b["latent"]), "best_precision": float(b["precision"]),
               "best_recall": float(b["recall"]), "best_f1": float(b["f1"]),
               "mean_precision": float(df["precision"].mean()), "mean_recall": float(df["recall"].mean()),
               "n_models": len(df)}
    files.append(write_analysis(out, "probe", dict(a), summary, files, features, tables={"probe": "probe.csv"}))
    return files


def run_probe(run_dir: "str | Path | ModelBatch", store: str | Path, label: str, positive: str, *, negative: str | None = None,
              out: str | Path | None = None, **kwargs: Any) -> tuple[pd.DataFrame, Path]:
    """Load a sweep (or take a ModelBatch), probe it, write the outputs (default
    ``RUN_DIR/analysis/probe-LABEL-POSITIVE``)."""
    if out is not None:
        check_analysis_out(out, "probe")  # before the work: --out must be new, empty or an earlier probe
    models, run_dir = batch_and_dir(run_dir)
    df = probe(models, store, label, positive, negative=negative, **kwargs)
    out_dir = analysis_dir(run_dir, slug("probe", label, positive), out, kind="probe")
    write_probe(df, out_dir)
    return df, out_dir


def probe_table(df: pd.DataFrame) -> str:
    """The short printed table of a probe."""
    return format_table(df, PROBE_COLUMNS)
