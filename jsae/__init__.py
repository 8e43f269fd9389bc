"""jsae: whole grids of TopK sparse autoencoders on speaker embeddings, in JAX.

Public API (see each module's docstring for the math and the shapes):

* configs: :class:`SweepConfig`, :func:`load_config`
* the store: :func:`open_store`, :func:`write_store`
* the model: :mod:`jsae.sae` (pure functions for one model and one example)
* training: :func:`train_sweep`
* analysis: :func:`load_sweep` → :class:`Sweep`, :class:`SAEModel`; on a loaded
  sweep and a labelled store: :func:`probe` (:mod:`jsae.probing`),
  :func:`feature_split` (:mod:`jsae.splitting`), :func:`steer` and
  :func:`steer_latents` (:mod:`jsae.steering`), :func:`compare_sweeps`
  (:mod:`jsae.universality`), :func:`build_report` (:mod:`jsae.report`)
"""
__version__ = "0.1.0"

from .config import ConfigError, SweepConfig, load_config  # noqa: E402
from .store import EmbeddingStore, InvalidEmbeddingsError, StoreError, open_store, write_store  # noqa: E402
from .sweep import SAEModel, Sweep, load_sweep  # noqa: E402
from .train import train_sweep  # noqa: E402
from .labelled import LabelledSplit, load_labelled  # noqa: E402
from .probing import probe  # noqa: E402
from .splitting import SplitResult, feature_split  # noqa: E402
from .steering import SteerResult, relative_similarity, steer, steer_latents  # noqa: E402
from .universality import UniversalityResult, compare_sweeps  # noqa: E402
from .report import build_report  # noqa: E402

__all__ = [
    "__version__",
    "ConfigError",
    "SweepConfig",
    "load_config",
    "EmbeddingStore",
    "InvalidEmbeddingsError",
    "StoreError",
    "open_store",
    "write_store",
    "SAEModel",
    "Sweep",
    "load_sweep",
    "train_sweep",
    "LabelledSplit",
    "load_labelled",
    "probe",
    "SplitResult",
    "feature_split",
    "SteerResult",
    "relative_similarity",
    "steer",
    "steer_latents",
    "UniversalityResult",
    "compare_sweeps",
    "build_report",
]
