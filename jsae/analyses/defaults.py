"""The analyses' option defaults and choices, in one place that imports nothing heavy.

The analysis functions take their defaults from here (:func:`~jsae.analyses.probing.probe`,
:func:`~jsae.analyses.splitting.feature_split`, :func:`~jsae.analyses.universality.compare_sweeps`,
:func:`~jsae.analyses.consistency.consistency`, :class:`SteerOptions`,
:class:`~jsae.analyses.atlas.AtlasOptions`, and the report's :func:`~jsae.report.build_report`),
and so does the command line (``jsae probe --help`` shows them) without importing JAX,
pandas or SciPy. Only the standard library is imported here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

__all__ = ["TRAIN_SPLIT", "TEST_SPLIT", "ALL_SPLITS", "C", "FAMILY_MIN_PRECISION", "FAMILY_MAX", "FAMILY_MIN_GAIN",
           "SPLIT_MIN_COVERAGE", "SPLIT_MIN_WITHIN", "SPLIT_MAX_OVERLAP", "METHODS", "UNIVERSALITY_METHOD",
           "UNIVERSALITY_THRESHOLD", "UNIVERSALITY_MAX_ROWS", "CONSISTENCY_SPEAKER", "CONSISTENCY_MIN_ROWS",
           "CONSISTENCY_FOLDS", "CONSISTENCY_SEED", "MODES", "ALPHA_UNITS", "UNIT_ALIASES", "SteerOptions",
           "ATLAS_N_TOP", "ATLAS_PER_BAND", "REPORT_TOP"]

# ------------------------------------------------------------------ labelled rows
#: the ``split`` value an analysis fits on, and the one it scores on
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"
#: a split name meaning every row
ALL_SPLITS = "all"

# ------------------------------------------------------------------ probe, feature family, split
#: inverse L2 strength of the logistic regressions (probe, split roots, consistency's linear bound)
C = 1.0
#: the feature family: train precision every member needs, most members, least recall a new member adds
FAMILY_MIN_PRECISION = 0.9
FAMILY_MAX = 5
FAMILY_MIN_GAIN = 0.02
#: a split's child takes this share of the root's rows, this share of its rows are the root's, and
#: children of one root overlapping this much (overlap coefficient) are one branch
SPLIT_MIN_COVERAGE = 0.2
SPLIT_MIN_WITHIN = 0.8
SPLIT_MAX_OVERLAP = 0.5

# ------------------------------------------------------------------ universality
METHODS = ("auto", "decoder", "activation")
UNIVERSALITY_METHOD = "auto"
UNIVERSALITY_THRESHOLD = 0.9
UNIVERSALITY_MAX_ROWS = 20000

# ------------------------------------------------------------------ consistency
CONSISTENCY_SPEAKER = "speaker"
CONSISTENCY_MIN_ROWS = 2
CONSISTENCY_FOLDS = 5
CONSISTENCY_SEED = 0

# ------------------------------------------------------------------ steering
MODES = ("flip", "ablate")
ALPHA_UNITS = ("raw", "mean_active", "normalized")
#: older names of a unit, accepted and reported under the new name
UNIT_ALIASES = {"absolute": "normalized"}


@dataclass(frozen=True)
class SteerOptions:
    """The steering options and their defaults (the one place they are set)."""

    latent: int | Literal["auto"] | Mapping[str, int] = "auto"
    """The steered latent: ``"auto"`` (the probe latent), an index, or ``{model name: index}``."""
    alpha: float | Sequence[float] = (1.0,)
    """The steering value(s) ``a_φ`` (paper: 1), in ``alpha_units``; several values sweep it."""
    alpha_units: str = "mean_active"
    """The unit of ``alpha``: ``mean_active`` (a = 1: the latent's mean activation where it fires), ``raw``
    (the raw-space norm of the change; the paper's likeliest unit) or ``normalized`` (latent units; alias
    ``absolute``)."""
    mode: str = "flip"
    """``flip`` (Eqs. 1–2: ``−a`` for positive rows, ``+a`` for negative ones) or ``ablate`` (``0``)."""
    flip_threshold: bool = False
    """Also find, per model and class, the smallest ``a`` that flips the class mean δ_s."""
    a_max: float = 50.0
    """The largest ``a`` (in ``alpha_units``) the flip-threshold search tries."""
    n_grid: int = 1024
    """Grid points of the flip-threshold search over ``[0, a_max]``."""
    tol: float = 1e-6
    """Bisection tolerance of the flip threshold, as a fraction of ``a_max``."""
    train_split: str = TRAIN_SPLIT
    """The ``split`` value the probe latent and the class centroids come from."""
    test_split: str = TEST_SPLIT
    """The ``split`` value of the steered rows."""


# ------------------------------------------------------------------ atlas
#: top-activating examples per latent, and random examples from each activation band
ATLAS_N_TOP = 10
ATLAS_PER_BAND = 3

# ------------------------------------------------------------------ report
#: top-activating segments shown per feature in the HTML report (jsae.report.build_report)
REPORT_TOP = 5
