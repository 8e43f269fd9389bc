"""Feature atlas: statistics of every latent of every model, from its activations on a store.

For one model with codes ``V [N, L]`` on ``N`` store rows (``ModelBatch.encode``; a latent
*fires* on a row when ``v > 0``) and the store's metadata table (``N`` rows):

**Activation summary** (:func:`firing_summary`, :func:`sorted_activations`,
:func:`activation_quantiles`, :func:`activation_histograms`). ``n_fires_ℓ = Σ_b [v_bℓ > 0]``,
``firing_rate = n_fires / N``, ``mean_activation`` (mean of ``v`` over the firing rows, NaN
when dead), ``max_activation`` (0 when dead); quantiles of the firing rows' activations
(numpy's ``linear`` rule, NaN when dead); a histogram of the firing rows' activations with
``n_bins`` equal bins from 0 to the latent's max — the counts of
``np.histogram(v[v > 0], bins=n_bins, range=(0, max))`` in float64, edges
``linspace(0, max, n_bins + 1)`` (all 0 and no counts for a dead latent).

**Examples** (:func:`top_examples`, :func:`band_examples`, :func:`examples_frame`). The
``n_top`` rows of largest activation (ties: the lower row first), and, Neuronpedia style,
``per_band`` rows drawn at random (a seeded generator) from each activation band of the
firing rows: with ``r`` a firing row's ascending activation rank (0 … n_fires − 1), band
``[lo, hi)`` holds the rows with ``lo · n_fires ≤ r < hi · n_fires`` (default quarters:
0–25 % the weakest firings … 75–100 % the strongest); rows already among the top examples
are not drawn again. Drawn rows are listed by activation, largest first.

**Enrichment** of every categorical metadata column (:func:`categorical_columns`,
:func:`metadata_design`, :func:`enrichment`). Missing values (NaN, None, empty or blank
strings) are no class, and a column's counts use only the rows where it has a value
(``N_c`` of them; ``n_fires_c`` firing): for latent ℓ and value ``s`` of column ``c``
with ``n_value`` rows, ``hits = |{b : v_bℓ > 0, c_b = s}|`` (all at once:
``hits = activeᵀ · onehot``), ``precision = hits / n_fires_c``, ``recall = hits / n_value``,
``base_rate = n_value / N_c``, ``lift = precision / base_rate``, ``f1 = 2PR / (P + R)``.
Without missing values ``N_c = N`` and ``n_fires_c = n_fires``. Precision, lift and F1 are
NaN for a latent that never fires on the column's rows.

**Numeric correlates** (:func:`numeric_columns`, :func:`numeric_effects`, :func:`bh_qvalues`).
For every numeric column ``x`` (rows with a non-finite value dropped, per column) and latent:
``d = (x̄_fire − x̄_rest) / s_pooled`` (Cohen's d: the firing rows' mean of ``x`` minus the
other rows', in pooled standard deviations ``s_pooled² = ((n₁−1)s₁² + (n₀−1)s₀²) / (n₁+n₀−2)``;
"sd" in the descriptions), its Welch t-test (``t``, ``df``, two-sided ``p``, as
``scipy.stats.ttest_ind(..., equal_var=False)``) and the Spearman rank correlation ``rho``
of the activation ``v`` (zeros included) with ``x`` (average ranks for ties; ``rho_p``
from ``t = ρ √((n−2)/(1−ρ²))`` with ``n − 2`` degrees of freedom, as
``scipy.stats.spearmanr``). ``q`` and ``rho_q``: Benjamini–Hochberg q-values of ``p`` /
``rho_p`` over every latent × column of the model (NaN p-values left out). Undefined
statistics (fewer than 2 rows in a group, zero variance) are NaN.

**Decoder neighbours and matches** (:func:`decoder_neighbours`, :func:`cross_model_matches`).
Cosines of the unit raw-space decoder directions (``ModelBatch.raw_directions()``): the
``n_neighbours`` most similar other latents of the same model (ties: the lower index), and
for every other model of the batch the best match (:func:`~jsae.analyses.universality.best_cosine_match`)
with ``mutual`` when that latent's own best match is this one. Only latents that fire on the
rows are candidates (as in the universality comparison).

**Descriptions** (:func:`best_label`, :func:`best_correlate`, :func:`describe_latents`): one
line per latent, from the statistics only (see :func:`describe_latents` for the rules), e.g.
``kind = music: P 1.00, R 0.99; vad.speech_prob −2.3 sd``.

>>> atlas = latent_atlas(sweep, store)                 # every model of a sweep, every latent
>>> atlas["k20_L200"].latents[["latent", "firing_rate", "description"]]
>>> atlas.frame("enrichment")                          # every model, one table, a ``model`` column

The code lies in one module per concern; every name is importable from here:

* :mod:`jsae.analyses.atlas.metadata`: the metadata columns used and their matrices;
* :mod:`jsae.analyses.atlas.stats`: activation summary, enrichment, numeric correlates;
* :mod:`jsae.analyses.atlas.geometry`: decoder neighbours and cross-model matches;
* :mod:`jsae.analyses.atlas.examples`: top and band examples;
* :mod:`jsae.analyses.atlas.describe`: labels, correlates and the one-line descriptions;
* :mod:`jsae.analyses.atlas.build`: the options and the assembly (:func:`model_atlas`,
  :func:`latent_atlas`).
"""
from __future__ import annotations

from .build import AtlasOptions, AtlasResult, ModelAtlas, latent_atlas, model_atlas
from .describe import best_correlate, best_label, describe_latents, format_rate
from .examples import band_examples, examples_frame, top_examples
from .geometry import cross_model_matches, decoder_neighbours
from .metadata import (EXCLUDED_COLUMNS, MetadataDesign, average_ranks, categorical_columns, metadata_design,
                             numeric_columns)
from .stats import (Enrichment, NumericEffects, activation_histograms, activation_quantiles, bh_qvalues,
                          enrichment, firing_summary, numeric_effects, sorted_activations)

__all__ = [
    "EXCLUDED_COLUMNS", "AtlasOptions", "MetadataDesign", "Enrichment", "NumericEffects", "ModelAtlas",
    "AtlasResult", "categorical_columns", "numeric_columns", "metadata_design", "sorted_activations",
    "firing_summary", "activation_quantiles", "activation_histograms", "top_examples", "band_examples",
    "examples_frame", "average_ranks", "enrichment", "bh_qvalues", "numeric_effects", "decoder_neighbours",
    "cross_model_matches", "best_label", "best_correlate", "format_rate", "describe_latents", "model_atlas",
    "latent_atlas",
]

