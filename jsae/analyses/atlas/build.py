"""Feature atlas, assembly: the options (:class:`AtlasOptions`), one model's atlas from its codes
(:func:`model_atlas`, :class:`ModelAtlas`) and every model's from a store or embeddings
(:func:`latent_atlas`, :class:`AtlasResult`): encodes, builds the metadata matrices once,
runs the statistics, examples and descriptions, then fills in the cross-model matches.
Nothing is written here (the atlas site, :mod:`jsae.atlas`, writes the files).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ...errors import BadValueError, NotFoundError
from ...models import ModelBatch
from ...store import EmbeddingStore, StoreError
from .describe import best_correlate, best_label, describe_latents
from .examples import band_examples, examples_frame, top_examples
from .geometry import cross_model_matches, decoder_neighbours
from .metadata import EXCLUDED_COLUMNS, MetadataDesign, categorical_columns, metadata_design, numeric_columns
from .stats import (activation_histograms, activation_quantiles, enrichment, firing_summary, numeric_effects,
                          sorted_activations)
from ..defaults import ATLAS_N_TOP, ATLAS_PER_BAND
from ..labelled import as_store, check_dim

__all__ = ["AtlasOptions", "ModelAtlas", "AtlasResult", "model_atlas", "latent_atlas"]


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class AtlasOptions:
    """Parameters of :func:`latent_atlas` (each checked on construction).

    Statistics: ``n_bins`` (histogram bins), ``quantiles`` (of the firing activations, in
    (0, 1)), ``n_top`` (top examples), ``bands`` (``(lo, hi)`` fractions of the firing
    rows' activation ranks) with ``per_band`` rows each, ``seed`` (band draws),
    ``n_neighbours`` (decoder neighbours per latent).
    Metadata: ``exclude`` (columns never used unless named in ``categorical`` /
    ``numeric``), ``categorical`` / ``numeric`` (the columns to use; ``None``: detected,
    :func:`categorical_columns`, :func:`numeric_columns`), ``max_values`` (most distinct
    values of a detected categorical column).
    Descriptions (:func:`describe_latents`): ``min_hits``, ``min_precision``, ``min_gain``,
    ``alpha``, ``min_abs_d``, ``rare_rate``, ``dense_rate``.
    Encoding: ``block_rows`` rows per encoding call.
    """

    n_bins: int = 20
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 0.99)
    n_top: int = ATLAS_N_TOP
    bands: tuple[tuple[float, float], ...] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
    per_band: int = ATLAS_PER_BAND
    seed: int = 0
    n_neighbours: int = 5
    exclude: tuple[str, ...] = EXCLUDED_COLUMNS
    categorical: tuple[str, ...] | None = None
    numeric: tuple[str, ...] | None = None
    max_values: int = 50
    min_hits: int = 5
    min_precision: float = 0.5
    min_gain: float = 0.5
    alpha: float = 0.05
    min_abs_d: float = 0.5
    rare_rate: float = 0.005
    dense_rate: float = 0.5
    block_rows: int = 8192

    def __post_init__(self):
        for name in ("n_bins", "block_rows"):
            if int(getattr(self, name)) < 1:
                raise BadValueError(f"{name}={getattr(self, name)} must be at least 1.")
        for name in ("n_top", "per_band", "n_neighbours", "min_hits", "max_values"):
            if int(getattr(self, name)) < 0:
                raise BadValueError(f"{name}={getattr(self, name)} must be 0 or more.")
        if any(not 0 < q < 1 for q in self.quantiles):
            raise BadValueError(f"quantiles={self.quantiles} must lie strictly between 0 and 1.")
        if any(not 0 <= lo < hi <= 1 for lo, hi in self.bands):
            raise BadValueError(f"bands={self.bands} must be (lo, hi) pairs with 0 ≤ lo < hi ≤ 1.")
        for name in ("min_precision", "min_gain", "alpha", "rare_rate", "dense_rate"):
            if not 0 <= float(getattr(self, name)) <= 1:
                raise BadValueError(f"{name}={getattr(self, name)} must lie in [0, 1].")
        if self.min_abs_d < 0:
            raise BadValueError(f"min_abs_d={self.min_abs_d} must be 0 or more.")
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        object.__setattr__(self, "bands", tuple((float(lo), float(hi)) for lo, hi in self.bands))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        for name in ("categorical", "numeric"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

# ----------------------------------------------------------------------------- assembly


@dataclass
class ModelAtlas:
    """The atlas of one model (``L`` latents, ``N`` rows).

    Attributes:
      name, spec: the model (``spec``: :meth:`ModelSpec.to_dict`, empty for bare codes).
      latents: one row per latent: ``latent, n_fires, firing_rate, mean_activation,
        max_activation, q25 … q99`` (:attr:`AtlasOptions.quantiles`), ``label_column,
        label_value, label_precision, label_recall, label_f1, label_lift, label_hits``
        (:func:`best_label`; None / NaN without one), ``correlate_column, correlate_d,
        correlate_p, correlate_q, correlate_rho`` (:func:`best_correlate`), ``neighbour,
        neighbour_cosine`` (the nearest decoder neighbour; −1 / NaN without directions),
        ``match_model, match_latent, match_cosine`` (the best match over the other models,
        filled by :func:`latent_atlas`), ``status, description`` (:func:`describe_latents`).
      enrichment: :meth:`Enrichment.frame`. correlations: :meth:`NumericEffects.frame`.
      hist_counts ``[L, n_bins]`` int64, hist_edges ``[L, n_bins + 1]``: :func:`activation_histograms`.
      examples: :func:`examples_frame` (``row``: store rows).
      neighbours: ``latent, rank, neighbour, cosine`` (padding left out).
      matches: :func:`cross_model_matches` (empty for one model).
    """

    name: str
    spec: dict[str, Any]
    latents: pd.DataFrame
    enrichment: pd.DataFrame
    correlations: pd.DataFrame
    hist_counts: np.ndarray
    hist_edges: np.ndarray
    examples: pd.DataFrame
    neighbours: pd.DataFrame
    matches: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class AtlasResult:
    """The atlas of every model: ``models`` (``{name: ModelAtlas}``, batch order), ``rows``
    (the store rows used, ``[N]``), ``categorical`` / ``numeric`` (the metadata columns
    used) and ``params`` (the options and counts)."""

    models: dict[str, ModelAtlas]
    rows: np.ndarray
    categorical: list[str]
    numeric: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def __getitem__(self, name: str) -> ModelAtlas:
        try:
            return self.models[name]
        except KeyError:
            raise NotFoundError(f"no model {name!r} in the atlas; models: {', '.join(self.models)}") from None

    def frame(self, what: str) -> pd.DataFrame:
        """One table of every model: ``what`` is ``latents``, ``enrichment``, ``correlations``,
        ``examples``, ``neighbours`` or ``matches``; a ``model`` column first."""
        if what not in ("latents", "enrichment", "correlations", "examples", "neighbours", "matches"):
            raise BadValueError(f"what={what!r} is not a table of the atlas; use latents, enrichment, "
                                "correlations, examples, neighbours or matches.")
        parts = [getattr(m, what).assign(**{"model": name}) for name, m in self.models.items()]
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        return df[["model", *[c for c in df.columns if c != "model"]]] if len(df.columns) else df


def _quantile_name(q: float) -> str:
    return "q" + f"{q * 100:g}".replace(".", "_")


def model_atlas(codes: np.ndarray, design: MetadataDesign, options: AtlasOptions = AtlasOptions(), *,
                directions: np.ndarray | None = None, name: str = "model", spec: dict[str, Any] | None = None,
                row_ids: np.ndarray | None = None, seed: int | Sequence[int] | None = None) -> ModelAtlas:
    """Every statistic of one model's ``codes [N, L]`` on the rows of ``design`` (same order).

    ``directions``: its unit raw-space decoder directions ``[L, M]`` (neighbours; none
    without). ``row_ids``: store row of each position (examples). ``seed``: of the band
    draws (default ``options.seed``). ``matches`` stays empty (:func:`latent_atlas` fills it).
    """
    v = np.asarray(codes, np.float64)
    if v.ndim != 2 or v.shape[0] != design.n_rows:
        raise BadValueError(f"codes of shape {v.shape} do not match the {design.n_rows} metadata rows.")
    L = v.shape[1]
    o = options
    summ = firing_summary(v)
    order, svals = sorted_activations(v)
    quant = activation_quantiles(svals, summ["n_fires"], o.quantiles)
    counts, edges = activation_histograms(v, summ["max_activation"], o.n_bins)
    t_rows, t_acts = top_examples(order, svals, summ["n_fires"], o.n_top)
    b_rows, b_acts = band_examples(order, svals, summ["n_fires"], o.bands, o.per_band, skip=o.n_top,
                                   seed=o.seed if seed is None else seed)
    examples = examples_frame(t_rows, t_acts, b_rows, b_acts, o.bands, row_ids)
    enr = enrichment(v > 0, design)
    eff = numeric_effects(v, design)
    lab = best_label(enr, min_hits=o.min_hits, min_precision=o.min_precision, min_gain=o.min_gain)
    cor = best_correlate(eff, alpha=o.alpha, min_abs_d=o.min_abs_d, min_hits=o.min_hits)
    alive = summ["n_fires"] > 0
    if directions is not None:
        nb_idx, nb_cos = decoder_neighbours(directions, o.n_neighbours, alive)
    else:
        nb_idx, nb_cos = np.full((L, o.n_neighbours), -1, np.int64), np.full((L, o.n_neighbours), np.nan)
    ar = np.arange(L)

    def pick(arr, idx, fill=np.nan):
        return np.where(idx >= 0, arr[ar, np.maximum(idx, 0)], fill) if arr.shape[1] else np.full(L, fill)

    value_col = np.array(design.categorical, dtype=object)[design.value_column] if design.values else None
    labels = [None if j < 0 else (value_col[j], design.values[j], enr.precision[i, j], enr.recall[i, j])
              for i, j in enumerate(lab)]
    cors = [None if j < 0 else (design.numeric[j], eff.d[i, j]) for i, j in enumerate(cor)]
    status, desc = describe_latents(summ["firing_rate"], summ["n_fires"], labels, cors, rare_rate=o.rare_rate,
                                    dense_rate=o.dense_rate)
    latents = pd.DataFrame({"latent": ar, **summ,
                            **{_quantile_name(q): quant[:, i] for i, q in enumerate(o.quantiles)}})
    latents["label_column"] = [None if x is None else x[0] for x in labels]
    latents["label_value"] = [None if x is None else x[1] for x in labels]
    for key in ("precision", "recall", "f1", "lift"):
        latents[f"label_{key}"] = pick(getattr(enr, key), lab)
    hits = pick(enr.hits, lab, 0)
    latents["label_hits"] = pd.array([int(h) if j >= 0 else None for h, j in zip(hits, lab)], dtype="Int64")
    latents["correlate_column"] = [None if x is None else x[0] for x in cors]
    for key in ("d", "p", "q", "rho"):
        latents[f"correlate_{key}"] = pick(getattr(eff, key), cor)
    latents["neighbour"] = nb_idx[:, 0] if o.n_neighbours else -1
    latents["neighbour_cosine"] = nb_cos[:, 0] if o.n_neighbours else np.nan
    latents["match_model"] = None
    latents["match_latent"] = -1
    latents["match_cosine"] = np.nan
    latents["status"] = status
    latents["description"] = desc
    keep = nb_idx.ravel() >= 0
    neighbours = pd.DataFrame({"latent": np.repeat(ar, o.n_neighbours)[keep],
                               "rank": np.tile(np.arange(o.n_neighbours), L)[keep],
                               "neighbour": nb_idx.ravel()[keep], "cosine": nb_cos.ravel()[keep]})
    return ModelAtlas(name, dict(spec or {}), latents, enr.frame(), eff.frame(), counts, edges, examples, neighbours)


def _best_match_columns(matches: pd.DataFrame, L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per latent the match of highest cosine over the other models (the first model on ties)."""
    model = np.full(L, None, dtype=object)
    latent = np.full(L, -1, np.int64)
    cos = np.full(L, np.nan)
    if len(matches):
        m = len(matches) // L
        c = matches["cosine"].to_numpy(np.float64).reshape(L, m)
        j = np.argmax(np.where(np.isfinite(c), c, -np.inf), axis=1)
        ok = np.isfinite(c[np.arange(L), j])
        flat = np.arange(L) * m + j
        model[ok] = matches["model"].to_numpy(object)[flat][ok]
        latent[ok] = matches["match"].to_numpy(np.int64)[flat][ok]
        cos[ok] = c[np.arange(L), j][ok]
    return model, latent, cos


def _rows_and_table(models: ModelBatch, data: EmbeddingStore | str | np.ndarray, table: pd.DataFrame | None,
                    rows: np.ndarray | None) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, str]:
    """``(x [N, M], table [N rows], store rows [N], source)`` of the atlas input."""
    if isinstance(data, np.ndarray):
        if table is None:
            raise BadValueError("an embedding array needs its metadata table (table=, one row per embedding).")
        x = np.asarray(data, np.float32)
        if x.ndim != 2 or len(table) != len(x):
            raise BadValueError(f"embeddings of shape {x.shape} and a table of {len(table)} rows do not match; "
                                "give one metadata row per embedding.")
        ids = np.arange(len(x)) if rows is None else np.asarray(rows, np.int64)
        if rows is not None:
            x, table = x[ids], table.iloc[ids]
        check_dim(models, x=x)
        return x, table.reset_index(drop=True), ids, "array"
    store = as_store(data)
    check_dim(models, store=store)
    meta = store.metadata if table is None else table
    if len(meta) != store.num_rows:
        raise StoreError(f"the table has {len(meta)} rows but store {store.path} has {store.num_rows}.")
    ids = np.arange(store.num_rows) if rows is None else np.asarray(rows, np.int64)
    x = store.read() if rows is None else store.read(ids)
    return x, meta.iloc[ids].reset_index(drop=True), ids, str(store.path)


