"""jsae: whole grids of TopK sparse autoencoders on speaker embeddings, in JAX.

Public API (see each module's docstring for the math and the shapes):

* configs: :class:`SweepConfig`, :func:`load_config`
* the store: :func:`open_store`, :func:`write_store`
* the model: :mod:`jsae.sae` (pure functions for one model and one example)
* training: :func:`train_sweep`
* analysis: :func:`load_sweep` → :class:`Sweep`, :class:`SAEModel`
"""
__version__ = "0.1.0"

from .config import ConfigError, SweepConfig, load_config  # noqa: E402
from .store import EmbeddingStore, InvalidEmbeddingsError, StoreError, open_store, write_store  # noqa: E402
from .sweep import SAEModel, Sweep, load_sweep  # noqa: E402
from .train import train_sweep  # noqa: E402

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
]
