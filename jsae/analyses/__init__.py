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
# Public names are imported on first use (PEP 562), so that importing one light module
# (jsae.analyses.defaults, read by the command line's parser) loads neither JAX nor pandas.
from ..lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(("ConsistencyResult", "consistency", "group_shifts", "loo_cosines", "permuted_shifts",
                     "shared_fraction", "unseen_group_predictions"), "consistency"),
    **dict.fromkeys(("LabelledSplit", "as_store", "check_dim", "load_labelled", "load_train_test"), "labelled"),
    **dict.fromkeys(("PAPER_MODEL", "family_frame", "family_scores", "feature_family", "fit_probe", "probe",
                     "scores_from_counts", "single_latent_counts"), "probing"),
    **dict.fromkeys(("NONE", "SplitResult", "feature_split"), "splitting"),
    **dict.fromkeys(("UNIT_TEXT", "SteerResult", "canonical_units", "class_centroids", "flip_thresholds",
                     "relative_similarity", "steer", "steer_codes", "steer_latents"), "steering"),
    **dict.fromkeys(("UniversalityResult", "best_correlation_match", "best_cosine_match", "compare_sweeps",
                     "same_space"), "universality"),
    **dict.fromkeys(("ALL_SPLITS", "ALPHA_UNITS", "MODES", "UNIT_ALIASES", "SteerOptions", "METHODS"), "defaults"),
}

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
