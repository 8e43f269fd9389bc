"""jsae: whole grids of TopK sparse autoencoders on speaker embeddings, in JAX.

Public API (see each module's docstring for the math and the shapes):

* configs: :class:`SweepConfig`, :func:`load_config`
* the store: :func:`open_store`, :func:`write_store`
* the model: :mod:`jsae.core.sae` (pure functions for one model and one example)
* training: :func:`train_sweep` (:mod:`jsae.training`)
* models: :class:`TopK` / :class:`ReluL1` (the activation of a model);
  :func:`load_sweep` → :class:`Sweep` (:mod:`jsae.runs`), a :class:`ModelBatch` of every model
  of a run (``sweep.select(k=20)`` another batch, ``sweep.model(k=20, latent_size=200)`` one
  :class:`SAEModel`), read from the run's model files (``RUN/models/``)
* analysis math (:mod:`jsae.analyses`), on a ModelBatch (or a Sweep) and a labelled store:
  :func:`probe`, :func:`feature_split`, :func:`steer` (defaults: :class:`SteerOptions`) and
  :func:`steer_latents`, :func:`compare_sweeps`; :func:`consistency` before training: is a
  label one direction for every speaker, so that one latent can carry it?
* files: :mod:`jsae.outputs` (``run_probe``, … write an analysis folder), :func:`build_report`
  (:mod:`jsae.report`)

Floors and who may import whom: ARCHITECTURE.md.
"""
__version__ = "0.1.0"

# Public names are imported on first use, so that importing one module (e.g.
# jsae.store from an export worker) does not load JAX.
from .lazy import lazy_exports

_LAZY = {
    'ConfigError': 'config',
    'SweepConfig': 'config',
    'load_config': 'config',
    'EmbeddingStore': 'store',
    'InvalidEmbeddingsError': 'store',
    'StoreError': 'store',
    'open_store': 'store',
    'write_store': 'store',
    'SAEModel': 'models',
    'ModelBatch': 'models',
    'TopK': 'core.activation',
    'ReluL1': 'core.activation',
    'Sweep': 'runs.load',
    'load_sweep': 'runs.load',
    'train_sweep': 'training.loop',
    'LabelledSplit': 'analyses.labelled',
    'load_labelled': 'analyses.labelled',
    'probe': 'analyses.probing',
    'SplitResult': 'analyses.splitting',
    'feature_split': 'analyses.splitting',
    'SteerResult': 'analyses.steering',
    'relative_similarity': 'analyses.steering',
    'steer': 'analyses.steering',
    'steer_latents': 'analyses.steering',
    'SteerOptions': 'analyses.steering',
    'UniversalityResult': 'analyses.universality',
    'compare_sweeps': 'analyses.universality',
    'build_report': 'report',
    'config_path': 'resources',
    'demo_data_dir': 'resources',
    'ConsistencyResult': 'analyses.consistency',
    'consistency': 'analyses.consistency',
}

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
    "ModelBatch",
    "TopK",
    "ReluL1",
    "Sweep",
    "load_sweep",
    "train_sweep",
    "ConsistencyResult",
    "consistency",
    "LabelledSplit",
    "load_labelled",
    "probe",
    "SplitResult",
    "feature_split",
    "SteerResult",
    "relative_similarity",
    "steer",
    "steer_latents",
    "SteerOptions",
    "UniversalityResult",
    "compare_sweeps",
    "build_report",
    "config_path",
    "demo_data_dir",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
