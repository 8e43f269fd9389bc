"""The analyses as math: models (a :class:`~jsae.models.ModelBatch` or a Sweep) and a labelled
store in, tables and arrays out. Nothing here writes a file, draws or prints; the files,
figures and printed tables are :mod:`jsae.outputs`, the HTML page :mod:`jsae.report`.

* :mod:`~jsae.analyses.labelled`: the labelled rows of a store (``x [B, M]``, ``y [B]``).
* :mod:`~jsae.analyses.probing`: the latent of a label and its feature family, per model.
* :mod:`~jsae.analyses.splitting`: one feature followed as the latent size grows.
* :mod:`~jsae.analyses.steering`: paper Eqs. 1–3, δ_s before / after, flip thresholds.
* :mod:`~jsae.analyses.universality`: do two sweeps learn the same features?
* :mod:`~jsae.analyses.consistency`: is a label one direction for every speaker (no SAE)?
"""
from .consistency import (ConsistencyResult, consistency, group_shifts, loo_cosines, permuted_shifts,
                          shared_fraction, unseen_group_predictions)
from .labelled import ALL_SPLITS, LabelledSplit, as_store, check_dim, load_labelled, load_train_test
from .probing import (PAPER_MODEL, family_frame, family_scores, feature_family, fit_probe, probe, scores_from_counts,
                      single_latent_counts)
from .splitting import NONE, SplitResult, feature_split
from .steering import (ALPHA_UNITS, MODES, UNIT_ALIASES, UNIT_TEXT, SteerOptions, SteerResult, canonical_units,
                       class_centroids, flip_thresholds, relative_similarity, steer, steer_codes, steer_latents)
from .universality import (METHODS, UniversalityResult, best_correlation_match, best_cosine_match, compare_sweeps,
                           same_space)

__all__ = [
    "ALL_SPLITS", "LabelledSplit", "as_store", "check_dim", "load_labelled", "load_train_test",
    "PAPER_MODEL", "family_frame", "family_scores", "feature_family", "fit_probe", "probe", "scores_from_counts",
    "single_latent_counts",
    "NONE", "SplitResult", "feature_split",
    "ALPHA_UNITS", "MODES", "UNIT_ALIASES", "UNIT_TEXT", "SteerOptions", "SteerResult", "canonical_units",
    "class_centroids", "flip_thresholds", "relative_similarity", "steer", "steer_codes", "steer_latents",
    "METHODS", "UniversalityResult", "best_correlation_match", "best_cosine_match", "compare_sweeps", "same_space",
    "ConsistencyResult", "consistency", "group_shifts", "loo_cosines", "permuted_shifts", "shared_fraction",
    "unseen_group_predictions",
]