def latent_atlas(models: ModelBatch, data: EmbeddingStore | str | np.ndarray, table: pd.DataFrame | None = None, *,
                 rows: Sequence[int] | None = None, options: AtlasOptions | None = None,
                 **overrides: Any) -> AtlasResult:
    """The feature atlas of every latent of every model of ``models`` (a Sweep or any ModelBatch).

    Args:
      data: a store (or its path; ``table`` defaults to its metadata) or raw embeddings
        ``x [N, M]`` with their ``table`` (``N`` rows).
      rows: the store rows to use (default all); examples name store rows.
      options: :class:`AtlasOptions`; ``overrides``: fields of it (``n_top=20``).
    Every model is encoded once (:meth:`ModelBatch.encode`, ``block_rows`` rows at a time;
    all codes are held, ``N · ΣL`` float32); the metadata matrices are built once; each
    model's statistics are vectorised over its latents (:func:`model_atlas`), then the
    matches across models (:func:`cross_model_matches`) fill ``matches`` and the
    ``match_*`` columns of ``latents``. Band draws of model ``i`` use seed ``(seed, i)``.
    """
    o = replace(options or AtlasOptions(), **overrides) if overrides else (options or AtlasOptions())
    models.warn_if_unfinished("feature atlas")
    x, meta, ids, source = _rows_and_table(models, data, table, None if rows is None else np.asarray(rows))
    cat = list(o.categorical) if o.categorical is not None else categorical_columns(meta, exclude=o.exclude,
                                                                                   max_values=o.max_values)
    num = list(o.numeric) if o.numeric is not None else numeric_columns(meta, exclude=o.exclude)
    design = metadata_design(meta, cat, num)
    codes = models.encode(x, block_rows=o.block_rows)
    directions = models.raw_directions()
    out: dict[str, ModelAtlas] = {}
    for i, (spec, v, d) in enumerate(zip(models.specs, codes, directions)):
        out[spec.name] = model_atlas(v, design, o, directions=d, name=spec.name, spec=spec.to_dict(), row_ids=ids,
                                     seed=(o.seed, i))
    alive = [out[n].latents["n_fires"].to_numpy() > 0 for n in models.names]
    for name, m in cross_model_matches(models.names, directions, alive).items():
        atlas = out[name]
        atlas.matches = m
        mm, ml, mc = _best_match_columns(m, len(atlas.latents))
        atlas.latents["match_model"], atlas.latents["match_latent"], atlas.latents["match_cosine"] = mm, ml, mc
    params = {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in o.__dict__.items()},
              "source": source, "n_rows": int(len(ids)), "models": models.names,
              "run_dir": None if models.run_dir is None else str(models.run_dir), "step": models.step}
    return AtlasResult(out, ids, cat, num, params)
